/* Choosing the next token from a step's logits: greedy, or temperature and
 * nucleus (top-p) sampling, made on the host from a row's candidates.
 *
 * Candidates are a row's most likely tokens in avq-logit-order.h's order
 * (larger logit first, equal logits lowest id first, NaN as -infinity)
 * with the row's largest logit and its softmax sum at the temperature.
 * The CPU decoder derives them from its logits; the CUDA decoder computes
 * them on the device and copies back a few KiB instead of the row (128 KiB
 * at the 7B vocabulary). The rule below decides from the candidates when
 * it can and says when it cannot (the nucleus reaches past them, or the
 * draw lands beyond them); the caller then runs it on the whole row
 * (avq_sample_logits), which always decides, with the same draw: the token
 * is the one the whole row gives, whichever way it was reached.
 *
 * The rule, for temperature T > 0, with p_i = expf ((l_i - max) / T)
 * (0 for NaN), in candidate order:
 *   the pool is the first top_k tokens (the whole row when top_k <= 0),
 *   S the sum of its p_i (double; the row's sum when it is the row);
 *   the nucleus is the pool's shortest prefix whose sum reaches top_p S
 *   (the whole pool when top_p >= 1, its sum then being S); the token is
 *   the first in the nucleus at which the running sum exceeds r times the
 *   nucleus sum, r in [0, 1) the caller's draw (the nucleus's last token
 *   if rounding leaves r just above).
 * T <= 0 is greedy: the first candidate. This is HF's order of warpers
 * (temperature, top-k, top-p); HF's generate samples with top_k = 50
 * unless told otherwise, this rule with top_k = 0. With 0 < top_k <=
 * AVQ_SAMPLING_CANDIDATES a device's candidates always decide. */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

/* Candidates a backend hands back per row (at most). */
#define AVQ_SAMPLING_CANDIDATES 256

typedef struct {
  float temperature;   /* <= 0: greedy */
  float top_p;         /* in (0, 1]; >= 1: the whole pool */
  int top_k;           /* > 0: the pool is the top_k most likely; <= 0: all */
} AvqSamplingRule;

typedef struct {
  int n;               /* candidates held, <= capacity */
  gboolean complete;   /* they are the whole row (n == its length) */
  float max;           /* the row's largest logit: logit[0] when n > 0 */
  double sum;          /* sum over the whole row of expf ((l - max) / T) at
                        * the temperature they were made for; 0 for T <= 0 */
  int capacity;
  float *logit;        /* [capacity]: NaN stored as -infinity */
  int *id;             /* [capacity] */
} AvqTokenCandidates;

/* Storage for `capacity` candidates (>= 1); clear frees it. */
void avq_token_candidates_init (AvqTokenCandidates *c, int capacity);
void avq_token_candidates_clear (AvqTokenCandidates *c);

/* The first min(k, capacity, n) candidates of a row of n logits and its
 * sum at `temperature` (what the CUDA kernel avq_cuk_top_candidates
 * computes on the device, which sums in float). */
void avq_token_candidates_from_logits (const float *logits, int n, int k,
                                       float temperature,
                                       AvqTokenCandidates *out);

/* The rule above on candidates made for rule->temperature; `r` in [0, 1)
 * (ignored when greedy). Returns the token, or -1 when these candidates
 * cannot decide (never when complete, never when greedy with n > 0). */
int avq_sample_candidates (const AvqSamplingRule *rule,
                           const AvqTokenCandidates *c, double r);

/* The rule on a whole row of n logits; always decides. Tries the top
 * AVQ_SAMPLING_CANDIDATES first, then the whole row. */
int avq_sample_logits (const AvqSamplingRule *rule, const float *logits,
                       int n, double r);

G_END_DECLS
