/* The LLaMA decoder on CUDA at the LLaVA-1.5-7B shape (hidden 4096, 32
 * heads of 128, MLP 11008, vocab 32064, untied lm_head) with L layers
 * (default 32: the whole 7B, 13.5 GB of fp16 weights), driven through the
 * backend (lib/cuda/avq-cuda-llama.h). One JSON line per figure, like
 * bench-cuda and the HF peer (shared/tools/hf_peer_bench.py); medians over
 * --runs after two warm-up runs:
 *
 *   llm_cuda_load                 weights made (or uploaded) and caches
 *   llm_cuda_prefill_611          a 611-position prompt (5 + 576 image + 30
 *                                 text: a LLaVA-1.5 prompt), no logits
 *   llm_cuda_ttft_611             the same with its logits on the host and
 *                                 the first token picked there: time to
 *                                 first token given the embeddings
 *   llm_cuda_decode_b<N>_graphs_<on|off>
 *                                 one decode step for N sequences after
 *                                 611-position prompts, greedy argmax on the
 *                                 device, only the ids back; ms per step and
 *                                 per token
 *   llm_cuda_decode_b1_logits     the same at N = 1 with the logits copied
 *                                 back (what avq_llava_generate did before
 *                                 sampling candidates)
 *   llm_cuda_decode_b<N>_candidates
 *                                 the same with sampling candidates made on
 *                                 the device (the top 256 of each row and
 *                                 its softmax sum at T = 0.7: what
 *                                 avq_llava_generate asks for when sampling;
 *                                 greedy asks for k = 1)
 *   llm_cuda_answer_b<N>          whole answers: N prompts prefilled one
 *                                 after another (first token from their
 *                                 logits), then 15 batched decode steps with
 *                                 device argmax: 16 tokens per answer
 *
 * Every line carries weight_bytes: a decode step reads every weight once,
 * so weight_bytes / bandwidth is its floor (floor_ms_at_4_8_TBps uses the
 * H200's nominal 4.8 TB/s; bench-cuda-bandwidth measures the real one).
 *
 * Weights are random. By default they are made on the device from a seed
 * (AvqCudaLlamaDesc.random_seed, a benchmark facility: seconds instead of
 * minutes for 13.5 GB); --host-weights uploads host F16 buffers instead
 * through the real upload path (to time loading; slow at 32 layers).
 *
 *   bench-cuda-llm [--runs N] [--layers L] [--batch B] [--host-weights]
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
#include "bench-report.h"
#endif

enum { PROMPT = 611, ANSWER_TOKENS = 16 };

/* The decoder's shape: the 7B, or a tiny one with which test-cuda-llm-bench
 * runs this program's logic on the CPU emulation of CUDA (tests/meson.build;
 * its timings mean nothing). */
typedef struct {
  const char *name;
  int hidden, heads, head_dim, ffn, vocab;
} Shape;

static const Shape shapes[] = {
  { "7b", 4096, 32, 128, 11008, 32064 },
  { "tiny", 64, 4, 16, 96, 300 },
};
#define NOMINAL_BW 4.8e12

#if AVQ_HAVE_CUDA
static double
now_ms (void)
{
  return g_get_monotonic_time () / 1000.0;
}

typedef struct {
  const Shape *shape;
  AvqCudaLlama *cl;
  int layers, runs, batch;
  guint64 bytes;
  float *emb;      /* [PROMPT, LH] */
  float *logits;   /* [batch, LVOCAB] */
  double *ms;
} Bench;

#define CHECK(call)                                                     \
  do {                                                                  \
    g_autoptr (GError) check_error_ = NULL;                             \
    GError **error = &check_error_;                                     \
    if (!(call))                                                        \
      g_error ("%s: %s", #call, check_error_->message);                 \
    (void) error;                                                       \
  } while (0)

static int
argmax_host (const float *x, int n)
{
  int best = 0;
  for (int k = 1; k < n; k++)
    if (x[k] > x[best])
      best = k;
  return best;
}

/* The 7B-shape decoder: random weights made on the device from a seed, or
 * host F16 buffers uploaded (every matrix points into one of them; the
 * uploads still copy each). */
static AvqCudaLlama *
make_decoder (const Shape *sh, int layers, gboolean host_weights, int ctx,
              double *ms)
{
  const int LH = sh->hidden, LFFN = sh->ffn, LVOCAB = sh->vocab;
  const int LQ = sh->heads * sh->head_dim;
  g_autofree guint16 *w = NULL, *lm = NULL;
  g_autofree float *ones = NULL;
  if (host_weights) {
    const gsize big = (gsize) LVOCAB * LH;
    w = g_new (guint16, big);
    AvqBenchRng r = { 0x2545f4914f6cdd1dull };
    for (gsize i = 0; i < big; i++)
      w[i] = avq_float_to_half (0.02f * avq_bench_rng_uniform (&r));
    /* Untied: lm_head is a separate upload of other bytes. */
    lm = g_memdup2 (w, big * sizeof (guint16));
    ones = g_new (float, LH);
    for (int i = 0; i < LH; i++)
      ones[i] = 1.0f;
  }
  g_autofree AvqCudaLlamaLayer *ly = g_new0 (AvqCudaLlamaLayer, layers);
#define MAT(rows, cols) ((AvqCudaMatrix) { w, AVQ_DTYPE_F16, (rows), (cols) })
  for (int l = 0; l < layers; l++) {
    ly[l].attn_norm = ones;
    ly[l].mlp_norm = ones;
    ly[l].q = MAT (LQ, LH);
    ly[l].k = MAT (LQ, LH);
    ly[l].v = MAT (LQ, LH);
    ly[l].o = MAT (LH, LQ);
    ly[l].gate = MAT (LFFN, LH);
    ly[l].up = MAT (LFFN, LH);
    ly[l].down = MAT (LH, LFFN);
  }
  AvqCudaLlamaDesc d = {
    .hidden = LH, .heads = sh->heads, .kv_heads = sh->heads,
    .head_dim = sh->head_dim, .ffn = LFFN,
    .vocab = LVOCAB, .n_layers = layers, .eps = 1e-5f, .rope_theta = 10000.0f,
    .embed = MAT (LVOCAB, LH), .lm_head = { lm, AVQ_DTYPE_F16, LVOCAB, LH },
    .final_norm = ones, .layers = ly,
    .random_seed = host_weights ? 0 : 0x7b0a11a5eedull,
  };
#undef MAT
  g_autoptr (GError) error = NULL;
  double t0 = now_ms ();
  AvqCudaLlama *cl = avq_cuda_llama_new (&d, ctx, -1, &error);
  if (cl == NULL)
    g_error ("cuda llama: %s", error->message);
  *ms = now_ms () - t0;
  return cl;
}

/* The first prompt on sequence `seq`; its first token when `want_token`
 * (logits on the host, argmax there), else -1. */
static int
prefill (Bench *b, int seq, gboolean want_token)
{
  CHECK (avq_cuda_llama_prefill_sequence (b->cl, seq, b->emb, PROMPT, 0,
                                          want_token ? b->logits : NULL, error));
  return want_token ? argmax_host (b->logits, b->shape->vocab) : -1;
}

static char *
bytes_extra (Bench *b, double per_step_ms)
{
  return g_strdup_printf ("\"layers\": %d, \"weight_bytes\": %" G_GUINT64_FORMAT
                          ", \"floor_ms_at_4_8_TBps\": %.3f, \"of_floor\": %.2f",
                          b->layers, b->bytes, b->bytes / NOMINAL_BW * 1e3,
                          per_step_ms / (b->bytes / NOMINAL_BW * 1e3));
}

static void
bench_prefill (Bench *b, const char *suffix)
{
  for (int want = 0; want < 2; want++) {
    for (int i = -2; i < b->runs; i++) {
      double t = now_ms ();
      int tok = prefill (b, 0, want);
      if (i >= 0)
        b->ms[i] = now_ms () - t;
      if (want && (tok < 0 || !isfinite (b->logits[tok])))
        g_error ("prefill: first token %d is not a finite logit", tok);
    }
    double med = avq_bench_upper_median (b->ms, b->runs);
    g_autofree char *extra = g_strdup_printf (
        "\"positions\": %d, \"layers\": %d, \"tokens_per_s\": %.0f, "
        "\"ms_per_layer\": %.3f", PROMPT, b->layers, PROMPT / med * 1e3,
        med / b->layers);
    g_autofree char *figure = g_strdup_printf ("%s%s", want ? "llm_cuda_ttft_611"
                                               : "llm_cuda_prefill_611", suffix);
    avq_bench_report_ms (figure, b->ms, b->runs, extra);
  }
}

/* What a decode step hands back to the host. */
typedef enum { STEP_IDS, STEP_LOGITS, STEP_CANDIDATES } StepOutput;

enum { SAMPLING_K = 256 };
#define SAMPLING_T 0.7f

/* Decode steps of n sequences after their prompts; positions restart at
 * PROMPT for every configuration (the cache slots past it are rewritten). */
static void
bench_decode (Bench *b, int n, gboolean graphs, StepOutput output)
{
  avq_cuda_llama_set_graphs (b->cl, graphs);
  g_autofree int *seqs = g_new (int, n), *toks = g_new (int, n);
  g_autofree int *pos = g_new (int, n), *next = g_new (int, n);
  for (int i = 0; i < n; i++) {
    seqs[i] = i;
    toks[i] = 1 + i;
    pos[i] = PROMPT;
  }
  const int n_cand = MIN (SAMPLING_K, b->shape->vocab);
  g_autofree AvqTokenCandidates *cand = g_new (AvqTokenCandidates, n);
  for (int r = 0; r < n; r++)
    avq_token_candidates_init (&cand[r], n_cand);
  for (int i = -2; i < b->runs; i++) {
    double t = now_ms ();
    if (output == STEP_CANDIDATES) {
      CHECK (avq_cuda_llama_decode_batch_candidates (b->cl, n, seqs, toks, pos, n_cand,
                                                     SAMPLING_T, cand, error));
      for (int r = 0; r < n; r++)
        next[r] = cand[r].id[0];   /* the most likely: as greedy */
    } else {
      CHECK (avq_cuda_llama_decode_batch (b->cl, n, seqs, toks, pos,
                                          output == STEP_LOGITS ? b->logits : NULL,
                                          next, error));
    }
    if (i >= 0)
      b->ms[i] = now_ms () - t;
    for (int k = 0; k < n; k++) {
      toks[k] = next[k];
      pos[k]++;
    }
  }
  for (int r = 0; r < n; r++)
    avq_token_candidates_clear (&cand[r]);
  double med = avq_bench_upper_median (b->ms, b->runs);
  g_autofree char *figure =
      output == STEP_LOGITS ? g_strdup_printf ("llm_cuda_decode_b%d_logits", n)
      : output == STEP_CANDIDATES ? g_strdup_printf ("llm_cuda_decode_b%d_candidates", n)
      : g_strdup_printf ("llm_cuda_decode_b%d_graphs_%s", n, graphs ? "on" : "off");
  g_autofree char *bx = bytes_extra (b, med);
  g_autofree char *extra = g_strdup_printf (
      "\"batch\": %d, \"graphs\": %s, \"first_position\": %d, "
      "\"ms_per_token\": %.3f, \"tokens_per_s\": %.0f, %s", n,
      graphs ? "true" : "false", PROMPT, med / n, n / med * 1e3, bx);
  avq_bench_report_ms (figure, b->ms, b->runs, extra);
}

/* Whole greedy answers for n sequences: prompts one after another, the
 * first token from each prompt's logits, then ANSWER_TOKENS - 1 batched
 * steps with the argmax on the device. */
static void
bench_answer (Bench *b, int n)
{
  avq_cuda_llama_set_graphs (b->cl, TRUE);
  g_autofree int *seqs = g_new (int, n), *toks = g_new (int, n);
  g_autofree int *pos = g_new (int, n), *first = g_new (int, n);
  double prefill_ms[64], decode_ms[64];
  const int kept = MIN (b->runs, 64);
  gboolean same = TRUE;
  for (int i = -2; i < kept; i++) {
    double t = now_ms ();
    for (int s = 0; s < n; s++) {
      seqs[s] = s;
      toks[s] = prefill (b, s, TRUE);
      pos[s] = PROMPT;
    }
    double t1 = now_ms ();
    for (int k = 1; k < ANSWER_TOKENS; k++) {
      CHECK (avq_cuda_llama_decode_batch (b->cl, n, seqs, toks, pos, NULL, toks,
                                          error));
      for (int s = 0; s < n; s++)
        pos[s]++;
    }
    double t2 = now_ms ();
    if (i >= 0) {
      b->ms[i] = t2 - t;
      prefill_ms[i] = t1 - t;
      decode_ms[i] = t2 - t1;
    }
    /* Identical runs must end on identical ids (cuBLAS is deterministic
     * for a given GPU and configuration); reported, not fatal. */
    if (i == -2)
      memcpy (first, toks, sizeof (int) * n);
    else if (memcmp (first, toks, sizeof (int) * n) != 0)
      same = FALSE;
  }
  double pm = avq_bench_upper_median (prefill_ms, kept), dm = avq_bench_upper_median (decode_ms, kept);
  double med = avq_bench_upper_median (b->ms, kept);
  g_autofree char *figure = g_strdup_printf ("llm_cuda_answer_b%d", n);
  g_autofree char *bx = bytes_extra (b, dm / (ANSWER_TOKENS - 1));
  g_autofree char *extra = g_strdup_printf (
      "\"batch\": %d, \"prompt\": %d, \"tokens_per_answer\": %d, "
      "\"prefill_ms\": %.3f, \"decode_ms\": %.3f, \"ms_per_answer\": %.3f, "
      "\"answers_per_s\": %.2f, \"same_ids_every_run\": %s, %s", n, PROMPT,
      ANSWER_TOKENS, pm, dm, med / n, n / med * 1e3, same ? "true" : "false", bx);
  avq_bench_report_ms (figure, b->ms, kept, extra);
}

static void
bench_llm (const Shape *sh, int layers, int runs, int batch,
           gboolean host_weights)
{
  Bench b = { .shape = sh, .layers = layers, .runs = runs, .batch = batch };
  const int LH = sh->hidden;
  /* The prompt, 15 more tokens, and the decode runs past it. */
  const int ctx = PROMPT + MAX (ANSWER_TOKENS, runs + 2) + 1;
  double load_ms;
  b.cl = make_decoder (sh, layers, host_weights, ctx, &load_ms);
  CHECK (avq_cuda_llama_set_sequences (b.cl, batch, error));
  b.bytes = avq_cuda_llama_weight_bytes (b.cl);
  g_print ("{\"figure\": \"llm_cuda_load\", \"ms\": %.1f, \"shape\": \"%s\", "
           "\"layers\": %d, \"weights\": \"%s\", \"weight_bytes\": %" G_GUINT64_FORMAT
           ", \"context\": %d, \"sequences\": %d, \"device\": \"%s\"}\n",
           load_ms, sh->name, layers, host_weights ? "host-upload" : "device-random",
           b.bytes, ctx, batch, avq_cuda_llama_device_name (b.cl));

  b.emb = g_new (float, (gsize) PROMPT * LH);
  AvqBenchRng r = { 0x9e3779b97f4a7c15ull };
  for (gsize i = 0; i < (gsize) PROMPT * LH; i++)
    b.emb[i] = avq_bench_rng_uniform (&r);
  b.logits = g_new (float, (gsize) batch * sh->vocab);
  b.ms = g_new (double, runs);

  bench_prefill (&b, "");
  for (int s = 0; s < batch; s++)
    prefill (&b, s, FALSE);
  const int sizes[2] = { 1, batch };
  for (int k = 0; k < (batch > 1 ? 2 : 1); k++)
    for (int graphs = 1; graphs >= 0; graphs--)
      bench_decode (&b, sizes[k], graphs, STEP_IDS);
  bench_decode (&b, 1, TRUE, STEP_LOGITS);
  for (int k = 0; k < (batch > 1 ? 2 : 1); k++)
    bench_decode (&b, sizes[k], TRUE, STEP_CANDIDATES);
  bench_answer (&b, 1);
  if (batch > 1)
    bench_answer (&b, batch);

  /* The prefill again with the tensor-core flash attention kernel
   * (AVQ_CUDA_ATTENTION=flash) on the same weights: speed, and how far its
   * first logits are from the cuBLAS-attention ones. */
  const int V = sh->vocab;
  prefill (&b, 0, TRUE);
  g_autofree float *gemm_logits = g_memdup2 (b.logits, sizeof (float) * V);
  avq_cuda_llama_free (b.cl);
  g_setenv ("AVQ_CUDA_ATTENTION", "flash", TRUE);
  b.cl = make_decoder (sh, layers, host_weights, ctx, &load_ms);
  g_unsetenv ("AVQ_CUDA_ATTENTION");
  bench_prefill (&b, "_flash");
  prefill (&b, 0, TRUE);
  g_print ("{\"figure\": \"llm_cuda_flash_vs_gemm_attention\", \"first_logits_rel_error\": "
           "%.3g}\n", avq_bench_rel_error (b.logits, gemm_logits, V));

  avq_cuda_llama_free (b.cl);
  g_free (b.emb);
  g_free (b.logits);
  g_free (b.ms);
}
#endif

int
main (int argc, char **argv)
{
  int runs = 20, layers = 32, batch = 8;
  gboolean host_weights = FALSE;
  g_autofree char *shape_name = NULL;
  GOptionEntry entries[] = {
    { "runs", 'n', 0, G_OPTION_ARG_INT, &runs, "Timed runs per figure (default 20)", "N" },
    { "layers", 0, 0, G_OPTION_ARG_INT, &layers, "Decoder layers (default 32: the 7B)", "L" },
    { "batch", 0, 0, G_OPTION_ARG_INT, &batch, "Sequences of the batched figures (default 8)", "B" },
    { "host-weights", 0, 0, G_OPTION_ARG_NONE, &host_weights,
      "Upload random host weights instead of making them on the device", NULL },
    { "shape", 0, 0, G_OPTION_ARG_STRING, &shape_name,
      "7b (default) or tiny (for the emulation test)", "S" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- the CUDA LLaMA decoder at the 7B shape");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_autoptr (GError) error = NULL;
  const Shape *shape = NULL;
  if (g_option_context_parse (ctx, &argc, &argv, &error))
    for (gsize i = 0; i < G_N_ELEMENTS (shapes); i++)
      if (g_strcmp0 (shape_name ? shape_name : "7b", shapes[i].name) == 0)
        shape = &shapes[i];
  if (shape == NULL || runs < 1 || layers < 1 || batch < 1 || batch > 64) {
    g_printerr ("bench-cuda-llm: %s\n", error ? error->message
                : "--runs >= 1, --layers >= 1, --batch 1 .. 64, --shape 7b|tiny");
    return 2;
  }
  if (!avq_cuda_available (&error)) {
    g_print ("CUDA unavailable: %s; skipping\n", error->message);
    return 77;
  }
#if AVQ_HAVE_CUDA
  /* The default figures are the cuBLAS attention's; flash is timed apart. */
  g_unsetenv ("AVQ_CUDA_ATTENTION");
  bench_llm (shape, layers, runs, batch, host_weights);
#endif
  return 0;
}
