/* Next-token choice from sampling candidates: see avq-sampling.h. */
#include "avq-sampling.h"
#include "avq-logit-order.h"

#include <math.h>
#include <string.h>

void
avq_token_candidates_init (AvqTokenCandidates *c, int capacity)
{
  g_return_if_fail (c != NULL && capacity >= 1);
  memset (c, 0, sizeof *c);
  c->capacity = capacity;
  c->logit = g_new (float, capacity);
  c->id = g_new (int, capacity);
}

void
avq_token_candidates_clear (AvqTokenCandidates *c)
{
  if (c == NULL)
    return;
  g_free (c->logit);
  g_free (c->id);
  memset (c, 0, sizeof *c);
}

/* A min-heap of ranks: the root is the lowest of the best so far, the one
 * a better rank replaces. */
static void
heap_sift_down (guint64 *heap, int n, int i)
{
  for (;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && heap[l] < heap[m])
      m = l;
    if (r < n && heap[r] < heap[m])
      m = r;
    if (m == i)
      return;
    guint64 t = heap[i];
    heap[i] = heap[m];
    heap[m] = t;
    i = m;
  }
}

static int
rank_id (guint64 rank)
{
  return (int) (0xffffffffu - (guint32) rank);
}

void
avq_token_candidates_from_logits (const float *logits, int n, int k,
                                  float temperature, AvqTokenCandidates *out)
{
  g_return_if_fail (out != NULL && out->capacity >= 1);
  g_return_if_fail (n >= 1 && logits != NULL && k >= 1);
  const int kk = MIN (MIN (k, out->capacity), n);
  g_autofree guint64 *heap = g_new (guint64, kk);
  int held = 0;
  for (int i = 0; i < n; i++) {
    guint64 r = avq_logit_rank (logits[i], i);
    if (held < kk) {
      /* sift up */
      int j = held++;
      heap[j] = r;
      while (j > 0 && heap[(j - 1) / 2] > heap[j]) {
        guint64 t = heap[j];
        heap[j] = heap[(j - 1) / 2];
        heap[(j - 1) / 2] = t;
        j = (j - 1) / 2;
      }
    } else if (r > heap[0]) {
      heap[0] = r;
      heap_sift_down (heap, kk, 0);
    }
  }
  /* popping the minimum fills the list from its end */
  for (int j = kk - 1; j >= 0; j--) {
    int id = rank_id (heap[0]);
    out->id[j] = id;
    out->logit[j] = isnan (logits[id]) ? -INFINITY : logits[id];
    heap[0] = heap[--held];
    heap_sift_down (heap, held, 0);
  }
  out->n = kk;
  out->complete = kk == n;
  out->max = out->logit[0];
  out->sum = 0;
  /* A largest logit of +-infinity leaves no distribution to sum: such a
   * row picks its first candidate. */
  if (temperature > 0 && isfinite (out->max)) {
    double sum = 0;
    for (int i = 0; i < n; i++)
      if (!isnan (logits[i]))
        sum += expf ((logits[i] - out->max) / temperature);
    out->sum = sum;
  }
}

int
avq_sample_candidates (const AvqSamplingRule *rule, const AvqTokenCandidates *c,
                       double r)
{
  g_return_val_if_fail (rule != NULL && c != NULL, -1);
  if (c->n <= 0)
    return -1;
  const float t = rule->temperature;
  if (!(t > 0) || !(c->sum > 0) || !isfinite (c->max))
    return c->id[0];
  /* the pool: the top_k (when the candidates hold them all), or the row */
  int pool = c->n;
  double total = c->sum;
  gboolean whole = c->complete;   /* the candidates hold the whole pool */
  if (rule->top_k > 0 && (rule->top_k <= c->n || c->complete)) {
    pool = MIN (rule->top_k, c->n);
    total = 0;
    for (int j = 0; j < pool; j++)
      total += expf ((c->logit[j] - c->max) / t);
    whole = TRUE;
  } else if (rule->top_k > 0) {
    return -1;   /* the pool goes on past these candidates */
  }
  /* the nucleus: its length and sum */
  int keep = pool;
  double kept = total;
  if (rule->top_p < 1.0f) {
    const double limit = (double) rule->top_p * total;
    double cum = 0;
    keep = -1;
    for (int j = 0; j < pool; j++) {
      cum += expf ((c->logit[j] - c->max) / t);
      if (cum >= limit) {
        keep = j + 1;
        break;
      }
    }
    if (keep < 0) {
      if (!whole)
        return -1;   /* the nucleus goes on past these candidates */
      keep = pool;
    }
    kept = cum;
  }
  const double target = r * kept;
  double acc = 0;
  for (int j = 0; j < keep; j++) {
    acc += expf ((c->logit[j] - c->max) / t);
    if (target < acc)
      return c->id[j];
  }
  /* Past the nucleus's end only by rounding when the nucleus is complete
   * here; otherwise the draw lies in the part of the row not held. */
  if (whole || rule->top_p < 1.0f)
    return c->id[keep - 1];
  return -1;
}

int
avq_sample_logits (const AvqSamplingRule *rule, const float *logits, int n,
                   double r)
{
  g_return_val_if_fail (rule != NULL && logits != NULL && n >= 1, 0);
  AvqTokenCandidates c;
  avq_token_candidates_init (&c, MIN (n, AVQ_SAMPLING_CANDIDATES));
  avq_token_candidates_from_logits (logits, n, c.capacity, rule->temperature, &c);
  int tok = avq_sample_candidates (rule, &c, r);
  if (tok < 0) {
    avq_token_candidates_clear (&c);
    avq_token_candidates_init (&c, n);
    avq_token_candidates_from_logits (logits, n, n, rule->temperature, &c);
    tok = avq_sample_candidates (rule, &c, r);
  }
  avq_token_candidates_clear (&c);
  return tok;
}
