#include "avq-ops.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

/* The elementwise work of a transformer layer (softmax over every attention
 * score, the MLP activation) is millions of exp() calls per frame; libm's
 * scalar expf makes it cost a third of a layer. These kernels use GCC/clang
 * vector extensions, 8 floats wide, with an exp accurate to ~2 ulp, and on
 * x86-64 GCC builds an AVX2+FMA clone picked at load time. */
/* The 32-byte vectors only pass between static inline helpers of this file,
 * never across an ABI boundary. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wunknown-warning-option"
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float v8f __attribute__ ((vector_size (32)));
typedef gint32 v8i __attribute__ ((vector_size (32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define AVQ_VECTOR_CLONES __attribute__ ((target_clones ("arch=x86-64-v3", "default")))
#else
#define AVQ_VECTOR_CLONES
#endif

static inline v8f
v8_load (const float *p)
{
  v8f v;
  memcpy (&v, p, sizeof v);
  return v;
}

static inline void
v8_store (float *p, v8f v)
{
  memcpy (p, &v, sizeof v);
}

static inline v8f
v8_splat (float f)
{
  return (v8f) { f, f, f, f, f, f, f, f };
}

static inline v8f
v8_select (v8i mask, v8f a, v8f b)   /* mask ? a : b */
{
  return (v8f) (((v8i) a & mask) | ((v8i) b & ~mask));
}

/* exp(x): x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), a
 * degree-7 polynomial for e^r, and 2^n built in the exponent bits. The
 * input is clamped so that 2^n stays a normal float: exp saturates at
 * e^88 and bottoms out at ~1e-38 instead of 0, harmless for softmax sums
 * and sigmoids. */
static inline v8f
v8_exp (v8f x)
{
  x = v8_select (x < -87.0f, v8_splat (-87.0f), x);
  x = v8_select (x > 88.0f, v8_splat (88.0f), x);
  /* Adding 1.5 * 2^23 rounds to the nearest integer, which then sits in the
   * low mantissa bits. */
  const float magic = 12582912.0f;
  v8f t = x * 1.44269504088896341f + magic;
  v8f n = t - magic;
  v8f r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8f p = v8_splat (1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  v8i e = ((v8i) t - 0x4B400000 + 127) << 23;
  return p * (v8f) e;
}

static inline float
scalar_exp (float x)
{
  float buf[8] = { x };
  v8_store (buf, v8_exp (v8_load (buf)));
  return buf[0];
}

AVQ_VECTOR_CLONES static void
quick_gelu_kernel (float *x, gsize n)
{
  gsize i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f v = v8_load (x + i);
    v8_store (x + i, v / (1.0f + v8_exp (v * -1.702f)));
  }
  for (; i < n; i++)
    x[i] = x[i] / (1.0f + scalar_exp (-1.702f * x[i]));
}

AVQ_VECTOR_CLONES static void
silu_kernel (float *x, gsize n)
{
  gsize i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f v = v8_load (x + i);
    v8_store (x + i, v / (1.0f + v8_exp (-v)));
  }
  for (; i < n; i++)
    x[i] = x[i] / (1.0f + scalar_exp (-x[i]));
}

AVQ_VECTOR_CLONES static void
softmax_row (float *row, int cols)
{
  int c = 0;
  v8f vmax = v8_splat (-INFINITY);
  for (; c + 8 <= cols; c += 8) {
    v8f v = v8_load (row + c);
    vmax = v8_select (v > vmax, v, vmax);
  }
  float mx = -INFINITY;
  for (int j = 0; j < 8; j++)
    mx = vmax[j] > mx ? vmax[j] : mx;
  for (; c < cols; c++)
    mx = row[c] > mx ? row[c] : mx;

  v8f vsum = v8_splat (0.0f);
  c = 0;
  for (; c + 8 <= cols; c += 8) {
    v8f e = v8_exp (v8_load (row + c) - mx);
    v8_store (row + c, e);
    vsum += e;
  }
  float sum = 0.0f;
  for (; c < cols; c++) {
    row[c] = scalar_exp (row[c] - mx);
    sum += row[c];
  }
  for (int j = 0; j < 8; j++)
    sum += vsum[j];
  float inv = 1.0f / sum;
  c = 0;
  for (; c + 8 <= cols; c += 8)
    v8_store (row + c, v8_load (row + c) * inv);
  for (; c < cols; c++)
    row[c] *= inv;
}

void
avq_linear_strided (const float *x, int ldx, int n, int in, const float *w,
                    const float *b, int out, float *y, int ldy)
{
  if (n <= 0 || out <= 0)
    return;
  /* Seeding y with the bias lets the GEMM add it for free (beta = 1) instead
   * of a second pass over the output. */
  float beta = 0.0f;
  if (b != NULL) {
    for (int r = 0; r < n; r++)
      memcpy (y + (gsize) r * ldy, b, sizeof (float) * out);
    beta = 1.0f;
  }
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x,
               ldx, w, in, beta, y, ldy);
}

void
avq_linear (const float *x, int n, int in, const float *w, const float *b,
            int out, float *y)
{
  avq_linear_strided (x, in, n, in, w, b, out, y, out);
}

void
avq_linear_add (const float *x, int n, int in, const float *w, const float *b,
                int out, float *y)
{
  if (n <= 0 || out <= 0)
    return;
  if (b != NULL)
    for (int r = 0; r < n; r++) {
      float *yr = y + (gsize) r * out;
      for (int c = 0; c < out; c++)
        yr[c] += b[c];
    }
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x,
               in, w, in, 1.0f, y, out);
}

void
avq_layernorm (const float *x, int n, int d, const float *gamma,
               const float *beta, float eps, float *y, float *mean,
               float *sigma)
{
  for (int t = 0; t < n; t++) {
    const float *xr = x + (gsize) t * d;
    float *yr = y + (gsize) t * d;
    /* Two passes in double: the mean is subtracted before squaring, so large
     * offsets in the residual stream do not cancel catastrophically. */
    double s = 0;
    for (int c = 0; c < d; c++)
      s += xr[c];
    double m = s / d;
    double v = 0;
    for (int c = 0; c < d; c++) {
      double e = xr[c] - m;
      v += e * e;
    }
    v /= d;
    float sd = (float) sqrt (v + (double) eps);
    float inv = (float) (1.0 / sqrt (v + (double) eps));
    float mf = (float) m;
    for (int c = 0; c < d; c++)
      yr[c] = (xr[c] - mf) * inv * gamma[c] + beta[c];
    if (mean)
      mean[t] = mf;
    if (sigma)
      sigma[t] = sd;
  }
}

void
avq_quick_gelu (float *x, gsize n)
{
  quick_gelu_kernel (x, n);
}

void
avq_gelu (float *x, gsize n)
{
  for (gsize i = 0; i < n; i++)
    x[i] = 0.5f * x[i] * (1.0f + erff (x[i] * (float) M_SQRT1_2));
}

void
avq_gelu_tanh (float *x, gsize n)
{
  const float k = 0.7978845608028654f; /* sqrt(2/pi) */
  for (gsize i = 0; i < n; i++) {
    float v = x[i];
    x[i] = 0.5f * v * (1.0f + tanhf (k * (v + 0.044715f * v * v * v)));
  }
}

void
avq_activate (AvqActivation act, float *x, gsize n)
{
  switch (act) {
  case AVQ_ACT_QUICK_GELU:
    avq_quick_gelu (x, n);
    break;
  case AVQ_ACT_GELU:
    avq_gelu (x, n);
    break;
  case AVQ_ACT_GELU_TANH:
    avq_gelu_tanh (x, n);
    break;
  case AVQ_ACT_SILU:
    silu_kernel (x, n);
    break;
  case AVQ_ACT_RELU:
    for (gsize i = 0; i < n; i++)
      x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    break;
  default:
    g_return_if_reached ();
  }
}

void
avq_softmax_rows (float *x, int rows, int cols, int ld)
{
  for (int r = 0; r < rows; r++)
    softmax_row (x + (gsize) r * ld, cols);
}

gsize
avq_attention_scratch_floats (int t)
{
  return (gsize) t * (gsize) t;
}

void
avq_attention (const float *q, int ldq, const float *k, int ldk,
               const float *v, int ldv, int t, int d, int heads, float *out,
               float *scratch)
{
  g_return_if_fail (heads > 0 && d % heads == 0);
  int hd = d / heads;
  float scale = 1.0f / sqrtf ((float) hd);
  for (int h = 0; h < heads; h++) {
    /* The scale rides on the GEMM's alpha, so Q is never copied. */
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, t, t, hd, scale,
                 q + h * hd, ldq, k + h * hd, ldk, 0.0f, scratch, t);
    avq_softmax_rows (scratch, t, t, t);
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, t, hd, t, 1.0f,
                 scratch, t, v + h * hd, ldv, 0.0f, out + h * hd, d);
  }
}

gsize
avq_argmin (const float *x, gsize n)
{
  gsize best = 0;
  float bv = INFINITY;
  gboolean found = FALSE;
  for (gsize i = 0; i < n; i++) {
    /* Strict < keeps the first of equal values; a NaN compares false. */
    if (x[i] < bv || (!found && x[i] == bv)) {
      bv = x[i];
      best = i;
      found = TRUE;
    }
  }
  return best;
}

void
avq_set_compute_threads (int threads)
{
  if (threads > 0)
    openblas_set_num_threads (threads);
}
