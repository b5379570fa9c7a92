/* placeholder: `avq features` is being written */
#include "avq-cli.h"
int avq_cmd_features (int argc, char **argv) { (void) argc; (void) argv; g_printerr ("avq features: not built yet\n"); return 1; }
