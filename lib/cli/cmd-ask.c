/* placeholder: `avq ask` is being written */
#include "avq-cli.h"
int avq_cmd_ask (int argc, char **argv) { (void) argc; (void) argv; g_printerr ("avq ask: not built yet\n"); return 1; }
