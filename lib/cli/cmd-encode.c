/* placeholder: `avq encode` is being written */
#include "avq-cli.h"
int avq_cmd_encode (int argc, char **argv) { (void) argc; (void) argv; g_printerr ("avq encode: not built yet\n"); return 1; }
