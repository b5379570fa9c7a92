/* The next-token rule of lib/avq-sampling.c: candidates against a brute
 * force sort, the promise that candidates either decide as the whole row
 * would or say they cannot, and the distribution the draws follow. */
#include <glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "avq-llava.h"
#include "avq-logit-order.h"
#include "avq-sampling.h"

static GRand *rng;

/* Logits on a few levels (many exact ties), with NaN, infinities and both
 * zeros sprinkled in when `specials`. */
static float *
tied_row (int n, int levels, gboolean specials)
{
  float *x = g_new (float, n);
  for (int i = 0; i < n; i++)
    x[i] = (float) g_rand_int_range (rng, 0, levels) * 0.25f - 3.0f;
  if (specials && n > 8) {
    x[g_rand_int_range (rng, 0, n)] = NAN;
    x[g_rand_int_range (rng, 0, n)] = -INFINITY;
    x[g_rand_int_range (rng, 0, n)] = -0.0f;
    x[g_rand_int_range (rng, 0, n)] = 0.0f;
  }
  return x;
}

static float *
spread_row (int n, float scale)
{
  float *x = g_new (float, n);
  for (int i = 0; i < n; i++)
    x[i] = (float) g_rand_double_range (rng, -scale, scale);
  return x;
}

static int
rank_desc (const void *a, const void *b)
{
  guint64 x = *(const guint64 *) a, y = *(const guint64 *) b;
  return x < y ? 1 : (x > y ? -1 : 0);
}

/* The whole row's candidate order by sorting every rank. */
static int *
sorted_ids (const float *x, int n)
{
  g_autofree guint64 *r = g_new (guint64, n);
  for (int i = 0; i < n; i++)
    r[i] = avq_logit_rank (x[i], i);
  qsort (r, n, sizeof *r, rank_desc);
  int *ids = g_new (int, n);
  for (int i = 0; i < n; i++)
    ids[i] = (int) (0xffffffffu - (guint32) r[i]);
  return ids;
}

static void
check_candidates (const float *x, int n, int k, float t)
{
  AvqTokenCandidates c;
  avq_token_candidates_init (&c, MAX (k, 1));
  avq_token_candidates_from_logits (x, n, k, t, &c);
  g_autofree int *want = sorted_ids (x, n);
  const int kk = MIN (k, n);
  g_assert_cmpint (c.n, ==, kk);
  g_assert_cmpint (c.complete, ==, kk == n);
  for (int j = 0; j < kk; j++) {
    g_assert_cmpint (c.id[j], ==, want[j]);
    float l = x[want[j]];
    if (isnan (l))
      l = -INFINITY;
    g_assert_true (memcmp (&c.logit[j], &l, sizeof l) == 0 ||
                   (c.logit[j] == 0 && l == 0));
  }
  g_assert_true (c.max == c.logit[0]);
  double sum = 0;
  if (t > 0 && isfinite (c.max))
    for (int i = 0; i < n; i++)
      if (!isnan (x[i]))
        sum += expf ((x[i] - c.max) / t);
  g_assert_cmpfloat (c.sum, ==, sum);
  avq_token_candidates_clear (&c);
}

static void
test_candidates (void)
{
  const int sizes[] = { 1, 2, 7, 255, 256, 257, 1000, 32064 };
  const int ks[] = { 1, 2, 7, 64, 256, 300 };
  for (guint a = 0; a < G_N_ELEMENTS (sizes); a++)
    for (guint b = 0; b < G_N_ELEMENTS (ks); b++) {
      g_autofree float *tied = tied_row (sizes[a], 5, TRUE);
      check_candidates (tied, sizes[a], ks[b], 0.7f);
      g_autofree float *spread = spread_row (sizes[a], 8);
      check_candidates (spread, sizes[a], ks[b], 0.0f);
      check_candidates (spread, sizes[a], ks[b], 2.0f);
    }
  /* all NaN: -infinity everywhere, ids in order, no sum */
  float nan_row[5] = { NAN, NAN, NAN, NAN, NAN };
  check_candidates (nan_row, 5, 3, 1.0f);
  /* +infinity wins and leaves no finite distribution */
  float inf_row[4] = { 1, INFINITY, 2, INFINITY };
  check_candidates (inf_row, 4, 4, 1.0f);
}

/* The order key: NaN below -infinity's equal, -0 equal to +0, order kept. */
static void
test_order (void)
{
  g_assert_cmpuint (avq_logit_order_key (NAN), ==, avq_logit_order_key (-INFINITY));
  g_assert_cmpuint (avq_logit_order_key (-0.0f), ==, avq_logit_order_key (0.0f));
  const float v[] = { -INFINITY, -3e38f, -1, -1e-38f, 0, 1e-45f, 1, 2, 3e38f, INFINITY };
  for (guint i = 1; i < G_N_ELEMENTS (v); i++)
    g_assert_cmpuint (avq_logit_order_key (v[i - 1]), <, avq_logit_order_key (v[i]));
  g_assert_cmpuint (avq_logit_order_key (-INFINITY), >, 0);
  g_assert_cmpuint (avq_logit_rank (1, 3), >, avq_logit_rank (1, 4));
  g_assert_cmpuint (avq_logit_rank (1, 4), >, avq_logit_rank (0.5f, 0));

  const float nan_first[] = { NAN, -5, -5, NAN };
  g_assert_cmpint (avq_logits_argmax (nan_first, 4), ==, 1);
  const float zeros[] = { -0.0f, 0.0f };
  g_assert_cmpint (avq_logits_argmax (zeros, 2), ==, 0);
}

/* Candidates decide exactly as the whole row does, or return -1; both
 * happen over these rows and draws. */
static void
test_candidates_decide_as_row (void)
{
  const float temps[] = { 0.0f, 0.05f, 0.7f, 1.0f, 5.0f, 100.0f };
  const float top_ps[] = { 1e-9f, 0.1f, 0.5f, 0.9f, 0.99f, 1.0f };
  const int top_ks[] = { 0, 1, 5, 64, 300 };
  const int ks[] = { 1, 4, 64, 256 };
  const int n = 3000;
  int decided = 0, undecided = 0;
  for (int row = 0; row < 3; row++) {
    g_autofree float *x = row == 2 ? tied_row (n, 40, TRUE) : spread_row (n, row ? 12 : 3);
    for (guint ti = 0; ti < G_N_ELEMENTS (temps); ti++) {
      AvqTokenCandidates whole;
      avq_token_candidates_init (&whole, n);
      avq_token_candidates_from_logits (x, n, n, temps[ti], &whole);
      for (guint ki = 0; ki < G_N_ELEMENTS (ks); ki++) {
        AvqTokenCandidates c;
        avq_token_candidates_init (&c, ks[ki]);
        avq_token_candidates_from_logits (x, n, ks[ki], temps[ti], &c);
        for (guint pi = 0; pi < G_N_ELEMENTS (top_ps) * G_N_ELEMENTS (top_ks); pi++) {
          AvqSamplingRule rule = { temps[ti], top_ps[pi % G_N_ELEMENTS (top_ps)],
                                   top_ks[pi / G_N_ELEMENTS (top_ps)] };
          for (int d = 0; d < 12; d++) {
            double r = d < 2 ? (d ? 0.999999999 : 0.0) : g_rand_double (rng);
            int full = avq_sample_candidates (&rule, &whole, r);
            g_assert_cmpint (full, >=, 0);
            g_assert_cmpint (full, ==, avq_sample_logits (&rule, x, n, r));
            int part = avq_sample_candidates (&rule, &c, r);
            if (part < 0) {
              undecided++;
              g_assert_true (temps[ti] > 0);
              /* a top_k the candidates hold always decides */
              g_assert_false (rule.top_k > 0 && rule.top_k <= ks[ki]);
            } else {
              decided++;
              g_assert_cmpint (part, ==, full);
            }
          }
        }
        avq_token_candidates_clear (&c);
      }
      avq_token_candidates_clear (&whole);
    }
  }
  g_test_message ("%d draws decided by candidates, %d needed the row", decided, undecided);
  g_assert_cmpint (decided, >, 1000);
  g_assert_cmpint (undecided, >, 1000);
}

/* Greedy, nucleus and plain sampling follow their probabilities. */
static void
test_distribution (void)
{
  const float x[] = { 1.0f, 3.0f, 2.0f, 3.0f, -1.0f, NAN };
  const int n = G_N_ELEMENTS (x);
  AvqSamplingRule greedy = { 0, 1, 0 };
  g_assert_cmpint (avq_sample_logits (&greedy, x, n, 0.5), ==, 1);

  const float t = 1.5f;
  double p[G_N_ELEMENTS (x)], sum = 0;
  for (int i = 0; i < n; i++) {
    p[i] = isnan (x[i]) ? 0 : exp ((x[i] - 3.0) / t);
    sum += p[i];
  }
  for (int nucleus = 0; nucleus < 3; nucleus++) {
    /* top_p 0.75: tokens 1 and 3 hold 0.70 of the mass, token 2 brings it
     * over: the nucleus is {1, 3, 2}; so is top_k 3 (with top_p 1) */
    AvqSamplingRule rule = { t, nucleus == 1 ? 0.75f : 1.0f, nucleus == 2 ? 3 : 0 };
    double kept = nucleus ? p[1] + p[3] + p[2] : sum;
    int counts[G_N_ELEMENTS (x)] = { 0 };
    const int draws = 200000;
    g_autoptr (GRand) r = g_rand_new_with_seed (7);
    for (int d = 0; d < draws; d++)
      counts[avq_sample_logits (&rule, x, n, g_rand_double (r))]++;
    for (int i = 0; i < n; i++) {
      double want = (nucleus && (i == 0 || i == 4)) ? 0 : p[i] / kept;
      g_assert_cmpfloat (fabs ((double) counts[i] / draws - want), <, 0.005);
    }
    g_assert_cmpint (counts[5], ==, 0);
  }
}

/* Degenerate rows pick their first candidate rather than fail. */
static void
test_degenerate (void)
{
  AvqSamplingRule rule = { 1.0f, 0.9f, 0 };
  const float all_nan[] = { NAN, NAN, NAN };
  g_assert_cmpint (avq_sample_logits (&rule, all_nan, 3, 0.5), ==, 0);
  const float with_inf[] = { 0, INFINITY, 5, INFINITY };
  g_assert_cmpint (avq_sample_logits (&rule, with_inf, 4, 0.9), ==, 1);
  AvqTokenCandidates empty = { 0 };
  g_assert_cmpint (avq_sample_candidates (&rule, &empty, 0.5), ==, -1);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  rng = g_rand_new_with_seed (20261129);
  g_test_add_func ("/sampling/order", test_order);
  g_test_add_func ("/sampling/candidates", test_candidates);
  g_test_add_func ("/sampling/candidates-decide-as-row", test_candidates_decide_as_row);
  g_test_add_func ("/sampling/distribution", test_distribution);
  g_test_add_func ("/sampling/degenerate", test_degenerate);
  int rc = g_test_run ();
  g_rand_free (rng);
  return rc;
}
