/* LLaVA prompt assembly and generation: see avq-llava.h. */
#include "avq-llava.h"
#include "avq-error.h"
#include "avq-logit-order.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void
avq_generate_options_init (AvqGenerateOptions *options)
{
  g_return_if_fail (options != NULL);
  memset (options, 0, sizeof *options);
  options->max_new_tokens = 64;
  options->temperature = 0.0f;
  options->top_p = 1.0f;
  options->eos_token_id = -1;
}

int
avq_logits_argmax (const float *logits, int n)
{
  int best = 0;
  guint32 best_key = n > 0 ? avq_logit_order_key (logits[0]) : 0;
  for (int i = 1; i < n; i++) {
    guint32 key = avq_logit_order_key (logits[i]);
    if (key > best_key) {   /* strict: the lowest id wins a tie */
      best = i;
      best_key = key;
    }
  }
  return best;
}

float *
avq_llava_embed_prompt (const AvqLlama *llama, const int *prompt_ids, int n_ids,
                        const float *image_features, int n_image_rows,
                        int *n_positions, GError **error)
{
  g_return_val_if_fail (llama != NULL && n_positions != NULL, NULL);
  g_return_val_if_fail (n_ids == 0 || prompt_ids != NULL, NULL);
  const AvqLlavaConfig *cfg = &avq_llama_get_model (llama)->config;
  int H = avq_llama_hidden_size (llama), V = avq_llama_vocab_size (llama);
  int image_token = cfg->image_token_index, seq = cfg->image_seq_length;

  if (n_ids <= 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT, "empty prompt");
    return NULL;
  }
  if (n_image_rows < 0 || (n_image_rows > 0 && image_features == NULL)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "%d image feature rows but no feature data", n_image_rows);
    return NULL;
  }

  int n_image = 0, longest_run = 0, run = 0;
  for (int i = 0; i < n_ids; i++) {
    if (prompt_ids[i] == image_token) {
      n_image++;
      run++;
      longest_run = MAX (longest_run, run);
    } else {
      run = 0;
      if (prompt_ids[i] < 0 || prompt_ids[i] >= V) {
        g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                     "prompt token %d at position %d is outside the vocabulary (%d)",
                     prompt_ids[i], i, V);
        return NULL;
      }
    }
  }

  /* rows each image token stands for */
  int per_token;
  if (n_image == n_image_rows)
    per_token = 1;
  else if (n_image > 0 && longest_run == 1 && seq > 0 &&
           (gint64) n_image * seq == n_image_rows)
    per_token = seq;
  else {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "the prompt has %d image token%s (id %d) but %d image feature "
                 "rows were given (expected one row per image token, or %d per "
                 "single <image> token)", n_image, n_image == 1 ? "" : "s",
                 image_token, n_image_rows, seq);
    return NULL;
  }

  gint64 total = (gint64) n_ids - n_image + (gint64) n_image * per_token;
  if (total > G_MAXINT / MAX (H, 1)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "prompt too long: %" G_GINT64_FORMAT " positions", total);
    return NULL;
  }
  float *emb = g_new (float, (gsize) total * H);
  gsize pos = 0, row = 0;
  for (int i = 0; i < n_ids; i++) {
    if (prompt_ids[i] == image_token) {
      memcpy (emb + pos * H, image_features + row * H,
              (gsize) per_token * H * sizeof (float));
      pos += per_token;
      row += per_token;
    } else {
      /* ids were range-checked above */
      if (!avq_llama_embed (llama, &prompt_ids[i], 1, emb + pos * H, error)) {
        g_free (emb);
        return NULL;
      }
      pos++;
    }
  }
  *n_positions = (int) total;
  return emb;
}

static gboolean
prefill_prompt (AvqLlama *llama, const int *prompt_ids, int n_ids,
                const float *image_features, int n_image_rows, int extra,
                float *logits, int *n_positions, GError **error)
{
  int n = 0;
  g_autofree float *emb = avq_llava_embed_prompt (llama, prompt_ids, n_ids,
                                                  image_features, n_image_rows,
                                                  &n, error);
  if (emb == NULL)
    return FALSE;
  avq_llama_reset (llama);
  if (!avq_llama_reserve (llama, n + MAX (extra, 0), error))
    return FALSE;
  if (n_positions)
    *n_positions = n;
  return avq_llama_prefill (llama, emb, n, logits, error);
}

gboolean
avq_llava_prefill (AvqLlama *llama, const int *prompt_ids, int n_ids,
                   const float *image_features, int n_image_rows,
                   float *logits, GError **error)
{
  return prefill_prompt (llama, prompt_ids, n_ids, image_features, n_image_rows,
                         0, logits, NULL, error);
}

/* `*options`, or the defaults when NULL, checked. */
static gboolean
options_or_defaults (const AvqGenerateOptions **options, AvqGenerateOptions *defaults,
                     GError **error)
{
  if (*options == NULL) {
    avq_generate_options_init (defaults);
    *options = defaults;
  }
  if ((*options)->temperature > 0 && !((*options)->top_p > 0)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "top_p must be > 0 (got %g)", (*options)->top_p);
    return FALSE;
  }
  if ((*options)->top_k < 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "top_k must be >= 0 (got %d; 0: no limit)", (*options)->top_k);
    return FALSE;
  }
  return TRUE;
}

/* How one request chooses its tokens (avq-sampling.h): the rule, its own
 * random stream (NULL when greedy) and how many candidates a step needs. */
typedef struct {
  AvqSamplingRule rule;
  GRand *rng;
  int k;   /* candidates a step asks for: 1 greedy */
} Chooser;

static void
chooser_init (Chooser *ch, const AvqGenerateOptions *options, guint32 seed)
{
  ch->rule.temperature = options->temperature;
  ch->rule.top_p = MIN (options->top_p, 1.0f);
  ch->rule.top_k = options->top_k;
  ch->rng = options->temperature > 0 ? g_rand_new_with_seed (seed) : NULL;
  ch->k = ch->rng ? AVQ_SAMPLING_CANDIDATES : 1;
}

static void
chooser_clear (Chooser *ch)
{
  if (ch->rng != NULL)
    g_rand_free (ch->rng);
  ch->rng = NULL;
}

/* One draw per token chosen, whichever way it is decided. */
static double
chooser_draw (Chooser *ch)
{
  return ch->rng ? g_rand_double (ch->rng) : 0.0;
}

/* The token from a whole row of logits (after a prefill). */
static int
choose_from_logits (Chooser *ch, const float *logits, int vocab)
{
  return avq_sample_logits (&ch->rule, logits, vocab, chooser_draw (ch));
}

/* The token from row `row` of the last candidates step: its candidates,
 * or, when they cannot decide, its whole row fetched from the decoder
 * into `scratch` (vocab floats; counted in *fetched). */
static gboolean
choose_from_step (Chooser *ch, AvqLlama *llama, const AvqTokenCandidates *c,
                  int row, float *scratch, int *fetched, int *token,
                  GError **error)
{
  const double r = chooser_draw (ch);
  int tok = avq_sample_candidates (&ch->rule, c, r);
  if (tok < 0) {
    if (!avq_llama_step_logits (llama, row, scratch, error))
      return FALSE;
    tok = avq_sample_logits (&ch->rule, scratch, avq_llama_vocab_size (llama), r);
    (*fetched)++;
  }
  *token = tok;
  return TRUE;
}

gboolean
avq_llava_generate (AvqLlama *llama, const int *prompt_ids, int n_ids,
                    const float *image_features, int n_image_rows,
                    const AvqGenerateOptions *options, GArray *out_ids,
                    AvqGenerateStats *stats, GError **error)
{
  g_return_val_if_fail (llama != NULL && out_ids != NULL, FALSE);
  g_return_val_if_fail (g_array_get_element_size (out_ids) == sizeof (int), FALSE);
  AvqGenerateOptions defaults;
  if (!options_or_defaults (&options, &defaults, error))
    return FALSE;
  AvqGenerateStats st = { 0 };
  int V = avq_llama_vocab_size (llama);
  int eos = options->eos_token_id >= 0 ? options->eos_token_id
      : avq_llama_get_config (llama)->eos_token_id;
  int max_new = MAX (options->max_new_tokens, 0);
  g_autofree float *logits = g_new (float, V);

  gint64 t0 = g_get_monotonic_time ();
  if (!prefill_prompt (llama, prompt_ids, n_ids, image_features, n_image_rows,
                       max_new, logits, &st.prompt_positions, error))
    return FALSE;
  gint64 t1 = g_get_monotonic_time ();
  st.prefill_ms = (t1 - t0) / 1000.0;

  Chooser ch;
  chooser_init (&ch, options, options->seed);
  AvqTokenCandidates cand;
  avq_token_candidates_init (&cand, ch.k);
  gboolean ok = TRUE;
  int tok = max_new > 0 ? choose_from_logits (&ch, logits, V) : eos;
  while (st.generated < max_new) {
    if (tok == eos) {
      st.hit_eos = TRUE;
      if (options->on_token)
        options->on_token (tok, options->user_data);
      break;
    }
    g_array_append_val (out_ids, tok);
    st.generated++;
    if (options->on_token && !options->on_token (tok, options->user_data))
      break;
    if (st.generated == max_new)
      break;   /* the last token's own logits are never needed */
    if (!avq_llama_decode_candidates (llama, tok, ch.k, ch.rule.temperature, &cand,
                                      error) ||
        !choose_from_step (&ch, llama, &cand, 0, logits, &st.rows_fetched, &tok,
                           error)) {
      ok = FALSE;
      break;
    }
  }
  avq_token_candidates_clear (&cand);
  chooser_clear (&ch);
  st.decode_ms = (g_get_monotonic_time () - t1) / 1000.0;
  if (stats)
    *stats = st;
  return ok;
}

gboolean
avq_llava_generate_batch (AvqLlama *llama, const AvqLlavaRequest *requests, int n,
                          const AvqGenerateOptions *options, GArray **out_ids,
                          AvqGenerateStats *stats, GError **error)
{
  g_return_val_if_fail (llama != NULL, FALSE);
  g_return_val_if_fail (n <= 0 || (requests != NULL && out_ids != NULL), FALSE);
  for (int i = 0; i < n; i++)
    g_return_val_if_fail (out_ids[i] != NULL &&
                          g_array_get_element_size (out_ids[i]) == sizeof (int), FALSE);
  if (n <= 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "a batch needs at least one request (got %d)", n);
    return FALSE;
  }
  AvqGenerateOptions defaults;
  if (!options_or_defaults (&options, &defaults, error))
    return FALSE;
  int V = avq_llama_vocab_size (llama);
  int eos = options->eos_token_id >= 0 ? options->eos_token_id
      : avq_llama_get_config (llama)->eos_token_id;
  int max_new = MAX (options->max_new_tokens, 0);
  gboolean ok = FALSE, prefilled = FALSE;
  float **emb = g_new0 (float *, n);
  g_autofree AvqGenerateStats *st = g_new0 (AvqGenerateStats, n);
  g_autofree float *logits = g_new (float, V);
  g_autofree gboolean *active = g_new0 (gboolean, n);
  g_autofree int *seqs = g_new (int, n), *toks = g_new (int, n), *next = g_new (int, n);
  Chooser *ch = g_new0 (Chooser, n);
  AvqTokenCandidates *cand = g_new0 (AvqTokenCandidates, n);   /* per step row */
  /* every request draws as it would alone: from options->seed */
  for (int i = 0; i < n; i++) {
    chooser_init (&ch[i], options, options->seed);
    avq_token_candidates_init (&cand[i], ch[i].k);
  }

  /* every prompt is checked (embedded) before any sequence changes */
  int longest = 0;
  for (int i = 0; i < n; i++) {
    const AvqLlavaRequest *r = &requests[i];
    emb[i] = avq_llava_embed_prompt (llama, r->prompt_ids, r->n_ids, r->image_features,
                                     r->n_image_rows, &st[i].prompt_positions, error);
    if (emb[i] == NULL) {
      g_prefix_error (error, "request %d: ", i);
      goto out;
    }
    longest = MAX (longest, st[i].prompt_positions);
  }
  if (avq_llama_sequences (llama) < n && !avq_llama_set_sequences (llama, n, error))
    goto out;
  if (!avq_llama_reserve (llama, longest + max_new, error))
    goto out;

  for (int i = 0; i < n; i++) {
    gint64 t0 = g_get_monotonic_time ();
    avq_llama_reset_sequence (llama, i);
    if (!avq_llama_prefill_sequence (llama, i, emb[i], st[i].prompt_positions,
                                     logits, error)) {
      g_prefix_error (error, "request %d: ", i);
      goto out;
    }
    st[i].prefill_ms = (g_get_monotonic_time () - t0) / 1000.0;
    g_clear_pointer (&emb[i], g_free);
    active[i] = max_new > 0;
    if (active[i])
      next[i] = choose_from_logits (&ch[i], logits, V);
  }
  prefilled = TRUE;

  gint64 t_decode = g_get_monotonic_time ();
  ok = TRUE;
  for (;;) {
    /* the same choices as avq_llava_generate, per request */
    int m = 0;
    for (int i = 0; i < n; i++) {
      if (!active[i])
        continue;
      const int tok = next[i];
      if (tok == eos) {
        st[i].hit_eos = TRUE;
        active[i] = FALSE;
      } else {
        g_array_append_val (out_ids[i], tok);
        if (++st[i].generated == max_new)
          active[i] = FALSE;   /* the last token's own logits are never needed */
      }
      if (!active[i]) {
        st[i].decode_ms = (g_get_monotonic_time () - t_decode) / 1000.0;
        continue;
      }
      seqs[m] = i;
      toks[m] = tok;
      m++;
    }
    if (m == 0)
      break;
    /* The options are shared: every row asks for the same k, into the
     * storage of its row (cand[j]). */
    if (!avq_llama_decode_batch_candidates (llama, seqs, toks, m, ch[0].k,
                                            ch[0].rule.temperature, cand, error)) {
      ok = FALSE;
      break;
    }
    for (int j = 0; j < m && ok; j++) {
      const int i = seqs[j];
      ok = choose_from_step (&ch[i], llama, &cand[j], j, logits,
                             &st[i].rows_fetched, &next[i], error);
    }
    if (!ok)
      break;
  }
  if (stats != NULL && prefilled)   /* every prompt ran */
    memcpy (stats, st, n * sizeof *stats);

out:
  for (int i = 0; i < n; i++) {
    g_free (emb[i]);
    chooser_clear (&ch[i]);
    avq_token_candidates_clear (&cand[i]);
  }
  g_free (emb);
  g_free (ch);
  g_free (cand);
  return ok;
}
