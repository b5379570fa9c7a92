/* The engine on CUDA at the real size (CLIP ViT-L/14-336, 4096-entry
 * codebook, 4096-wide projector) with random F16 weights, against the CPU
 * engine on the same inputs: agreement (index equality, relative error of
 * the projected features) and timings. Made for the GPU machine
 * (tests/bench/gpu-check.sh); prints one JSON line per figure, like the HF
 * peer (shared/tools/hf_peer_bench.py), so the two can be tabulated.
 *
 *   bench-cuda [--runs N] [--cpu-runs M] [--dir DIR]
 *
 * The LLaMA decoder has its own benchmark, bench-cuda-llm.c.
 *
 * Timed from the host, per call, including the host<->device copies the
 * engine does (pixels in, indices or features out): the cost a pipeline
 * sees. Each path is timed at batch 1 and at batch 8 (eight different
 * images as one forward through the batch entry points, figures suffixed
 * _b8, with ms per batch and per frame), with CUDA graphs (the default:
 * the first two untimed runs capture) and, for L1 and the unsplit path,
 * once more with graphs off (AVQ_CUDA_GRAPHS=0, suffix _nographs).
 * Needs a CUDA device; exits 77 without one. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "avq-build-config.h"
#include "avq-engine.h"
#include "avq-safetensors.h"
#include "bench-vit-model.h"
#include "bench-report.h"

#define MLP 4096
#define TEXT 4096
#define IMAGE 336
#define LAYERS_RUN 23
#define BATCH 8

/* A batch figure: ms per batch (median, min, max) and per frame. */
static void
report_batch (const char *figure, double *ms, int runs, guint n,
              gboolean graphs)
{
  avq_bench_sort (ms, runs);
  g_autofree char *extra = g_strdup_printf (
      "\"batch\": %u, \"ms_per_frame\": %.3f, \"graphs\": %s", n,
      ms[runs / 2] / n, graphs ? "true" : "false");
  avq_bench_report_ms (figure, ms, runs, extra);
}

/* Times the batch entry points for n inputs on one engine: edge then cloud
 * (the cloud decoding the edge's frames) when it has an AVQ file, else the
 * unsplit features. The last run's frames (n, to free) and features
 * (n * 576 * TEXT) are left for agreement checks. */
static void
bench_batch (AvqEngine *gpu, const char *tag, const float *const *in, guint n,
             int runs, double *ms, gboolean graphs, AvqFrame **frames,
             float *features)
{
  g_autoptr (GError) error = NULL;
  const char *suffix = graphs ? "" : "_nographs";
  g_autofree char *bn = n > 1 ? g_strdup_printf ("_b%u", n) : g_strdup ("");
  if (avq_engine_has_avq (gpu)) {
    for (guint f = 0; f < n; f++)
      frames[f] = NULL;
    for (int i = -2; i < runs; i++) {
      for (guint f = 0; f < n; f++)
        g_clear_pointer (&frames[f], avq_frame_free);
      gint64 s = g_get_monotonic_time ();
      if (!avq_engine_encode_pixels_batch (gpu, in, n, frames, &error))
        g_error ("cuda encode batch %u: %s", n, error->message);
      if (i >= 0)
        ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    }
    g_autofree char *fig = g_strdup_printf ("avq_cuda_encode_%s%s%s", tag, bn, suffix);
    report_batch (fig, ms, runs, n, graphs);
    for (int i = -2; i < runs; i++) {
      gint64 s = g_get_monotonic_time ();
      if (!avq_engine_decode_frames (gpu, (const AvqFrame *const *) frames, n,
                                     features, &error))
        g_error ("cuda decode batch %u: %s", n, error->message);
      if (i >= 0)
        ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    }
    g_free (fig);
    fig = g_strdup_printf ("avq_cuda_decode_%s%s%s", tag, bn, suffix);
    report_batch (fig, ms, runs, n, graphs);
    return;
  }
  for (int i = -2; i < runs; i++) {
    gint64 s = g_get_monotonic_time ();
    if (!avq_engine_features_from_pixels_batch (gpu, in, n, features, &error))
      g_error ("cuda features batch %u: %s", n, error->message);
    if (i >= 0)
      ms[i] = (g_get_monotonic_time () - s) / 1000.0;
  }
  /* tag "unsplit" (cuBLAS attention) or the attention kernel's name. */
  const gboolean named = strcmp (tag, "unsplit") != 0;
  g_autofree char *fig = g_strdup_printf ("avq_cuda_image_features%s%s%s%s",
                                          named ? "_" : "", named ? tag : "", bn,
                                          suffix);
  report_batch (fig, ms, runs, n, graphs);
}

static void
free_frames (AvqFrame **frames, guint n)
{
  for (guint f = 0; f < n; f++)
    g_clear_pointer (&frames[f], avq_frame_free);
}

static AvqEngine *
engine (const char *dir, const char *avq, AvqDevice device)
{
  g_autoptr (GError) error = NULL;
  AvqEngineOptions o = { .model_dir = dir, .avq_path = avq, .device = device };
  gint64 t0 = g_get_monotonic_time ();
  AvqEngine *e = avq_engine_new (&o, &error);
  if (e == NULL)
    g_error ("engine (%s): %s", avq_device_to_string (device), error->message);
  g_print ("{\"figure\": \"avq_engine_load_%s_%s\", \"ms\": %.1f, \"device\": \"%s\"}\n",
           avq_device_to_string (device), avq ? strrchr (avq, '/') + 1 : "unsplit",
           (g_get_monotonic_time () - t0) / 1000.0, avq_engine_device_description (e));
  return e;
}

int
main (int argc, char **argv)
{
  int runs = 20, cpu_runs = 1;
  g_autofree char *dir_opt = NULL;
  GOptionEntry entries[] = {
    { "runs", 'n', 0, G_OPTION_ARG_INT, &runs, "Timed GPU runs per figure (default 20)", "N" },
    { "cpu-runs", 0, 0, G_OPTION_ARG_INT, &cpu_runs, "CPU runs for agreement and timing (0: skip the CPU)", "M" },
    { "dir", 0, 0, G_OPTION_ARG_FILENAME, &dir_opt, "Where to write the random model (default: a temporary directory)", "DIR" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- the CUDA engine at ViT-L size");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_autoptr (GError) error = NULL;
  g_unsetenv ("AVQ_CUDA_ATTENTION");
  g_unsetenv ("AVQ_CUDA_GRAPHS");
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || runs < 1 || cpu_runs < 0) {
    g_printerr ("bench-cuda: %s\n", error ? error->message
                                          : "--runs >= 1, --cpu-runs >= 0");
    return 2;
  }
  if (!avq_cuda_available (&error)) {
    g_print ("CUDA unavailable: %s; skipping\n", error->message);
    return 77;
  }
  g_autofree char *dir = dir_opt ? g_strdup (dir_opt) : g_dir_make_tmp ("avq-bench-cuda-XXXXXX", &error);
  if (dir == NULL || g_mkdir_with_parents (dir, 0755) != 0)
    g_error ("cannot make the model directory: %s", error ? error->message : dir);
  AvqBenchRng rng = { 0x9e3779b97f4a7c15ull };
  gint64 t0 = g_get_monotonic_time ();
  /* fc2 at half spread keeps 23 layers of activations in fp16 range. */
  AvqBenchVitOptions model_options = {
    .layers = LAYERS_RUN, .next_ln1 = FALSE, .projector = TRUE, .fc2_spread = 0.035f / 2,
  };
  avq_bench_write_vit_model (dir, &model_options, &rng);
  g_autofree char *avq0 = avq_bench_write_avq (dir, 0, &rng);
  g_autofree char *avq1 = avq_bench_write_avq (dir, 1, &rng);
  g_print ("{\"figure\": \"write_random_model\", \"ms\": %.0f}\n",
           (g_get_monotonic_time () - t0) / 1000.0);

  const gsize npx = 3 * (gsize) IMAGE * IMAGE, nfeat = 576 * (gsize) TEXT;
  g_autofree float *px = g_new (float, npx);
  for (gsize i = 0; i < npx; i++)
    px[i] = 2.0f * avq_bench_rng_uniform (&rng);
  g_autofree float *feat = g_new (float, nfeat);
  g_autofree float *ref = g_new (float, nfeat);
  g_autofree double *ms = g_new (double, MAX (runs, cpu_runs) + 1);
  /* Batch 8: the image above first, then seven others. */
  g_autofree float *px8 = g_new (float, (BATCH - 1) * npx);
  for (gsize i = 0; i < (BATCH - 1) * npx; i++)
    px8[i] = 2.0f * avq_bench_rng_uniform (&rng);
  const float *in8[BATCH] = { px };
  for (int f = 1; f < BATCH; f++)
    in8[f] = px8 + (gsize) (f - 1) * npx;
  g_autofree float *feat8 = g_new (float, BATCH * nfeat);
  AvqFrame *frames8[BATCH];

  const char *avqs[2] = { avq0, avq1 };
  for (int a = 0; a < 2; a++) {
    g_autoptr (AvqEngine) gpu = engine (dir, avqs[a], AVQ_DEVICE_CUDA);
    g_autofree char *tag = g_strdup_printf ("L%d", a);
    /* Edge. */
    g_autoptr (AvqFrame) frame = NULL;
    for (int i = -2; i < runs; i++) {
      g_clear_pointer (&frame, avq_frame_free);
      gint64 s = g_get_monotonic_time ();
      frame = avq_engine_encode_pixels (gpu, px, &error);
      if (frame == NULL)
        g_error ("cuda encode: %s", error->message);
      if (i >= 0)
        ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    }
    g_autofree char *fig = g_strdup_printf ("avq_cuda_encode_%s", tag);
    avq_bench_report_ms (fig, ms, runs, "\"batch\": 1");
    /* Cloud, from the GPU's own frame. */
    for (int i = -2; i < runs; i++) {
      gint64 s = g_get_monotonic_time ();
      if (!avq_engine_decode_frame (gpu, frame, feat, &error))
        g_error ("cuda decode: %s", error->message);
      if (i >= 0)
        ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    }
    g_free (fig);
    fig = g_strdup_printf ("avq_cuda_decode_%s", tag);
    avq_bench_report_ms (fig, ms, runs, "\"batch\": 1");

    /* Batch 8, and how its input 0 (the same image) agrees with batch 1:
     * a taller GEMM may be tiled differently, which moves near-ties. */
    bench_batch (gpu, tag, in8, BATCH, runs, ms, TRUE, frames8, feat8);
    int same8 = 0;
    for (int t = 0; t < 577; t++)
      same8 += frames8[0]->indices[t] == frame->indices[t];
    if (!avq_engine_decode_frame (gpu, frames8[0], feat, &error))
      g_error ("cuda decode: %s", error->message);
    g_print ("{\"figure\": \"avq_cuda_batch_vs_single_%s\", \"index_agreement\": %.4f, "
             "\"decode_rel_error\": %.3g}\n", tag, same8 / 577.0,
             avq_bench_rel_error (feat8, feat, nfeat));
    free_frames (frames8, BATCH);
    if (a == 1) {
      /* Graphs off, for comparison. */
      g_setenv ("AVQ_CUDA_GRAPHS", "0", TRUE);
      g_autoptr (AvqEngine) plain = engine (dir, avqs[a], AVQ_DEVICE_CUDA);
      g_unsetenv ("AVQ_CUDA_GRAPHS");
      bench_batch (plain, tag, in8, 1, runs, ms, FALSE, frames8, feat8);
      free_frames (frames8, 1);
      bench_batch (plain, tag, in8, BATCH, runs, ms, FALSE, frames8, feat8);
      free_frames (frames8, BATCH);
    }

    if (cpu_runs > 0) {
      g_autoptr (AvqEngine) cpu = engine (dir, avqs[a], AVQ_DEVICE_CPU);
      g_autoptr (AvqFrame) cframe = NULL;
      for (int i = 0; i < cpu_runs; i++) {
        g_clear_pointer (&cframe, avq_frame_free);
        gint64 s = g_get_monotonic_time ();
        cframe = avq_engine_encode_pixels (cpu, px, &error);
        if (cframe == NULL)
          g_error ("cpu encode: %s", error->message);
        ms[i] = (g_get_monotonic_time () - s) / 1000.0;
      }
      g_free (fig);
      fig = g_strdup_printf ("avq_cpu_encode_%s", tag);
      avq_bench_report_ms (fig, ms, cpu_runs, NULL);
      int same = 0;
      for (int t = 0; t < 577; t++)
        same += frame->indices[t] == cframe->indices[t];
      /* The same frame decoded on both devices: the cloud half alone. */
      if (!avq_engine_decode_frame (cpu, frame, ref, &error))
        g_error ("cpu decode: %s", error->message);
      if (!avq_engine_decode_frame (gpu, frame, feat, &error))
        g_error ("cuda decode: %s", error->message);
      g_print ("{\"figure\": \"avq_cuda_vs_cpu_%s\", \"index_agreement\": %.4f, "
               "\"decode_rel_error\": %.3g}\n", tag, same / 577.0,
               avq_bench_rel_error (feat, ref, nfeat));
    }
  }

  /* Unsplit: pixels -> projected features. */
  g_autoptr (AvqEngine) gpu = engine (dir, NULL, AVQ_DEVICE_CUDA);
  for (int i = -2; i < runs; i++) {
    gint64 s = g_get_monotonic_time ();
    if (!avq_engine_features_from_pixels (gpu, px, feat, &error))
      g_error ("cuda features: %s", error->message);
    if (i >= 0)
      ms[i] = (g_get_monotonic_time () - s) / 1000.0;
  }
  avq_bench_report_ms ("avq_cuda_image_features", ms, runs, "\"batch\": 1");
  bench_batch (gpu, "unsplit", in8, BATCH, runs, ms, TRUE, NULL, feat8);
  g_print ("{\"figure\": \"avq_cuda_batch_vs_single_unsplit\", \"features_rel_error\": %.3g}\n",
           avq_bench_rel_error (feat8, feat, nfeat));
  {
    g_setenv ("AVQ_CUDA_GRAPHS", "0", TRUE);
    g_autoptr (AvqEngine) plain = engine (dir, NULL, AVQ_DEVICE_CUDA);
    g_unsetenv ("AVQ_CUDA_GRAPHS");
    bench_batch (plain, "unsplit", in8, 1, runs, ms, FALSE, NULL, feat8);
    bench_batch (plain, "unsplit", in8, BATCH, runs, ms, FALSE, NULL, feat8);
  }

  /* The same with the fused attention kernels (CUDA-core "fused",
   * tensor-core "flash"): speed, and agreement with the cuBLAS-attention
   * features just computed. */
  g_autofree float *fused = g_new (float, nfeat);
  static const char *const kernels[2] = { "fused", "flash" };
  for (int k = 0; k < 2; k++) {
    g_setenv ("AVQ_CUDA_ATTENTION", kernels[k], TRUE);
    g_autoptr (AvqEngine) fe = engine (dir, NULL, AVQ_DEVICE_CUDA);
    g_unsetenv ("AVQ_CUDA_ATTENTION");
    for (int i = -2; i < runs; i++) {
      gint64 s = g_get_monotonic_time ();
      if (!avq_engine_features_from_pixels (fe, px, fused, &error))
        g_error ("cuda features (%s attention): %s", kernels[k], error->message);
      if (i >= 0)
        ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    }
    g_autofree char *extra = g_strdup_printf ("\"batch\": 1, \"rel_error_vs_gemm_attention\": %.3g",
                                              avq_bench_rel_error (fused, feat, nfeat));
    g_autofree char *figure = g_strdup_printf ("avq_cuda_image_features_%s", kernels[k]);
    avq_bench_report_ms (figure, ms, runs, extra);
    bench_batch (fe, kernels[k], in8, BATCH, runs, ms, TRUE, NULL, feat8);
  }
  if (cpu_runs > 0) {
    g_autoptr (AvqEngine) cpu = engine (dir, NULL, AVQ_DEVICE_CPU);
    for (int i = 0; i < cpu_runs; i++) {
      gint64 s = g_get_monotonic_time ();
      if (!avq_engine_features_from_pixels (cpu, px, ref, &error))
        g_error ("cpu features: %s", error->message);
      ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    }
    avq_bench_report_ms ("avq_cpu_image_features", ms, cpu_runs, NULL);
    g_print ("{\"figure\": \"avq_cuda_vs_cpu_unsplit\", \"features_rel_error\": %.3g}\n",
             avq_bench_rel_error (feat, ref, nfeat));
  }
  if (dir_opt == NULL) {
    g_autofree char *m = g_build_filename (dir, "model.safetensors", NULL);
    g_autofree char *c = g_build_filename (dir, "config.json", NULL);
    g_unlink (m);
    g_unlink (c);
    g_unlink (avq0);
    g_unlink (avq1);
    g_rmdir (dir);
  }
  return 0;
}
