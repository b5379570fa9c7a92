/* `avq tokenize --model DIR TEXT`: the prompt ids LLaVA would see, BOS
 * included, on one line. Needs only the tokenizer files of the model. */
#include "avq-cli.h"
#include "avq-tokenizer.h"
#include <stdio.h>

int
avq_cmd_tokenize (int argc, char **argv)
{
  g_autofree char *model = NULL;
  g_auto (GStrv) rest = NULL;
  gboolean no_bos = FALSE;
  /* TEXT is collected as a remaining argument so that "--" lets a text
   * that starts with '-' through, and an empty "" stays an argument. It is
   * taken as FILENAME (raw bytes): a STRING argument goes through the
   * locale charset, which refuses UTF-8 under the C locale. The tokenizer
   * checks that the bytes are UTF-8. */
  const GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
      "model directory (or its tokenizer.json)", "DIR" },
    { "no-bos", 0, 0, G_OPTION_ARG_NONE, &no_bos,
      "leave out the special tokens of the post-processor (BOS)", NULL },
    { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &rest, NULL, "TEXT" },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) context =
      g_option_context_new ("TEXT - print the token ids of TEXT, space-separated");
  g_option_context_add_main_entries (context, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error))
    return avq_cli_usage_error (context, "tokenize", error->message);
  if (model == NULL)
    return avq_cli_usage_error (context, "tokenize", "--model DIR is required");
  guint n_rest = rest ? g_strv_length (rest) : 0;
  if (n_rest != 1)
    return avq_cli_usage_error (context, "tokenize",
                                n_rest == 0 ? "no TEXT given (use \"\" for empty text)"
                                            : "give exactly one TEXT (quote it)");

  g_autoptr (AvqTokenizer) tokenizer = avq_tokenizer_load (model, &error);
  if (tokenizer == NULL)
    return avq_cli_fail ("tokenize", error);
  gsize n_ids = 0;
  g_autofree gint32 *ids =
      avq_tokenizer_encode (tokenizer, rest[0], -1, !no_bos, &n_ids, &error);
  if (ids == NULL)
    return avq_cli_fail ("tokenize", error);

  GString *line = g_string_sized_new (n_ids * 6 + 2);
  for (gsize i = 0; i < n_ids; i++)
    g_string_append_printf (line, i ? " %d" : "%d", ids[i]);
  g_string_append_c (line, '\n');
  fwrite (line->str, 1, line->len, stdout);
  g_string_free (line, TRUE);
  if (fflush (stdout) != 0) {
    g_printerr ("avq tokenize: could not write the ids\n");
    return 1;
  }
  return 0;
}
