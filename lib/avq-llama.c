/* LLaMA decoder on the CPU: see avq-llama.h for the memory rules.
 *
 * Layout choices:
 *  - activations are row-major [tokens, features], as the GEMMs want them;
 *  - the KV cache is [layer][kv_head][position][head_dim], so that one
 *    head's keys (or values) form one contiguous [positions, head_dim]
 *    matrix for BLAS and for the decode kernels;
 *  - prefill multiplies by weight blocks widened to f32 (sgemm does the
 *    work, the widening is ~1% of it); a single row (decode, lm_head) uses
 *    fused widen+dot kernels split over the decoder's own worker threads,
 *    because there the cost is reading the weights once and a widened copy
 *    would triple the memory traffic. */
#include "avq-llama.h"
#include "avq-build-config.h"
#include "avq-error.h"
#if AVQ_HAVE_CUDA
#include "cuda/avq-cuda-llama.h"
#endif

#include <cblas.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <cpuid.h>
#define AVQ_LLAMA_X86 1
#else
#define AVQ_LLAMA_X86 0
#endif

/* Floats of the scratch that weight blocks are widened into before each
 * sgemm (16 MiB: 1024 rows of a 7B q_proj, 384 of down_proj). OpenBLAS
 * repacks the activations on every call, so blocks much smaller than this
 * lose ~15% of the prefill to packing. */
#define BLOCK_FLOATS (4 << 20)
#define BLOCK_MIN_ROWS 16
/* Prompt rows run through the layers together; longer prompts are split
 * so that activation buffers stay bounded. */
#define PREFILL_CHUNK 1024
/* Up to this many rows a linear layer uses the row-at-a-time kernels. */
#define GEMV_MAX_ROWS 3
/* The same for batched decode steps: the fused tile kernels cost ~21 ms
 * per row for a 2-layer 7B-shaped model with its lm_head (one thread),
 * widening + sgemm ~400 ms (the widening) + ~12 ms per row; they cross
 * near 48 rows (tests/bench/bench-llama --batch-sgemm --cpu-time). */
#define BATCH_GEMV_MAX_ROWS 48
#define MAX_THREADS 64

typedef struct {
  char *name;
  const guint8 *data;   /* in the model's mapping */
  AvqDType dtype;
  int rows, cols;
  gboolean direct;      /* F32 and aligned: BLAS can read it in place */
  float *merged;        /* LoRA-merged private copy (data points here), or NULL */
} Mat;

typedef struct {
  float *attn_norm, *mlp_norm;
  Mat q, k, v, o, gate, up, down;
} Layer;

typedef void (*RangeFunc) (gpointer ctx, int begin, int end);

typedef struct {
  RangeFunc fn;
  gpointer ctx;
  int begin, end;
} Job;

struct _AvqLlama {
  const AvqModel *model;
  AvqTextConfig cfg;
  /* no field may be called I: OpenBLAS's cblas.h pulls in complex.h */
  int H, nh, nkv, hd, ffn, vocab, n_layers;
  int q_dim, kv_dim;
  float scale;
  gboolean simd;

  Mat embed, lm_head;
  float *final_norm;
  Layer *layers;

  /* One KV cache per sequence, all in one block per K and V:
   * [seq][layer][kv_head][max_ctx][hd] (on CUDA the device holds them and
   * these stay NULL). One block, so that asking for more sequences or
   * positions than memory allows fails in one allocation, and growing the
   * context is one realloc. */
  int max_ctx, n_seqs;
  int *n_past;   /* [n_seqs] positions cached per sequence */
  float *k_cache, *v_cache;
  float *rope_cos, *rope_sin;   /* [max_ctx][hd/2] */

  /* scratch, grown on demand */
  int scratch_rows;
  gsize scores_floats;
  float *x, *h, *q, *k, *v, *att, *g, *u, *scores;
  float *wbuf;
  gsize wbuf_floats;
  int block_rows;   /* 0: block_rows() */
  int batch_gemv_rows;   /* batched decode: fused kernels up to this many rows */
  float *last;
  /* The last *_candidates step's logits on the CPU ([step_rows, vocab]; on
   * CUDA the device keeps them); step_rows 0: none valid. */
  float *step_logits;
  gsize step_floats;
  int step_rows;

  int threads;
#if AVQ_HAVE_CUDA
  AvqCudaLlama *cuda;   /* non-NULL: prefill and decode run there */
#endif
  GThreadPool *pool;
  GMutex lock;
  GCond done;
  int pending;
};

/* ---------------------------------------------------------------------- */
/* widening and dot-product kernels */

static gboolean
cpu_has_simd (void)
{
#if AVQ_LLAMA_X86
  /* F16C through cpuid: clang before 15 does not know "f16c" in
   * __builtin_cpu_supports. */
  unsigned int eax, ebx, ecx, edx;
  gboolean f16c = __get_cpuid (1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
  __builtin_cpu_init ();
  return f16c && __builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma");
#else
  return FALSE;
#endif
}

static inline float
load_f32 (const guint8 *p)
{
  float f;
  memcpy (&f, p, sizeof f);
  return f;
}

static inline guint16
load_u16 (const guint8 *p)
{
  guint16 v;
  memcpy (&v, p, sizeof v);
  return v;
}

static void
widen_scalar (AvqDType dtype, const guint8 *src, gsize n, float *dst)
{
  switch (dtype) {
    case AVQ_DTYPE_F32:
      memcpy (dst, src, n * sizeof (float));
      break;
    case AVQ_DTYPE_F16:
      for (gsize i = 0; i < n; i++)
        dst[i] = avq_half_to_float (load_u16 (src + 2 * i));
      break;
    case AVQ_DTYPE_BF16:
      for (gsize i = 0; i < n; i++)
        dst[i] = avq_bf16_to_float (load_u16 (src + 2 * i));
      break;
    default:
      g_assert_not_reached ();
  }
}

static float
dot_scalar (AvqDType dtype, const guint8 *w, const float *x, int n)
{
  /* Four partial sums: the same association pattern for all dtypes and
   * close to what the vector kernel does. */
  float s[4] = { 0, 0, 0, 0 };
  int i = 0;
  switch (dtype) {
    case AVQ_DTYPE_F32:
      for (; i < n; i++)
        s[i & 3] += load_f32 (w + 4 * (gsize) i) * x[i];
      break;
    case AVQ_DTYPE_F16:
      for (; i < n; i++)
        s[i & 3] += avq_half_to_float (load_u16 (w + 2 * (gsize) i)) * x[i];
      break;
    case AVQ_DTYPE_BF16:
      for (; i < n; i++)
        s[i & 3] += avq_bf16_to_float (load_u16 (w + 2 * (gsize) i)) * x[i];
      break;
    default:
      g_assert_not_reached ();
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

#if AVQ_LLAMA_X86
#define SIMD_TARGET __attribute__ ((target ("avx2,fma,f16c")))

SIMD_TARGET static inline __m256
load8 (AvqDType dtype, const guint8 *p)
{
  if (dtype == AVQ_DTYPE_F16)
    return _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) p));
  if (dtype == AVQ_DTYPE_BF16) {
    __m256i w = _mm256_cvtepu16_epi32 (_mm_loadu_si128 ((const __m128i *) p));
    return _mm256_castsi256_ps (_mm256_slli_epi32 (w, 16));
  }
  return _mm256_loadu_ps ((const float *) p);
}

SIMD_TARGET static inline float
hsum8 (__m256 v)
{
  __m128 s = _mm_add_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));
  s = _mm_add_ps (s, _mm_movehl_ps (s, s));
  s = _mm_add_ss (s, _mm_movehdup_ps (s));
  return _mm_cvtss_f32 (s);
}

SIMD_TARGET static void
widen_simd (AvqDType dtype, const guint8 *src, gsize n, float *dst)
{
  gsize es = avq_dtype_size (dtype), i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps (dst + i, load8 (dtype, src + i * es));
  if (i < n)
    widen_scalar (dtype, src + i * es, n - i, dst + i);
}

/* Specialised per dtype so that the inner loop has no branch. */
#define DEFINE_DOT_SIMD(suffix, DT, ES)                                      \
  SIMD_TARGET static float                                                   \
  dot_simd_##suffix (const guint8 *w, const float *x, int n)                 \
  {                                                                          \
    __m256 a0 = _mm256_setzero_ps (), a1 = _mm256_setzero_ps ();             \
    __m256 a2 = _mm256_setzero_ps (), a3 = _mm256_setzero_ps ();             \
    int i = 0;                                                               \
    for (; i + 32 <= n; i += 32) {                                           \
      a0 = _mm256_fmadd_ps (load8 (DT, w + (gsize) i * ES), _mm256_loadu_ps (x + i), a0); \
      a1 = _mm256_fmadd_ps (load8 (DT, w + (gsize) (i + 8) * ES), _mm256_loadu_ps (x + i + 8), a1); \
      a2 = _mm256_fmadd_ps (load8 (DT, w + (gsize) (i + 16) * ES), _mm256_loadu_ps (x + i + 16), a2); \
      a3 = _mm256_fmadd_ps (load8 (DT, w + (gsize) (i + 24) * ES), _mm256_loadu_ps (x + i + 24), a3); \
    }                                                                        \
    for (; i + 8 <= n; i += 8)                                               \
      a0 = _mm256_fmadd_ps (load8 (DT, w + (gsize) i * ES), _mm256_loadu_ps (x + i), a0); \
    float s = hsum8 (_mm256_add_ps (_mm256_add_ps (a0, a1), _mm256_add_ps (a2, a3))); \
    if (i < n)                                                               \
      s += dot_scalar (DT, w + (gsize) i * ES, x + i, n - i);                \
    return s;                                                                \
  }

DEFINE_DOT_SIMD (f16, AVQ_DTYPE_F16, 2)
DEFINE_DOT_SIMD (bf16, AVQ_DTYPE_BF16, 2)
DEFINE_DOT_SIMD (f32, AVQ_DTYPE_F32, 4)

SIMD_TARGET static void
axpy_simd (float a, const float *x, float *y, int n)
{
  __m256 va = _mm256_set1_ps (a);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps (y + i, _mm256_fmadd_ps (va, _mm256_loadu_ps (x + i),
                                              _mm256_loadu_ps (y + i)));
  for (; i < n; i++)
    y[i] += a * x[i];
}

/* Dot products of NW (1 or 2) weight rows with NX (1 to 4) input rows:
 * y[b * y_stride + a] = w_a . x_b. Each weight vector is loaded and widened
 * once for all NX inputs and each input vector once for both weight rows:
 * 8 FMAs per 6 loads where dot() does 1 per 2, so that several rows at once
 * (batched decode) stay bound by reading the weights, not by the loads.
 * Inlined with constant NW and NX, the accumulators live in registers. */
SIMD_TARGET static inline __attribute__ ((always_inline)) void
tile_simd (AvqDType dt, gsize es, int nw, int nx, const guint8 *w, gsize w_stride,
           const float *x, gsize x_stride, int n, float *y, gsize y_stride)
{
  __m256 acc[2][4];
#pragma GCC unroll 2
  for (int a = 0; a < nw; a++)
#pragma GCC unroll 4
    for (int b = 0; b < nx; b++)
      acc[a][b] = _mm256_setzero_ps ();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 wv[2];
#pragma GCC unroll 2
    for (int a = 0; a < nw; a++)
      wv[a] = load8 (dt, w + a * w_stride + (gsize) i * es);
#pragma GCC unroll 4
    for (int b = 0; b < nx; b++) {
      __m256 xv = _mm256_loadu_ps (x + b * x_stride + i);
#pragma GCC unroll 2
      for (int a = 0; a < nw; a++)
        acc[a][b] = _mm256_fmadd_ps (wv[a], xv, acc[a][b]);
    }
  }
  for (int a = 0; a < nw; a++)
    for (int b = 0; b < nx; b++) {
      float s = hsum8 (acc[a][b]);
      if (i < n)
        s += dot_scalar (dt, w + a * w_stride + (gsize) i * es, x + b * x_stride + i,
                         n - i);
      y[b * y_stride + a] = s;
    }
}

#define DEFINE_TILE_SIMD(suffix, DT, ES)                                     \
  SIMD_TARGET static void                                                    \
  tile_simd_##suffix (int nw, int nx, const guint8 *w, gsize w_stride,       \
                      const float *x, gsize x_stride, int n, float *y,       \
                      gsize y_stride)                                        \
  {                                                                          \
    switch (nw * 4 + nx) {                                                   \
      case 5: tile_simd (DT, ES, 1, 1, w, w_stride, x, x_stride, n, y, y_stride); break; \
      case 6: tile_simd (DT, ES, 1, 2, w, w_stride, x, x_stride, n, y, y_stride); break; \
      case 7: tile_simd (DT, ES, 1, 3, w, w_stride, x, x_stride, n, y, y_stride); break; \
      case 8: tile_simd (DT, ES, 1, 4, w, w_stride, x, x_stride, n, y, y_stride); break; \
      case 9: tile_simd (DT, ES, 2, 1, w, w_stride, x, x_stride, n, y, y_stride); break; \
      case 10: tile_simd (DT, ES, 2, 2, w, w_stride, x, x_stride, n, y, y_stride); break; \
      case 11: tile_simd (DT, ES, 2, 3, w, w_stride, x, x_stride, n, y, y_stride); break; \
      case 12: tile_simd (DT, ES, 2, 4, w, w_stride, x, x_stride, n, y, y_stride); break; \
      default: g_assert_not_reached ();                                      \
    }                                                                        \
  }

DEFINE_TILE_SIMD (f16, AVQ_DTYPE_F16, 2)
DEFINE_TILE_SIMD (bf16, AVQ_DTYPE_BF16, 2)
DEFINE_TILE_SIMD (f32, AVQ_DTYPE_F32, 4)
#endif

static void
widen (gboolean simd, AvqDType dtype, const guint8 *src, gsize n, float *dst)
{
#if AVQ_LLAMA_X86
  if (simd && dtype != AVQ_DTYPE_F32) {
    widen_simd (dtype, src, n, dst);
    return;
  }
#else
  (void) simd;
#endif
  widen_scalar (dtype, src, n, dst);
}

static float
dot (gboolean simd, AvqDType dtype, const guint8 *w, const float *x, int n)
{
#if AVQ_LLAMA_X86
  if (simd) {
    switch (dtype) {
      case AVQ_DTYPE_F16: return dot_simd_f16 (w, x, n);
      case AVQ_DTYPE_BF16: return dot_simd_bf16 (w, x, n);
      case AVQ_DTYPE_F32: return dot_simd_f32 (w, x, n);
      default: g_assert_not_reached ();
    }
  }
#else
  (void) simd;
#endif
  return dot_scalar (dtype, w, x, n);
}

static void
axpy (gboolean simd, float a, const float *x, float *y, int n)
{
#if AVQ_LLAMA_X86
  if (simd) {
    axpy_simd (a, x, y, n);
    return;
  }
#else
  (void) simd;
#endif
  for (int i = 0; i < n; i++)
    y[i] += a * x[i];
}

/* ---------------------------------------------------------------------- */
/* worker threads for the row-at-a-time kernels */

static void
pool_worker (gpointer data, gpointer user_data)
{
  Job *job = data;
  AvqLlama *llama = user_data;
  job->fn (job->ctx, job->begin, job->end);
  g_mutex_lock (&llama->lock);
  if (--llama->pending == 0)
    g_cond_signal (&llama->done);
  g_mutex_unlock (&llama->lock);
}

/* Splits [0, n) into one range per thread (multiples of `grain`), runs the
 * first on the calling thread and waits for the others. */
static void
parallel_for (AvqLlama *llama, int n, int grain, RangeFunc fn, gpointer ctx)
{
  int t = llama->threads;
  if (grain < 1)
    grain = 1;
  if (t > (n + grain - 1) / grain)
    t = (n + grain - 1) / grain;
  if (t <= 1 || llama->pool == NULL) {
    fn (ctx, 0, n);
    return;
  }
  Job jobs[MAX_THREADS];
  int units = (n + grain - 1) / grain;
  for (int i = 0; i < t; i++) {
    jobs[i].fn = fn;
    jobs[i].ctx = ctx;
    jobs[i].begin = MIN (n, (int) ((gint64) units * i / t) * grain);
    jobs[i].end = MIN (n, (int) ((gint64) units * (i + 1) / t) * grain);
  }
  g_mutex_lock (&llama->lock);
  llama->pending = t - 1;
  g_mutex_unlock (&llama->lock);
  for (int i = 1; i < t; i++)
    g_thread_pool_push (llama->pool, &jobs[i], NULL);
  fn (ctx, jobs[0].begin, jobs[0].end);
  g_mutex_lock (&llama->lock);
  while (llama->pending > 0)
    g_cond_wait (&llama->done, &llama->lock);
  g_mutex_unlock (&llama->lock);
}

/* ---------------------------------------------------------------------- */
/* linear layers: y[n, rows] = x[n, cols] W^T */

/* Up to three matrices that read the same input (q|k|v, gate|up) share
 * one parallel pass: one wake-up and one barrier instead of three. */
typedef struct {
  const Mat *w[3];
  float *y[3];
  int count;
  const float *x;
  int n;
  gboolean simd;
} GemvCtx;

/* Rows [begin, end) of the matrices stacked on top of each other. */
static void
gemv_range (gpointer data, int begin, int end)
{
  GemvCtx *c = data;
  int off = 0;
  for (int m = 0; m < c->count; off += c->w[m]->rows, m++) {
    const Mat *w = c->w[m];
    int r0 = MAX (begin, off) - off, r1 = MIN (end, off + w->rows) - off;
    gsize row_bytes = (gsize) w->cols * avq_dtype_size (w->dtype);
#if AVQ_LLAMA_X86
    if (c->simd && c->n > 1) {
      /* several input rows (batched decode): pairs of weight rows against
       * up to 4 inputs at a time; the pair (16 KiB of a 4096-wide F16
       * row) stays in L1 across the groups of inputs */
      for (int r = r0; r < r1; r += 2) {
        int nw = MIN (2, r1 - r);
        const guint8 *wr = w->data + (gsize) r * row_bytes;
        /* groups as even as possible (5 = 3 + 2, not 4 + 1): a group of
         * one would wait on its two accumulators' FMA latency */
        int groups = (c->n + 3) / 4;
        for (int gi = 0, i = 0, nx; gi < groups; gi++, i += nx) {
          nx = (c->n - i + (groups - gi) - 1) / (groups - gi);
          const float *x = c->x + (gsize) i * w->cols;
          float *y = c->y[m] + (gsize) i * w->rows + r;
          switch (w->dtype) {
            case AVQ_DTYPE_F16:
              tile_simd_f16 (nw, nx, wr, row_bytes, x, w->cols, w->cols, y, w->rows);
              break;
            case AVQ_DTYPE_BF16:
              tile_simd_bf16 (nw, nx, wr, row_bytes, x, w->cols, w->cols, y, w->rows);
              break;
            case AVQ_DTYPE_F32:
              tile_simd_f32 (nw, nx, wr, row_bytes, x, w->cols, w->cols, y, w->rows);
              break;
            default:
              g_assert_not_reached ();
          }
        }
      }
      continue;
    }
#endif
    for (int r = r0; r < r1; r++) {
      const guint8 *wr = w->data + (gsize) r * row_bytes;
      for (int i = 0; i < c->n; i++)
        c->y[m][(gsize) i * w->rows + r] = dot (c->simd, w->dtype, wr,
                                                c->x + (gsize) i * w->cols, w->cols);
    }
  }
}

static int
block_rows (int cols)
{
  int rows = (int) (BLOCK_FLOATS / MAX (cols, 1));
  rows = rows >= 64 ? rows / 64 * 64 : rows;   /* whole SIMD panels */
  return MAX (rows, BLOCK_MIN_ROWS);
}

/* Up to `gemv_max` rows use the fused kernels, more widen weight blocks
 * for sgemm. */
static void
linear (AvqLlama *llama, const Mat *w, const float *x, int n, float *y, int gemv_max)
{
  /* LoRA adapters were merged into a private F32 copy at load
   * (avq_llama_apply_lora), so w already is W + (alpha/r) B A. */
  if (n <= gemv_max) {
    GemvCtx ctx = { { w }, { y }, 1, x, n, llama->simd };
    parallel_for (llama, w->rows, 16, gemv_range, &ctx);
    return;
  }
  if (w->direct) {
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, w->rows, w->cols,
                 1.0f, x, w->cols, (const float *) w->data, w->cols,
                 0.0f, y, w->rows);
    return;
  }
  gsize es = avq_dtype_size (w->dtype);
  int block = llama->block_rows > 0 ? llama->block_rows : block_rows (w->cols);
  /* the scratch is sized for the layer matrices; a batch's lm_head (more
   * rows than any of them in a small model) takes smaller blocks */
  block = MIN (block, (int) MIN (llama->wbuf_floats / w->cols, G_MAXINT));
  for (int r0 = 0; r0 < w->rows; r0 += block) {
    int rb = MIN (block, w->rows - r0);
    widen (llama->simd, w->dtype, w->data + (gsize) r0 * w->cols * es,
           (gsize) rb * w->cols, llama->wbuf);
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, rb, w->cols,
                 1.0f, x, w->cols, llama->wbuf, w->cols, 0.0f, y + r0, w->rows);
  }
}

/* linear() of 2 or 3 matrices with the same input */
static void
linear_group (AvqLlama *llama, int count, const Mat *w0, float *y0,
              const Mat *w1, float *y1, const Mat *w2, float *y2,
              const float *x, int n, int gemv_max)
{
  if (n <= gemv_max) {
    GemvCtx ctx = { { w0, w1, w2 }, { y0, y1, y2 }, count, x, n, llama->simd };
    int rows = w0->rows + w1->rows + (count > 2 ? w2->rows : 0);
    parallel_for (llama, rows, 16, gemv_range, &ctx);
    return;
  }
  linear (llama, w0, x, n, y0, gemv_max);
  linear (llama, w1, x, n, y1, gemv_max);
  if (count > 2)
    linear (llama, w2, x, n, y2, gemv_max);
}

/* ---------------------------------------------------------------------- */
/* element-wise pieces */

static void
rms_norm (const float *x, const float *w, int n, int dim, float eps, float *out)
{
  for (int i = 0; i < n; i++) {
    const float *xr = x + (gsize) i * dim;
    float *o = out + (gsize) i * dim;
    double ss = 0;
    for (int c = 0; c < dim; c++)
      ss += (double) xr[c] * xr[c];
    float inv = (float) (1.0 / sqrt ((float) (ss / dim) + eps));
    for (int c = 0; c < dim; c++)
      o[c] = w[c] * (xr[c] * inv);
  }
}

/* HF rotate-half: pairs are (i, i + hd/2), not adjacent elements. */
static void
rope (const AvqLlama *llama, float *t, int n, int heads, int p0)
{
  int half = llama->hd / 2;
  int stride = heads * llama->hd;
  for (int i = 0; i < n; i++) {
    const float *cs = llama->rope_cos + (gsize) (p0 + i) * half;
    const float *sn = llama->rope_sin + (gsize) (p0 + i) * half;
    for (int hh = 0; hh < heads; hh++) {
      float *v = t + (gsize) i * stride + (gsize) hh * llama->hd;
      for (int j = 0; j < half; j++) {
        float a = v[j], b = v[j + half];
        v[j] = a * cs[j] - b * sn[j];
        v[j + half] = b * cs[j] + a * sn[j];
      }
    }
  }
}

static void
softmax_inplace (float *s, int n)
{
  float m = s[0];
  for (int j = 1; j < n; j++)
    m = MAX (m, s[j]);
  double sum = 0;
  for (int j = 0; j < n; j++) {
    s[j] = expf (s[j] - m);
    sum += s[j];
  }
  float inv = (float) (1.0 / sum);
  for (int j = 0; j < n; j++)
    s[j] *= inv;
}

/* ---------------------------------------------------------------------- */
/* attention */

static float *
cache_k (AvqLlama *llama, int seq, int layer, int kvh)
{
  return llama->k_cache + (((gsize) seq * llama->n_layers + layer) * llama->nkv + kvh) *
      llama->max_ctx * llama->hd;
}

static float *
cache_v (AvqLlama *llama, int seq, int layer, int kvh)
{
  return llama->v_cache + (((gsize) seq * llama->n_layers + layer) * llama->nkv + kvh) *
      llama->max_ctx * llama->hd;
}

/* The rows of one forward pass: `n` consecutive positions p0 .. of
 * sequence `seq` (prefill, decode), or, when `seqs` is set, row i at
 * position pos[i] of sequence seqs[i] (batched decode). Linear layers run
 * up to `gemv_max` rows through the fused kernels. */
typedef struct {
  int n;
  int seq, p0;
  const int *seqs, *pos;
  int gemv_max;
} Rows;

static inline int
row_seq (const Rows *r, int i)
{
  return r->seqs ? r->seqs[i] : r->seq;
}

static inline int
row_pos (const Rows *r, int i)
{
  return r->seqs ? r->pos[i] : r->p0 + i;
}

typedef struct {
  AvqLlama *llama;
  int layer;
  const Rows *rows;
} RowAttnCtx;

/* Attention of single query rows, each against its own sequence's cache up
 * to its own position; units [begin, end) are (row, head) pairs. */
static void
row_attention_range (gpointer data, int begin, int end)
{
  RowAttnCtx *c = data;
  AvqLlama *llama = c->llama;
  int hd = llama->hd, group = llama->nh / llama->nkv;
  for (int u = begin; u < end; u++) {
    int i = u / llama->nh, hh = u % llama->nh;
    int seq = row_seq (c->rows, i), T = row_pos (c->rows, i) + 1;
    const float *K = cache_k (llama, seq, c->layer, hh / group);
    const float *V = cache_v (llama, seq, c->layer, hh / group);
    const float *qh = llama->q + (gsize) i * llama->q_dim + (gsize) hh * hd;
    float *s = llama->scores + (gsize) u * llama->max_ctx;
    float *o = llama->att + (gsize) i * llama->q_dim + (gsize) hh * hd;
    for (int j = 0; j < T; j++)
      s[j] = dot (llama->simd, AVQ_DTYPE_F32, (const guint8 *) (K + (gsize) j * hd),
                  qh, hd) * llama->scale;
    softmax_inplace (s, T);
    memset (o, 0, hd * sizeof (float));
    for (int j = 0; j < T; j++)
      axpy (llama->simd, s[j], V + (gsize) j * hd, o, hd);
  }
}

static void
attention (AvqLlama *llama, int layer, const Rows *rows)
{
  int n = rows->n, p0 = rows->p0;
  int hd = llama->hd, group = llama->nh / llama->nkv, T = p0 + n;
  if (rows->seqs != NULL || n == 1) {
    RowAttnCtx ctx = { llama, layer, rows };
    parallel_for (llama, n * llama->nh, 1, row_attention_range, &ctx);
    return;
  }
  for (int hh = 0; hh < llama->nh; hh++) {
    const float *K = cache_k (llama, rows->seq, layer, hh / group);
    const float *V = cache_v (llama, rows->seq, layer, hh / group);
    float *S = llama->scores;
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, T, hd,
                 llama->scale, llama->q + (gsize) hh * hd, llama->q_dim,
                 K, hd, 0.0f, S, T);
    for (int i = 0; i < n; i++) {
      float *row = S + (gsize) i * T;
      int valid = p0 + i + 1;   /* causal: keys up to the query's position */
      softmax_inplace (row, valid);
      memset (row + valid, 0, (gsize) (T - valid) * sizeof (float));
    }
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, T,
                 1.0f, S, T, V, hd, 0.0f, llama->att + (gsize) hh * hd,
                 llama->q_dim);
  }
}

/* ---------------------------------------------------------------------- */
/* forward */

static void
ensure_scratch (AvqLlama *llama, const Rows *rows)
{
  int n = rows->n;
  if (n > llama->scratch_rows) {
    gsize r = n;
    llama->x = g_renew (float, llama->x, r * llama->H);
    llama->h = g_renew (float, llama->h, r * llama->H);
    llama->q = g_renew (float, llama->q, r * llama->q_dim);
    llama->k = g_renew (float, llama->k, r * llama->kv_dim);
    llama->v = g_renew (float, llama->v, r * llama->kv_dim);
    llama->att = g_renew (float, llama->att, r * llama->q_dim);
    llama->g = g_renew (float, llama->g, r * llama->ffn);
    llama->u = g_renew (float, llama->u, r * llama->ffn);
    llama->scratch_rows = n;
  }
  /* single rows: [rows, heads, max_ctx]; a prompt: [n, context] for one
   * head at a time, and one row's [heads, max_ctx] in the final layer */
  gsize need = (gsize) llama->nh * llama->max_ctx;
  if (rows->seqs != NULL)
    need *= n;
  else
    need = MAX (need, (gsize) n * (rows->p0 + n));
  if (need > llama->scores_floats) {
    g_free (llama->scores);
    llama->scores = g_new (float, need);
    llama->scores_floats = need;
  }
}

static float
silu (float g)
{
  return g / (1.0f + expf (-g));
}

typedef enum {
  OUTPUT_LAST,   /* the last row's hidden state, for the logits */
  OUTPUT_NONE,   /* only the KV cache (prefill chunks before the last) */
  OUTPUT_ALL,    /* every row's (batched decode) */
} Output;

/* Runs rows x [n, H] (already in llama->x) and fills the caches. Returns
 * the row of llama->x that holds the last position's final hidden state
 * (undefined for OUTPUT_NONE; with OUTPUT_ALL row i is row i's). */
static int
forward (AvqLlama *llama, const Rows *rows_in, Output output)
{
  Rows rows = *rows_in;
  int H = llama->H, hd = llama->hd;
  float eps = llama->cfg.rms_norm_eps;
  int last = rows.n - 1;

  ensure_scratch (llama, &rows);
  for (int l = 0; l < llama->n_layers; l++) {
    const Layer *ly = &llama->layers[l];
    gboolean final_layer = l == llama->n_layers - 1;
    int n = rows.n;

    rms_norm (llama->x, ly->attn_norm, n, H, eps, llama->h);
    linear_group (llama, 3, &ly->q, llama->q, &ly->k, llama->k, &ly->v, llama->v,
                  llama->h, n, rows.gemv_max);
    if (rows.seqs != NULL) {
      for (int i = 0; i < n; i++) {
        rope (llama, llama->q + (gsize) i * llama->q_dim, 1, llama->nh, rows.pos[i]);
        rope (llama, llama->k + (gsize) i * llama->kv_dim, 1, llama->nkv, rows.pos[i]);
      }
    } else {
      rope (llama, llama->q, n, llama->nh, rows.p0);
      rope (llama, llama->k, n, llama->nkv, rows.p0);
    }
    for (int kvh = 0; kvh < llama->nkv; kvh++) {
      for (int i = 0; i < n; i++) {
        gsize at = (gsize) row_pos (&rows, i) * hd;
        gsize from = (gsize) i * llama->kv_dim + (gsize) kvh * hd;
        memcpy (cache_k (llama, row_seq (&rows, i), l, kvh) + at, llama->k + from,
                hd * sizeof (float));
        memcpy (cache_v (llama, row_seq (&rows, i), l, kvh) + at, llama->v + from,
                hd * sizeof (float));
      }
    }
    if (final_layer && output != OUTPUT_ALL) {
      /* Past its cache writes, the last layer matters only through the
       * row that reaches the logits: one row instead of n saves ~1/L of
       * the prefill. */
      if (output == OUTPUT_NONE)
        return 0;
      if (n > 1) {
        memmove (llama->q, llama->q + (gsize) last * llama->q_dim, llama->q_dim * sizeof (float));
        memmove (llama->x, llama->x + (gsize) last * H, H * sizeof (float));
        rows.p0 += last;
        rows.n = n = 1;
        last = 0;
      }
    }
    attention (llama, l, &rows);

    /* o_proj into h, then the residual */
    linear (llama, &ly->o, llama->att, n, llama->h, rows.gemv_max);
    for (gsize i = 0; i < (gsize) n * H; i++)
      llama->x[i] += llama->h[i];

    rms_norm (llama->x, ly->mlp_norm, n, H, eps, llama->h);
    linear_group (llama, 2, &ly->gate, llama->g, &ly->up, llama->u, NULL, NULL,
                  llama->h, n, rows.gemv_max);
    for (gsize i = 0; i < (gsize) n * llama->ffn; i++)
      llama->g[i] = silu (llama->g[i]) * llama->u[i];
    linear (llama, &ly->down, llama->g, n, llama->h, rows.gemv_max);
    for (gsize i = 0; i < (gsize) n * H; i++)
      llama->x[i] += llama->h[i];
  }
  return last;
}

/* Logits [n, vocab] of n final hidden states [n, H]. */
static void
final_logits (AvqLlama *llama, const float *x, int n, float *logits, int gemv_max)
{
  float *normed = n == 1 ? llama->last : llama->h;   /* h holds n rows */
  rms_norm (x, llama->final_norm, n, llama->H, llama->cfg.rms_norm_eps, normed);
  linear (llama, &llama->lm_head, normed, n, logits, gemv_max);
}

static gboolean
check_sequence (const AvqLlama *llama, int seq, const char *what, GError **error)
{
  if (seq < 0 || seq >= llama->n_seqs) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "%s: sequence %d does not exist (the decoder holds %d)", what, seq,
                 llama->n_seqs);
    return FALSE;
  }
  return TRUE;
}

gboolean
avq_llama_prefill_sequence (AvqLlama *llama, int seq, const float *embeddings,
                            int n, float *logits, GError **error)
{
  g_return_val_if_fail (llama != NULL, FALSE);
  g_return_val_if_fail (n <= 0 || embeddings != NULL, FALSE);
  if (!check_sequence (llama, seq, "LLaMA prefill", error))
    return FALSE;
  llama->step_rows = 0;
  if (n <= 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "LLaMA prefill needs at least one position (got %d)", n);
    return FALSE;
  }
  int *past = &llama->n_past[seq];
  if (n > llama->max_ctx - *past) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "LLaMA context full: %d cached + %d new positions > %d",
                 *past, n, llama->max_ctx);
    return FALSE;
  }
#if AVQ_HAVE_CUDA
  if (llama->cuda != NULL) {
    gboolean ok = seq == 0
        ? avq_cuda_llama_prefill (llama->cuda, embeddings, n, *past, logits, error)
        : avq_cuda_llama_prefill_sequence (llama->cuda, seq, embeddings, n, *past,
                                           logits, error);
    if (!ok)
      return FALSE;
    *past += n;
    return TRUE;
  }
#endif
  for (int done = 0; done < n;) {
    int chunk = MIN (PREFILL_CHUNK, n - done);
    Rows rows = { .n = chunk, .seq = seq, .p0 = *past, .gemv_max = GEMV_MAX_ROWS };
    ensure_scratch (llama, &rows);
    memcpy (llama->x, embeddings + (gsize) done * llama->H,
            (gsize) chunk * llama->H * sizeof (float));
    gboolean want = done + chunk == n && logits != NULL;
    int row = forward (llama, &rows, want ? OUTPUT_LAST : OUTPUT_NONE);
    *past += chunk;
    done += chunk;
    if (want)
      final_logits (llama, llama->x + (gsize) row * llama->H, 1, logits, GEMV_MAX_ROWS);
  }
  return TRUE;
}

gboolean
avq_llama_prefill (AvqLlama *llama, const float *embeddings, int n,
                   float *logits, GError **error)
{
  return avq_llama_prefill_sequence (llama, 0, embeddings, n, logits, error);
}

/* Where a step's results go: the caller's logits, or candidates (made
 * on the device on CUDA, from the logits kept in step_logits on the CPU). */
typedef struct {
  float *logits;
  int k;   /* > 0: candidates into out */
  float temperature;
  AvqTokenCandidates *out;
} StepOutput;

static float *
step_buffer (AvqLlama *llama, int rows)
{
  gsize need = (gsize) rows * llama->vocab;
  if (need > llama->step_floats) {
    g_free (llama->step_logits);
    llama->step_logits = g_new (float, need);
    llama->step_floats = need;
  }
  return llama->step_logits;
}

/* k as the candidate calls clamp it (avq-llama.h). */
static int
candidate_count (const AvqLlama *llama, int k, const AvqTokenCandidates *out, int n)
{
  k = MIN (MIN (k, AVQ_SAMPLING_CANDIDATES), llama->vocab);
  for (int i = 0; i < n; i++)
    k = MIN (k, out[i].capacity);
  return k;
}

#if AVQ_HAVE_CUDA
static gboolean
cuda_step (AvqLlama *llama, int n, const int *seqs, const int *tokens,
           const int *pos, const StepOutput *o, GError **error)
{
  if (o->k <= 0)
    return avq_cuda_llama_decode_batch (llama->cuda, n, seqs, tokens, pos, o->logits,
                                        NULL, error);
  if (!avq_cuda_llama_decode_batch_candidates (llama->cuda, n, seqs, tokens, pos, o->k,
                                               o->temperature, o->out, error))
    return FALSE;
  llama->step_rows = n;
  return TRUE;
}
#endif

/* The CPU's step results: logits to the caller, or candidates from the
 * logits kept for avq_llama_step_logits. */
static float *
cpu_step_logits (AvqLlama *llama, int n, const StepOutput *o)
{
  return o->k > 0 ? step_buffer (llama, n) : o->logits;
}

static void
cpu_step_done (AvqLlama *llama, int n, const StepOutput *o)
{
  if (o->k <= 0)
    return;
  for (int i = 0; i < n; i++)
    avq_token_candidates_from_logits (llama->step_logits + (gsize) i * llama->vocab,
                                      llama->vocab, o->k, o->temperature, &o->out[i]);
  llama->step_rows = n;
}

static gboolean
decode_one (AvqLlama *llama, int token, const StepOutput *o, GError **error)
{
  llama->step_rows = 0;
  if (llama->n_past[0] >= llama->max_ctx) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "LLaMA context full: %d positions", llama->max_ctx);
    return FALSE;
  }
#if AVQ_HAVE_CUDA
  if (llama->cuda != NULL) {
    if (token < 0 || token >= llama->vocab) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "token id %d is outside the vocabulary (%d entries of %s)",
                   token, llama->vocab, llama->embed.name);
      return FALSE;
    }
    const int seq = 0;
    if (!cuda_step (llama, 1, &seq, &token, &llama->n_past[0], o, error))
      return FALSE;
    llama->n_past[0]++;
    return TRUE;
  }
#endif
  Rows rows = { .n = 1, .seq = 0, .p0 = llama->n_past[0], .gemv_max = GEMV_MAX_ROWS };
  ensure_scratch (llama, &rows);
  if (!avq_llama_embed (llama, &token, 1, llama->x, error))
    return FALSE;
  forward (llama, &rows, OUTPUT_LAST);
  llama->n_past[0]++;
  final_logits (llama, llama->x, 1, cpu_step_logits (llama, 1, o), GEMV_MAX_ROWS);
  cpu_step_done (llama, 1, o);
  return TRUE;
}

gboolean
avq_llama_decode (AvqLlama *llama, int token, float *logits, GError **error)
{
  g_return_val_if_fail (llama != NULL, FALSE);
  g_return_val_if_fail (logits != NULL, FALSE);
  const StepOutput o = { .logits = logits };
  return decode_one (llama, token, &o, error);
}

gboolean
avq_llama_decode_candidates (AvqLlama *llama, int token, int k, float temperature,
                             AvqTokenCandidates *out, GError **error)
{
  g_return_val_if_fail (llama != NULL && out != NULL && k >= 1, FALSE);
  const StepOutput o = { .k = candidate_count (llama, k, out, 1),
                         .temperature = temperature, .out = out };
  return decode_one (llama, token, &o, error);
}

static gboolean
decode_batch (AvqLlama *llama, const int *seqs, const int *tokens, int n,
              const StepOutput *o, GError **error)
{
  llama->step_rows = 0;
  if (n <= 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "LLaMA batch decode needs at least one sequence (got %d)", n);
    return FALSE;
  }
  /* everything is checked before anything runs: a bad row must not leave
   * the other sequences advanced */
  g_autofree int *row_of = g_new (int, llama->n_seqs);
  for (int s = 0; s < llama->n_seqs; s++)
    row_of[s] = -1;
  for (int i = 0; i < n; i++) {
    g_autofree char *what = g_strdup_printf ("LLaMA batch decode, row %d", i);
    if (!check_sequence (llama, seqs[i], what, error))
      return FALSE;
    if (row_of[seqs[i]] >= 0) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "LLaMA batch decode: sequence %d appears in rows %d and %d",
                   seqs[i], row_of[seqs[i]], i);
      return FALSE;
    }
    row_of[seqs[i]] = i;
    if (tokens[i] < 0 || tokens[i] >= llama->vocab) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "LLaMA batch decode, row %d: token id %d is outside the vocabulary "
                   "(%d entries of %s)", i, tokens[i], llama->vocab, llama->embed.name);
      return FALSE;
    }
    if (llama->n_past[seqs[i]] >= llama->max_ctx) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "LLaMA context full: sequence %d (row %d) holds %d positions",
                   seqs[i], i, llama->max_ctx);
      return FALSE;
    }
  }
  g_autofree int *pos = g_new (int, n);
  for (int i = 0; i < n; i++)
    pos[i] = llama->n_past[seqs[i]];
#if AVQ_HAVE_CUDA
  if (llama->cuda != NULL) {
    if (!cuda_step (llama, n, seqs, tokens, pos, o, error))
      return FALSE;
    for (int i = 0; i < n; i++)
      llama->n_past[seqs[i]]++;
    return TRUE;
  }
#endif
  Rows rows = { .n = n, .seqs = seqs, .pos = pos, .gemv_max = llama->batch_gemv_rows };
  ensure_scratch (llama, &rows);
  if (!avq_llama_embed (llama, tokens, n, llama->x, error))
    return FALSE;   /* not reached: the ids were checked */
  forward (llama, &rows, OUTPUT_ALL);
  for (int i = 0; i < n; i++)
    llama->n_past[seqs[i]]++;
  float *logits = cpu_step_logits (llama, n, o);
  if (logits != NULL)
    final_logits (llama, llama->x, n, logits, llama->batch_gemv_rows);
  cpu_step_done (llama, n, o);
  return TRUE;
}

gboolean
avq_llama_decode_batch (AvqLlama *llama, const int *seqs, const int *tokens,
                        int n, float *logits, GError **error)
{
  g_return_val_if_fail (llama != NULL, FALSE);
  g_return_val_if_fail (n <= 0 || (seqs != NULL && tokens != NULL), FALSE);
  const StepOutput o = { .logits = logits };
  return decode_batch (llama, seqs, tokens, n, &o, error);
}

gboolean
avq_llama_decode_batch_candidates (AvqLlama *llama, const int *seqs,
                                   const int *tokens, int n, int k,
                                   float temperature, AvqTokenCandidates *out,
                                   GError **error)
{
  g_return_val_if_fail (llama != NULL, FALSE);
  g_return_val_if_fail (n <= 0 || (seqs != NULL && tokens != NULL && out != NULL), FALSE);
  g_return_val_if_fail (k >= 1, FALSE);
  const StepOutput o = { .k = n > 0 ? candidate_count (llama, k, out, n) : 1,
                         .temperature = temperature, .out = out };
  return decode_batch (llama, seqs, tokens, n, &o, error);
}

gboolean
avq_llama_step_logits (AvqLlama *llama, int row, float *logits, GError **error)
{
  g_return_val_if_fail (llama != NULL && logits != NULL, FALSE);
  if (row < 0 || row >= llama->step_rows) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "LLaMA step logits: row %d of a step of %d (none is kept after a "
                 "prefill, a plain decode or a change of the decoder)", row,
                 llama->step_rows);
    return FALSE;
  }
#if AVQ_HAVE_CUDA
  if (llama->cuda != NULL)
    return avq_cuda_llama_step_logits (llama->cuda, row, logits, error);
#endif
  memcpy (logits, llama->step_logits + (gsize) row * llama->vocab,
          sizeof (float) * llama->vocab);
  return TRUE;
}

gboolean
avq_llama_embed (const AvqLlama *llama, const int *ids, int n, float *out,
                 GError **error)
{
  gsize row_bytes = (gsize) llama->H * avq_dtype_size (llama->embed.dtype);
  for (int i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= llama->vocab) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "token id %d at prompt position %d is outside the vocabulary "
                   "(%d entries of %s)", ids[i], i, llama->vocab, llama->embed.name);
      return FALSE;
    }
    widen (llama->simd, llama->embed.dtype, llama->embed.data + (gsize) ids[i] * row_bytes,
           llama->H, out + (gsize) i * llama->H);
  }
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* construction */

static gboolean
bind_mat (const AvqModel *model, Mat *m, int rows, int cols, GError **error,
          const char *fmt, ...) G_GNUC_PRINTF (6, 7);

static gboolean
bind_mat (const AvqModel *model, Mat *m, int rows, int cols, GError **error,
          const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *name = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  gint64 shape[2] = { rows, cols };
  const AvqTensor *t = avq_model_require (model, 2, shape, error, "%s", name);
  if (t == NULL) {
    g_free (name);
    return FALSE;
  }
  m->name = name;
  m->data = t->data;
  m->dtype = t->dtype;
  m->rows = rows;
  m->cols = cols;
  m->direct = t->dtype == AVQ_DTYPE_F32 && ((guintptr) t->data % sizeof (float)) == 0;
  return TRUE;
}

static float *
load_vector (const AvqModel *model, int dim, GError **error, const char *name)
{
  gint64 shape[1] = { dim };
  const AvqTensor *t = avq_model_require (model, 1, shape, error, "%s", name);
  return t ? avq_tensor_dup_f32 (t) : NULL;
}

static void
rope_tables (AvqLlama *llama, int from, int to)
{
  int half = llama->hd / 2;
  for (int p = from; p < to; p++) {
    for (int i = 0; i < half; i++) {
      /* float32 like HF: inv_freq = 1 / theta^(2i/d), angle = pos * inv_freq */
      float inv = 1.0f / powf (llama->cfg.rope_theta, (float) (2 * i) / (float) llama->hd);
      float ang = (float) p * inv;
      llama->rope_cos[(gsize) p * half + i] = (float) cos ((double) ang);
      llama->rope_sin[(gsize) p * half + i] = (float) sin ((double) ang);
    }
  }
}

/* A KV cache that memory cannot hold: say what it would take, since the
 * size (1 MiB a position for a 7B model) is easy to underestimate. */
static void
cache_error (const AvqLlama *llama, int n_seqs, int max_context, GError **error)
{
  double per_pos = 2.0 * llama->n_layers * llama->kv_dim * sizeof (float) / 1024.0;
  gboolean mib = per_pos >= 1024;
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
               "cannot allocate the KV cache of %d sequence%s x %d positions: "
               "%.0f MiB (%.3g %s a position a sequence: %d layers, K and V of %d "
               "floats each)", n_seqs, n_seqs == 1 ? "" : "s", max_context,
               per_pos / 1024 * n_seqs * max_context, mib ? per_pos / 1024 : per_pos,
               mib ? "MiB" : "KiB", llama->n_layers, llama->kv_dim);
}

/* Floats of one K (or V) block for n_seqs caches of max_context
 * positions, or FALSE with an error saying what it would take. */
static gboolean
cache_floats (const AvqLlama *llama, int n_seqs, int max_context, gsize *floats,
              GError **error)
{
  gsize f = 0;
  gboolean ok = g_size_checked_mul (&f, (gsize) n_seqs, (gsize) llama->n_layers) &&
      g_size_checked_mul (&f, f, (gsize) llama->kv_dim) &&
      g_size_checked_mul (&f, f, (gsize) max_context) &&
      g_size_checked_mul (&f, f, 2 * sizeof (float));
  if (ok) {
    *floats = f / (2 * sizeof (float));
    return TRUE;
  }
  cache_error (llama, n_seqs, max_context, error);
  return FALSE;
}

gboolean
avq_llama_reserve (AvqLlama *llama, int max_context, GError **error)
{
  g_return_val_if_fail (llama != NULL, FALSE);
  llama->step_rows = 0;
  if (max_context <= llama->max_ctx)
    return TRUE;
  if (llama->cfg.max_position_embeddings > 0 &&
      max_context > llama->cfg.max_position_embeddings) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "a context of %d positions exceeds the model's "
                 "max_position_embeddings (%d)", max_context,
                 llama->cfg.max_position_embeddings);
    return FALSE;
  }
#if AVQ_HAVE_CUDA
  if (llama->cuda != NULL) {
    /* The caches live on the device; the host keeps only the positions.
     * Copying the longest sequence's positions keeps every sequence. */
    int longest = 0;
    for (int s = 0; s < llama->n_seqs; s++)
      longest = MAX (longest, llama->n_past[s]);
    if (!avq_cuda_llama_reserve (llama->cuda, max_context, longest, error))
      return FALSE;
    llama->max_ctx = max_context;
    return TRUE;
  }
#endif
  gsize floats;
  if (!cache_floats (llama, llama->n_seqs, max_context, &floats, error))
    return FALSE;
  /* realloc keeps the old layout at the start of each block: until both
   * succeed nothing has changed but the room (and glibc can grow a large
   * block by remapping, without a second copy in memory) */
  float *k = g_try_realloc (llama->k_cache, floats * sizeof (float));
  if (k == NULL) {
    cache_error (llama, llama->n_seqs, max_context, error);
    return FALSE;
  }
  llama->k_cache = k;
  float *v = g_try_realloc (llama->v_cache, floats * sizeof (float));
  if (v == NULL) {
    cache_error (llama, llama->n_seqs, max_context, error);
    return FALSE;
  }
  llama->v_cache = v;
  /* Spread the [position, head_dim] blocks out to the new stride, the last
   * first: block b moves up to b * new, which only overlaps blocks above it,
   * already moved. */
  gsize per_seq = (gsize) llama->n_layers * llama->nkv;
  gsize old_stride = (gsize) llama->max_ctx * llama->hd;
  gsize new_stride = (gsize) max_context * llama->hd;
  for (gsize b = per_seq * llama->n_seqs; b-- > 1;) {
    gsize len = (gsize) llama->n_past[b / per_seq] * llama->hd * sizeof (float);
    if (len > 0) {
      memmove (k + b * new_stride, k + b * old_stride, len);
      memmove (v + b * new_stride, v + b * old_stride, len);
    }
  }
  llama->rope_cos = g_renew (float, llama->rope_cos, (gsize) max_context * (llama->hd / 2));
  llama->rope_sin = g_renew (float, llama->rope_sin, (gsize) max_context * (llama->hd / 2));
  rope_tables (llama, llama->max_ctx, max_context);
  llama->max_ctx = max_context;
  return TRUE;
}

/* Resizes a cache block for new contents (the old ones are forgotten). A
 * failed shrink keeps the larger block, which still fits. */
static gboolean
resize_cache (float **block, gsize old_floats, gsize floats)
{
  float *p = g_try_realloc (*block, floats * sizeof (float));
  if (p != NULL)
    *block = p;
  return p != NULL || floats <= old_floats;
}

gboolean
avq_llama_set_sequences (AvqLlama *llama, int n_sequences, GError **error)
{
  g_return_val_if_fail (llama != NULL, FALSE);
  llama->step_rows = 0;
  if (n_sequences < 1) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "a decoder needs at least one sequence (got %d)", n_sequences);
    return FALSE;
  }
  if (n_sequences == llama->n_seqs) {
    memset (llama->n_past, 0, n_sequences * sizeof (int));
    return TRUE;
  }
  gsize floats, old_floats = 0;
  if (!cache_floats (llama, n_sequences, llama->max_ctx, &floats, error))
    return FALSE;
  int *past = g_try_new0 (int, n_sequences);
  if (past == NULL) {
    cache_error (llama, n_sequences, llama->max_ctx, error);
    return FALSE;
  }
#if AVQ_HAVE_CUDA
  if (llama->cuda != NULL) {
    if (!avq_cuda_llama_set_sequences (llama->cuda, n_sequences, error)) {
      g_free (past);
      return FALSE;
    }
    g_free (llama->n_past);
    llama->n_past = past;
    llama->n_seqs = n_sequences;
    return TRUE;
  }
#endif
  cache_floats (llama, llama->n_seqs, llama->max_ctx, &old_floats, NULL);
  /* a failed growth of V after K grew leaves K larger than needed: harmless */
  if (!resize_cache (&llama->k_cache, old_floats, floats) ||
      !resize_cache (&llama->v_cache, old_floats, floats)) {
    g_free (past);
    cache_error (llama, n_sequences, llama->max_ctx, error);
    return FALSE;
  }
  g_free (llama->n_past);
  llama->n_past = past;
  llama->n_seqs = n_sequences;
  return TRUE;
}

static gboolean
check_config (const AvqModel *model, const AvqTextConfig *c, GError **error)
{
  const char *why = NULL;
  if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_layers <= 0 ||
      c->vocab_size <= 0)
    why = "sizes must be positive";
  else if (c->num_heads <= 0 || c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads != 0)
    why = "num_attention_heads must be a positive multiple of num_key_value_heads";
  else if (c->head_dim <= 0 || c->head_dim % 2 != 0)
    why = "head_dim must be positive and even (rotary embeddings)";
  else if (c->num_heads > 4096)
    why = "too many attention heads";
  if (why != NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s/config.json: text_config: %s",
                 model->dir, why);
    return FALSE;
  }
  if (c->hidden_act != AVQ_ACT_SILU) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s/config.json: text_config.hidden_act %s is not supported "
                 "(LLaMA uses silu)", model->dir, avq_activation_name (c->hidden_act));
    return FALSE;
  }
  return TRUE;
}

AvqLlama *
avq_llama_new (const AvqModel *model, int max_context, GError **error)
{
  g_return_val_if_fail (model != NULL, NULL);
  const AvqTextConfig *c = &model->config.text;
  if (!check_config (model, c, error))
    return NULL;

  AvqLlama *llama = g_new0 (AvqLlama, 1);
  g_mutex_init (&llama->lock);
  g_cond_init (&llama->done);
  llama->model = model;
  llama->cfg = *c;
  llama->H = c->hidden_size;
  llama->nh = c->num_heads;
  llama->nkv = c->num_kv_heads;
  llama->hd = c->head_dim;
  llama->ffn = c->intermediate_size;
  llama->vocab = c->vocab_size;
  llama->n_layers = c->num_layers;
  llama->q_dim = llama->nh * llama->hd;
  llama->kv_dim = llama->nkv * llama->hd;
  llama->scale = 1.0f / sqrtf ((float) llama->hd);
  llama->simd = cpu_has_simd ();
  llama->threads = 1;
  llama->n_seqs = 1;
  llama->n_past = g_new0 (int, 1);
  llama->batch_gemv_rows = BATCH_GEMV_MAX_ROWS;
  /* for comparisons (tests/bench/bench-llama --batch-sgemm): batched steps
   * of more rows than this widen weight blocks for sgemm; 0: always */
  const char *env_rows = g_getenv ("AVQ_LLAMA_BATCH_GEMV_ROWS");
  if (env_rows != NULL)
    llama->batch_gemv_rows = (int) CLAMP (g_ascii_strtoll (env_rows, NULL, 10), 0, G_MAXINT);

  const char *P = "language_model.model";
  if (!bind_mat (model, &llama->embed, llama->vocab, llama->H, error, "%s.embed_tokens.weight", P))
    goto fail;
  if (c->tie_word_embeddings) {
    llama->lm_head = llama->embed;
    llama->lm_head.name = g_strdup (llama->embed.name);
  } else if (!bind_mat (model, &llama->lm_head, llama->vocab, llama->H, error,
                        "language_model.lm_head.weight")) {
    goto fail;
  }
  char *norm_name = g_strdup_printf ("%s.norm.weight", P);
  llama->final_norm = load_vector (model, llama->H, error, norm_name);
  g_free (norm_name);
  if (llama->final_norm == NULL)
    goto fail;

  llama->layers = g_new0 (Layer, llama->n_layers);
  for (int l = 0; l < llama->n_layers; l++) {
    Layer *ly = &llama->layers[l];
    char *an = g_strdup_printf ("%s.layers.%d.input_layernorm.weight", P, l);
    char *mn = g_strdup_printf ("%s.layers.%d.post_attention_layernorm.weight", P, l);
    ly->attn_norm = load_vector (model, llama->H, error, an);
    if (ly->attn_norm != NULL)
      ly->mlp_norm = load_vector (model, llama->H, error, mn);
    g_free (an);
    g_free (mn);
    if (ly->mlp_norm == NULL)
      goto fail;
#define BIND(field, rows, cols, sub) \
    if (!bind_mat (model, &ly->field, rows, cols, error, "%s.layers.%d.%s.weight", P, l, sub)) \
      goto fail;
    BIND (q, llama->q_dim, llama->H, "self_attn.q_proj");
    BIND (k, llama->kv_dim, llama->H, "self_attn.k_proj");
    BIND (v, llama->kv_dim, llama->H, "self_attn.v_proj");
    BIND (o, llama->H, llama->q_dim, "self_attn.o_proj");
    BIND (gate, llama->ffn, llama->H, "mlp.gate_proj");
    BIND (up, llama->ffn, llama->H, "mlp.up_proj");
    BIND (down, llama->H, llama->ffn, "mlp.down_proj");
#undef BIND
  }

  /* the widening scratch fits the largest block of any layer matrix (the
   * lm_head only ever runs one row and needs none) */
  gsize wfloats = 0;
  const Layer *l0 = &llama->layers[0];
  const Mat *mats[] = { &l0->q, &l0->k, &l0->v, &l0->o, &l0->gate, &l0->up, &l0->down };
  for (guint i = 0; i < G_N_ELEMENTS (mats); i++) {
    int rows = MIN (block_rows (mats[i]->cols), mats[i]->rows);
    wfloats = MAX (wfloats, (gsize) rows * mats[i]->cols);
  }
  llama->wbuf = g_new (float, wfloats);
  llama->wbuf_floats = wfloats;
  llama->last = g_new (float, llama->H);

  if (max_context <= 0) {
    /* a LLaVA-1.5 prompt with one image is ~600 positions; the cache of a
     * 7B model costs 1 MiB a position, so start small and let callers
     * (avq_llava_generate) reserve what they need */
    max_context = 1024;
    if (c->max_position_embeddings > 0)
      max_context = MIN (max_context, c->max_position_embeddings);
  }
  if (!avq_llama_reserve (llama, max_context, error))
    goto fail;
  return llama;

fail:
  avq_llama_free (llama);
  return NULL;
}

static void
clear_mat (Mat *m)
{
  g_free (m->merged);
  g_free (m->name);
}

void
avq_llama_free (AvqLlama *llama)
{
  if (llama == NULL)
    return;
  if (llama->pool != NULL)
    g_thread_pool_free (llama->pool, FALSE, TRUE);
#if AVQ_HAVE_CUDA
  avq_cuda_llama_free (llama->cuda);
#endif
  clear_mat (&llama->embed);
  clear_mat (&llama->lm_head);
  if (llama->layers != NULL) {
    for (int l = 0; l < llama->n_layers; l++) {
      Layer *ly = &llama->layers[l];
      g_free (ly->attn_norm);
      g_free (ly->mlp_norm);
      clear_mat (&ly->q);
      clear_mat (&ly->k);
      clear_mat (&ly->v);
      clear_mat (&ly->o);
      clear_mat (&ly->gate);
      clear_mat (&ly->up);
      clear_mat (&ly->down);
    }
    g_free (llama->layers);
  }
  g_free (llama->final_norm);
  g_free (llama->n_past);
  g_free (llama->k_cache);
  g_free (llama->v_cache);
  g_free (llama->rope_cos);
  g_free (llama->rope_sin);
  g_free (llama->x);
  g_free (llama->h);
  g_free (llama->q);
  g_free (llama->k);
  g_free (llama->v);
  g_free (llama->att);
  g_free (llama->g);
  g_free (llama->u);
  g_free (llama->scores);
  g_free (llama->wbuf);
  g_free (llama->last);
  g_free (llama->step_logits);
  g_mutex_clear (&llama->lock);
  g_cond_clear (&llama->done);
  g_free (llama);
}

void
avq_llama_set_threads (AvqLlama *llama, int threads)
{
  g_return_if_fail (llama != NULL);
  if (threads <= 0)
    threads = (int) g_get_num_processors ();
  threads = CLAMP (threads, 1, MAX_THREADS);
  openblas_set_num_threads (threads);
  if (llama->pool != NULL) {
    g_thread_pool_free (llama->pool, FALSE, TRUE);
    llama->pool = NULL;
  }
  llama->threads = threads;
  if (threads > 1)
    llama->pool = g_thread_pool_new (pool_worker, llama, threads - 1, TRUE, NULL);
  if (llama->pool == NULL)
    llama->threads = 1;
}

void
avq_llama_set_block_rows (AvqLlama *llama, int rows)
{
  g_return_if_fail (llama != NULL);
  llama->block_rows = MAX (rows, 0);
  if (rows > 0) {
    int max_cols = MAX (MAX (llama->H, llama->ffn), llama->q_dim);
    gsize need = (gsize) rows * max_cols;
    if (need > llama->wbuf_floats) {
      g_free (llama->wbuf);
      llama->wbuf = g_new (float, need);
      llama->wbuf_floats = need;
    }
  }
}

void
avq_llama_set_simd (AvqLlama *llama, gboolean enable)
{
  g_return_if_fail (llama != NULL);
  llama->simd = enable && cpu_has_simd ();
}

void
avq_llama_reset (AvqLlama *llama)
{
  g_return_if_fail (llama != NULL);
  llama->n_past[0] = 0;
}

void
avq_llama_reset_sequence (AvqLlama *llama, int seq)
{
  g_return_if_fail (llama != NULL);
  g_return_if_fail (seq >= 0 && seq < llama->n_seqs);
  llama->n_past[seq] = 0;
}

int
avq_llama_sequences (const AvqLlama *llama)
{
  return llama->n_seqs;
}

int
avq_llama_sequence_n_past (const AvqLlama *llama, int seq)
{
  g_return_val_if_fail (llama != NULL, -1);
  g_return_val_if_fail (seq >= 0 && seq < llama->n_seqs, -1);
  return llama->n_past[seq];
}

const AvqModel *
avq_llama_get_model (const AvqLlama *llama)
{
  return llama->model;
}

const AvqTextConfig *
avq_llama_get_config (const AvqLlama *llama)
{
  return &llama->cfg;
}

int
avq_llama_hidden_size (const AvqLlama *llama)
{
  return llama->H;
}

int
avq_llama_vocab_size (const AvqLlama *llama)
{
  return llama->vocab;
}

int
avq_llama_n_past (const AvqLlama *llama)
{
  return llama->n_past[0];
}

int
avq_llama_max_context (const AvqLlama *llama)
{
  return llama->max_ctx;
}

/* ---------------------------------------------------------------------- */
/* LoRA (AVQ-SPEC section 2): W' = W + (alpha / rank) B A, merged at load */

static Mat *
find_lora_target (AvqLlama *llama, const char *base)
{
  g_autofree char *weight = g_strdup_printf ("%s.weight", base);
  g_autofree char *alias = avq_model_alias_name (weight);
  for (int l = 0; l < llama->n_layers; l++) {
    Layer *ly = &llama->layers[l];
    Mat *mats[] = { &ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down };
    for (gsize i = 0; i < G_N_ELEMENTS (mats); i++)
      if (strcmp (mats[i]->name, weight) == 0 || (alias && strcmp (mats[i]->name, alias) == 0))
        return mats[i];
  }
  /* A tied lm_head shares the embedding matrix: adapting one would silently
   * adapt the other. */
  if (!llama->cfg.tie_word_embeddings &&
      (strcmp (llama->lm_head.name, weight) == 0 || (alias && strcmp (llama->lm_head.name, alias) == 0)))
    return &llama->lm_head;
  return NULL;
}

static gboolean
parse_lora_number (const AvqSafetensors *file, const char *key, double *value, GError **error)
{
  const char *text = avq_safetensors_metadata (file, key);
  char *end = NULL;
  if (text != NULL)
    *value = g_ascii_strtod (text, &end);
  if (text == NULL || end == text || *end != '\0' || !isfinite (*value) || *value <= 0) {
    g_set_error (error, AVQ_ERROR, text ? AVQ_ERROR_FORMAT : AVQ_ERROR_MISSING,
                 "%s: metadata %s %s", avq_safetensors_path (file), key,
                 text ? "is not a positive number" : "is missing (the file has lora.* tensors)");
    return FALSE;
  }
  return TRUE;
}

gboolean
avq_llama_apply_lora (AvqLlama *llama, const AvqSafetensors *file, guint *n_merged,
                      GError **error)
{
  const char *path = avq_safetensors_path (file);
  guint merged = 0;
  if (avq_llama_on_cuda (llama)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "%s: LoRA adapters must be merged before the decoder moves to CUDA",
                 path);
    return FALSE;
  }
  double alpha = 0, rank_d = 0;
  gboolean have_lora = FALSE;
  for (guint i = 0; i < avq_safetensors_n_tensors (file); i++)
    have_lora |= g_str_has_prefix (avq_safetensors_nth (file, i)->name, "lora.");
  if (n_merged)
    *n_merged = 0;
  if (!have_lora)
    return TRUE;
  if (!parse_lora_number (file, "lora.alpha", &alpha, error) ||
      !parse_lora_number (file, "lora.rank", &rank_d, error))
    return FALSE;
  int rank = (int) rank_d;
  if (rank != rank_d || rank > 65536) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: metadata lora.rank = %g is not a valid rank",
                 path, rank_d);
    return FALSE;
  }
  const float scale = (float) (alpha / rank);

  for (guint i = 0; i < avq_safetensors_n_tensors (file); i++) {
    const AvqTensor *a = avq_safetensors_nth (file, i);
    if (!g_str_has_prefix (a->name, "lora."))
      continue;
    if (g_str_has_suffix (a->name, ".lora_B"))
      continue;   /* handled with its A */
    if (!g_str_has_suffix (a->name, ".lora_A")) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: tensor %s is neither lora_A nor lora_B", path, a->name);
      return FALSE;
    }
    g_autofree char *base = g_strndup (a->name + strlen ("lora."),
                                       strlen (a->name) - strlen ("lora.") - strlen (".lora_A"));
    g_autofree char *b_name = g_strdup_printf ("lora.%s.lora_B", base);
    const AvqTensor *b = avq_safetensors_find (file, b_name);
    Mat *m = find_lora_target (llama, base);
    if (b == NULL) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING, "%s: %s has no %s", path, a->name, b_name);
      return FALSE;
    }
    if (m == NULL) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                   "%s: adapter %s names no linear layer of the language model", path, base);
      return FALSE;
    }
    if (m->merged != NULL) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: %s is adapted twice", path, base);
      return FALSE;
    }
    const gint64 a_shape[2] = { rank, m->cols }, b_shape[2] = { m->rows, rank };
    if (!avq_tensor_check_float (a, 2, a_shape, error) || !avq_tensor_check_float (b, 2, b_shape, error))
      return FALSE;

    g_autofree float *w = g_new (float, (gsize) m->rows * m->cols);
    widen (llama->simd, m->dtype, m->data, (gsize) m->rows * m->cols, w);
    g_autofree float *fa = avq_tensor_dup_f32 (a);
    g_autofree float *fb = avq_tensor_dup_f32 (b);
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, m->rows, m->cols, rank,
                 scale, fb, rank, fa, m->cols, 1.0f, w, m->cols);
    for (gsize j = 0; j < (gsize) m->rows * m->cols; j++)
      if (!isfinite (w[j])) {
        g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                     "%s: merging the %s adapter gives non-finite weights", path, base);
        return FALSE;
      }
    m->merged = g_steal_pointer (&w);
    m->data = (const guint8 *) m->merged;
    m->dtype = AVQ_DTYPE_F32;
    m->direct = TRUE;
    merged++;
  }
  if (n_merged)
    *n_merged = merged;
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* CUDA */

#if AVQ_HAVE_CUDA
static AvqCudaMatrix
cuda_matrix (const Mat *m)
{
  AvqCudaMatrix c = { m->data, m->dtype, m->rows, m->cols };
  return c;
}
#endif

gboolean
avq_llama_use_cuda (AvqLlama *llama, GError **error)
{
  g_return_val_if_fail (llama != NULL, FALSE);
  llama->step_rows = 0;
#if AVQ_HAVE_CUDA
  if (llama->cuda != NULL)
    return TRUE;
  g_autofree AvqCudaLlamaLayer *layers = g_new0 (AvqCudaLlamaLayer, llama->n_layers);
  for (int l = 0; l < llama->n_layers; l++) {
    const Layer *ly = &llama->layers[l];
    layers[l].attn_norm = ly->attn_norm;
    layers[l].mlp_norm = ly->mlp_norm;
    layers[l].q = cuda_matrix (&ly->q);
    layers[l].k = cuda_matrix (&ly->k);
    layers[l].v = cuda_matrix (&ly->v);
    layers[l].o = cuda_matrix (&ly->o);
    layers[l].gate = cuda_matrix (&ly->gate);
    layers[l].up = cuda_matrix (&ly->up);
    layers[l].down = cuda_matrix (&ly->down);
  }
  AvqCudaLlamaDesc desc = {
    .hidden = llama->H, .heads = llama->nh, .kv_heads = llama->nkv,
    .head_dim = llama->hd, .ffn = llama->ffn, .vocab = llama->vocab,
    .n_layers = llama->n_layers, .eps = llama->cfg.rms_norm_eps,
    .rope_theta = llama->cfg.rope_theta, .embed = cuda_matrix (&llama->embed),
    .lm_head = cuda_matrix (&llama->lm_head), .final_norm = llama->final_norm,
    .layers = layers,
  };
  AvqCudaLlama *cuda = avq_cuda_llama_new (&desc, llama->max_ctx, -1, error);
  if (cuda == NULL)
    return FALSE;
  if (llama->n_seqs > 1 && !avq_cuda_llama_set_sequences (cuda, llama->n_seqs, error)) {
    avq_cuda_llama_free (cuda);
    return FALSE;
  }
  llama->cuda = cuda;
  /* The device holds the caches from now on: start empty, and give the
   * host caches back. */
  memset (llama->n_past, 0, llama->n_seqs * sizeof (int));
  g_clear_pointer (&llama->k_cache, g_free);
  g_clear_pointer (&llama->v_cache, g_free);
  return TRUE;
#else
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE,
               "this build of gst-avq has no CUDA backend");
  return FALSE;
#endif
}

gboolean
avq_llama_on_cuda (const AvqLlama *llama)
{
#if AVQ_HAVE_CUDA
  return llama->cuda != NULL;
#else
  (void) llama;
  return FALSE;
#endif
}

char *
avq_llama_device_description (const AvqLlama *llama)
{
#if AVQ_HAVE_CUDA
  if (llama->cuda != NULL)
    return g_strdup_printf ("cuda: %s, %" G_GUINT64_FORMAT " MiB of LLM weights "
                            "uploaded in %.0f ms",
                            avq_cuda_llama_device_name (llama->cuda),
                            avq_cuda_llama_weight_bytes (llama->cuda) >> 20,
                            avq_cuda_llama_upload_ms (llama->cuda));
#endif
  (void) llama;
  return g_strdup ("cpu");
}
