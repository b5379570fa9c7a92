/* `avq features`: the cloud half (AVQ frames -> projected image features)
 * or, without --avq, the unsplit reference path from images. Output: a
 * safetensors file with one F32 tensor `image_features.N` [576, hidden] per
 * frame or image, N counted from 0 in input order. */
#include "avq-cli.h"
#include "cli-common.h"
#include "avq-engine.h"
#include "avq-error.h"
#include "avq-safetensors.h"
#include <stdio.h>

int
avq_cmd_features (int argc, char **argv)
{
  g_autofree char *model_dir = NULL, *avq_path = NULL, *output = NULL, *mode_name = NULL;
  int threads = 0;
  g_autofree char *device_name = NULL;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir, "LLaVA model directory (hub layout)", "DIR" },
    { "avq", 'a', 0, G_OPTION_ARG_FILENAME, &avq_path, "AVQ file: inputs are AVQ frame files; without it inputs are images (unsplit path)", "FILE" },
    { "preprocess", 'p', 0, G_OPTION_ARG_STRING, &mode_name, "Preprocessing of image inputs: crop (default) or pad", "crop|pad" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, "Output safetensors file", "OUT.safetensors" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Compute threads (0: automatic)", "N" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device_name, AVQ_CLI_DEVICE_HELP, "auto|cpu|cuda" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context =
      g_option_context_new ("FRAMES...|IMAGE... - compute the projected image features LLaVA's LLM sees");
  g_option_context_add_main_entries (context, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error))
    return avq_cli_usage_error (context, "features", error->message);
  if (model_dir == NULL)
    return avq_cli_usage_error (context, "features", "--model is required");
  if (output == NULL)
    return avq_cli_usage_error (context, "features", "-o/--output is required");
  if (argc < 2)
    return avq_cli_usage_error (context, "features", avq_path ? "no frame file given" : "no input image given");
  AvqPreprocessMode mode = AVQ_PREPROCESS_CROP;
  if (mode_name != NULL && !avq_preprocess_mode_from_string (mode_name, &mode))
    return avq_cli_usage_error (context, "features", "--preprocess must be crop or pad");
  if (!avq_cli_parse_threads (threads, &error))
    return avq_cli_usage_error (context, "features", error->message);
  AvqDevice device;
  if (!avq_cli_parse_device (device_name, &device, &error))
    return avq_cli_usage_error (context, "features", error->message);

  AvqEngineOptions options = { .model_dir = model_dir, .avq_path = avq_path, .threads = threads, .device = device };
  g_autoptr (AvqEngine) engine = avq_engine_new (&options, &error);
  if (engine == NULL)
    return avq_cli_fail ("features", error);
  avq_cli_report_device ("features", engine);

  const guint rows = avq_engine_feature_tokens (engine);
  const guint cols = avq_engine_feature_dim (engine);
  const gint64 shape[2] = { rows, cols };
  g_autofree float *features = g_new (float, (gsize) rows * cols);
  g_autoptr (AvqSafetensorsWriter) writer = avq_safetensors_writer_new ();
  guint n = 0;

  for (int i = 1; i < argc; i++) {
    if (avq_path != NULL) {
      g_autoptr (GPtrArray) frames = g_ptr_array_new_with_free_func ((GDestroyNotify) avq_frame_free);
      if (!avq_cli_read_frames (argv[i], frames, &error))
        return avq_cli_fail ("features", error);
      for (guint f = 0; f < frames->len; f++, n++) {
        if (!avq_engine_decode_frame (engine, g_ptr_array_index (frames, f), features, &error)) {
          g_prefix_error (&error, "%s: frame %u: ", argv[i], f);
          return avq_cli_fail ("features", error);
        }
        g_autofree char *name = g_strdup_printf ("image_features.%u", n);
        avq_safetensors_writer_add (writer, name, AVQ_DTYPE_F32, 2, shape, features);
      }
    } else {
      g_autoptr (AvqImage) image = avq_image_load (argv[i], &error);
      if (image == NULL)
        return avq_cli_fail ("features", error);
      if (!avq_engine_features_from_image (engine, image, mode, features, &error)) {
        g_prefix_error (&error, "%s: ", argv[i]);
        return avq_cli_fail ("features", error);
      }
      g_autofree char *name = g_strdup_printf ("image_features.%u", n++);
      avq_safetensors_writer_add (writer, name, AVQ_DTYPE_F32, 2, shape, features);
    }
  }
  avq_safetensors_writer_set_metadata (writer, "avq.path", avq_path ? "split" : "unsplit");
  if (!avq_safetensors_writer_save (writer, output, &error))
    return avq_cli_fail ("features", error);
  g_printerr ("avq features: %u tensor(s) [%u, %u] -> %s\n", n, rows, cols, output);
  return 0;
}
