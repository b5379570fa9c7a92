/* `avq inspect FRAMES...`: the header and the integer codes of each frame,
 * as they travel on the wire. */
#include "avq-cli.h"
#include "cli-common.h"
#include <stdio.h>

static void
print_frame (guint n, const AvqFrame *frame)
{
  char hex[17];
  avq_codebook_id_to_hex (frame->codebook_id, hex);
  printf ("frame %u: version=%u flags=%u tokens=%u index-bits=%u side-bits=%u codebook=%s\n",
          n, frame->version, frame->flags, frame->tokens, frame->index_bits,
          frame->side_bits, hex);
  GString *line = g_string_sized_new (frame->tokens * 5 + 16);
  g_string_append (line, "indices:");
  for (guint t = 0; t < frame->tokens; t++)
    g_string_append_printf (line, " %u", frame->indices[t]);
  puts (line->str);
  if (frame->side_codes != NULL) {
    g_string_assign (line, "side:");
    for (guint t = 0; t < 2u * frame->tokens; t++)
      g_string_append_printf (line, " %u", frame->side_codes[t]);
    puts (line->str);
  }
  g_string_free (line, TRUE);
}

int
avq_cmd_inspect (int argc, char **argv)
{
  g_autoptr (GOptionContext) context =
      g_option_context_new ("FRAMES... - print AVQ frames (header, indices, side codes)");
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error))
    return avq_cli_usage_error (context, "inspect", error->message);
  if (argc < 2)
    return avq_cli_usage_error (context, "inspect", "no frame file given");

  guint n = 0;
  for (int i = 1; i < argc; i++) {
    g_autoptr (GPtrArray) frames = g_ptr_array_new_with_free_func ((GDestroyNotify) avq_frame_free);
    if (!avq_cli_read_frames (argv[i], frames, &error))
      return avq_cli_fail ("inspect", error);
    for (guint f = 0; f < frames->len; f++)
      print_frame (n++, g_ptr_array_index (frames, f));
  }
  return 0;
}
