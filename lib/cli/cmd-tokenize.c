/* placeholder: `avq tokenize` is being written */
#include "avq-cli.h"
int avq_cmd_tokenize (int argc, char **argv) { (void) argc; (void) argv; g_printerr ("avq tokenize: not built yet\n"); return 1; }
