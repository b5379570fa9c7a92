/* TEMPORARY while the engine lands: the real commands are in cmd-encode.c,
 * cmd-inspect.c, cmd-features.c and get linked as soon as lib/ implements
 * what they call. */
#include "avq-cli.h"
int avq_cmd_encode (int argc, char **argv) { (void) argc; (void) argv; return 1; }
int avq_cmd_inspect (int argc, char **argv) { (void) argc; (void) argv; return 1; }
int avq_cmd_features (int argc, char **argv) { (void) argc; (void) argv; return 1; }
