/* `avq encode`: the edge half on still images; one AVQ frame per image,
 * concatenated in the output file. */
#include "avq-cli.h"
#include "cli-common.h"
#include "avq-engine.h"
#include "avq-error.h"
#include <stdio.h>

int
avq_cmd_encode (int argc, char **argv)
{
  g_autofree char *model_dir = NULL, *avq_path = NULL, *output = NULL, *mode_name = NULL;
  int threads = 0;
  g_autofree char *device_name = NULL;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir, "LLaVA model directory (hub layout)", "DIR" },
    { "avq", 'a', 0, G_OPTION_ARG_FILENAME, &avq_path, "AVQ file (codebook, DLP, split layer)", "FILE" },
    { "preprocess", 'p', 0, G_OPTION_ARG_STRING, &mode_name, "Preprocessing: crop (HF CLIPImageProcessor, default) or pad (original LLaVA)", "crop|pad" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, "Output file of concatenated AVQ frames", "OUT" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Compute threads (0: automatic)", "N" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device_name, AVQ_CLI_DEVICE_HELP, "auto|cpu|cuda" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context =
      g_option_context_new ("IMAGE... - encode PNG/JPEG images into AVQ frames");
  g_option_context_add_main_entries (context, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error))
    return avq_cli_usage_error (context, "encode", error->message);
  if (model_dir == NULL)
    return avq_cli_usage_error (context, "encode", "--model is required");
  if (avq_path == NULL)
    return avq_cli_usage_error (context, "encode", "--avq is required");
  if (output == NULL)
    return avq_cli_usage_error (context, "encode", "-o/--output is required");
  if (argc < 2)
    return avq_cli_usage_error (context, "encode", "no input image given");
  AvqPreprocessMode mode = AVQ_PREPROCESS_CROP;
  if (mode_name != NULL && !avq_preprocess_mode_from_string (mode_name, &mode))
    return avq_cli_usage_error (context, "encode", "--preprocess must be crop or pad");
  if (!avq_cli_parse_threads (threads, &error))
    return avq_cli_usage_error (context, "encode", error->message);
  AvqDevice device;
  if (!avq_cli_parse_device (device_name, &device, &error))
    return avq_cli_usage_error (context, "encode", error->message);

  AvqEngineOptions options = { .model_dir = model_dir, .avq_path = avq_path, .threads = threads, .device = device };
  g_autoptr (AvqEngine) engine = avq_engine_new (&options, &error);
  if (engine == NULL)
    return avq_cli_fail ("encode", error);
  avq_cli_report_device ("encode", engine);

  g_autoptr (GByteArray) out = g_byte_array_new ();
  for (int i = 1; i < argc; i++) {
    g_autoptr (AvqImage) image = avq_image_load (argv[i], &error);
    if (image == NULL)
      return avq_cli_fail ("encode", error);
    g_autoptr (AvqFrame) frame = avq_engine_encode_image (engine, image, mode, &error);
    if (frame == NULL) {
      g_prefix_error (&error, "%s: ", argv[i]);
      return avq_cli_fail ("encode", error);
    }
    gsize length = 0;
    g_autofree guint8 *bytes = avq_frame_serialize (frame, &length);
    g_byte_array_append (out, bytes, length);
  }
  if (!g_file_set_contents (output, (const char *) out->data, out->len, &error))
    return avq_cli_fail ("encode", error);
  g_printerr ("avq encode: %d frame(s), %u bytes -> %s\n", argc - 1, out->len, output);
  return 0;
}
