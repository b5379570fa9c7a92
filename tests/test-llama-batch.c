/* The several-sequence API of AvqLlama (avq_llama_set_sequences,
 * avq_llama_prefill_sequence, avq_llama_decode_batch, avq_llama_reserve,
 * avq_llava_generate_batch) after avq_llama_use_cuda, against the CPU
 * decoder: what lib/avq-llama.c's dispatch adds on top of the backend
 * (tests/test-cuda.c tests lib/cuda/avq-cuda-llama.c directly, and
 * tests/test-llama.c the CPU batching). Exits 77 where CUDA is unavailable;
 * test-llama-batch-emu runs it on the stand-ins of tests/cuda-emu*.cpp.
 * The device computes in fp16: 1e-2 relative, as in test-cuda.c. */
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "avq-engine.h"
#include "avq-error.h"
#include "avq-llama.h"
#include "avq-llava.h"
#include "test-util.h"

#define TOL 1e-2
#define N_SEQS 3
#define STEPS 4

static void
append_ids (GArray *ids, const char *member)
{
  JsonObject *p = json_object_get_object_member (avq_test_reference_json (), "llm.prompt_ids");
  JsonArray *a = json_object_get_array_member (p, member);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    int id = (int) json_array_get_int_element (a, i);
    g_array_append_val (ids, id);
  }
}

/* prefix + one <image> + suffix; or the text alone; or the prefix alone */
static GArray *
prompt (int which)
{
  GArray *ids = g_array_new (FALSE, FALSE, sizeof (int));
  append_ids (ids, "prefix");
  if (which == 0) {
    int image = 32000;
    g_array_append_val (ids, image);
  }
  if (which < 2)
    append_ids (ids, "suffix");
  return ids;
}

static const char *const tags[N_SEQS] = { "hf", "avq.L0-derive", "avq.L1-side8" };
static const char *const feature_names[N_SEQS] = {
  "projector.out", "avq.L0-derive.projector", "avq.L1-side8.projector"
};

/* chelsea's projected features for fixture case c */
static float *
features (int c)
{
  gsize numel;
  g_autofree float *all = avq_test_reference_f32 (feature_names[c], &numel);
  g_assert_cmpuint (numel, ==, 3 * 576 * 64);
  return g_memdup2 (all + 576 * 64, 576 * 64 * sizeof (float));
}

static AvqLlama *
new_llama (int ctx, int n_seqs, gboolean cuda)
{
  g_autoptr (GError) error = NULL;
  AvqLlama *llama = avq_llama_new (avq_test_tiny_model (), ctx, &error);
  g_assert_no_error (error);
  avq_llama_set_threads (llama, 2);
  /* on the GPU decoder before the move: use_cuda carries the count over */
  g_assert_true (avq_llama_set_sequences (llama, n_seqs, &error));
  g_assert_no_error (error);
  if (cuda) {
    g_assert_true (avq_llama_use_cuda (llama, &error));
    g_assert_no_error (error);
    g_assert_true (avq_llama_on_cuda (llama));
  }
  g_assert_cmpint (avq_llama_sequences (llama), ==, n_seqs);
  return llama;
}

static double
close_to (const float *got, const float *want, int n, const char *what)
{
  double rel = avq_test_rel_error (got, want, n);
  if (rel > TOL)
    g_test_message ("%s: rel err %.3g", what, rel);
  g_assert_cmpfloat (rel, <=, TOL);
  return rel;
}

static void
test_decode (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqLlama) cpu = new_llama (1024, N_SEQS, FALSE);
  g_autoptr (AvqLlama) gpu = new_llama (1024, N_SEQS, TRUE);
  const int V = avq_llama_vocab_size (cpu);
  g_autofree float *image = features (0);
  float *emb[N_SEQS];
  int len[N_SEQS];
  for (int s = 0; s < N_SEQS; s++) {
    g_autoptr (GArray) ids = prompt (s);
    emb[s] = avq_llava_embed_prompt (cpu, (int *) ids->data, ids->len, s == 0 ? image : NULL,
                                     s == 0 ? 576 : 0, &len[s], &error);
    g_assert_no_error (error);
  }
  g_assert_cmpint (len[0], ==, 594);

  g_autofree float *lc = g_new (float, (gsize) N_SEQS * V);
  g_autofree float *lg = g_new (float, (gsize) N_SEQS * V);
  /* cur[s]: the CPU's latest logits of sequence s, for its greedy token */
  g_autofree float *cur = g_new (float, (gsize) N_SEQS * V);
  double worst = 0;
  for (int s = N_SEQS - 1; s >= 0; s--) {
    g_assert_true (avq_llama_prefill_sequence (cpu, s, emb[s], len[s], cur + (gsize) s * V,
                                               &error));
    g_assert_true (avq_llama_prefill_sequence (gpu, s, emb[s], len[s], lg, &error));
    g_assert_no_error (error);
    worst = MAX (worst, close_to (lg, cur + (gsize) s * V, V, "prefill"));
  }

  /* calls of (count, sequences...) per step; each sequence advances once */
  static const int plan[STEPS][2][4] = {
    { { 3, 0, 1, 2 }, { 0 } },
    { { 2, 2, 0 }, { 1, 1 } },
    { { 3, 1, 2, 0 }, { 0 } },
    { { 1, 2 }, { 2, 1, 0 } },
  };
  for (int k = 0; k < STEPS; k++) {
    if (k == 2) {
      /* grow the caches under every sequence (the device copies each) */
      g_assert_true (avq_llama_reserve (cpu, 1100, &error));
      g_assert_true (avq_llama_reserve (gpu, 1100, &error));
      g_assert_no_error (error);
    }
    for (int c = 0; c < 2; c++) {
      int n = plan[k][c][0], seqs[N_SEQS], toks[N_SEQS];
      if (n == 0)
        continue;
      for (int i = 0; i < n; i++) {
        seqs[i] = plan[k][c][1 + i];
        toks[i] = avq_logits_argmax (cur + (gsize) seqs[i] * V, V);
      }
      g_assert_true (avq_llama_decode_batch (cpu, seqs, toks, n, lc, &error));
      g_assert_true (avq_llama_decode_batch (gpu, seqs, toks, n, lg, &error));
      g_assert_no_error (error);
      for (int i = 0; i < n; i++) {
        worst = MAX (worst, close_to (lg + (gsize) i * V, lc + (gsize) i * V, V,
                                      "batch decode"));
        memcpy (cur + (gsize) seqs[i] * V, lc + (gsize) i * V, V * sizeof (float));
      }
    }
    for (int s = 0; s < N_SEQS; s++) {
      g_assert_cmpint (avq_llama_sequence_n_past (gpu, s), ==, len[s] + k + 1);
      g_assert_cmpint (avq_llama_sequence_n_past (cpu, s), ==, len[s] + k + 1);
    }
  }
  g_test_message ("cuda: %d sequences, %d batched steps: worst rel err %.3g vs the CPU",
                  N_SEQS, STEPS, worst);

  /* refused batches change nothing on the device path either */
  int twice[2] = { 1, 1 }, outside[1] = { N_SEQS }, toks2[2] = { 5, 6 }, bad_tok[1] = { V };
  int one[1] = { 0 };
  g_assert_false (avq_llama_decode_batch (gpu, twice, toks2, 2, lg, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_llama_decode_batch (gpu, outside, toks2, 1, lg, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_llama_decode_batch (gpu, one, bad_tok, 1, lg, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  for (int s = 0; s < N_SEQS; s++)
    g_assert_cmpint (avq_llama_sequence_n_past (gpu, s), ==, len[s] + STEPS);

  /* the single-sequence calls are sequence 0's */
  int tok = avq_logits_argmax (cur, V);
  g_assert_true (avq_llama_decode (cpu, tok, lc, &error));
  g_assert_true (avq_llama_decode (gpu, tok, lg, &error));
  g_assert_no_error (error);
  close_to (lg, lc, V, "decode of sequence 0");
  g_assert_cmpint (avq_llama_n_past (gpu), ==, len[0] + STEPS + 1);
  g_assert_cmpint (avq_llama_sequence_n_past (gpu, 1), ==, len[1] + STEPS);

  /* another count on the device: every position forgotten */
  g_assert_true (avq_llama_set_sequences (gpu, 2, &error));
  g_assert_no_error (error);
  g_assert_cmpint (avq_llama_sequences (gpu), ==, 2);
  g_assert_cmpint (avq_llama_sequence_n_past (gpu, 0), ==, 0);
  g_assert_cmpint (avq_llama_sequence_n_past (gpu, 1), ==, 0);
  avq_llama_reset_sequence (cpu, 1);
  g_assert_true (avq_llama_prefill_sequence (cpu, 1, emb[1], len[1], lc, &error));
  g_assert_true (avq_llama_prefill_sequence (gpu, 1, emb[1], len[1], lg, &error));
  g_assert_no_error (error);
  close_to (lg, lc, V, "prefill after set_sequences on the device");
  for (int s = 0; s < N_SEQS; s++)
    g_free (emb[s]);
}

/* avq_llava_generate_batch on the device: HF's greedy ids while HF's
 * margin is clear of fp16 noise, for the three fixture prompts at once. */
static void
test_generate (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqLlama) gpu = new_llama (64, 1, TRUE);
  float *feat[N_SEQS];
  GArray *ids[N_SEQS], *out[N_SEQS];
  AvqLlavaRequest req[N_SEQS];
  AvqGenerateStats stats[N_SEQS];
  for (int i = 0; i < N_SEQS; i++) {
    feat[i] = features (i);
    ids[i] = prompt (0);
    out[i] = g_array_new (FALSE, FALSE, sizeof (int));
    req[i] = (AvqLlavaRequest) { (int *) ids[i]->data, ids[i]->len, feat[i], 576 };
  }
  AvqGenerateOptions opts;
  avq_generate_options_init (&opts);
  opts.max_new_tokens = 8;
  g_assert_true (avq_llava_generate_batch (gpu, req, N_SEQS, &opts, out, stats, &error));
  g_assert_no_error (error);
  g_assert_cmpint (avq_llama_sequences (gpu), ==, N_SEQS);
  for (int i = 0; i < N_SEQS; i++) {
    g_autofree char *name = g_strdup_printf ("llm.%s.greedy", tags[i]);
    JsonArray *greedy = json_object_get_array_member (avq_test_reference_json (), name);
    int compared = 0;
    for (guint k = 0; k < out[i]->len && k < 8; k++) {
      JsonObject *step = json_array_get_object_element (greedy, k);
      if (json_object_get_double_member (step, "margin") <= 0.05)
        break;
      g_assert_cmpint (g_array_index (out[i], int, k), ==,
                       (int) json_object_get_int_member (step, "id"));
      compared++;
    }
    g_test_message ("cuda generate_batch, %s: %d greedy ids equal to HF's", tags[i], compared);
    g_assert_cmpint (compared, >=, 1);
    g_assert_cmpint (stats[i].prompt_positions, ==, 594);
    g_assert_cmpint (stats[i].generated, ==, (int) out[i]->len);
    g_array_unref (out[i]);
    g_array_unref (ids[i]);
    g_free (feat[i]);
  }
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) why = NULL;
  g_unsetenv ("AVQ_DEVICE");
  if (!avq_cuda_available (&why)) {
    printf ("CUDA unavailable: %s; skipping\n", why->message);
    return 77;
  }
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/llama-batch/cuda/decode", test_decode);
  g_test_add_func ("/llama-batch/cuda/generate", test_generate);
  return g_test_run ();
}
