/* placeholder: `avq inspect` is being written */
#include "avq-cli.h"
int avq_cmd_inspect (int argc, char **argv) { (void) argc; (void) argv; g_printerr ("avq inspect: not built yet\n"); return 1; }
