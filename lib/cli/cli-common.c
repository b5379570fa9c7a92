#include "cli-common.h"
#include "avq-error.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>

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
avq_cli_parse_device (const char *name, AvqDevice *device, GError **error)
{
  *device = AVQ_DEVICE_AUTO;
  if (name == NULL || avq_device_from_string (name, device))
    return TRUE;
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
               "--device must be auto, cpu or cuda, not \"%s\"", name);
  return FALSE;
}

void
avq_cli_report_device (const char *cmd, const AvqEngine *engine)
{
  if (avq_engine_device (engine) == AVQ_DEVICE_CUDA)
    g_printerr ("avq %s: %s\n", cmd, avq_engine_device_description (engine));
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

gboolean
avq_cli_is_image_file (const char *path, gboolean *is_image, GError **error)
{
  guint8 magic[4] = { 0 };
  FILE *f = fopen (path, "rb");
  if (f == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: %s", path, g_strerror (errno));
    return FALSE;
  }
  size_t got = fread (magic, 1, sizeof magic, f);
  fclose (f);
  *is_image = (got >= 4 && magic[0] == 0x89 && memcmp (magic + 1, "PNG", 3) == 0) ||
              (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF);
  return TRUE;
}

static gboolean
has_image_extension (const char *name)
{
  g_autofree char *lower = g_ascii_strdown (name, -1);
  return g_str_has_suffix (lower, ".png") || g_str_has_suffix (lower, ".jpg") ||
         g_str_has_suffix (lower, ".jpeg");
}

static gint
compare_paths (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static gboolean
walk_directory (const char *dir, GPtrArray *paths, guint depth, GError **error)
{
  /* Symlink loops would otherwise recurse forever. */
  if (depth > 32) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "%s: directories nested deeper than 32 levels", dir);
    return FALSE;
  }
  g_autoptr (GDir) d = g_dir_open (dir, 0, error);
  if (d == NULL)
    return FALSE;
  g_autoptr (GPtrArray) found = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (found, g_build_filename (dir, name, NULL));
  g_ptr_array_sort (found, compare_paths);
  for (guint i = 0; i < found->len; i++) {
    const char *p = g_ptr_array_index (found, i);
    if (g_file_test (p, G_FILE_TEST_IS_DIR)) {
      if (!walk_directory (p, paths, depth + 1, error))
        return FALSE;
    } else if (has_image_extension (p)) {
      g_ptr_array_add (paths, g_strdup (p));
    }
  }
  return TRUE;
}

static gboolean
read_list_file (const char *list, GPtrArray *paths, GError **error)
{
  g_autofree char *contents = NULL;
  if (!g_file_get_contents (list, &contents, NULL, error))
    return FALSE;
  if (!g_utf8_validate (contents, -1, NULL)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: neither a PNG/JPEG image nor a UTF-8 list of image paths", list);
    return FALSE;
  }
  g_autofree char *base = g_path_get_dirname (list);
  g_auto (GStrv) lines = g_strsplit (contents, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    char *line = g_strstrip (lines[i]);
    if (*line == '\0' || *line == '#')
      continue;
    g_ptr_array_add (paths, g_path_is_absolute (line) ? g_strdup (line)
                                                      : g_build_filename (base, line, NULL));
  }
  return TRUE;
}

gboolean
avq_cli_collect_images (char **inputs, int n_inputs, GPtrArray *paths, GError **error)
{
  for (int i = 0; i < n_inputs; i++) {
    const char *in = inputs[i];
    if (g_file_test (in, G_FILE_TEST_IS_DIR)) {
      if (!walk_directory (in, paths, 0, error))
        return FALSE;
      continue;
    }
    gboolean is_image = FALSE;
    if (!avq_cli_is_image_file (in, &is_image, error))
      return FALSE;
    if (is_image)
      g_ptr_array_add (paths, g_strdup (in));
    else if (!read_list_file (in, paths, error))
      return FALSE;
  }
  if (paths->len == 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "no images found in the inputs");
    return FALSE;
  }
  return TRUE;
}
