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

/* Expands INPUTS (image files, directories walked recursively for
 * .png/.jpg/.jpeg, or text files listing one image path per line, relative
 * paths taken from the list's directory, '#' comments) into image paths in
 * a stable order. Fails on a missing input or when nothing is found. */
gboolean avq_cli_collect_images (char **inputs, int n_inputs, GPtrArray *paths,
                                 GError **error);

/* TRUE when the file starts like a PNG or JPEG. */
gboolean avq_cli_is_image_file (const char *path, gboolean *is_image, GError **error);
