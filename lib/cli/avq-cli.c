/* `avq`: command-line front end of the engine. */
#include "avq-cli.h"
#include "avq-build-config.h"
#include <stdio.h>
#include <string.h>

typedef struct {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *summary;
} AvqCommand;

static const AvqCommand commands[] = {
  { "encode", avq_cmd_encode, "edge half: images -> AVQ frames" },
  { "inspect", avq_cmd_inspect, "print the header and codes of AVQ frames" },
  { "features", avq_cmd_features, "cloud half: frames (or images) -> projected image features" },
  { "tokenize", avq_cmd_tokenize, "print the token ids of a text" },
  { "ask", avq_cmd_ask, "answer a question about an image or AVQ frames" },
  { "train-codebook", avq_cmd_train_codebook, "train an AVQ codebook by k-means on images" },
  { "eval", avq_cmd_eval, "measure how faithfully an AVQ file carries images" },
};

static void
print_usage (FILE *out)
{
  fprintf (out, "Usage: avq COMMAND [OPTIONS...]\n\nCommands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf (out, "\nRun 'avq COMMAND --help' for the options of a command.\n");
}

int
avq_cli_fail (const char *cmd, GError *error)
{
  g_printerr ("avq %s: %s\n", cmd, error ? error->message : "failed");
  return 1;
}

int
avq_cli_usage_error (GOptionContext *context, const char *cmd, const char *message)
{
  g_printerr ("avq %s: %s\n", cmd, message);
  if (context) {
    g_autofree char *help = g_option_context_get_help (context, TRUE, NULL);
    g_printerr ("%s", help);
  }
  return 2;
}

int
main (int argc, char **argv)
{
  if (argc < 2) {
    print_usage (stderr);
    return 2;
  }
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0 ||
      strcmp (argv[1], "help") == 0) {
    print_usage (stdout);
    return 0;
  }
  if (strcmp (argv[1], "--version") == 0) {
    printf ("avq %s\n", AVQ_VERSION);
    return 0;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    if (strcmp (argv[1], commands[i].name) == 0)
      return commands[i].run (argc - 1, argv + 1);
  g_printerr ("avq: unknown command '%s'\n", argv[1]);
  print_usage (stderr);
  return 2;
}
