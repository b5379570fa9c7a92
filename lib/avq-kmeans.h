/* k-means for AVQ codebook training (`avq train-codebook`).
 *
 * Points are float32 rows [N, D]. The assignment step is the encoder's
 * (spec section 5, edge step 4): score_k = ||e_k||^2 - 2 x.e_k from one
 * sgemm per block of rows, then a row argmin with ties going to the lowest
 * k. avq_kmeans_assign() is that step on its own, so the encoder and the
 * trainer cannot drift apart.
 *
 * The algorithm: a uniform reservoir sample of init_sample points; k-means++
 * on it (D^2 sampling, drawn in rounds of K/64 with rejection so that the
 * distribution stays exactly k-means++'s while D^2 is refreshed by one
 * sgemm per round instead of one pass per centre); then Lloyd iterations.
 * Iteration i assigns every point to its nearest centroid, reports
 * mse_i = mean ||x - e_label||^2 (exact, in double), then moves every
 * centroid to the mean of its points (sums in double). A cluster left
 * empty takes, in cluster order, the point with the largest error of that
 * pass not yet used (ties: the earlier point). It stops after the update of
 * the first iteration with (mse_{i-1} - mse_i) / mse_{i-1} < tol and no
 * re-seeding, with mse_i == 0, or after max_iters.
 *
 * Two ways in:
 *  - avq_kmeans_fit(): all points in memory.
 *  - AvqKmeansStream: the same algorithm over data re-read in chunks each
 *    pass, for feature sets larger than memory. It is exact Lloyd, not
 *    Sculley mini-batch: a pass accumulates per-cluster sums in double and
 *    the centroids move once, at the end of the pass. With the same seed,
 *    options, points and order it returns bit-identical centroids to
 *    avq_kmeans_fit() whatever the chunking (avq_kmeans_fit() is built on
 *    it). The cost is one extra pass over the data for the k-means++
 *    sample, and memory of K*D doubles (sums) + init_sample*D floats (the
 *    sample, freed after pass 0) + min(K, 4096)*D floats (re-seeding
 *    candidates) + block_rows*(K+D) floats.
 *
 * Determinism: for a given seed, options (block_rows included), input
 * order, OpenBLAS thread count and CPU kernel the result is bit-identical.
 * Everything outside the sgemm is single-threaded, in point order. The
 * thread count and the block size do change results: OpenBLAS 0.3.21 rounds
 * a row's dot products differently depending on where the row lands in the
 * call (edge micro-kernels, per-thread split), which flips near-ties.
 * The same caveat applies to the encoder: its labels equal the trainer's
 * only up to such near-ties.
 *
 * Threads: `threads` > 0 sets OpenBLAS's process-wide thread count around
 * each sgemm and restores it after; other BLAS users in the process should
 * not run concurrently with a k-means call.
 */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  guint iteration;    /* 1-based Lloyd iteration (assignment pass) */
  double mse;         /* mean over points of ||x - e_label||^2 in this pass */
  double rel_change;  /* (previous mse - mse) / previous mse; 0 at iteration 1 */
  double seconds;     /* wall time of this iteration */
  guint reseeded;     /* empty clusters re-seeded after this pass */
  guint64 points;     /* points seen in this pass */
} AvqKmeansIterStats;

typedef void (*AvqKmeansProgressFunc) (const AvqKmeansIterStats *stats,
                                       gpointer user_data);

typedef struct {
  guint k;              /* codebook size, >= 1 (default 4096) */
  guint max_iters;      /* Lloyd iterations at most, >= 1 (default 50) */
  double tol;           /* stop once rel_change < tol (default 1e-4); 0: never */
  guint64 seed;         /* GRand seed for the sample and k-means++ */
  guint threads;        /* OpenBLAS threads for the sgemm; 0: leave as is */
  gsize init_sample;    /* points k-means++ runs on; 0: max(8K, 16384), at
                         * least K, at most N */
  gsize block_rows;     /* rows per assignment sgemm; 0: 1024 */
  AvqKmeansProgressFunc progress;  /* called after every iteration, or NULL */
  gpointer progress_data;
} AvqKmeansOptions;

typedef struct {
  guint iterations;     /* Lloyd iterations run */
  gboolean converged;   /* stopped on tol (or mse 0), not on max_iters */
  double mse;           /* mse of the last assignment pass (before its
                         * update, so up to rounding an upper bound for the
                         * returned centroids) */
  double init_seconds;  /* k-means++ time */
  guint dead_clusters;  /* clusters still empty after the last pass: the data
                         * has fewer distinct points than K (see
                         * avq_kmeans_fit()) */
} AvqKmeansResult;

void avq_kmeans_options_init (AvqKmeansOptions *opts);

/* TRUE when k is a valid AVQ codebook size: a power of two in 2..65536
 * (index_bits 1..16). Sets *index_bits when non-NULL. */
gboolean avq_kmeans_check_codebook_size (guint64 k, guint *index_bits,
                                         GError **error);

/* norms[k] = ||e_k||^2, summed in double in index order and rounded to
 * float (as avq-quantizer.c does), for avq_kmeans_assign(). */
void avq_kmeans_codebook_norms (const float *codebook, gsize k, gsize d,
                                float *norms);

/* labels[i] = argmin_k (norms[k] - 2 x_i.e_k), ties to the lowest k, the
 * score evaluated in float as written. Rows go through cblas_sgemm in
 * blocks of block_rows (0: 1024). score (may be NULL) receives the minimum;
 * ||x_i||^2 + score[i] is the squared distance up to rounding. NaN scores
 * never win; a row whose scores are all NaN gets label 0. */
void avq_kmeans_assign (const float *x, gsize n, gsize d,
                        const float *codebook, const float *norms, gsize k,
                        gsize block_rows, guint32 *labels, float *score);

/* k-means on x [n, d] into centroids [opts->k, d]; labels [n] (may be NULL)
 * gets the assignment to the returned centroids (one more assignment
 * pass). result may be NULL.
 *
 * Errors (AVQ_ERROR_INVALID_ARGUMENT): k == 0, d == 0, k > n, max_iters
 * == 0, tol negative or not finite, a NaN or infinite feature (the message
 * names the point), K*D too large to allocate.
 * Fewer distinct points than K is not an error: empty clusters are
 * re-seeded from the worst-served points each iteration; once every point
 * sits exactly on a centroid there is nothing left to serve, the spare
 * centroids stay copies of data points and result->dead_clusters counts
 * them. An exact tie picks the lower index, but sgemm may round twin
 * codewords' scores apart, so the encoder can pick either twin; both decode
 * to the same vector. The CLI decides whether dead clusters are fatal. */
gboolean avq_kmeans_fit (const float *x, gsize n, gsize d,
                         const AvqKmeansOptions *opts, float *centroids,
                         guint32 *labels, AvqKmeansResult *result,
                         GError **error);

/* Uniform sample without replacement (Algorithm R) of up to `capacity`
 * rows from a stream fed in any chunking; which rows are kept depends only
 * on the seed and the row order. For `--max-tokens`: feed every image's
 * tokens, then cluster the sample with avq_kmeans_fit(). */
typedef struct _AvqKmeansReservoir AvqKmeansReservoir;

AvqKmeansReservoir *avq_kmeans_reservoir_new (gsize d, gsize capacity,
                                              guint64 seed);
void avq_kmeans_reservoir_add (AvqKmeansReservoir *r, const float *x,
                               gsize n);
/* The kept rows, [*n, d], in slot order (not stream order). */
const float *avq_kmeans_reservoir_points (const AvqKmeansReservoir *r,
                                          gsize *n);
guint64 avq_kmeans_reservoir_seen (const AvqKmeansReservoir *r);
void avq_kmeans_reservoir_free (AvqKmeansReservoir *r);

/* Streaming exact Lloyd. Usage:
 *
 *   s = avq_kmeans_stream_new (d, &opts, &err);
 *   do {
 *     for each chunk of the data, always in the same order:
 *       avq_kmeans_stream_feed (s, chunk, rows, &err);
 *   } while (avq_kmeans_stream_end_pass (s, &done, &err) && !done);
 *   memcpy (codebook, avq_kmeans_stream_centroids (s), k * d * 4);
 *
 * Pass 0 only fills the k-means++ sample; end_pass then runs k-means++
 * (AVQ_ERROR_INVALID_ARGUMENT when fewer than K points were fed). Every
 * later pass is one Lloyd iteration and must feed the same number of
 * points (AVQ_ERROR_MISMATCH otherwise). A NaN or infinite feature fails
 * the feed (or end_pass) that meets it, and every call after that. */
typedef struct _AvqKmeansStream AvqKmeansStream;

AvqKmeansStream *avq_kmeans_stream_new (gsize d, const AvqKmeansOptions *opts,
                                        GError **error);
gboolean avq_kmeans_stream_feed (AvqKmeansStream *s, const float *x, gsize n,
                                 GError **error);
gboolean avq_kmeans_stream_end_pass (AvqKmeansStream *s, gboolean *done,
                                     GError **error);
/* [k, d]; valid after pass 0; NULL before. */
const float *avq_kmeans_stream_centroids (const AvqKmeansStream *s);
void avq_kmeans_stream_get_result (const AvqKmeansStream *s,
                                   AvqKmeansResult *result);
void avq_kmeans_stream_free (AvqKmeansStream *s);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqKmeansStream, avq_kmeans_stream_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqKmeansReservoir, avq_kmeans_reservoir_free)

G_END_DECLS
