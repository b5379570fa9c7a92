/* `avq train-codebook`: k-means on the split point's features of a set of
 * images, written as an AVQ file with identity DLPs (ready to use, or to
 * fine-tune). */
#include "avq-cli.h"
#include "cli-common.h"
#include "avq-codebook.h"
#include "avq-error.h"
#include "avq-kmeans.h"
#include "avq-ops.h"
#include <stdio.h>
#include <string.h>

typedef struct {
  AvqSplitExtractor *extractor;
  GPtrArray *paths;
  AvqPreprocessMode mode;
  float *z;           /* [tokens, dim] */
  gsize tokens, dim;
} Extraction;

static void
print_iteration (const AvqKmeansIterStats *s, gpointer data)
{
  const gsize dim = *(const gsize *) data;
  /* k-means works in squared distance per token; `avq eval` reports the
   * same error per element (quant_mse): print both. */
  g_printerr ("iteration %u: squared error %.6g per token (%.6g per element), "
              "relative change %.3g, %.2f s", s->iteration, s->mse, s->mse / dim,
              s->rel_change, s->seconds);
  if (s->reseeded)
    g_printerr (", %u empty clusters re-seeded", s->reseeded);
  g_printerr ("\n");
}

static gboolean
extract (Extraction *x, guint i, GError **error)
{
  const char *path = g_ptr_array_index (x->paths, i);
  g_autoptr (AvqImage) image = avq_image_load (path, error);
  if (image == NULL)
    return FALSE;
  if (!avq_split_extractor_run (x->extractor, image, x->mode, x->z, error)) {
    g_prefix_error (error, "%s: ", path);
    return FALSE;
  }
  return TRUE;
}

static void
report_extraction (guint done, guint total, gint64 start)
{
  if (done == total || done % 50 == 0)
    g_printerr ("images: %u/%u (%.1f s)\n", done, total,
                (g_get_monotonic_time () - start) / 1e6);
}

/* Every pass re-runs the vision tower over all images: memory stays at one
 * image's features whatever the data set size. */
static gboolean
train_streaming (Extraction *x, const AvqKmeansOptions *opts, float *codebook,
                 AvqKmeansResult *result, GError **error)
{
  g_autoptr (AvqKmeansStream) s = avq_kmeans_stream_new (x->dim, opts, error);
  if (s == NULL)
    return FALSE;
  gboolean done = FALSE;
  for (guint pass = 0; !done; pass++) {
    gint64 start = g_get_monotonic_time ();
    for (guint i = 0; i < x->paths->len; i++) {
      if (!extract (x, i, error) || !avq_kmeans_stream_feed (s, x->z, x->tokens, error))
        return FALSE;
      if (pass == 0)
        report_extraction (i + 1, x->paths->len, start);
    }
    if (!avq_kmeans_stream_end_pass (s, &done, error))
      return FALSE;
  }
  memcpy (codebook, avq_kmeans_stream_centroids (s), (gsize) opts->k * x->dim * sizeof (float));
  avq_kmeans_stream_get_result (s, result);
  return TRUE;
}

static gboolean
train_in_memory (Extraction *x, guint64 max_tokens, guint64 seed,
                 const AvqKmeansOptions *opts, float *codebook,
                 AvqKmeansResult *result, GError **error)
{
  g_autoptr (AvqKmeansReservoir) r = avq_kmeans_reservoir_new (x->dim, max_tokens, seed);
  gint64 start = g_get_monotonic_time ();
  for (guint i = 0; i < x->paths->len; i++) {
    if (!extract (x, i, error))
      return FALSE;
    avq_kmeans_reservoir_add (r, x->z, x->tokens);
    report_extraction (i + 1, x->paths->len, start);
  }
  gsize n = 0;
  const float *points = avq_kmeans_reservoir_points (r, &n);
  guint64 seen = avq_kmeans_reservoir_seen (r);
  g_printerr ("tokens: %" G_GUINT64_FORMAT " collected, %" G_GSIZE_FORMAT " used%s\n",
              seen, n, seen > n ? " (uniform sample: --max-tokens)" : "");
  return avq_kmeans_fit (points, n, x->dim, opts, codebook, NULL, result, error);
}

int
avq_cmd_train_codebook (int argc, char **argv)
{
  g_autofree char *model_dir = NULL, *output = NULL, *residual_name = NULL, *mode_name = NULL;
  int layer = -1, side_bits = -1, codebook_size = 4096, iters = 20, threads = 0;
  gint64 max_tokens = -1, seed = 0;
  double tol = 1e-4;
  gboolean stream = FALSE;
  g_autofree char *device = NULL;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir, "LLaVA model directory", "DIR" },
    { "layer", 'l', 0, G_OPTION_ARG_INT, &layer, "Split layer L (features are layer L's layer_norm1 output)", "L" },
    { "residual", 'r', 0, G_OPTION_ARG_STRING, &residual_name, "derive (L = 0 only) or side (default: derive at L = 0, else side)", "MODE" },
    { "side-bits", 0, 0, G_OPTION_ARG_INT, &side_bits, "Bits per side-information code with --residual side (default 8)", "B" },
    { "codebook-size", 'k', 0, G_OPTION_ARG_INT, &codebook_size, "Codebook entries K, a power of two (default 4096)", "K" },
    { "iters", 'i', 0, G_OPTION_ARG_INT, &iters, "Most Lloyd iterations (default 20)", "N" },
    { "tolerance", 0, 0, G_OPTION_ARG_DOUBLE, &tol, "Stop when the relative improvement falls below this (default 1e-4)", "TOL" },
    { "max-tokens", 0, 0, G_OPTION_ARG_INT64, &max_tokens, "Cluster a uniform sample of at most M tokens (default 262144)", "M" },
    { "stream", 0, 0, G_OPTION_ARG_NONE, &stream, "Cluster every token, re-reading the images each iteration (bounded memory)", NULL },
    { "seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Random seed (sampling, k-means++)", "S" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Compute threads (0: automatic)", "T" },
    { "preprocess", 'p', 0, G_OPTION_ARG_STRING, &mode_name, "crop (default) or pad, as the encoder will use", "crop|pad" },
    { "device", 0, 0, G_OPTION_ARG_STRING, &device, "auto (the default), cpu or cuda; k-means and the feature extraction run on the CPU in this version, so auto means cpu and cuda is refused", "auto|cpu|cuda" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, "Output AVQ file", "OUT.safetensors" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context = g_option_context_new (
      "INPUTS... - train an AVQ codebook by k-means (INPUTS: images, directories, or lists of image paths)");
  g_option_context_add_main_entries (context, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (context, &argc, &argv, &error))
    return avq_cli_usage_error (context, "train-codebook", error->message);
  if (model_dir == NULL)
    return avq_cli_usage_error (context, "train-codebook", "--model is required");
  if (output == NULL)
    return avq_cli_usage_error (context, "train-codebook", "-o/--output is required");
  if (layer < 0)
    return avq_cli_usage_error (context, "train-codebook", "--layer is required (0 or more)");
  if (argc < 2)
    return avq_cli_usage_error (context, "train-codebook", "no inputs given");
  AvqDevice dev;
  if (!avq_cli_parse_device (device, &dev, &error))
    return avq_cli_usage_error (context, "train-codebook", error->message);
  if (dev == AVQ_DEVICE_CUDA) {
    /* Say why: unavailable here, or available but not used by training. */
    if (avq_cuda_available (&error))
      g_set_error (&error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                   "--device cuda: codebook training has no CUDA path yet "
                   "(the CUDA backend covers encode, features, ask and eval); "
                   "use --device cpu");
    else
      g_prefix_error (&error, "--device cuda requested but unavailable: ");
    return avq_cli_fail ("train-codebook", error);
  }
  AvqResidualMode residual = layer == 0 ? AVQ_RESIDUAL_DERIVE : AVQ_RESIDUAL_SIDE;
  if (residual_name != NULL) {
    if (strcmp (residual_name, "derive") == 0)
      residual = AVQ_RESIDUAL_DERIVE;
    else if (strcmp (residual_name, "side") == 0)
      residual = AVQ_RESIDUAL_SIDE;
    else
      return avq_cli_usage_error (context, "train-codebook", "--residual must be derive or side");
  }
  if (residual == AVQ_RESIDUAL_DERIVE && layer != 0)
    return avq_cli_usage_error (context, "train-codebook", "--residual derive works only at --layer 0");
  if (residual == AVQ_RESIDUAL_DERIVE && side_bits > 0)
    return avq_cli_usage_error (context, "train-codebook", "--side-bits needs --residual side");
  if (residual == AVQ_RESIDUAL_SIDE && side_bits < 0)
    side_bits = 8;
  if (residual == AVQ_RESIDUAL_SIDE && (side_bits < 1 || side_bits > 16))
    return avq_cli_usage_error (context, "train-codebook", "--side-bits must be 1..16");
  if (residual == AVQ_RESIDUAL_DERIVE)
    side_bits = 0;
  if (codebook_size < 1 || !avq_kmeans_check_codebook_size ((guint64) codebook_size, NULL, &error))
    return avq_cli_usage_error (context, "train-codebook",
                                error ? error->message : "--codebook-size must be a power of two");
  if (iters < 1)
    return avq_cli_usage_error (context, "train-codebook", "--iters must be at least 1");
  if (stream && max_tokens != -1)
    return avq_cli_usage_error (context, "train-codebook",
                                "--max-tokens samples tokens in memory; --stream uses every token");
  if (max_tokens == -1)
    max_tokens = 1 << 18;
  if (max_tokens < 1)
    return avq_cli_usage_error (context, "train-codebook", "--max-tokens must be at least 1");
  if (!(tol >= 0))
    return avq_cli_usage_error (context, "train-codebook", "--tolerance must be >= 0");
  AvqPreprocessMode mode = AVQ_PREPROCESS_CROP;
  if (mode_name != NULL && !avq_preprocess_mode_from_string (mode_name, &mode))
    return avq_cli_usage_error (context, "train-codebook", "--preprocess must be crop or pad");
  if (!avq_cli_parse_threads (threads, &error))
    return avq_cli_usage_error (context, "train-codebook", error->message);

  g_autoptr (GPtrArray) paths = g_ptr_array_new_with_free_func (g_free);
  if (!avq_cli_collect_images (argv + 1, argc - 1, paths, &error))
    return avq_cli_fail ("train-codebook", error);
  /* Feature extraction runs the vision tower: it honours --threads too. */
  avq_set_compute_threads (threads);
  g_autoptr (AvqModel) model = avq_model_open (model_dir, &error);
  if (model == NULL)
    return avq_cli_fail ("train-codebook", error);
  g_autoptr (AvqSplitExtractor) extractor = avq_split_extractor_new (model, layer, &error);
  if (extractor == NULL)
    return avq_cli_fail ("train-codebook", error);

  Extraction x = {
    .extractor = extractor,
    .paths = paths,
    .mode = mode,
    .tokens = avq_split_extractor_tokens (extractor),
    .dim = avq_split_extractor_dim (extractor),
  };
  g_autofree float *z = g_new (float, x.tokens * x.dim);
  x.z = z;

  AvqKmeansOptions opts;
  avq_kmeans_options_init (&opts);
  opts.k = codebook_size;
  opts.max_iters = iters;
  opts.tol = tol;
  opts.seed = (guint64) seed;
  opts.threads = threads;
  opts.progress = print_iteration;
  opts.progress_data = &x.dim;
  g_printerr ("train-codebook: %u images, layer %d, K = %d, D = %" G_GSIZE_FORMAT ", %s\n",
              paths->len, layer, codebook_size, x.dim, stream ? "streaming" : "in memory");

  g_autofree float *codebook = g_new (float, (gsize) codebook_size * x.dim);
  AvqKmeansResult result = { 0 };
  gboolean ok = stream ? train_streaming (&x, &opts, codebook, &result, &error)
                       : train_in_memory (&x, (guint64) max_tokens, (guint64) seed, &opts,
                                          codebook, &result, &error);
  if (!ok)
    return avq_cli_fail ("train-codebook", error);
  if (result.dead_clusters > 0) {
    g_set_error (&error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "the training tokens hold fewer than K = %d distinct vectors (%u codewords "
                 "would be duplicates): use more images or a smaller --codebook-size",
                 codebook_size, result.dead_clusters);
    return avq_cli_fail ("train-codebook", error);
  }
  if (!avq_codebook_write (output, codebook, codebook_size, x.dim, layer, residual,
                           side_bits, &error))
    return avq_cli_fail ("train-codebook", error);
  g_printerr ("train-codebook: %u iterations (%s), k-means++ %.1f s, squared error %.6g per "
              "token -> %s\n", result.iterations,
              result.converged ? "converged" : "iteration limit", result.init_seconds,
              result.mse, output);
  return 0;
}
