/* `avq eval`: how faithfully an AVQ file carries images to the cloud, with
 * no labels needed: the projected features reached through the wire
 * (encode -> frame -> decode) against the unsplit path. */
#include "avq-cli.h"
#include "cli-common.h"
#include "avq-codebook.h"
#include "avq-error.h"
#include <json-glib/json-glib.h>
#include <stdio.h>

int
avq_cmd_eval (int argc, char **argv)
{
  g_autofree char *model_dir = NULL, *avq_path = NULL, *mode_name = NULL;
  int threads = 0;
  g_autofree char *device_name = NULL;
  gboolean as_json = FALSE;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir, "LLaVA model directory", "DIR" },
    { "avq", 'a', 0, G_OPTION_ARG_FILENAME, &avq_path, "AVQ file to evaluate", "FILE" },
    { "preprocess", 'p', 0, G_OPTION_ARG_STRING, &mode_name, "crop (default) or pad", "crop|pad" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &as_json, "Print one JSON object instead of a table", NULL },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Compute threads (0: automatic)", "N" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device_name, AVQ_CLI_DEVICE_HELP, "auto|cpu|cuda" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context = g_option_context_new (
      "INPUTS... - measure split-path fidelity (INPUTS: images, directories, or lists of image paths)");
  g_option_context_add_main_entries (context, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error))
    return avq_cli_usage_error (context, "eval", error->message);
  if (model_dir == NULL)
    return avq_cli_usage_error (context, "eval", "--model is required");
  if (avq_path == NULL)
    return avq_cli_usage_error (context, "eval", "--avq is required");
  if (argc < 2)
    return avq_cli_usage_error (context, "eval", "no inputs given");
  AvqPreprocessMode mode = AVQ_PREPROCESS_CROP;
  if (mode_name != NULL && !avq_preprocess_mode_from_string (mode_name, &mode))
    return avq_cli_usage_error (context, "eval", "--preprocess must be crop or pad");
  if (!avq_cli_parse_threads (threads, &error))
    return avq_cli_usage_error (context, "eval", error->message);
  AvqDevice device;
  if (!avq_cli_parse_device (device_name, &device, &error))
    return avq_cli_usage_error (context, "eval", error->message);

  g_autoptr (GPtrArray) paths = g_ptr_array_new_with_free_func (g_free);
  if (!avq_cli_collect_images (argv + 1, argc - 1, paths, &error))
    return avq_cli_fail ("eval", error);
  AvqEngineOptions options = { .model_dir = model_dir, .avq_path = avq_path, .threads = threads, .device = device };
  g_autoptr (AvqEngine) engine = avq_engine_new (&options, &error);
  if (engine == NULL)
    return avq_cli_fail ("eval", error);
  avq_cli_report_device ("eval", engine);
  g_autoptr (AvqFidelityMeter) meter = avq_fidelity_meter_new (engine, avq_path, &error);
  if (meter == NULL)
    return avq_cli_fail ("eval", error);

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "images");
  json_builder_begin_array (b);
  if (!as_json)
    printf ("%-40s %10s %10s %12s %6s\n", "image", "cosine", "rel_error", "quant_mse", "bytes");

  double sum_cos = 0, worst_cos = G_MAXDOUBLE, sum_rel = 0, sum_mse = 0;
  gsize bytes = 0;
  for (guint i = 0; i < paths->len; i++) {
    const char *path = g_ptr_array_index (paths, i);
    g_autoptr (AvqImage) image = avq_image_load (path, &error);
    AvqFidelity f;
    if (image == NULL || !avq_fidelity_measure (meter, image, mode, &f, &error)) {
      if (image != NULL)
        g_prefix_error (&error, "%s: ", path);
      return avq_cli_fail ("eval", error);
    }
    sum_cos += f.cosine;
    worst_cos = MIN (worst_cos, f.cosine);
    sum_rel += f.rel_error;
    sum_mse += f.quant_mse;
    bytes = f.bytes;
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "path");
    json_builder_add_string_value (b, path);
    json_builder_set_member_name (b, "cosine");
    json_builder_add_double_value (b, f.cosine);
    json_builder_set_member_name (b, "rel_error");
    json_builder_add_double_value (b, f.rel_error);
    json_builder_set_member_name (b, "quant_mse");
    json_builder_add_double_value (b, f.quant_mse);
    json_builder_set_member_name (b, "bytes");
    json_builder_add_int_value (b, (gint64) f.bytes);
    json_builder_end_object (b);
    if (!as_json)
      printf ("%-40s %10.6f %10.6f %12.6g %6" G_GSIZE_FORMAT "\n", path, f.cosine,
              f.rel_error, f.quant_mse, f.bytes);
  }
  json_builder_end_array (b);
  const double n = paths->len;
  json_builder_set_member_name (b, "summary");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "mean_cosine");
  json_builder_add_double_value (b, sum_cos / n);
  json_builder_set_member_name (b, "worst_cosine");
  json_builder_add_double_value (b, worst_cos);
  json_builder_set_member_name (b, "mean_rel_error");
  json_builder_add_double_value (b, sum_rel / n);
  json_builder_set_member_name (b, "quant_mse");
  json_builder_add_double_value (b, sum_mse / n);
  json_builder_set_member_name (b, "bytes_per_frame");
  json_builder_add_int_value (b, (gint64) bytes);
  json_builder_end_object (b);
  json_builder_end_object (b);

  if (as_json) {
    g_autoptr (JsonGenerator) gen = json_generator_new ();
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    json_generator_set_root (gen, root);
    g_autofree char *text = json_generator_to_data (gen, NULL);
    printf ("%s\n", text);
  } else {
    printf ("summary: %u images, mean cosine %.6f, worst cosine %.6f, mean rel_error %.6f, "
            "quant_mse %.6g, %" G_GSIZE_FORMAT " bytes/frame\n",
            paths->len, sum_cos / n, worst_cos, sum_rel / n, sum_mse / n, bytes);
  }
  return 0;
}
