/* Helpers shared by the `avq` subcommands. */
#pragma once
#include <glib.h>
#include "avq-engine.h"
#include "avq-frame.h"

/* Reads a file of concatenated AVQ frames; appends AvqFrame* to `frames`
 * (a GPtrArray with avq_frame_free as free func). The GError names the file
 * and the byte offset of a bad frame. */
gboolean avq_cli_read_frames (const char *path, GPtrArray *frames, GError **error);

/* --device: NULL (not given) is auto; otherwise auto, cpu or cuda. */
#define AVQ_CLI_DEVICE_HELP "Where the vision half runs: auto (CUDA when available, the default), cpu or cuda"
gboolean avq_cli_parse_device (const char *name, AvqDevice *device, GError **error);
/* On stderr, when the engine runs on a GPU: "avq <cmd>: cuda: <GPU>, <N> MiB
 * of weights uploaded in <T> ms". Nothing for the CPU. */
void avq_cli_report_device (const char *cmd, const AvqEngine *engine);

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
