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
 * Timed from the host, per frame, including the host<->device copies the
 * engine does (pixels in, indices or features out): the cost a pipeline
 * sees. Needs a CUDA device; exits 77 without one. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "avq-build-config.h"
#include "avq-engine.h"
#include "avq-safetensors.h"
#include "bench-vit-model.h"

#define MLP 4096
#define TEXT 4096
#define IMAGE 336
#define LAYERS_RUN 23

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static void
report (const char *figure, double *ms, int n, const char *extra)
{
  qsort (ms, n, sizeof (double), cmp_double);
  g_print ("{\"figure\": \"%s\", \"median_ms\": %.3f, \"min_ms\": %.3f, "
           "\"max_ms\": %.3f, \"runs\": %d%s%s}\n", figure, ms[n / 2], ms[0],
           ms[n - 1], n, extra ? ", " : "", extra ? extra : "");
}

static double
rel_error (const float *a, const float *b, gsize n)
{
  double num = 0, den = 0;
  for (gsize i = 0; i < n; i++) {
    double d = (double) a[i] - b[i];
    num += d * d;
    den += (double) b[i] * b[i];
  }
  return den > 0 ? sqrt (num / den) : sqrt (num);
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
    report (fig, ms, runs, "\"batch\": 1");
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
    report (fig, ms, runs, "\"batch\": 1");

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
      report (fig, ms, cpu_runs, NULL);
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
               rel_error (feat, ref, nfeat));
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
  report ("avq_cuda_image_features", ms, runs, "\"batch\": 1");

  /* The same with the fused attention kernel: speed, and agreement with
   * the cuBLAS-attention features just computed. */
  g_autofree float *fused = g_new (float, nfeat);
  g_setenv ("AVQ_CUDA_ATTENTION", "fused", TRUE);
  {
    g_autoptr (AvqEngine) fe = engine (dir, NULL, AVQ_DEVICE_CUDA);
    for (int i = -2; i < runs; i++) {
      gint64 s = g_get_monotonic_time ();
      if (!avq_engine_features_from_pixels (fe, px, fused, &error))
        g_error ("cuda features (fused attention): %s", error->message);
      if (i >= 0)
        ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    }
    g_autofree char *extra = g_strdup_printf ("\"batch\": 1, \"rel_error_vs_gemm_attention\": %.3g",
                                              rel_error (fused, feat, nfeat));
    report ("avq_cuda_image_features_fused", ms, runs, extra);
  }
  g_unsetenv ("AVQ_CUDA_ATTENTION");
  if (cpu_runs > 0) {
    g_autoptr (AvqEngine) cpu = engine (dir, NULL, AVQ_DEVICE_CPU);
    for (int i = 0; i < cpu_runs; i++) {
      gint64 s = g_get_monotonic_time ();
      if (!avq_engine_features_from_pixels (cpu, px, ref, &error))
        g_error ("cpu features: %s", error->message);
      ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    }
    report ("avq_cpu_image_features", ms, cpu_runs, NULL);
    g_print ("{\"figure\": \"avq_cuda_vs_cpu_unsplit\", \"features_rel_error\": %.3g}\n",
             rel_error (feat, ref, nfeat));
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
