/* k-means for AVQ codebook training; see avq-kmeans.h for the contract. */
#include "avq-kmeans.h"
#include "avq-error.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define DEFAULT_MAX_ITERS 50
#define DEFAULT_TOL 1e-4
#define DEFAULT_BLOCK_ROWS 1024
#define MIN_DEFAULT_SAMPLE 16384
/* Re-seeding candidates kept per pass. More empty clusters than this in one
 * pass is a pathological start; the rest are re-seeded on later passes. */
#define MAX_WORST 4096

void
avq_kmeans_options_init (AvqKmeansOptions *opts)
{
  memset (opts, 0, sizeof *opts);
  /* The spec's default codebook: 4096 entries, 12-bit indices. */
  opts->k = 4096;
  opts->max_iters = DEFAULT_MAX_ITERS;
  opts->tol = DEFAULT_TOL;
}

gboolean
avq_kmeans_check_codebook_size (guint64 k, guint *index_bits, GError **error)
{
  if (k < 2 || k > 65536 || (k & (k - 1)) != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "codebook size %" G_GUINT64_FORMAT " is not a power of two "
                 "in 2..65536 (AVQ frames carry 1..16 index bits)", k);
    return FALSE;
  }
  if (index_bits) {
    guint b = 0;
    while ((G_GUINT64_CONSTANT (1) << b) < k)
      b++;
    *index_bits = b;
  }
  return TRUE;
}

/* ---- small numeric helpers ---------------------------------------------- */

/* Eight independent lanes so the compiler can vectorise without
 * reassociating; the lane order is fixed, so the result is reproducible. */
static float
sqdist_f (const float *a, const float *b, gsize d)
{
  float acc[8] = { 0 };
  gsize j = 0;
  for (; j + 8 <= d; j += 8)
    for (int l = 0; l < 8; l++) {
      float t = a[j + l] - b[j + l];
      acc[l] += t * t;
    }
  float tail = 0.f;
  for (; j < d; j++) {
    float t = a[j] - b[j];
    tail += t * t;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3]))
      + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

/* The reported error and the re-seeding order use this one: double, so
 * that the MSE the user watches converge is not rounding noise. */
static double
sqdist_d (const float *a, const float *b, gsize d)
{
  double acc[4] = { 0 };
  gsize j = 0;
  for (; j + 4 <= d; j += 4)
    for (int l = 0; l < 4; l++) {
      double t = (double) a[j + l] - (double) b[j + l];
      acc[l] += t * t;
    }
  double tail = 0.;
  for (; j < d; j++) {
    double t = (double) a[j] - (double) b[j];
    tail += t * t;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail;
}

static GRand *
rand_new_u64 (guint64 seed)
{
  guint32 s[2] = { (guint32) seed, (guint32) (seed >> 32) };
  return g_rand_new_with_seed_array (s, 2);
}

/* Uniform in [0, n), n >= 1, for n beyond g_rand_int_range's gint32. */
static guint64
rand_below (GRand *r, guint64 n)
{
  if (n <= (guint64) G_MAXINT32)
    return (guint64) g_rand_int_range (r, 0, (gint32) n);
  guint64 limit = G_MAXUINT64 - (G_MAXUINT64 % n);
  for (;;) {
    /* Two statements: the order of two calls in one expression is
     * unspecified, and the draw must not depend on the compiler. */
    guint64 v = (guint64) g_rand_int (r) << 32;
    v |= g_rand_int (r);
    if (v < limit)
      return v % n;
  }
}

static void
set_blas_threads (guint threads, int *saved)
{
  *saved = -1;
  if (threads > 0) {
    *saved = openblas_get_num_threads ();
    if (*saved != (int) threads)
      openblas_set_num_threads ((int) threads);
    else
      *saved = -1;
  }
}

static void
restore_blas_threads (int saved)
{
  if (saved > 0)
    openblas_set_num_threads (saved);
}

/* ---- assignment --------------------------------------------------------- */

void
avq_kmeans_codebook_norms (const float *codebook, gsize k, gsize d,
                           float *norms)
{
  /* Double, in index order, rounded once: the same numbers as the
   * encoder's codebook norms (avq-quantizer.c), so trainer and encoder
   * score codewords identically. */
  for (gsize i = 0; i < k; i++) {
    const float *e = codebook + i * d;
    double s = 0.;
    for (gsize j = 0; j < d; j++)
      s += (double) e[j] * e[j];
    norms[i] = (float) s;
  }
}

/* `dots` holds x.e_k for one row. The comparison is strict, so of equal
 * scores the lowest k stays, and a NaN score never wins. (Lane-split and
 * two-pass vectorised forms measured no faster: reading the 16 MiB score
 * block back from memory is the cost, about 5 % of an iteration.) */
static inline guint32
row_argmin (const float *dots, const float *norms, gsize k, float *best_out)
{
  guint32 best = 0;
  float bv = INFINITY;
  for (gsize i = 0; i < k; i++) {
    float s = norms[i] - 2.0f * dots[i];
    if (s < bv) {
      bv = s;
      best = (guint32) i;
    }
  }
  if (best_out)
    *best_out = bv;
  return best;
}

static void
block_dots (const float *x, gsize m, gsize d, const float *codebook, gsize k,
            float *dots)
{
  /* beta = 0 and alpha = 1: norms are added outside so that the score is
   * one defined float expression, not whatever the kernel fuses. */
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, (blasint) m,
               (blasint) k, (blasint) d, 1.0f, x, (blasint) d, codebook,
               (blasint) d, 0.0f, dots, (blasint) k);
}

void
avq_kmeans_assign (const float *x, gsize n, gsize d, const float *codebook,
                   const float *norms, gsize k, gsize block_rows,
                   guint32 *labels, float *score)
{
  if (n == 0 || k == 0)
    return;
  if (block_rows == 0)
    block_rows = DEFAULT_BLOCK_ROWS;
  gsize rows = MIN (block_rows, n);
  float *dots = g_new (float, rows * k);
  for (gsize i0 = 0; i0 < n; i0 += rows) {
    gsize m = MIN (rows, n - i0);
    block_dots (x + i0 * d, m, d, codebook, k, dots);
    for (gsize r = 0; r < m; r++)
      labels[i0 + r] = row_argmin (dots + r * k, norms, k,
                                   score ? score + i0 + r : NULL);
  }
  g_free (dots);
}

/* ---- reservoir ---------------------------------------------------------- */

struct _AvqKmeansReservoir {
  gsize d, capacity, n, allocated;
  guint64 seen;
  float *rows;
  GRand *rand;
};

AvqKmeansReservoir *
avq_kmeans_reservoir_new (gsize d, gsize capacity, guint64 seed)
{
  AvqKmeansReservoir *r = g_new0 (AvqKmeansReservoir, 1);
  r->d = d;
  r->capacity = capacity;
  r->rand = rand_new_u64 (seed);
  return r;
}

void
avq_kmeans_reservoir_add (AvqKmeansReservoir *r, const float *x, gsize n)
{
  for (gsize i = 0; i < n; i++, r->seen++) {
    guint64 slot;
    if (r->seen < r->capacity) {
      /* Grown on demand: the default capacity (32768 rows of 4 KiB for
       * K=4096) is far more than a small data set needs. */
      if (r->n == r->allocated) {
        r->allocated = MIN (r->capacity, MAX (2 * r->allocated, (gsize) 256));
        r->rows = g_realloc_n (r->rows, r->allocated, r->d * sizeof (float));
      }
      slot = r->seen;
      r->n++;
    } else {
      slot = rand_below (r->rand, r->seen + 1);
      if (slot >= r->capacity)
        continue;
    }
    memcpy (r->rows + slot * r->d, x + i * r->d, r->d * sizeof (float));
  }
}

const float *
avq_kmeans_reservoir_points (const AvqKmeansReservoir *r, gsize *n)
{
  if (n)
    *n = r->n;
  return r->rows;
}

guint64
avq_kmeans_reservoir_seen (const AvqKmeansReservoir *r)
{
  return r->seen;
}

void
avq_kmeans_reservoir_free (AvqKmeansReservoir *r)
{
  if (!r)
    return;
  g_rand_free (r->rand);
  g_free (r->rows);
  g_free (r);
}

/* ---- k-means++ ---------------------------------------------------------- */

/* About this many D^2 refreshes for K > KPP_ROUNDS; see kmeanspp(). */
#define KPP_ROUNDS 64
#define KPP_BLOCK_ROWS 4096
#define KPP_MAX_REJECT 32

/* One D^2 draw: the first point whose running sum passes a uniform target
 * in [0, total). */
static gsize
d2_draw (const float *d2, gsize s, double total, GRand *rand)
{
  if (!(total > 0.))
    /* Every sample point is already a centre: the sample has fewer
     * distinct points than K. Any choice duplicates one; Lloyd's
     * re-seeding gets a chance to use the full data later. */
    return (gsize) rand_below (rand, s);
  double target = g_rand_double (rand) * total, acc = 0.;
  gsize last_pos = 0;
  for (gsize i = 0; i < s; i++) {
    if (d2[i] <= 0.f)
      continue;
    last_pos = i;
    acc += d2[i];
    if (acc > target)
      return i;
  }
  /* Rounding in acc can leave target just out of reach. */
  return last_pos;
}

/* k-means++ over the sample `pts` [s, d]. Classic k-means++ refreshes D^2
 * after every draw: K passes over the sample, each a memory-bound GEMV
 * (170 s for K=4096 on 32768 points of D=1024 here). Instead D^2 is
 * refreshed once per round of up to ceil(K/KPP_ROUNDS) draws, with one
 * sgemm against the round's centres, and the draws inside a round keep the
 * exact k-means++ distribution by rejection: a point q proposed from the
 * stale table d2 (an upper bound of its true D^2) is accepted with
 * probability D^2(q)/d2[q], D^2(q) taking the centres drawn earlier in the
 * round into account; a rejected q's entry is lowered to D^2(q) on the way.
 * After KPP_MAX_REJECT rejections in a row the round closes early (the
 * round's draws have covered most of the mass, as on well-clustered data).
 * For K <= KPP_ROUNDS each round is one draw: plain k-means++. D^2 is
 * always an exact float distance (the sgemm only says which new centre is
 * nearest), so a point equal to a centre has D^2 exactly 0. */
static void
kmeanspp (const float *pts, gsize s, gsize d, gsize k, GRand *rand,
          float *cent)
{
  gsize per_round = k <= KPP_ROUNDS ? 1 : (k + KPP_ROUNDS - 1) / KPP_ROUNDS;
  gsize rows = MIN ((gsize) KPP_BLOCK_ROWS, s);
  float *d2 = g_new (float, s);
  float *cn = g_new (float, per_round);
  float *dots = g_new (float, rows * per_round);

  gsize first = (gsize) rand_below (rand, s);
  memcpy (cent, pts + first * d, d * sizeof (float));
  for (gsize i = 0; i < s; i++)
    d2[i] = sqdist_f (pts + i * d, cent, d);

  gsize have = 1;
  while (have < k) {
    gsize want = MIN (per_round, k - have), m = 0;
    guint rejects = 0;
    float *cb = cent + have * d;
    double total = 0.;
    for (gsize i = 0; i < s; i++)
      total += d2[i];
    while (m < want) {
      gsize q = d2_draw (d2, s, total, rand);
      const float *xq = pts + q * d;
      if (m > 0 && total > 0.) {
        float old = d2[q], now = old;
        for (gsize t = 0; t < m; t++)
          now = MIN (now, sqdist_f (xq, cb + t * d, d));
        if (!(g_rand_double (rand) * old < now)) {
          total += (double) now - (double) old;
          d2[q] = now;
          if (++rejects >= KPP_MAX_REJECT)
            break;
          continue;
        }
      }
      memcpy (cb + m * d, xq, d * sizeof (float));
      total -= d2[q];
      d2[q] = 0.f;
      m++;
      rejects = 0;
    }
    avq_kmeans_codebook_norms (cb, m, d, cn);
    for (gsize i0 = 0; i0 < s; i0 += rows) {
      gsize r = MIN (rows, s - i0);
      if (m > 1)
        block_dots (pts + i0 * d, r, d, cb, m, dots);
      for (gsize i = i0; i < i0 + r; i++) {
        if (d2[i] <= 0.f)
          continue;
        guint32 j = m > 1 ? row_argmin (dots + (i - i0) * m, cn, m, NULL) : 0;
        float nd = sqdist_f (pts + i * d, cb + (gsize) j * d, d);
        if (nd < d2[i])
          d2[i] = nd;
      }
    }
    have += m;
  }
  g_free (dots);
  g_free (cn);
  g_free (d2);
}

/* ---- streaming Lloyd ---------------------------------------------------- */

typedef struct {
  double err;
  guint64 index;   /* position in the pass, breaks ties: earlier is worse */
  guint32 slot;    /* row in worst_rows */
} Worst;

struct _AvqKmeansStream {
  AvqKmeansOptions opts;
  gsize d, k, block_rows, sample_cap;
  guint pass;               /* 0: sampling; then 1-based Lloyd iteration */
  gboolean done;
  gboolean failed;          /* non-finite input seen: the sums are poisoned */

  AvqKmeansReservoir *sample;
  GRand *rand;

  float *cent, *norms;
  double *sums;
  guint64 *counts;
  float *dots, *buf;
  gsize buf_rows;

  Worst *worst;             /* min-heap on badness: root is the least bad */
  float *worst_rows;
  gsize worst_n, worst_cap;

  double sse, prev_mse;
  guint64 pass_points, expect_points;
  gint64 pass_t0;
  AvqKmeansResult result;
};

/* TRUE when a is worse-served than b: larger error, then earlier point. */
static inline gboolean
worse (const Worst *a, const Worst *b)
{
  return a->err > b->err || (a->err == b->err && a->index < b->index);
}

static void
heap_sift_down (Worst *h, gsize n, gsize i)
{
  for (;;) {
    gsize l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && worse (&h[m], &h[l]))
      m = l;
    if (r < n && worse (&h[m], &h[r]))
      m = r;
    if (m == i)
      return;
    Worst t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

static void
heap_sift_up (Worst *h, gsize i)
{
  while (i > 0) {
    gsize p = (i - 1) / 2;
    if (!worse (&h[p], &h[i]))
      return;
    Worst t = h[i];
    h[i] = h[p];
    h[p] = t;
    i = p;
  }
}

static void
worst_offer (AvqKmeansStream *s, double err, guint64 index, const float *x)
{
  /* A point sitting on its centroid cannot serve an empty cluster. */
  if (!(err > 0.))
    return;
  Worst w = { err, index, 0 };
  if (s->worst_n < s->worst_cap) {
    w.slot = (guint32) s->worst_n;
    s->worst[s->worst_n] = w;
    memcpy (s->worst_rows + (gsize) w.slot * s->d, x, s->d * sizeof (float));
    heap_sift_up (s->worst, s->worst_n++);
  } else if (worse (&w, &s->worst[0])) {
    w.slot = s->worst[0].slot;
    s->worst[0] = w;
    memcpy (s->worst_rows + (gsize) w.slot * s->d, x, s->d * sizeof (float));
    heap_sift_down (s->worst, s->worst_n, 0);
  }
}

static int
worst_cmp (const void *pa, const void *pb)
{
  const Worst *a = pa, *b = pb;
  if (worse (a, b))
    return -1;
  if (worse (b, a))
    return 1;
  return 0;
}

static void
set_oom (GError **error, const char *what)
{
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
               "k-means: not enough memory for the %s", what);
}

AvqKmeansStream *
avq_kmeans_stream_new (gsize d, const AvqKmeansOptions *opts, GError **error)
{
  if (opts->k == 0 || d == 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "k-means needs K >= 1 and D >= 1 (got K=%u, D=%" G_GSIZE_FORMAT
                 ")", opts->k, d);
    return NULL;
  }
  if (opts->max_iters == 0 || !(opts->tol >= 0.) || isinf (opts->tol)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "k-means needs max_iters >= 1 and a finite tol >= 0");
    return NULL;
  }
  gsize k = opts->k;
  if (d > G_MAXINT32 || k > G_MAXINT32 || opts->block_rows > G_MAXINT32
      || k > G_MAXSIZE / d / sizeof (double)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "k-means: K=%" G_GSIZE_FORMAT " x D=%" G_GSIZE_FORMAT
                 " is too large", k, d);
    return NULL;
  }

  g_autoptr (AvqKmeansStream) s = g_new0 (AvqKmeansStream, 1);
  s->opts = *opts;
  s->d = d;
  s->k = k;
  s->block_rows = opts->block_rows ? opts->block_rows : DEFAULT_BLOCK_ROWS;
  s->sample_cap = opts->init_sample ? opts->init_sample
      : MAX ((gsize) MIN_DEFAULT_SAMPLE, 8 * k);
  s->sample_cap = MAX (s->sample_cap, k);
  s->worst_cap = MIN (k, (gsize) MAX_WORST);

  s->sample = avq_kmeans_reservoir_new (d, s->sample_cap, opts->seed);
  /* A different stream from the reservoir's, so that the k-means++ draws do
   * not depend on how many draws the sampling consumed. */
  s->rand = rand_new_u64 (opts->seed ^ G_GUINT64_CONSTANT (0x9e3779b97f4a7c15));
  s->cent = g_try_malloc_n (k, d * sizeof (float));
  s->norms = g_try_new (float, k);
  s->sums = g_try_malloc0_n (k, d * sizeof (double));
  s->counts = g_try_new0 (guint64, k);
  s->dots = g_try_malloc_n (s->block_rows, k * sizeof (float));
  s->buf = g_try_malloc_n (s->block_rows, d * sizeof (float));
  s->worst = g_try_new (Worst, s->worst_cap);
  s->worst_rows = g_try_malloc_n (s->worst_cap, d * sizeof (float));
  if (!s->cent || !s->norms || !s->sums || !s->counts || !s->dots || !s->buf
      || !s->worst || !s->worst_rows) {
    set_oom (error, "codebook accumulators");
    return NULL;
  }
  s->pass_t0 = g_get_monotonic_time ();
  return g_steal_pointer (&s);
}

void
avq_kmeans_stream_free (AvqKmeansStream *s)
{
  if (!s)
    return;
  avq_kmeans_reservoir_free (s->sample);
  if (s->rand)
    g_rand_free (s->rand);
  g_free (s->cent);
  g_free (s->norms);
  g_free (s->sums);
  g_free (s->counts);
  g_free (s->dots);
  g_free (s->buf);
  g_free (s->worst);
  g_free (s->worst_rows);
  g_free (s);
}

static gboolean
non_finite_error (AvqKmeansStream *s, guint64 row, GError **error)
{
  s->failed = TRUE;
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
               "k-means: training point %" G_GUINT64_FORMAT " of pass %u has "
               "a NaN or infinite feature", row, s->pass);
  return FALSE;
}

/* One assignment block; the sums are updated in point order so the result
 * does not depend on threads. */
static gboolean
lloyd_block (AvqKmeansStream *s, const float *x, gsize m, GError **error)
{
  gsize d = s->d, k = s->k;
  int saved;
  set_blas_threads (s->opts.threads, &saved);
  block_dots (x, m, d, s->cent, k, s->dots);
  restore_blas_threads (saved);
  for (gsize r = 0; r < m; r++) {
    const float *xr = x + r * d;
    guint32 lab = row_argmin (s->dots + r * k, s->norms, k, NULL);
    const float *c = s->cent + (gsize) lab * d;
    double err = sqdist_d (xr, c, d);
    /* Centroids are finite (means of finite points), so this catches any
     * NaN or infinity in the row before it reaches the sums. */
    if (!isfinite (err))
      return non_finite_error (s, s->pass_points + r, error);
    double *sum = s->sums + (gsize) lab * d;
    for (gsize j = 0; j < d; j++)
      sum[j] += xr[j];
    s->counts[lab]++;
    s->sse += err;
    worst_offer (s, err, s->pass_points + r, xr);
  }
  s->pass_points += m;
  return TRUE;
}

gboolean
avq_kmeans_stream_feed (AvqKmeansStream *s, const float *x, gsize n,
                        GError **error)
{
  if (s->done || s->failed) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 s->failed ? "k-means: feed after a failed pass"
                 : "k-means: feed after the last pass");
    return FALSE;
  }
  if (s->pass == 0) {
    avq_kmeans_reservoir_add (s->sample, x, n);
    return TRUE;
  }
  /* Blocks always start at multiples of block_rows within the pass,
   * whatever the caller's chunks, so every sgemm call (and therefore
   * every rounding) is the same as for the whole array at once. */
  gsize d = s->d, b = s->block_rows;
  while (n > 0) {
    if (s->buf_rows == 0 && n >= b) {
      if (!lloyd_block (s, x, b, error))
        return FALSE;
      x += b * d;
      n -= b;
      continue;
    }
    gsize take = MIN (b - s->buf_rows, n);
    memcpy (s->buf + s->buf_rows * d, x, take * d * sizeof (float));
    s->buf_rows += take;
    x += take * d;
    n -= take;
    if (s->buf_rows == b) {
      s->buf_rows = 0;
      if (!lloyd_block (s, s->buf, b, error))
        return FALSE;
    }
  }
  return TRUE;
}

static gboolean
end_sampling_pass (AvqKmeansStream *s, GError **error)
{
  guint64 seen = avq_kmeans_reservoir_seen (s->sample);
  if (seen < s->k) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "k-means: codebook size K=%" G_GSIZE_FORMAT " exceeds the %"
                 G_GUINT64_FORMAT " training points; use a smaller K or more "
                 "data", s->k, seen);
    return FALSE;
  }
  gint64 t0 = g_get_monotonic_time ();
  gsize sn;
  const float *pts = avq_kmeans_reservoir_points (s->sample, &sn);
  /* Only the sampled rows are seen here; the Lloyd passes check the rest. */
  for (gsize i = 0; i < sn * s->d; i++)
    if (!isfinite (pts[i])) {
      s->failed = TRUE;
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "k-means: a sampled training point has a NaN or infinite "
                   "feature");
      return FALSE;
    }
  int saved;
  set_blas_threads (s->opts.threads, &saved);
  kmeanspp (pts, sn, s->d, s->k, s->rand, s->cent);
  restore_blas_threads (saved);
  avq_kmeans_codebook_norms (s->cent, s->k, s->d, s->norms);
  s->result.init_seconds = (g_get_monotonic_time () - t0) / 1e6;
  s->expect_points = seen;
  /* The sample is not needed again; free it before the big passes. */
  avq_kmeans_reservoir_free (s->sample);
  s->sample = NULL;
  return TRUE;
}

static void
update_centroids (AvqKmeansStream *s, guint *reseeded, guint *dead)
{
  gsize d = s->d;
  qsort (s->worst, s->worst_n, sizeof (Worst), worst_cmp);
  gsize next = 0;
  *reseeded = *dead = 0;
  for (gsize c = 0; c < s->k; c++) {
    float *cent = s->cent + c * d;
    double *sum = s->sums + c * d;
    if (s->counts[c] > 0) {
      double inv = 1.0 / (double) s->counts[c];
      for (gsize j = 0; j < d; j++)
        cent[j] = (float) (sum[j] * inv);
    } else if (next < s->worst_n) {
      memcpy (cent, s->worst_rows + (gsize) s->worst[next++].slot * d,
              d * sizeof (float));
      (*reseeded)++;
    } else {
      (*dead)++;
    }
  }
  memset (s->sums, 0, s->k * d * sizeof (double));
  memset (s->counts, 0, s->k * sizeof (guint64));
  s->worst_n = 0;
  avq_kmeans_codebook_norms (s->cent, s->k, d, s->norms);
}

gboolean
avq_kmeans_stream_end_pass (AvqKmeansStream *s, gboolean *done, GError **error)
{
  if (done)
    *done = s->done;
  if (s->failed) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "k-means: end of a failed pass");
    return FALSE;
  }
  if (s->done)
    return TRUE;
  if (s->pass == 0) {
    if (!end_sampling_pass (s, error))
      return FALSE;
    s->pass = 1;
    s->pass_t0 = g_get_monotonic_time ();
    return TRUE;
  }
  if (s->buf_rows > 0) {
    gsize m = s->buf_rows;
    s->buf_rows = 0;
    if (!lloyd_block (s, s->buf, m, error))
      return FALSE;
  }
  if (s->pass_points != s->expect_points) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "k-means: pass %u saw %" G_GUINT64_FORMAT " points, the "
                 "first pass %" G_GUINT64_FORMAT "; every pass must feed the "
                 "same data", s->pass, s->pass_points, s->expect_points);
    return FALSE;
  }

  AvqKmeansIterStats st = { 0 };
  st.iteration = s->pass;
  st.points = s->pass_points;
  st.mse = s->sse / (double) s->pass_points;
  if (s->pass > 1 && s->prev_mse > 0.)
    st.rel_change = (s->prev_mse - st.mse) / s->prev_mse;
  gboolean converged = s->pass > 1
      && (s->prev_mse == 0. || st.rel_change < s->opts.tol);
  /* An mse of exactly zero cannot improve. */
  if (st.mse == 0.)
    converged = TRUE;

  guint dead;
  update_centroids (s, &st.reseeded, &dead);
  /* Re-seeding changes the codebook without a measured improvement; do not
   * call that converged. */
  if (st.reseeded > 0 && st.mse > 0.)
    converged = FALSE;
  st.seconds = (g_get_monotonic_time () - s->pass_t0) / 1e6;

  s->result.iterations = s->pass;
  s->result.mse = st.mse;
  s->result.converged = converged;
  s->result.dead_clusters = dead;
  s->prev_mse = st.mse;
  s->sse = 0.;
  s->pass_points = 0;
  s->done = converged || s->pass >= s->opts.max_iters;
  s->pass++;

  if (s->opts.progress)
    s->opts.progress (&st, s->opts.progress_data);
  s->pass_t0 = g_get_monotonic_time ();
  if (done)
    *done = s->done;
  return TRUE;
}

const float *
avq_kmeans_stream_centroids (const AvqKmeansStream *s)
{
  return s->pass > 0 ? s->cent : NULL;
}

void
avq_kmeans_stream_get_result (const AvqKmeansStream *s,
                              AvqKmeansResult *result)
{
  *result = s->result;
}

/* ---- in memory ---------------------------------------------------------- */

gboolean
avq_kmeans_fit (const float *x, gsize n, gsize d, const AvqKmeansOptions *opts,
                float *centroids, guint32 *labels, AvqKmeansResult *result,
                GError **error)
{
  if (opts->k > n) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "k-means: codebook size K=%u exceeds the %" G_GSIZE_FORMAT
                 " training points; use a smaller K or more data", opts->k, n);
    return FALSE;
  }
  g_autoptr (AvqKmeansStream) s = avq_kmeans_stream_new (d, opts, error);
  if (!s)
    return FALSE;
  gboolean done = FALSE;
  while (!done) {
    if (!avq_kmeans_stream_feed (s, x, n, error)
        || !avq_kmeans_stream_end_pass (s, &done, error))
      return FALSE;
  }
  memcpy (centroids, s->cent, s->k * d * sizeof (float));
  if (labels) {
    int saved;
    set_blas_threads (opts->threads, &saved);
    avq_kmeans_assign (x, n, d, s->cent, s->norms, s->k, s->block_rows,
                       labels, NULL);
    restore_blas_threads (saved);
  }
  if (result)
    *result = s->result;
  return TRUE;
}
