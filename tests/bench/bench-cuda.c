/* The engine on CUDA at the real size (CLIP ViT-L/14-336, 4096-entry
 * codebook, 4096-wide projector) with random F16 weights, against the CPU
 * engine on the same inputs: agreement (index equality, relative error of
 * the projected features) and timings. Made for the GPU machine
 * (tests/bench/gpu-check.sh); prints one JSON line per figure, like the HF
 * peer (shared/tools/hf_peer_bench.py), so the two can be tabulated.
 *
 *   bench-cuda [--runs N] [--cpu-runs M] [--dir DIR] [--llm-layers L]
 *
 * Then the LLaMA decoder on CUDA at the LLaVA-1.5-7B shape (hidden 4096,
 * 32 heads of 128, MLP 11008, vocab 32064) with L layers (default 4; 0
 * skips it) of random F16 weights, driven through the backend directly
 * (lib/cuda/avq-cuda-llama.h): upload, a 611-position prefill (5 + 576
 * image + 30 text: a LLaVA-1.5 prompt) with the last logits back on the
 * host, and decode ms per token at positions 611 .. 611+R-1; each also as
 * ms per layer and scaled to 32 layers (the lm_head counted once).
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
#if AVQ_HAVE_CUDA
#include "cuda/avq-cuda-llama.h"
#endif

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

#if AVQ_HAVE_CUDA
/* The 7B-shape decoder with `layers` layers: every matrix points into one
 * random F16 buffer (the uploads still copy each one). */
static void
bench_llm (int layers, int runs, double *ms)
{
  enum { LH = 4096, LHEADS = 32, LHD = 128, LFFN = 11008, LVOCAB = 32064, PROMPT = 611 };
  g_autoptr (GError) error = NULL;
  const gsize big = (gsize) LVOCAB * LH;
  g_autofree guint16 *w = g_new (guint16, big);
  AvqBenchRng r = { 0x2545f4914f6cdd1dull };
  for (gsize i = 0; i < big; i++)
    w[i] = avq_float_to_half (0.02f * avq_bench_rng_uniform (&r));
  g_autofree float *ones = g_new (float, LH);
  for (int i = 0; i < LH; i++)
    ones[i] = 1.0f;
  g_autofree AvqCudaLlamaLayer *ly = g_new0 (AvqCudaLlamaLayer, layers);
#define MAT(rows, cols) ((AvqCudaMatrix) { w, AVQ_DTYPE_F16, (rows), (cols) })
  for (int l = 0; l < layers; l++) {
    ly[l].attn_norm = ones;
    ly[l].mlp_norm = ones;
    ly[l].q = MAT (LH, LH);
    ly[l].k = MAT (LH, LH);
    ly[l].v = MAT (LH, LH);
    ly[l].o = MAT (LH, LH);
    ly[l].gate = MAT (LFFN, LH);
    ly[l].up = MAT (LFFN, LH);
    ly[l].down = MAT (LH, LFFN);
  }
  /* Untied: lm_head is a separate upload of the same bytes. */
  g_autofree guint16 *lm = g_memdup2 (w, big * sizeof (guint16));
  AvqCudaLlamaDesc d = {
    .hidden = LH, .heads = LHEADS, .kv_heads = LHEADS, .head_dim = LHD, .ffn = LFFN,
    .vocab = LVOCAB, .n_layers = layers, .eps = 1e-5f, .rope_theta = 10000.0f,
    .embed = MAT (LVOCAB, LH), .lm_head = { lm, AVQ_DTYPE_F16, LVOCAB, LH },
    .final_norm = ones, .layers = ly,
  };
#undef MAT
  const int ctx = PROMPT + runs + 2;
  gint64 t0 = g_get_monotonic_time ();
  g_autoptr (AvqCudaLlama) cl = avq_cuda_llama_new (&d, ctx, -1, &error);
  if (cl == NULL)
    g_error ("cuda llama: %s", error->message);
  g_print ("{\"figure\": \"llm_cuda_load_7b_shape\", \"ms\": %.1f, \"layers\": %d, "
           "\"weight_mib\": %" G_GUINT64_FORMAT ", \"device\": \"%s\"}\n",
           (g_get_monotonic_time () - t0) / 1000.0, layers,
           avq_cuda_llama_weight_bytes (cl) >> 20, avq_cuda_llama_device_name (cl));

  g_autofree float *emb = g_new (float, (gsize) PROMPT * LH);
  for (gsize i = 0; i < (gsize) PROMPT * LH; i++)
    emb[i] = avq_bench_rng_uniform (&r);
  g_autofree float *logits = g_new (float, LVOCAB);
  for (int i = -2; i < runs; i++) {
    gint64 s = g_get_monotonic_time ();
    if (!avq_cuda_llama_prefill (cl, emb, PROMPT, 0, logits, &error))
      g_error ("cuda llama prefill: %s", error->message);
    if (i >= 0)
      ms[i] = (g_get_monotonic_time () - s) / 1000.0;
  }
  gboolean finite = TRUE;
  for (int k = 0; k < LVOCAB; k++)
    finite &= isfinite (logits[k]);
  qsort (ms, runs, sizeof (double), cmp_double);
  double med = ms[runs / 2];
  g_autofree char *extra = g_strdup_printf (
      "\"positions\": %d, \"layers\": %d, \"ms_per_layer\": %.3f, "
      "\"est_32_layers_ms\": %.1f, \"logits_finite\": %s", PROMPT, layers,
      med / layers, med / layers * 32, finite ? "true" : "false");
  report ("llm_cuda_prefill_611", ms, runs, extra);

  /* Decode after the prompt; one token per run, the cache growing. */
  int tok = 1;
  for (int i = -2; i < runs; i++) {
    int next = 0;
    gint64 s = g_get_monotonic_time ();
    if (!avq_cuda_llama_decode (cl, tok, PROMPT + i + 2, logits, &next, &error))
      g_error ("cuda llama decode: %s", error->message);
    if (i >= 0)
      ms[i] = (g_get_monotonic_time () - s) / 1000.0;
    tok = next;
  }
  qsort (ms, runs, sizeof (double), cmp_double);
  med = ms[runs / 2];
  g_free (extra);
  extra = g_strdup_printf ("\"first_position\": %d, \"layers\": %d, "
                           "\"ms_per_layer\": %.3f, \"est_32_layers_ms_per_token\": %.1f",
                           PROMPT, layers, med / layers, med / layers * 32);
  report ("llm_cuda_decode_ms_per_token", ms, runs, extra);
}
#endif

int
main (int argc, char **argv)
{
  int runs = 20, cpu_runs = 1, llm_layers = 4;
  g_autofree char *dir_opt = NULL;
  GOptionEntry entries[] = {
    { "runs", 'n', 0, G_OPTION_ARG_INT, &runs, "Timed GPU runs per figure (default 20)", "N" },
    { "cpu-runs", 0, 0, G_OPTION_ARG_INT, &cpu_runs, "CPU runs for agreement and timing (0: skip the CPU)", "M" },
    { "llm-layers", 0, 0, G_OPTION_ARG_INT, &llm_layers, "Layers of the 7B-shape LLaMA on CUDA (default 4; 0: skip)", "L" },
    { "dir", 0, 0, G_OPTION_ARG_FILENAME, &dir_opt, "Where to write the random model (default: a temporary directory)", "DIR" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- the CUDA engine at ViT-L size");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_autoptr (GError) error = NULL;
  g_unsetenv ("AVQ_CUDA_ATTENTION");
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || runs < 1 || cpu_runs < 0 ||
      llm_layers < 0) {
    g_printerr ("bench-cuda: %s\n", error ? error->message
                                          : "--runs >= 1, --cpu-runs >= 0, --llm-layers >= 0");
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
#if AVQ_HAVE_CUDA
  if (llm_layers > 0)
    bench_llm (llm_layers, runs, ms);
#endif
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
