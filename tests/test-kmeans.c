/* k-means engine (lib/avq-kmeans.c) on synthetic data. */
#include <math.h>
#include <string.h>
#include <glib.h>

#include "avq-error.h"
#include "avq-kmeans.h"

/* `k` Gaussian blobs in `d` dimensions, `per` points each, centres uniform
 * in [0, sep)^d; points interleaved so that no blob is contiguous in
 * memory. truth[i] is the blob of point i. */
static float *
make_blobs (guint32 seed, gsize k, gsize per, gsize d, double sep,
            double sigma, guint32 **truth)
{
  GRand *r = g_rand_new_with_seed (seed);
  float *centres = g_new (float, k * d);
  for (gsize c = 0; c < k; c++)
    for (gsize j = 0; j < d; j++)
      centres[c * d + j] = (float) (sep * g_rand_double (r));
  gsize n = k * per;
  float *x = g_new (float, n * d);
  *truth = g_new (guint32, n);
  for (gsize i = 0; i < n; i++) {
    gsize c = i % k;
    (*truth)[i] = (guint32) c;
    for (gsize j = 0; j < d; j++) {
      /* Box-Muller */
      double u1 = g_rand_double_range (r, 1e-12, 1.0), u2 = g_rand_double (r);
      double z = sqrt (-2.0 * log (u1)) * cos (2.0 * G_PI * u2);
      x[i * d + j] = centres[c * d + j] + (float) (sigma * z);
    }
  }
  g_free (centres);
  g_rand_free (r);
  return x;
}

static float *
make_uniform (guint32 seed, gsize n, gsize d)
{
  GRand *r = g_rand_new_with_seed (seed);
  float *x = g_new (float, n * d);
  for (gsize i = 0; i < n * d; i++)
    x[i] = (float) g_rand_double_range (r, -1.0, 1.0);
  g_rand_free (r);
  return x;
}

/* labels equal truth up to a permutation of cluster ids. */
static void
assert_same_partition (const guint32 *labels, const guint32 *truth, gsize n,
                       gsize k)
{
  gint64 *map = g_new (gint64, k), *inv = g_new (gint64, k);
  for (gsize c = 0; c < k; c++)
    map[c] = inv[c] = -1;
  for (gsize i = 0; i < n; i++) {
    g_assert_cmpuint (labels[i], <, k);
    if (map[truth[i]] < 0) {
      g_assert_cmpint (inv[labels[i]], ==, -1);
      map[truth[i]] = labels[i];
      inv[labels[i]] = truth[i];
    }
    g_assert_cmpint (map[truth[i]], ==, (gint64) labels[i]);
  }
  g_free (map);
  g_free (inv);
}

static void
test_codebook_size (void)
{
  guint bits = 0;
  g_assert_true (avq_kmeans_check_codebook_size (4096, &bits, NULL));
  g_assert_cmpuint (bits, ==, 12);
  g_assert_true (avq_kmeans_check_codebook_size (2, &bits, NULL));
  g_assert_cmpuint (bits, ==, 1);
  g_assert_true (avq_kmeans_check_codebook_size (65536, &bits, NULL));
  g_assert_cmpuint (bits, ==, 16);
  guint64 bad[] = { 0, 1, 3, 1000, 131072, G_GUINT64_CONSTANT (1) << 40 };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++) {
    GError *err = NULL;
    g_assert_false (avq_kmeans_check_codebook_size (bad[i], NULL, &err));
    g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
    g_clear_error (&err);
  }
}

/* The assignment is the nearest codeword in exact arithmetic up to float
 * rounding, ties go to the lowest index, NaN rows get 0. */
static void
test_assign (void)
{
  const gsize n = 777, d = 37, k = 50;
  float *x = make_uniform (1, n, d);
  float *cb = make_uniform (2, k, d);
  /* Codeword 40 duplicates codeword 7. Under sgemm the two dot products
   * need not round alike (different kernel lanes), so either may win; the
   * distance is what counts. Exact ties are tested below on exact data. */
  memcpy (cb + 40 * d, cb + 7 * d, d * sizeof (float));
  float norms[50];
  avq_kmeans_codebook_norms (cb, k, d, norms);
  guint32 *lab = g_new (guint32, n), *lab2 = g_new (guint32, n);
  float *score = g_new (float, n);
  avq_kmeans_assign (x, n, d, cb, norms, k, 64, lab, score);
  avq_kmeans_assign (x, n, d, cb, norms, k, 0, lab2, NULL);
  /* OpenBLAS rounds a row differently depending on where it falls in the
   * call (edge kernels, thread split), so lab and lab2 may differ on near
   * ties; both must be nearest up to that rounding. */
  for (gsize pass = 0; pass < 2; pass++)
  for (gsize i = 0; i < n; i++) {
    const guint32 *labp = pass ? lab2 : lab;
    double best = INFINITY, mine = 0, xx = 0;
    for (gsize c = 0; c < k; c++) {
      double s = 0;
      for (gsize j = 0; j < d; j++) {
        double t = (double) x[i * d + j] - cb[c * d + j];
        s += t * t;
      }
      best = MIN (best, s);
      if (c == labp[i])
        mine = s;
    }
    for (gsize j = 0; j < d; j++)
      xx += (double) x[i * d + j] * x[i * d + j];
    g_assert_cmpfloat (mine, <=, best + 1e-5 * (1 + xx));
    if (!pass)
      g_assert_cmpfloat (fabs (xx + score[i] - mine), <=, 1e-4 * (1 + xx));
  }

  /* Exact ties (small integers: every score is exact in float): a point
   * equidistant from codewords 1 and 2, nearer than to 0, takes 1. */
  float cb3[3 * 2] = { 10, 10, 1, 0, -1, 0 };
  float n3[3], p[2] = { 0, 0 }, pnan[2] = { NAN, 0 };
  guint32 l;
  avq_kmeans_codebook_norms (cb3, 3, 2, n3);
  avq_kmeans_assign (p, 1, 2, cb3, n3, 3, 0, &l, NULL);
  g_assert_cmpuint (l, ==, 1);
  avq_kmeans_assign (pnan, 1, 2, cb3, n3, 3, 0, &l, NULL);
  g_assert_cmpuint (l, ==, 0);

  g_free (x);
  g_free (cb);
  g_free (lab);
  g_free (lab2);
  g_free (score);
}

static void
test_separated_blobs (void)
{
  const gsize k = 16, per = 60, d = 24, n = k * per;
  guint32 *truth;
  float *x = make_blobs (7, k, per, d, 50.0, 0.3, &truth);
  float *cent = g_new (float, k * d);
  guint32 *labels = g_new (guint32, n);
  for (guint64 seed = 0; seed < 6; seed++) {
    AvqKmeansOptions o;
    avq_kmeans_options_init (&o);
    o.k = k;
    o.seed = seed;
    AvqKmeansResult res;
    GError *err = NULL;
    g_assert_true (avq_kmeans_fit (x, n, d, &o, cent, labels, &res, &err));
    g_assert_no_error (err);
    assert_same_partition (labels, truth, n, k);
    g_assert_true (res.converged);
    g_assert_cmpuint (res.dead_clusters, ==, 0);
    /* Per-coordinate variance 0.09 in 24 dimensions. */
    g_assert_cmpfloat (res.mse, <, 0.09 * d * 1.2);
    g_assert_cmpfloat (res.mse, >, 0.09 * d * 0.8);
  }
  g_free (x);
  g_free (truth);
  g_free (cent);
  g_free (labels);
}

typedef struct {
  GArray *mse;
  GArray *reseeded;
  double last_rel;
} Trace;

static void
trace_cb (const AvqKmeansIterStats *st, gpointer data)
{
  Trace *t = data;
  g_assert_cmpuint (st->iteration, ==, t->mse->len + 1);
  g_assert_cmpfloat (st->seconds, >=, 0.0);
  g_array_append_val (t->mse, st->mse);
  guint r = st->reseeded;
  g_array_append_val (t->reseeded, r);
  t->last_rel = st->rel_change;
}

static void
trace_init (Trace *t)
{
  t->mse = g_array_new (FALSE, FALSE, sizeof (double));
  t->reseeded = g_array_new (FALSE, FALSE, sizeof (guint));
  t->last_rel = 0;
}

static void
trace_clear (Trace *t)
{
  g_array_free (t->mse, TRUE);
  g_array_free (t->reseeded, TRUE);
}

/* Unstructured data: many iterations, error never goes up (beyond float
 * rounding of the centroids and near-ties of the sgemm scores). */
static void
test_monotone (void)
{
  const gsize n = 3000, d = 8, k = 64;
  float *x = make_uniform (3, n, d);
  float *cent = g_new (float, k * d);
  AvqKmeansOptions o;
  avq_kmeans_options_init (&o);
  o.k = k;
  o.seed = 11;
  o.tol = 0;
  o.max_iters = 40;
  o.init_sample = 200;
  o.block_rows = 100;
  Trace t;
  trace_init (&t);
  o.progress = trace_cb;
  o.progress_data = &t;
  AvqKmeansResult res;
  g_assert_true (avq_kmeans_fit (x, n, d, &o, cent, NULL, &res, NULL));
  g_assert_cmpuint (t.mse->len, ==, res.iterations);
  g_assert_cmpuint (res.iterations, >=, 10);
  double *m = (double *) t.mse->data;
  for (guint i = 1; i < t.mse->len; i++)
    g_assert_cmpfloat (m[i], <=, m[i - 1] * (1 + 1e-6));
  g_assert_cmpfloat (m[t.mse->len - 1], <, m[0] * 0.9);
  g_assert_cmpfloat (res.mse, ==, m[t.mse->len - 1]);
  trace_clear (&t);

  /* With a tolerance it stops early and says so. */
  o.tol = 1e-3;
  o.max_iters = 500;
  o.progress = NULL;
  g_assert_true (avq_kmeans_fit (x, n, d, &o, cent, NULL, &res, NULL));
  g_assert_true (res.converged);
  g_assert_cmpuint (res.iterations, <, 500);
  g_free (x);
  g_free (cent);
}

static void
test_deterministic (void)
{
  const gsize n = 2500, d = 20, k = 32;
  float *x = make_uniform (4, n, d);
  float *a = g_new (float, k * d), *b = g_new (float, k * d);
  AvqKmeansOptions o;
  avq_kmeans_options_init (&o);
  o.k = k;
  o.seed = 42;
  o.max_iters = 15;
  o.init_sample = 500;
  g_assert_true (avq_kmeans_fit (x, n, d, &o, a, NULL, NULL, NULL));
  g_assert_true (avq_kmeans_fit (x, n, d, &o, b, NULL, NULL, NULL));
  g_assert_cmpmem (a, k * d * sizeof (float), b, k * d * sizeof (float));

  /* Repeatable for each explicit OpenBLAS thread count (the count itself
   * may change sgemm rounding, so 1 and 2 are not compared). */
  for (guint t = 1; t <= 2; t++) {
    o.threads = t;
    g_assert_true (avq_kmeans_fit (x, n, d, &o, a, NULL, NULL, NULL));
    g_assert_true (avq_kmeans_fit (x, n, d, &o, b, NULL, NULL, NULL));
    g_assert_cmpmem (a, k * d * sizeof (float), b, k * d * sizeof (float));
  }

  o.seed = 43;
  g_assert_true (avq_kmeans_fit (x, n, d, &o, b, NULL, NULL, NULL));
  g_assert_true (memcmp (a, b, k * d * sizeof (float)) != 0);
  g_free (x);
  g_free (a);
  g_free (b);
}

static void
test_bad_args (void)
{
  float x[5 * 3] = { 0 };
  float cent[8 * 3];
  AvqKmeansOptions o;
  avq_kmeans_options_init (&o);
  GError *err = NULL;

  o.k = 6;
  g_assert_false (avq_kmeans_fit (x, 5, 3, &o, cent, NULL, NULL, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (err->message, "K=6"));
  g_clear_error (&err);

  o.k = 0;
  g_assert_false (avq_kmeans_fit (x, 5, 3, &o, cent, NULL, NULL, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);

  o.k = 2;
  o.max_iters = 0;
  g_assert_false (avq_kmeans_fit (x, 5, 3, &o, cent, NULL, NULL, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);

  o.max_iters = 10;
  o.tol = NAN;
  g_assert_false (avq_kmeans_fit (x, 5, 3, &o, cent, NULL, NULL, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);

  /* The streaming form finds out at the end of the sampling pass. */
  o.tol = 0;
  o.k = 8;
  AvqKmeansStream *s = avq_kmeans_stream_new (3, &o, &err);
  g_assert_no_error (err);
  g_assert_null (avq_kmeans_stream_centroids (s));
  g_assert_true (avq_kmeans_stream_feed (s, x, 5, &err));
  gboolean done;
  g_assert_false (avq_kmeans_stream_end_pass (s, &done, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);
  avq_kmeans_stream_free (s);

  /* A Lloyd pass with a different number of points. */
  o.k = 2;
  s = avq_kmeans_stream_new (3, &o, &err);
  float y[5 * 3] = { 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4 };
  g_assert_true (avq_kmeans_stream_feed (s, y, 5, &err));
  g_assert_true (avq_kmeans_stream_end_pass (s, &done, &err));
  g_assert_nonnull (avq_kmeans_stream_centroids (s));
  g_assert_true (avq_kmeans_stream_feed (s, y, 4, &err));
  g_assert_false (avq_kmeans_stream_end_pass (s, &done, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_MISMATCH);
  g_clear_error (&err);
  avq_kmeans_stream_free (s);

  /* Non-finite features are refused, not averaged into a codebook. */
  float z[40 * 3];
  for (gsize i = 0; i < G_N_ELEMENTS (z); i++)
    z[i] = (float) (i % 11);
  o.k = 4;
  s = avq_kmeans_stream_new (3, &o, &err);
  g_assert_true (avq_kmeans_stream_feed (s, z, 40, &err));
  g_assert_true (avq_kmeans_stream_end_pass (s, &done, &err));
  z[37 * 3 + 1] = INFINITY;
  g_assert_true (avq_kmeans_stream_feed (s, z, 30, &err));
  g_assert_false (avq_kmeans_stream_feed (s, z + 30 * 3, 10, &err) &&
                  avq_kmeans_stream_end_pass (s, &done, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (err->message, "point 37"));
  g_clear_error (&err);
  g_assert_false (avq_kmeans_stream_end_pass (s, &done, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);
  avq_kmeans_stream_free (s);
  /* In the k-means++ sample (every point is sampled here). */
  o.init_sample = 0;
  z[37 * 3 + 1] = NAN;
  g_assert_false (avq_kmeans_fit (z, 40, 3, &o, cent, NULL, NULL, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);
}

/* Fewer distinct points than K: not an error. Every distinct point ends up
 * a centroid, the error is zero, the spare centroids are reported dead and
 * are copies of data points. Small integer data keeps every score exact, so
 * ties go to the lowest index and the dead copies are never chosen. */
static void
test_duplicates (void)
{
  const gsize d = 4, distinct = 5, copies = 8, n = distinct * copies, k = 8;
  float *x = g_new (float, n * d);
  for (gsize i = 0; i < n; i++)
    for (gsize j = 0; j < d; j++)
      x[i * d + j] = (float) ((i % distinct) * 10 + j);
  float cent[8 * 4];
  guint32 labels[40];
  AvqKmeansOptions o;
  avq_kmeans_options_init (&o);
  o.k = k;
  o.seed = 5;
  AvqKmeansResult res;
  GError *err = NULL;
  g_assert_true (avq_kmeans_fit (x, n, d, &o, cent, labels, &res, &err));
  g_assert_no_error (err);
  g_assert_cmpfloat (res.mse, ==, 0.0);
  g_assert_true (res.converged);
  g_assert_cmpuint (res.dead_clusters, ==, k - distinct);
  gboolean used[8] = { FALSE };
  for (gsize i = 0; i < n; i++) {
    g_assert_cmpmem (cent + labels[i] * d, d * sizeof (float), x + i * d,
                     d * sizeof (float));
    used[labels[i]] = TRUE;
  }
  guint nused = 0;
  for (gsize c = 0; c < k; c++) {
    nused += used[c];
    if (used[c])
      continue;
    /* A dead centroid duplicates a data point. */
    gboolean found = FALSE;
    for (gsize i = 0; i < distinct && !found; i++)
      found = memcmp (cent + c * d, x + i * d, d * sizeof (float)) == 0;
    g_assert_true (found);
  }
  g_assert_cmpuint (nused, ==, distinct);
  g_free (x);

  /* The same above 64 centroids, where k-means++ draws in rounds. */
  const gsize distinct2 = 100, n2 = distinct2 * 3, k2 = 128;
  x = g_new (float, n2 * d);
  for (gsize i = 0; i < n2; i++)
    for (gsize j = 0; j < d; j++)
      x[i * d + j] = (float) ((i % distinct2) * 3 + j * (i % distinct2 % 7));
  float *cent2 = g_new (float, k2 * d);
  g_assert_true (avq_kmeans_fit (x, n2, d, (o.k = k2, &o), cent2, NULL,
                                 &res, &err));
  g_assert_no_error (err);
  g_assert_cmpfloat (res.mse, ==, 0.0);
  g_assert_cmpuint (res.dead_clusters, ==, k2 - distinct2);
  g_free (cent2);
  g_free (x);
}

/* Empty clusters are re-seeded from the worst-served points. Start every
 * centroid on one point (sampling pass fed with copies of it): the first
 * Lloyd pass sends everything to centroid 0 and K-1 clusters are empty. */
static void
test_reseed (void)
{
  const gsize k = 8, per = 40, d = 6, n = k * per;
  guint32 *truth;
  float *x = make_blobs (9, k, per, d, 30.0, 0.5, &truth);
  float *same = g_new (float, n * d);
  for (gsize i = 0; i < n; i++)
    memcpy (same + i * d, x, d * sizeof (float));
  AvqKmeansOptions o;
  avq_kmeans_options_init (&o);
  o.k = k;
  o.seed = 1;
  o.max_iters = 100;
  Trace t;
  trace_init (&t);
  o.progress = trace_cb;
  o.progress_data = &t;
  GError *err = NULL;
  g_autoptr (AvqKmeansStream) s = avq_kmeans_stream_new (d, &o, &err);
  g_assert_true (avq_kmeans_stream_feed (s, same, n, &err));
  gboolean done = FALSE;
  g_assert_true (avq_kmeans_stream_end_pass (s, &done, &err));
  const float *c = avq_kmeans_stream_centroids (s);
  for (gsize i = 1; i < k; i++)
    g_assert_cmpmem (c + i * d, d * sizeof (float), c, d * sizeof (float));
  while (!done) {
    g_assert_true (avq_kmeans_stream_feed (s, x, n, &err));
    g_assert_true (avq_kmeans_stream_end_pass (s, &done, &err));
  }
  g_assert_no_error (err);
  guint *rs = (guint *) t.reseeded->data;
  double *m = (double *) t.mse->data;
  g_assert_cmpuint (rs[0], ==, k - 1);
  g_assert_cmpuint (t.mse->len, >=, 2);
  g_assert_cmpfloat (m[1], <, m[0] * 0.5);
  AvqKmeansResult res;
  avq_kmeans_stream_get_result (s, &res);
  g_assert_cmpuint (res.dead_clusters, ==, 0);
  g_assert_true (res.converged);
  /* Every centroid serves points at the end. */
  guint32 *lab = g_new (guint32, n);
  float norms[8];
  c = avq_kmeans_stream_centroids (s);
  avq_kmeans_codebook_norms (c, k, d, norms);
  avq_kmeans_assign (x, n, d, c, norms, k, 0, lab, NULL);
  guint counts[8] = { 0 };
  for (gsize i = 0; i < n; i++)
    counts[lab[i]]++;
  for (gsize i = 0; i < k; i++)
    g_assert_cmpuint (counts[i], >, 0);
  trace_clear (&t);
  g_free (lab);
  g_free (x);
  g_free (same);
  g_free (truth);
}

/* K > 64: k-means++ runs in rounds with rejection sampling (see
 * kmeanspp() in avq-kmeans.c). On separated blobs it must still spread
 * the centres like plain k-means++: nearly every blob gets its own
 * centroid (drawing each round from one stale D^2 table without the
 * rejection step left 4 to 8 of 256 blobs sharing). */
static void
test_init_rounds (void)
{
  const gsize k = 256, per = 10, d = 8, n = k * per;
  guint32 *truth;
  float *x = make_blobs (21, k, per, d, 50.0, 0.1, &truth);
  float *cent = g_new (float, k * d);
  guint32 *labels = g_new (guint32, n);
  for (guint64 seed = 0; seed < 3; seed++) {
    AvqKmeansOptions o;
    avq_kmeans_options_init (&o);
    o.k = k;
    o.seed = seed;
    o.max_iters = 1;
    AvqKmeansResult res;
    g_assert_true (avq_kmeans_fit (x, n, d, &o, cent, labels, &res, NULL));
    /* Blobs whose first point's label no other blob shares. */
    guint *owners = g_new0 (guint, k);
    for (gsize b = 0; b < k; b++)
      owners[labels[b]]++;
    guint alone = 0;
    for (gsize b = 0; b < k; b++)
      alone += owners[labels[b]] == 1;
    g_test_message ("seed %" G_GUINT64_FORMAT ": %u of %" G_GSIZE_FORMAT
                    " blobs have their own centroid after one iteration",
                    seed, alone, k);
    g_assert_cmpuint (alone, >=, k - 2);
    g_free (owners);
  }
  g_free (x);
  g_free (truth);
  g_free (cent);
  g_free (labels);
}

/* Streaming in odd chunks with the same options gives the in-memory
 * result bit for bit. */
static void
test_stream_matches_fit (void)
{
  const gsize n = 4111, d = 12, k = 40;
  float *x = make_uniform (6, n, d);
  AvqKmeansOptions o;
  avq_kmeans_options_init (&o);
  o.k = k;
  o.seed = 99;
  o.max_iters = 12;
  o.tol = 1e-5;
  o.init_sample = 700;
  o.block_rows = 256;
  float *ref = g_new (float, k * d);
  AvqKmeansResult rref, rs;
  g_assert_true (avq_kmeans_fit (x, n, d, &o, ref, NULL, &rref, NULL));

  const gsize chunks[] = { 1, 577, 100, 255, 256, 1000, 3 };
  GError *err = NULL;
  g_autoptr (AvqKmeansStream) s = avq_kmeans_stream_new (d, &o, &err);
  g_assert_no_error (err);
  gboolean done = FALSE;
  guint passes = 0;
  while (!done) {
    gsize off = 0, ci = passes;
    while (off < n) {
      gsize want = chunks[ci++ % G_N_ELEMENTS (chunks)];
      gsize m = MIN (want, n - off);
      g_assert_true (avq_kmeans_stream_feed (s, x + off * d, m, &err));
      off += m;
    }
    avq_kmeans_stream_end_pass (s, &done, &err);
    g_assert_no_error (err);
    passes++;
  }
  g_assert_no_error (err);
  avq_kmeans_stream_get_result (s, &rs);
  g_assert_cmpuint (passes, ==, rref.iterations + 1);
  g_assert_cmpuint (rs.iterations, ==, rref.iterations);
  g_assert_cmpfloat (rs.mse, ==, rref.mse);
  g_assert_cmpmem (avq_kmeans_stream_centroids (s), k * d * sizeof (float),
                   ref, k * d * sizeof (float));
  /* Feeding after the end is refused. */
  g_assert_false (avq_kmeans_stream_feed (s, x, 1, &err));
  g_assert_error (err, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&err);
  g_free (x);
  g_free (ref);
}

static void
test_reservoir (void)
{
  const gsize n = 1000, d = 3;
  float *x = g_new (float, n * d);
  for (gsize i = 0; i < n * d; i++)
    x[i] = (float) (i / d);
  /* Capacity above n keeps everything, in order. */
  g_autoptr (AvqKmeansReservoir) all = avq_kmeans_reservoir_new (d, 2000, 1);
  avq_kmeans_reservoir_add (all, x, n);
  gsize got;
  const float *p = avq_kmeans_reservoir_points (all, &got);
  g_assert_cmpuint (got, ==, n);
  g_assert_cmpmem (p, n * d * sizeof (float), x, n * d * sizeof (float));

  /* Chunking does not matter; each kept row is a whole input row. */
  g_autoptr (AvqKmeansReservoir) a = avq_kmeans_reservoir_new (d, 100, 7);
  g_autoptr (AvqKmeansReservoir) b = avq_kmeans_reservoir_new (d, 100, 7);
  avq_kmeans_reservoir_add (a, x, n);
  for (gsize i = 0; i < n; i += 13)
    avq_kmeans_reservoir_add (b, x + i * d, MIN (13, n - i));
  g_assert_cmpuint (avq_kmeans_reservoir_seen (b), ==, n);
  const float *pa = avq_kmeans_reservoir_points (a, &got);
  g_assert_cmpuint (got, ==, 100);
  g_assert_cmpmem (pa, 100 * d * sizeof (float),
                   avq_kmeans_reservoir_points (b, NULL),
                   100 * d * sizeof (float));
  /* Rough uniformity: the sample reaches into the last tenth, and does not
   * repeat rows. */
  gboolean seen[1000] = { FALSE };
  guint late = 0;
  for (gsize i = 0; i < 100; i++) {
    gsize row = (gsize) pa[i * d];
    g_assert_cmpfloat (pa[i * d + 2], ==, (float) row);
    g_assert_false (seen[row]);
    seen[row] = TRUE;
    late += row >= 900;
  }
  g_assert_cmpuint (late, >, 0);
  g_assert_cmpuint (late, <, 30);
  g_free (x);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/kmeans/codebook-size", test_codebook_size);
  g_test_add_func ("/kmeans/assign", test_assign);
  g_test_add_func ("/kmeans/separated-blobs", test_separated_blobs);
  g_test_add_func ("/kmeans/monotone", test_monotone);
  g_test_add_func ("/kmeans/deterministic", test_deterministic);
  g_test_add_func ("/kmeans/bad-args", test_bad_args);
  g_test_add_func ("/kmeans/duplicates", test_duplicates);
  g_test_add_func ("/kmeans/reseed", test_reseed);
  g_test_add_func ("/kmeans/init-rounds", test_init_rounds);
  g_test_add_func ("/kmeans/stream-matches-fit", test_stream_matches_fit);
  g_test_add_func ("/kmeans/reservoir", test_reservoir);
  return g_test_run ();
}
