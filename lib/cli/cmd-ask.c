/* `avq ask`: answer a question about an image (unsplit path, or edge +
 * cloud halves with --avq) or about each frame of an AVQ frame file. */
#include "avq-cli.h"
#include "cli-common.h"
#include "avq-answerer.h"
#include "avq-error.h"
#include <stdio.h>

static void
print_answer (const AvqAnswer *answer, gboolean print_ids)
{
  printf ("%s\n", answer->text);
  g_printerr ("avq ask: %u token(s); vision %.1f ms, prefill %.1f ms, decode %.1f ms\n",
              answer->ids->len, answer->vision_ms, answer->prefill_ms, answer->decode_ms);
  if (print_ids) {
    GString *line = g_string_new (NULL);
    for (guint i = 0; i < answer->ids->len; i++)
      g_string_append_printf (line, i ? " %d" : "%d", g_array_index (answer->ids, int, i));
    puts (line->str);
    g_string_free (line, TRUE);
  }
  fflush (stdout);
}

int
avq_cmd_ask (int argc, char **argv)
{
  g_autofree char *model_dir = NULL, *avq_path = NULL, *question = NULL,
                  *mode_name = NULL, *system_prompt = NULL;
  int max_new_tokens = 64, threads = 0, seed = 0, top_k = 0;
  g_autofree char *device_name = NULL;
  double temperature = 0, top_p = 1;
  gboolean print_ids = FALSE;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir, "LLaVA model directory (weights and tokenizer.json)", "DIR" },
    { "avq", 'a', 0, G_OPTION_ARG_FILENAME, &avq_path, "AVQ file: run the edge+cloud path (needed for frame files)", "FILE" },
    { "question", 'q', 0, G_OPTION_ARG_STRING, &question, "The question, used verbatim in the prompt", "TEXT" },
    { "max-new-tokens", 'n', 0, G_OPTION_ARG_INT, &max_new_tokens, "Most tokens to generate (default 64)", "N" },
    { "temperature", 0, 0, G_OPTION_ARG_DOUBLE, &temperature, "Sampling temperature (0: greedy, the default)", "T" },
    { "top-p", 0, 0, G_OPTION_ARG_DOUBLE, &top_p, "Nucleus sampling threshold (default 1)", "P" },
    { "top-k", 0, 0, G_OPTION_ARG_INT, &top_k, "Sample among the K most likely tokens only (default 0: all; HF's generate uses 50)", "K" },
    { "seed", 0, 0, G_OPTION_ARG_INT, &seed, "Sampling seed (default 0)", "S" },
    { "system-prompt", 0, 0, G_OPTION_ARG_STRING, &system_prompt, "Text put before the conversation", "TEXT" },
    { "preprocess", 'p', 0, G_OPTION_ARG_STRING, &mode_name, "Preprocessing of an image input: crop (default) or pad", "crop|pad" },
    { "print-ids", 0, 0, G_OPTION_ARG_NONE, &print_ids, "After the answer, print the generated ids on one line", NULL },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Compute threads (0: automatic)", "N" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device_name, AVQ_CLI_DEVICE_HELP, "auto|cpu|cuda" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context =
      g_option_context_new ("INPUT - answer a question about an image or AVQ frames");
  g_option_context_add_main_entries (context, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error))
    return avq_cli_usage_error (context, "ask", error->message);
  if (model_dir == NULL)
    return avq_cli_usage_error (context, "ask", "--model is required");
  if (question == NULL)
    return avq_cli_usage_error (context, "ask", "--question is required");
  if (argc != 2)
    return avq_cli_usage_error (context, "ask", "give exactly one INPUT (image or AVQ frame file)");
  if (max_new_tokens < 1 || max_new_tokens > 4096)
    return avq_cli_usage_error (context, "ask", "--max-new-tokens must be 1..4096");
  if (temperature < 0 || !(top_p > 0 && top_p <= 1))
    return avq_cli_usage_error (context, "ask", "--temperature must be >= 0 and --top-p in (0, 1]");
  if (top_k < 0)
    return avq_cli_usage_error (context, "ask", "--top-k must be >= 0 (0: no limit)");
  AvqPreprocessMode mode = AVQ_PREPROCESS_CROP;
  if (mode_name != NULL && !avq_preprocess_mode_from_string (mode_name, &mode))
    return avq_cli_usage_error (context, "ask", "--preprocess must be crop or pad");
  if (!avq_cli_parse_threads (threads, &error))
    return avq_cli_usage_error (context, "ask", error->message);
  AvqDevice device;
  if (!avq_cli_parse_device (device_name, &device, &error))
    return avq_cli_usage_error (context, "ask", error->message);

  gboolean is_image = FALSE;
  if (!avq_cli_is_image_file (argv[1], &is_image, &error))
    return avq_cli_fail ("ask", error);
  if (!is_image && avq_path == NULL)
    return avq_cli_usage_error (context, "ask", "an AVQ frame file needs --avq (the codebook it was encoded with)");

  AvqAnswererOptions options = { .model_dir = model_dir, .avq_path = avq_path, .threads = threads, .device = device };
  g_autoptr (AvqAnswerer) answerer = avq_answerer_new (&options, &error);
  if (answerer == NULL)
    return avq_cli_fail ("ask", error);
  avq_cli_report_device ("ask", avq_answerer_get_engine (answerer));

  AvqAskOptions ask;
  avq_ask_options_init (&ask);
  ask.max_new_tokens = max_new_tokens;
  ask.temperature = (float) temperature;
  ask.top_p = (float) top_p;
  ask.top_k = top_k;
  ask.seed = (guint32) seed;
  ask.system_prompt = system_prompt;

  if (is_image) {
    g_autoptr (AvqImage) image = avq_image_load (argv[1], &error);
    if (image == NULL)
      return avq_cli_fail ("ask", error);
    g_autoptr (AvqAnswer) answer = avq_answerer_ask_image (answerer, image, mode, question, &ask, &error);
    if (answer == NULL)
      return avq_cli_fail ("ask", error);
    print_answer (answer, print_ids);
    return 0;
  }
  g_autoptr (GPtrArray) frames = g_ptr_array_new_with_free_func ((GDestroyNotify) avq_frame_free);
  if (!avq_cli_read_frames (argv[1], frames, &error))
    return avq_cli_fail ("ask", error);
  for (guint f = 0; f < frames->len; f++) {
    g_autoptr (AvqAnswer) answer = avq_answerer_ask_frame (answerer, g_ptr_array_index (frames, f),
                                                           question, &ask, &error);
    if (answer == NULL) {
      g_prefix_error (&error, "%s: frame %u: ", argv[1], f);
      return avq_cli_fail ("ask", error);
    }
    print_answer (answer, print_ids);
  }
  return 0;
}
