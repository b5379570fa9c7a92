/* Subcommands of the `avq` tool. Each returns the process exit status:
 * 0 success, 1 runtime failure, 2 usage error. argv[0] is the subcommand name. */
#pragma once
#include <glib.h>

int avq_cmd_encode (int argc, char **argv);
int avq_cmd_inspect (int argc, char **argv);
int avq_cmd_features (int argc, char **argv);
int avq_cmd_tokenize (int argc, char **argv);
int avq_cmd_ask (int argc, char **argv);
int avq_cmd_train_codebook (int argc, char **argv);
int avq_cmd_eval (int argc, char **argv);

/* Prints "avq <cmd>: <message>" to stderr; returns 1 (or 2 for usage). */
int avq_cli_fail (const char *cmd, GError *error);
int avq_cli_usage_error (GOptionContext *context, const char *cmd, const char *message);
