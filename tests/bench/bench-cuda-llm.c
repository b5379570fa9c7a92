/* The LLaMA decoder on CUDA at the LLaVA-1.5-7B shape (hidden 4096, 32
 * heads of 128, MLP 11008, vocab 32064) with L layers of random F16 weights,
 * driven through the backend (lib/cuda/avq-cuda-llama.h): upload, a
 * 611-position prefill (5 + 576 image + 30 text: a LLaVA-1.5 prompt) with
 * the last logits on the host, and decode ms per token after it; each also
 * as ms per layer and scaled to 32 layers. One JSON line per figure, like
 * bench-cuda and the HF peer (shared/tools/hf_peer_bench.py).
 *
 *   bench-cuda-llm [--runs N] [--layers L]
 *
 * Needs a CUDA device; exits 77 without one. */
#include <glib.h>
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
  int runs = 20, layers = 4;
  GOptionEntry entries[] = {
    { "runs", 'n', 0, G_OPTION_ARG_INT, &runs, "Timed runs per figure (default 20)", "N" },
    { "layers", 0, 0, G_OPTION_ARG_INT, &layers, "Decoder layers (default 4)", "L" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- the CUDA LLaMA decoder at the 7B shape");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || runs < 1 || layers < 1) {
    g_printerr ("bench-cuda-llm: %s\n", error ? error->message : "--runs >= 1, --layers >= 1");
    return 2;
  }
  if (!avq_cuda_available (&error)) {
    g_print ("CUDA unavailable: %s; skipping\n", error->message);
    return 77;
  }
#if AVQ_HAVE_CUDA
  g_autofree double *ms = g_new (double, runs + 1);
  bench_llm (layers, runs, ms);
#endif
  return 0;
}
