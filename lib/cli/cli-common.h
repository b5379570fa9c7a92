/* Helpers shared by the `avq` subcommands. */
#pragma once
#include <glib.h>
#include "avq-frame.h"

/* Reads a file of concatenated AVQ frames; appends AvqFrame* to `frames`
 * (a GPtrArray with avq_frame_free as free func). The GError names the file
 * and the byte offset of a bad frame. */
gboolean avq_cli_read_frames (const char *path, GPtrArray *frames, GError **error);

/* Parses a positive integer option value, for messages naming `what`. */
gboolean avq_cli_parse_threads (int threads, GError **error);
