#include "cli-common.h"
#include "avq-error.h"

gboolean
avq_cli_read_frames (const char *path, GPtrArray *frames, GError **error)
{
  g_autofree char *contents = NULL;
  gsize length = 0;
  if (!g_file_get_contents (path, &contents, &length, error))
    return FALSE;
  if (length == 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: no AVQ frames in an empty file", path);
    return FALSE;
  }
  gsize offset = 0;
  while (offset < length) {
    const guint8 *data = (const guint8 *) contents + offset;
    gsize frame_size = 0;
    g_autoptr (GError) local = NULL;
    if (!avq_frame_peek_size (data, length - offset, &frame_size, &local) ||
        frame_size > length - offset) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: frame %u at byte %" G_GSIZE_FORMAT ": %s", path,
                   frames->len, offset,
                   local ? local->message : "truncated frame");
      return FALSE;
    }
    AvqFrame *frame = avq_frame_parse (data, frame_size, &local);
    if (frame == NULL) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: frame %u at byte %" G_GSIZE_FORMAT ": %s", path,
                   frames->len, offset, local->message);
      return FALSE;
    }
    g_ptr_array_add (frames, frame);
    offset += frame_size;
  }
  return TRUE;
}

gboolean
avq_cli_parse_threads (int threads, GError **error)
{
  if (threads < 0 || threads > 1024) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "--threads must be between 0 (automatic) and 1024, not %d", threads);
    return FALSE;
  }
  return TRUE;
}
