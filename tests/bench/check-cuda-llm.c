/* The LLaMA decoder on CUDA against the CPU decoder at the real Vicuna-7B
 * shape (hidden 4096, 32 heads of 128, MLP 11008, vocab 32064) with random
 * F16 weights on a few layers: the correctness check the fixture (a tiny
 * model) cannot give, for tests/bench/gpu-check.sh. Both decoders read the
 * same model file through AvqLlama; the GPU one after avq_llama_use_cuda.
 *
 *   check-cuda-llm [--layers L] [--prompt N] [--steps S] [--dir DIR]
 *
 * Checks, each printed as one JSON line with its relative error (L2 norm of
 * the difference over the CPU's): the first logits after an N-position
 * prefill (random input embeddings), S decode steps fed the CPU's greedy
 * tokens, and a batched step over 3 sequences of different lengths
 * (avq_llama_decode_batch) against the CPU's batched step. Greedy ids are
 * compared where the CPU's top-2 margin is clear. Exit status 1 when a
 * relative error exceeds 1e-2 or a clear-margin greedy id differs, 77
 * without CUDA. Not a benchmark: no timings. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include "avq-engine.h"
#include "avq-llama.h"
#include "avq-model.h"
#include "bench-llama-model.h"
#include "bench-report.h"

#define TOL 1e-2
#define MARGIN 0.05

/* argmax and the gap to the runner-up */
static int
top (const float *x, int n, float *margin)
{
  int best = 0, second = -1;
  for (int k = 1; k < n; k++) {
    if (x[k] > x[best]) {
      second = best;
      best = k;
    } else if (second < 0 || x[k] > x[second]) {
      second = k;
    }
  }
  *margin = x[best] - x[second];
  return best;
}

static int failures;

static void
report (const char *what, const float *gpu, const float *cpu, int V, const char *extra)
{
  double rel = avq_bench_rel_error (gpu, cpu, V);
  float mg, mc;
  int tg = top (gpu, V, &mg), tc = top (cpu, V, &mc);
  gboolean same = tg == tc || mc <= MARGIN;
  if (rel > TOL || !same)
    failures++;
  g_print ("{\"check\": \"%s\", \"rel_error\": %.3g, \"greedy_cpu\": %d, \"greedy_cuda\": %d, "
           "\"cpu_margin\": %.3g, \"ok\": %s%s%s}\n", what, rel, tc, tg, mc,
           rel <= TOL && same ? "true" : "false", extra ? ", " : "", extra ? extra : "");
}

#define CHECK(call)                                          \
  do {                                                       \
    if (!(call))                                             \
      g_error ("%s: %s", #call, error ? error->message : "?"); \
  } while (0)

int
main (int argc, char **argv)
{
  int layers = 2, prompt = 611, steps = 4;
  g_autofree char *dir_opt = NULL;
  GOptionEntry entries[] = {
    { "layers", 'l', 0, G_OPTION_ARG_INT, &layers, "Decoder layers (default 2)", "L" },
    { "prompt", 'p', 0, G_OPTION_ARG_INT, &prompt, "Prefill positions (default 611)", "N" },
    { "steps", 's', 0, G_OPTION_ARG_INT, &steps, "Decode steps compared (default 4)", "S" },
    { "dir", 0, 0, G_OPTION_ARG_FILENAME, &dir_opt, "Where to write the model (default: a temp dir)", "DIR" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) octx = g_option_context_new ("- CUDA vs CPU LLaMA at the 7B shape");
  g_option_context_add_main_entries (octx, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (octx, &argc, &argv, &error) || layers < 1 || prompt < 8 ||
      steps < 1) {
    g_printerr ("check-cuda-llm: %s\n",
                error ? error->message : "--layers >= 1, --prompt >= 8, --steps >= 1");
    return 2;
  }
  if (!avq_cuda_available (&error)) {
    g_print ("CUDA unavailable: %s; skipping\n", error->message);
    return 77;
  }
  g_autofree char *dir = dir_opt ? g_strdup (dir_opt)
                                 : g_dir_make_tmp ("avq-check-cuda-llm-XXXXXX", &error);
  if (dir == NULL || g_mkdir_with_parents (dir, 0755) != 0)
    g_error ("cannot make the model directory: %s", error ? error->message : dir);
  CHECK (avq_bench_write_llama_config (dir, layers, &error));
  CHECK (avq_bench_write_llama_model (dir, layers, &error));
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  CHECK (model != NULL);
  const int ctx = prompt + steps + 8, V = AVQ_BENCH_LLAMA_VOCAB, H = AVQ_BENCH_LLAMA_HIDDEN;
  g_autoptr (AvqLlama) cpu = avq_llama_new (model, ctx, &error);
  CHECK (cpu != NULL);
  g_autoptr (AvqLlama) gpu = avq_llama_new (model, ctx, &error);
  CHECK (gpu != NULL);
  CHECK (avq_llama_use_cuda (gpu, &error));
  g_autofree char *desc = avq_llama_device_description (gpu);
  g_print ("{\"check\": \"setup\", \"layers\": %d, \"prompt\": %d, \"device\": \"%s\"}\n",
           layers, prompt, desc);

  /* Input embeddings: token rows of random ids, as a text prompt would be. */
  g_autofree int *ids = g_new (int, prompt);
  guint64 seed = 0x2545f4914f6cdd1dull;
  for (int i = 0; i < prompt; i++)
    ids[i] = (int) (avq_bench_xorshift (&seed) % 32000);
  g_autofree float *emb = g_new (float, (gsize) prompt * H);
  CHECK (avq_llama_embed (cpu, ids, prompt, emb, &error));

  g_autofree float *lc = g_new (float, (gsize) 3 * V);
  g_autofree float *lg = g_new (float, (gsize) 3 * V);
  CHECK (avq_llama_prefill (cpu, emb, prompt, lc, &error));
  CHECK (avq_llama_prefill (gpu, emb, prompt, lg, &error));
  report ("prefill_first_logits", lg, lc, V, NULL);

  for (int s = 0; s < steps; s++) {
    float m;
    int tok = top (lc, V, &m);
    CHECK (avq_llama_decode (cpu, tok, lc, &error));
    CHECK (avq_llama_decode (gpu, tok, lg, &error));
    g_autofree char *extra = g_strdup_printf ("\"step\": %d", s);
    report ("decode", lg, lc, V, extra);
  }

  /* Three sequences of different lengths, one batched step. */
  CHECK (avq_llama_set_sequences (cpu, 3, &error));
  CHECK (avq_llama_set_sequences (gpu, 3, &error));
  const int lens[3] = { prompt, prompt / 2, 5 };
  for (int q = 0; q < 3; q++) {
    CHECK (avq_llama_prefill_sequence (cpu, q, emb, lens[q], NULL, &error));
    CHECK (avq_llama_prefill_sequence (gpu, q, emb, lens[q], NULL, &error));
  }
  const int seqs[3] = { 2, 0, 1 }, toks[3] = { ids[1], ids[2], ids[3] };
  CHECK (avq_llama_decode_batch (cpu, seqs, toks, 3, lc, &error));
  CHECK (avq_llama_decode_batch (gpu, seqs, toks, 3, lg, &error));
  for (int r = 0; r < 3; r++) {
    g_autofree char *extra = g_strdup_printf ("\"sequence\": %d, \"position\": %d", seqs[r],
                                              lens[seqs[r]]);
    report ("batched_decode", lg + (gsize) r * V, lc + (gsize) r * V, V, extra);
  }

  if (dir_opt == NULL) {
    g_autofree char *m = g_build_filename (dir, "model.safetensors", NULL);
    g_autofree char *c = g_build_filename (dir, "config.json", NULL);
    g_unlink (m);
    g_unlink (c);
    g_rmdir (dir);
  }
  g_print ("{\"check\": \"summary\", \"failures\": %d}\n", failures);
  return failures == 0 ? 0 : 1;
}
