/* The CUDA kernels' own code (lib/cuda/avq-cuda-kernels.cu, compiled for the
 * host by cuda-kernels-host.cpp: block threads as host threads, barriers,
 * emulated warp shuffles) against the C reference implementations of the
 * same contracts in cuda-emu.cpp, which test-cuda-emu holds to the fixture.
 * Sizes are chosen to exercise the awkward cases: rows longer than a block,
 * row strides wider than rows, K not a multiple of the block, exact ties,
 * NaN, half-way side codes. Runs on machines with the CUDA toolkit and no
 * GPU; says nothing about what only hardware shows. */
#include <math.h>
#include <string.h>
#include <glib.h>
#include "avq-logit-order.h"
#include "avq-safetensors.h"
#include "cuda/avq-cuda-kernels.h"
#include "cuda/avq-cuda-llama-kernels.h"
#include "cuda/avq-cuda-llama.h"
#include <cublas_v2.h>

/* The same launchers under the kern_ names cuda-kernels-host.cpp gives the
 * real kernels. */
#undef AVQ_CUDA_KERNELS_H
#undef AVQ_CUDA_LLAMA_KERNELS_H
#define avq_cuk_im2col kern_im2col
#define avq_cuk_embed_init kern_embed_init
#define avq_cuk_layernorm kern_layernorm
#define avq_cuk_bias_act kern_bias_act
#define avq_cuk_softmax_rows kern_softmax_rows
#define avq_cuk_dlp kern_dlp
#define avq_cuk_argmin kern_argmin
#define avq_cuk_side_encode kern_side_encode
#define avq_cuk_gather kern_gather
#define avq_cuk_side_residual kern_side_residual
#define avq_cuk_derive_residual kern_derive_residual
#define avq_cuk_to_half kern_to_half
#define avq_cuk_attention kern_attention
#define avq_cuk_rmsnorm kern_rmsnorm
#define avq_cuk_rope_kv kern_rope_kv
#define avq_cuk_silu_mul kern_silu_mul
#define avq_cuk_embed_rows kern_embed_rows
#define avq_cuk_add kern_add
#define avq_cuk_causal_softmax kern_causal_softmax
#define avq_cuk_decode_attention kern_decode_attention
#define avq_cuk_argmax kern_argmax
#define avq_cuk_top_candidates kern_top_candidates
#define avq_cuk_fill_random kern_fill_random
#define avq_cuk_random_unit kern_random_unit
#include "cuda/avq-cuda-kernels.h"
#include "cuda/avq-cuda-llama-kernels.h"
#undef avq_cuk_im2col
#undef avq_cuk_embed_init
#undef avq_cuk_layernorm
#undef avq_cuk_bias_act
#undef avq_cuk_softmax_rows
#undef avq_cuk_dlp
#undef avq_cuk_argmin
#undef avq_cuk_side_encode
#undef avq_cuk_gather
#undef avq_cuk_side_residual
#undef avq_cuk_derive_residual
#undef avq_cuk_to_half
#undef avq_cuk_attention
#undef avq_cuk_rmsnorm
#undef avq_cuk_rope_kv
#undef avq_cuk_silu_mul
#undef avq_cuk_embed_rows
#undef avq_cuk_add
#undef avq_cuk_causal_softmax
#undef avq_cuk_decode_attention
#undef avq_cuk_argmax
#undef avq_cuk_top_candidates
#undef avq_cuk_fill_random
#undef avq_cuk_random_unit

static GRand *rng;

static float *
random_floats (gsize n, float lo, float hi)
{
  float *v = g_new (float, n);
  for (gsize i = 0; i < n; i++)
    v[i] = (float) g_rand_double_range (rng, lo, hi);
  return v;
}

static void
assert_floats (const char *what, const float *got, const float *want, gsize n,
               double tol)
{
  for (gsize i = 0; i < n; i++) {
    double d = fabs ((double) got[i] - want[i]);
    if (!(d <= tol * (1.0 + fabs (want[i]))) && !(isnan (got[i]) && isnan (want[i])))
      g_error ("%s[%" G_GSIZE_FORMAT "]: kernel %.9g, reference %.9g", what, i,
               got[i], want[i]);
  }
}

/* fp16 outputs: equal, or one ulp apart where float rounding before the
 * conversion differs (different summation order). */
static void
assert_halves (const char *what, const guint16 *got, const guint16 *want,
               gsize n, int ulps)
{
  for (gsize i = 0; i < n; i++)
    if (abs ((int) got[i] - (int) want[i]) > ulps)
      g_error ("%s[%" G_GSIZE_FORMAT "]: kernel %04x (%g), reference %04x (%g)",
               what, i, got[i], avq_half_to_float (got[i]), want[i],
               avq_half_to_float (want[i]));
}

static void
test_im2col_embed (void)
{
  const int C = 3, P = 14, G = 3, S = P * G, pd = C * P * P;
  g_autofree float *px = random_floats ((gsize) C * S * S, -2, 2);
  g_autofree guint16 *a = g_new0 (guint16, (gsize) G * G * pd);
  g_autofree guint16 *b = g_new0 (guint16, (gsize) G * G * pd);
  g_assert_cmpint (kern_im2col (NULL, px, C, S, P, G, a), ==, cudaSuccess);
  avq_cuk_im2col (NULL, px, C, S, P, G, b);
  assert_halves ("im2col", a, b, (gsize) G * G * pd, 0);

  const int T = 10, D = 300;
  g_autofree float *pos = random_floats ((gsize) T * D, -1, 1);
  g_autofree float *cls = random_floats (D, -1, 1);
  g_autofree float *x = g_new (float, (gsize) T * D);
  g_autofree float *y = g_new (float, (gsize) T * D);
  kern_embed_init (NULL, pos, cls, T, D, x);
  avq_cuk_embed_init (NULL, pos, cls, T, D, y);
  assert_floats ("embed_init", x, y, (gsize) T * D, 0);
}

static void
test_layernorm (void)
{
  const int n = 5, d = 1000;
  g_autofree float *x = random_floats ((gsize) n * d, 95, 105);  /* large offset */
  g_autofree float *g = random_floats (d, 0.5f, 1.5f);
  g_autofree float *b = random_floats (d, -0.2f, 0.2f);
  g_autofree float *y1 = g_new (float, (gsize) n * d), *y2 = g_new (float, (gsize) n * d);
  g_autofree guint16 *h1 = g_new (guint16, (gsize) n * d), *h2 = g_new (guint16, (gsize) n * d);
  float m1[5], m2[5], s1[5], s2[5];
  kern_layernorm (NULL, x, n, d, g, b, 1e-5f, y1, h1, m1, s1);
  avq_cuk_layernorm (NULL, x, n, d, g, b, 1e-5f, y2, h2, m2, s2);
  assert_floats ("layernorm y", y1, y2, (gsize) n * d, 1e-6);
  assert_halves ("layernorm y16", h1, h2, (gsize) n * d, 1);
  assert_floats ("layernorm mean", m1, m2, n, 1e-7);
  assert_floats ("layernorm sigma", s1, s2, n, 1e-6);
  /* In place, fp32 only, no statistics. */
  g_autofree float *xi = g_memdup2 (x, sizeof (float) * n * d);
  kern_layernorm (NULL, xi, n, d, g, b, 1e-5f, xi, NULL, NULL, NULL);
  assert_floats ("layernorm in place", xi, y2, (gsize) n * d, 1e-6);
}

static void
test_bias_act (void)
{
  const int n = 3, d = 300, ldy = 310, ldo = 305;
  g_autofree float *y = random_floats ((gsize) n * ldy, -6, 6);
  g_autofree float *bias = random_floats (d, -1, 1);
  for (int act = AVQ_CUK_ACT_NONE; act <= 4; act++) {
    g_autofree float *o1 = g_new0 (float, (gsize) n * ldo), *o2 = g_new0 (float, (gsize) n * ldo);
    g_autofree guint16 *h1 = g_new0 (guint16, (gsize) n * ldo), *h2 = g_new0 (guint16, (gsize) n * ldo);
    kern_bias_act (NULL, y, ldy, n, d, act == 4 ? NULL : bias, act, o1, h1, ldo);
    avq_cuk_bias_act (NULL, y, ldy, n, d, act == 4 ? NULL : bias, act, o2, h2, ldo);
    char what[32];
    g_snprintf (what, sizeof what, "bias_act %d", act);
    assert_floats (what, o1, o2, (gsize) n * ldo, 1e-6);
    assert_halves (what, h1, h2, (gsize) n * ldo, 0);
  }
  /* In place on a strided buffer (the residual-stream bias add). */
  g_autofree float *a = g_memdup2 (y, sizeof (float) * n * ldy);
  g_autofree float *c = g_memdup2 (y, sizeof (float) * n * ldy);
  kern_bias_act (NULL, a, ldy, n, d, bias, AVQ_CUK_ACT_NONE, a, NULL, ldy);
  avq_cuk_bias_act (NULL, c, ldy, n, d, bias, AVQ_CUK_ACT_NONE, c, NULL, ldy);
  assert_floats ("bias add in place", a, c, (gsize) n * ldy, 0);
}

static void
test_softmax (void)
{
  const int rows = 4, cols = 577, ld = 584;
  g_autofree float *s = random_floats ((gsize) rows * ld, -8, 8);
  s[3] = 80.0f;   /* one dominant score */
  g_autofree guint16 *p1 = g_new (guint16, (gsize) rows * ld), *p2 = g_new (guint16, (gsize) rows * ld);
  memset (p1, 0xff, sizeof (guint16) * rows * ld);
  kern_softmax_rows (NULL, s, rows, cols, ld, p1);
  avq_cuk_softmax_rows (NULL, s, rows, cols, ld, p2);
  assert_halves ("softmax", p1, p2, (gsize) rows * ld, 1);
  for (int r = 0; r < rows; r++)
    for (int c = cols; c < ld; c++)
      g_assert_cmpuint (p1[(gsize) r * ld + c], ==, 0);
}

static void
test_dlp_gather_half (void)
{
  const int n = 7, d = 100, K = 50;
  g_autofree float *z = random_floats ((gsize) n * d, -2, 2);
  g_autofree float *t = random_floats ((gsize) n * d, -2, 2);
  g_autofree float *b = random_floats (d, -1, 1);
  g_autofree float *u1 = g_new (float, (gsize) n * d), *u2 = g_new (float, (gsize) n * d);
  g_autofree guint16 *h1 = g_new (guint16, (gsize) n * d), *h2 = g_new (guint16, (gsize) n * d);
  kern_dlp (NULL, z, t, b, 0.4621f, n, d, u1, h1);
  avq_cuk_dlp (NULL, z, t, b, 0.4621f, n, d, u2, h2);
  assert_floats ("dlp", u1, u2, (gsize) n * d, 0);
  assert_halves ("dlp16", h1, h2, (gsize) n * d, 0);

  g_autofree float *cb = random_floats ((gsize) K * d, -2, 2);
  gint32 idx[7] = { 0, 49, 3, 3, 17, 48, 1 };
  kern_gather (NULL, cb, idx, n, d, u1, h1);
  avq_cuk_gather (NULL, cb, idx, n, d, u2, h2);
  assert_floats ("gather", u1, u2, (gsize) n * d, 0);
  assert_halves ("gather16", h1, h2, (gsize) n * d, 0);

  kern_to_half (NULL, z, (size_t) n * d, h1);
  avq_cuk_to_half (NULL, z, (size_t) n * d, h2);
  assert_halves ("to_half", h1, h2, (gsize) n * d, 0);
}

static void
test_argmin (void)
{
  const int T = 6, K = 1000;
  g_autofree float *scores = random_floats ((gsize) T * K, -1, 1);
  g_autofree float *sq = random_floats (K, 0.5f, 1.5f);
  /* Row 0: every distance equal -> index 0, margin 0. */
  for (int k = 0; k < K; k++)
    scores[k] = 0.5f * (sq[k] - 1.0f);
  /* Row 1: two exact minima at 300 and 700 (different threads of a block)
   * -> the lower index, margin 0. */
  float *r1 = scores + K;
  sq[300] = sq[700] = 1.0f;
  r1[700] = r1[300] = 5.5f;   /* distance exactly -10 for both */
  /* Row 2: NaNs never win, even first. */
  float *r2 = scores + 2 * K;
  r2[0] = NAN;
  r2[999] = NAN;
  r2[512] = 0.5f * (sq[512] + 20.0f);
  /* Row 3: the minimum in the last partial stride. */
  float *r3 = scores + 3 * K;
  r3[997] = 0.5f * (sq[997] + 30.0f);
  gint32 i1[6], i2[6];
  float m1[6], m2[6];
  kern_argmin (NULL, scores, sq, T, K, i1, m1);
  avq_cuk_argmin (NULL, scores, sq, T, K, i2, m2);
  for (int t = 0; t < T; t++) {
    if (i1[t] != i2[t] || m1[t] != m2[t])
      g_error ("argmin row %d: kernel %d (margin %g), reference %d (margin %g)", t,
               i1[t], m1[t], i2[t], m2[t]);
  }
  g_assert_cmpint (i1[0], ==, 0);
  g_assert_cmpfloat (m1[0], ==, 0.0f);
  g_assert_cmpint (i1[1], ==, 300);
  g_assert_cmpfloat (m1[1], ==, 0.0f);
  g_assert_cmpint (i1[2], ==, 512);
  g_assert_cmpint (i1[3], ==, 997);
  /* Without margins. */
  kern_argmin (NULL, scores, sq, T, K, i1, NULL);
  g_assert_cmpmem (i1, sizeof i1, i2, sizeof i2);
}

static void
test_side (void)
{
  const int T = 577, D = 64;
  g_autofree float *mean = random_floats (T, -3, 3);
  g_autofree float *sigma = random_floats (T, 0.1f, 4);
  /* Half-way values on the 8-bit grid of [0, 255]: rounded to even. */
  const float ties[6] = { 0.0f, 255.0f, 2.5f, 3.5f, 0.5f, 254.5f };
  for (int t = 0; t < 6; t++)
    mean[t] = ties[t];
  for (int t = 6; t < T; t++)
    mean[t] = fminf (fmaxf (mean[t] * 40 + 128, 0), 255);
  float rg1[4], rg2[4];
  g_autofree gint32 *c1 = g_new (gint32, 2 * T), *c2 = g_new (gint32, 2 * T);
  kern_side_encode (NULL, mean, sigma, T, 8, rg1, c1);
  avq_cuk_side_encode (NULL, mean, sigma, T, 8, rg2, c2);
  g_assert_cmpmem (rg1, sizeof rg1, rg2, sizeof rg2);
  g_assert_cmpmem (c1, sizeof (gint32) * 2 * T, c2, sizeof (gint32) * 2 * T);
  const gint32 want[6] = { 0, 255, 2, 4, 0, 254 };
  for (int t = 0; t < 6; t++)
    g_assert_cmpint (c1[2 * t], ==, want[t]);
  /* Constant sigma: hi == lo, step 1, code 0. */
  for (int t = 0; t < T; t++)
    sigma[t] = 2.0f;
  kern_side_encode (NULL, mean, sigma, T, 8, rg1, c1);
  g_assert_cmpfloat (rg1[2], ==, rg1[3]);
  g_assert_cmpint (c1[1], ==, 0);

  g_autofree float *zhat = random_floats ((gsize) T * D, -2, 2);
  g_autofree float *g1 = random_floats (D, 0.5f, 1.5f), *b1 = random_floats (D, -0.3f, 0.3f);
  g_autofree float *x1 = g_new (float, (gsize) T * D), *x2 = g_new (float, (gsize) T * D);
  /* The ranges come from (device) memory and the steps are derived there:
   * one element by hand, the CPU's formula; then a constant mu range
   * (hi == lo: step 1). */
  kern_side_residual (NULL, zhat, c2, rg2, 8, g1, b1, T, D, x1);
  avq_cuk_side_residual (NULL, zhat, c2, rg2, 8, g1, b1, T, D, x2);
  assert_floats ("side residual", x1, x2, (gsize) T * D, 1e-6);
  {
    const int t = 7, c = 5;
    float mu = rg2[0] + (float) c2[2 * t] * ((rg2[1] - rg2[0]) / 255.0f);
    float sg = expf (rg2[2] + (float) c2[2 * t + 1] * ((rg2[3] - rg2[2]) / 255.0f));
    float want = mu + sg * (zhat[t * D + c] - b1[c]) / g1[c];
    assert_floats ("side residual by hand", &x1[t * D + c], &want, 1, 1e-6);
  }
  float flat[4] = { 0.25f, 0.25f, rg2[2], rg2[3] };
  kern_side_residual (NULL, zhat, c2, flat, 8, g1, b1, T, D, x1);
  avq_cuk_side_residual (NULL, zhat, c2, flat, 8, g1, b1, T, D, x2);
  assert_floats ("side residual, flat mu range", x1, x2, (gsize) T * D, 1e-6);
  {
    const int t = 9, c = 3;
    float mu = 0.25f + (float) c2[2 * t];
    float sg = expf (rg2[2] + (float) c2[2 * t + 1] * ((rg2[3] - rg2[2]) / 255.0f));
    float want = mu + sg * (zhat[t * D + c] - b1[c]) / g1[c];
    assert_floats ("side residual flat by hand", &x1[t * D + c], &want, 1, 1e-6);
  }

  /* Derive: constants from a made-up pre_layrnorm. */
  g_autofree float *pw = random_floats (D, 0.5f, 1.5f);
  g_autofree double *qq = g_new (double, D);
  for (int c = 0; c < D; c++)
    qq[c] = g_rand_double_range (rng, -1, 1);
  kern_derive_residual (NULL, zhat, g1, b1, pw, qq, 1.1, 0.05, -0.3, T, D, x1);
  avq_cuk_derive_residual (NULL, zhat, g1, b1, pw, qq, 1.1, 0.05, -0.3, T, D, x2);
  assert_floats ("derive residual", x1, x2, (gsize) T * D, 1e-6);
}

/* The fused kernel against attention from the definition: several key
 * tiles with a partial last one, a row count that leaves idle warps, head
 * sizes below, at and above one lane per dimension. */
static void
test_attention (void)
{
  const struct { int T, H, hd; } cases[] = { { 70, 2, 16 }, { 33, 1, 64 }, { 9, 2, 128 } };
  for (gsize c = 0; c < G_N_ELEMENTS (cases); c++) {
    const int T = cases[c].T, H = cases[c].H, D = H * cases[c].hd;
    g_autofree float *f = random_floats ((gsize) T * 3 * D, -2, 2);
    g_autofree guint16 *qkv = g_new (guint16, (gsize) T * 3 * D);
    for (gsize i = 0; i < (gsize) T * 3 * D; i++)
      qkv[i] = avq_float_to_half (f[i]);
    g_autofree guint16 *a = g_new (guint16, (gsize) T * D), *b = g_new (guint16, (gsize) T * D);
    const float scale = 1.0f / sqrtf ((float) cases[c].hd);
    g_assert_cmpint (kern_attention (NULL, qkv, T, D, H, scale, a), ==, cudaSuccess);
    avq_cuk_attention (NULL, qkv, T, D, H, scale, b);
    g_autofree float *fa = g_new (float, (gsize) T * D), *fb = g_new (float, (gsize) T * D);
    for (gsize i = 0; i < (gsize) T * D; i++) {
      fa[i] = avq_half_to_float (a[i]);
      fb[i] = avq_half_to_float (b[i]);
    }
    char what[48];
    g_snprintf (what, sizeof what, "attention T=%d H=%d hd=%d", T, H, cases[c].hd);
    /* Both round to fp16 at the end: a few ulps of 2^-11 apart at most. */
    assert_floats (what, fa, fb, (gsize) T * D, 3e-3);
  }
  g_assert_cmpint (kern_attention (NULL, NULL, 4, 300, 1, 1.0f, NULL), ==,
                   cudaErrorInvalidValue);
}

static float *
halves_to_floats (const guint16 *h, gsize n)
{
  float *f = g_new (float, n);
  for (gsize i = 0; i < n; i++)
    f[i] = avq_half_to_float (h[i]);
  return f;
}

/* RMSNorm: rows longer than the block, a large offset, in place. */
static void
test_rmsnorm (void)
{
  const int n = 4, d = 1000;
  g_autofree float *x = random_floats ((gsize) n * d, 95, 105);
  g_autofree float *w = random_floats (d, 0.5f, 1.5f);
  g_autofree float *y1 = g_new (float, (gsize) n * d), *y2 = g_new (float, (gsize) n * d);
  g_autofree guint16 *h1 = g_new (guint16, (gsize) n * d), *h2 = g_new (guint16, (gsize) n * d);
  g_assert_cmpint (kern_rmsnorm (NULL, x, n, d, w, 1e-6f, y1, h1), ==, cudaSuccess);
  avq_cuk_rmsnorm (NULL, x, n, d, w, 1e-6f, y2, h2);
  assert_floats ("rmsnorm y", y1, y2, (gsize) n * d, 1e-6);
  assert_halves ("rmsnorm y16", h1, h2, (gsize) n * d, 1);
  g_autofree float *xi = g_memdup2 (x, sizeof (float) * n * d);
  kern_rmsnorm (NULL, xi, n, d, w, 1e-6f, xi, NULL);
  assert_floats ("rmsnorm in place", xi, y2, (gsize) n * d, 1e-6);
}

/* cos and sin tables [ctx][hd / 2] at theta 10000, as the decoder makes
 * them. */
static void
rope_tables (int ctx, int hd, float **cs, float **sn)
{
  const int half = hd / 2;
  *cs = g_new (float, ctx * half);
  *sn = g_new (float, ctx * half);
  for (int p = 0; p < ctx; p++)
    for (int i = 0; i < half; i++) {
      float ang = (float) p / powf (10000.0f, (float) (2 * i) / hd);
      (*cs)[p * half + i] = (float) cos (ang);
      (*sn)[p * half + i] = (float) sin (ang);
    }
}

/* Rotary embeddings + cache write: GQA (6 q heads, 2 kv heads), a prompt
 * continuing at p0 > 0, both cache dtypes; the cache outside the written
 * positions stays untouched. */
static void
test_rope_kv (void)
{
  const int n = 5, nh = 6, nkv = 2, hd = 12, half = hd / 2, p0 = 3, ctx = 10;
  const int W = (nh + 2 * nkv) * hd;
  g_autofree float *qkv = random_floats ((gsize) n * W, -2, 2);
  g_autofree float *cs = NULL, *sn = NULL;
  rope_tables (ctx, hd, &cs, &sn);
  for (int kv_half = 0; kv_half < 2; kv_half++) {
    const gsize cache = (gsize) nkv * ctx * hd * (kv_half ? 2 : 4);
    g_autofree guint8 *k1 = g_malloc (cache), *v1 = g_malloc (cache);
    g_autofree guint8 *k2 = g_malloc (cache), *v2 = g_malloc (cache);
    memset (k1, 0x5a, cache);
    memset (v1, 0x5a, cache);
    memset (k2, 0x5a, cache);
    memset (v2, 0x5a, cache);
    g_autofree guint16 *q1 = g_new (guint16, (gsize) n * nh * hd);
    g_autofree guint16 *q2 = g_new (guint16, (gsize) n * nh * hd);
    g_assert_cmpint (kern_rope_kv (NULL, qkv, n, nh, nkv, hd, cs, sn, p0, NULL, NULL,
                                   0, q1, k1, v1, ctx, kv_half), ==, cudaSuccess);
    avq_cuk_rope_kv (NULL, qkv, n, nh, nkv, hd, cs, sn, p0, NULL, NULL, 0, q2, k2, v2,
                     ctx, kv_half);
    assert_halves ("rope q", q1, q2, (gsize) n * nh * hd, 1);
    if (kv_half) {
      assert_halves ("rope k cache", (guint16 *) k1, (guint16 *) k2, cache / 2, 1);
      assert_halves ("v cache", (guint16 *) v1, (guint16 *) v2, cache / 2, 0);
    } else {
      assert_floats ("rope k cache", (float *) k1, (float *) k2, cache / 4, 1e-6);
      g_assert_cmpmem (v1, cache, v2, cache);
    }
    /* Position p0 + 1, kv head 1, dim 0 and dim half, by hand. */
    if (!kv_half) {
      const float *row = qkv + (gsize) 1 * W + (gsize) (nh + 1) * hd;
      const float c = cs[(p0 + 1) * half], s_ = sn[(p0 + 1) * half];
      const float *kc = (const float *) k1 + ((gsize) 1 * ctx + p0 + 1) * hd;
      g_assert_cmpfloat_with_epsilon (kc[0], row[0] * c - row[half] * s_, 1e-5);
      g_assert_cmpfloat_with_epsilon (kc[half], row[half] * c + row[0] * s_, 1e-5);
      /* Untouched: position p0 - 1. */
      g_assert_cmpint (k1[((gsize) 0 * ctx + p0 - 1) * hd * 4], ==, 0x5a);
    }
  }
}

static void
test_silu_embed_add (void)
{
  const int n = 3, ffn = 700;
  g_autofree float *gu = random_floats ((gsize) n * 2 * ffn, -6, 6);
  g_autofree guint16 *a = g_new (guint16, (gsize) n * ffn), *b = g_new (guint16, (gsize) n * ffn);
  kern_silu_mul (NULL, gu, n, ffn, a);
  avq_cuk_silu_mul (NULL, gu, n, ffn, b);
  assert_halves ("silu_mul", a, b, (gsize) n * ffn, 1);
  /* silu(g) u by hand for one element. */
  float g = gu[2 * ffn + 7], u = gu[2 * ffn + ffn + 7];
  g_assert_cmpfloat_with_epsilon (avq_half_to_float (a[ffn + 7]),
                                  g / (1 + expf (-g)) * u, 2e-3 * (1 + fabsf (g * u)));

  const int V = 50, d = 300;
  g_autofree float *tf = random_floats ((gsize) V * d, -1, 1);
  g_autofree guint16 *table = g_new (guint16, (gsize) V * d);
  for (gsize i = 0; i < (gsize) V * d; i++)
    table[i] = avq_float_to_half (tf[i]);
  const gint32 ids[4] = { 49, 0, 17, 17 };
  g_autofree float *x1 = g_new (float, 4 * d), *x2 = g_new (float, 4 * d);
  kern_embed_rows (NULL, table, ids, 4, d, x1);
  avq_cuk_embed_rows (NULL, table, ids, 4, d, x2);
  assert_floats ("embed_rows", x1, x2, 4 * d, 0);
  g_assert_cmpfloat (x1[d * 0 + 5], ==, avq_half_to_float (table[49 * d + 5]));

  g_autofree float *y = random_floats (4 * d, -1, 1);
  kern_add (NULL, x1, y, 4 * d);
  avq_cuk_add (NULL, x2, y, 4 * d);
  assert_floats ("add", x1, x2, 4 * d, 0);
}

/* Causal softmax: rows of several heads, a continuation (p0 > 0), valid
 * lengths crossing the block size, padding columns. */
static void
test_causal_softmax (void)
{
  const int heads = 3, n = 7, p0 = 200, ld = 208;
  const int rows = heads * n;
  g_autofree float *s = random_floats ((gsize) rows * ld, -8, 8);
  g_autofree guint16 *a = g_new (guint16, (gsize) rows * ld), *b = g_new (guint16, (gsize) rows * ld);
  g_assert_cmpint (kern_causal_softmax (NULL, s, rows, n, p0, ld, a), ==, cudaSuccess);
  avq_cuk_causal_softmax (NULL, s, rows, n, p0, ld, b);
  assert_halves ("causal softmax", a, b, (gsize) rows * ld, 1);
  for (int r = 0; r < rows; r++) {
    const int valid = p0 + r % n + 1;
    double sum = 0;
    for (int c = 0; c < ld; c++) {
      float p = avq_half_to_float (a[(gsize) r * ld + c]);
      if (c >= valid)
        g_assert_cmpfloat (p, ==, 0.0f);
      sum += p;
    }
    g_assert_cmpfloat (fabs (sum - 1), <, 2e-2);
  }
  /* A first prompt (p0 = 0): row 0 sees one key. */
  kern_causal_softmax (NULL, s, n, n, 0, 8, a);
  g_assert_cmpfloat (avq_half_to_float (a[0]), ==, 1.0f);
  g_assert_cmpfloat (avq_half_to_float (a[1]), ==, 0.0f);
  g_assert_cmpint (kern_causal_softmax (NULL, s, n, n, 5, 8, a), ==, cudaErrorInvalidValue);
}

/* Decode attention against the definition: GQA groups of 1, 3 and 4, key
 * counts below and above the block, head sizes 16 .. 256, both cache
 * dtypes; cache slots past T are poisoned with NaN and must not be read. */
static void
test_decode_attention (void)
{
  const struct { int nh, nkv, hd, T, ctx; } cases[] = {
    { 4, 4, 16, 1, 8 }, { 6, 2, 64, 300, 320 }, { 8, 2, 128, 129, 200 }, { 2, 1, 256, 37, 40 },
  };
  for (gsize c = 0; c < G_N_ELEMENTS (cases); c++) {
    const int nh = cases[c].nh, nkv = cases[c].nkv, hd = cases[c].hd;
    const int T = cases[c].T, ctx = cases[c].ctx;
    const gsize cn = (gsize) nkv * ctx * hd;
    g_autofree float *kf = random_floats (cn, -2, 2), *vf = random_floats (cn, -2, 2);
    for (int g = 0; g < nkv; g++)
      for (int j = T; j < ctx; j++)
        for (int d = 0; d < hd; d++)
          kf[((gsize) g * ctx + j) * hd + d] = vf[((gsize) g * ctx + j) * hd + d] = NAN;
    g_autofree guint16 *kh = g_new (guint16, cn), *vh = g_new (guint16, cn);
    for (gsize i = 0; i < cn; i++) {
      kh[i] = avq_float_to_half (kf[i]);
      vh[i] = avq_float_to_half (vf[i]);
    }
    g_autofree float *qf = random_floats ((gsize) nh * hd, -2, 2);
    g_autofree guint16 *q = g_new (guint16, (gsize) nh * hd);
    for (gsize i = 0; i < (gsize) nh * hd; i++)
      q[i] = avq_float_to_half (qf[i]);
    /* NaN: the kernel must write every partial it reads. */
    const gsize sn = AVQ_CUK_DECODE_SCRATCH (1, nh, hd, ctx);
    g_autofree float *scratch = g_new (float, sn);
    for (gsize i = 0; i < sn; i++)
      scratch[i] = NAN;
    g_autofree guint16 *a = g_new (guint16, (gsize) nh * hd), *b = g_new (guint16, (gsize) nh * hd);
    const float scale = 1.0f / sqrtf ((float) hd);
    for (int kv_half = 0; kv_half < 2; kv_half++) {
      const void *K = kv_half ? (const void *) kh : (const void *) kf;
      const void *Vv = kv_half ? (const void *) vh : (const void *) vf;
      g_assert_cmpint (kern_decode_attention (NULL, q, K, Vv, kv_half, 1, nh, nkv, hd,
                                              T, NULL, NULL, 0, ctx, scale, scratch,
                                              a), ==, cudaSuccess);
      avq_cuk_decode_attention (NULL, q, K, Vv, kv_half, 1, nh, nkv, hd, T, NULL, NULL,
                                0, ctx, scale, scratch, b);
      g_autofree float *fa = halves_to_floats (a, (gsize) nh * hd);
      g_autofree float *fb = halves_to_floats (b, (gsize) nh * hd);
      char what[80];
      g_snprintf (what, sizeof what, "decode attention nh=%d nkv=%d hd=%d T=%d %s", nh,
                  nkv, hd, T, kv_half ? "fp16" : "fp32");
      assert_floats (what, fa, fb, (gsize) nh * hd, 3e-3);
    }
  }
  g_assert_cmpint (kern_decode_attention (NULL, NULL, NULL, NULL, 1, 1, 3, 2, 16, 1, NULL,
                                          NULL, 0, 4, 1.0f, NULL, NULL), ==,
                   cudaErrorInvalidValue);
}

/* Greedy argmax: a long row, ties split across threads and warps (lowest
 * id wins), NaN never wins. */
static void
test_argmax (void)
{
  const int n = 32064;
  g_autofree float *x = random_floats (n, -5, 5);
  gint32 a = -1, b = -1;
  kern_argmax (NULL, x, 1, n, n, &a);
  avq_cuk_argmax (NULL, x, 1, n, n, &b);
  g_assert_cmpint (a, ==, b);
  x[31000] = 9.0f;
  x[20001] = 9.0f;   /* another thread and warp, lower id */
  x[20033] = 9.0f;
  x[5] = NAN;
  x[1023] = NAN;
  kern_argmax (NULL, x, 1, n, n, &a);
  g_assert_cmpint (a, ==, 20001);
  x[20001] = NAN;
  kern_argmax (NULL, x, 1, n, n, &a);
  g_assert_cmpint (a, ==, 20033);
  /* Ties in one thread's stride and in lane 0 vs lane 31 of one warp. */
  float small[70];
  for (int i = 0; i < 70; i++)
    small[i] = (float) (i % 3);
  kern_argmax (NULL, small, 1, 70, 70, &a);
  g_assert_cmpint (a, ==, 2);
  for (int i = 0; i < 70; i++)
    small[i] = NAN;
  kern_argmax (NULL, small, 1, 70, 70, &a);
  g_assert_cmpint (a, ==, 0);
}

/* The batched decode step's rotary + cache write: rows at their own
 * positions (read from device arrays) into their own sequence slots, in an
 * order unrelated to the slots; one row out of range (NaN q, no write).
 * Each row by hand against a single-row launch at p0 = its position on its
 * slot's cache, so a row reading another row's position or slot fails. */
static void
test_rope_kv_rows (void)
{
  const int n = 5, nh = 6, nkv = 2, hd = 12, ctx = 10, slots_n = 4;
  const int W = (nh + 2 * nkv) * hd;
  const gint32 pos[5] = { 7, 0, 3, 9, 10 }, slot[5] = { 2, 0, 3, 1, 1 };
  const gsize stride = (gsize) nkv * ctx * hd;
  g_autofree float *qkv = random_floats ((gsize) n * W, -2, 2);
  g_autofree float *cs = NULL, *sn = NULL;
  rope_tables (ctx, hd, &cs, &sn);
  for (int kv_half = 0; kv_half < 2; kv_half++) {
    const gsize es = kv_half ? 2 : 4, cache = slots_n * stride * es;
    g_autofree guint8 *k1 = g_malloc (cache), *v1 = g_malloc (cache);
    g_autofree guint8 *k2 = g_malloc (cache), *v2 = g_malloc (cache);
    g_autofree guint8 *k3 = g_malloc (cache), *v3 = g_malloc (cache);
    memset (k1, 0x5a, cache);
    memset (v1, 0x5a, cache);
    memset (k2, 0x5a, cache);
    memset (v2, 0x5a, cache);
    memset (k3, 0x5a, cache);
    memset (v3, 0x5a, cache);
    g_autofree guint16 *q1 = g_new (guint16, (gsize) n * nh * hd);
    g_autofree guint16 *q2 = g_new (guint16, (gsize) n * nh * hd);
    g_autofree guint16 *q3 = g_new (guint16, (gsize) n * nh * hd);
    g_assert_cmpint (kern_rope_kv (NULL, qkv, n, nh, nkv, hd, cs, sn, 0, pos, slot,
                                   stride, q1, k1, v1, ctx, kv_half), ==, cudaSuccess);
    avq_cuk_rope_kv (NULL, qkv, n, nh, nkv, hd, cs, sn, 0, pos, slot, stride, q2, k2, v2,
                     ctx, kv_half);
    assert_halves ("rope rows q", q1, q2, (gsize) n * nh * hd, 1);
    if (kv_half) {
      assert_halves ("rope rows k", (guint16 *) k1, (guint16 *) k2, cache / 2, 1);
      assert_halves ("rope rows v", (guint16 *) v1, (guint16 *) v2, cache / 2, 0);
    } else {
      assert_floats ("rope rows k", (float *) k1, (float *) k2, cache / 4, 1e-6);
      g_assert_cmpmem (v1, cache, v2, cache);
    }
    /* Row by row: the single-row launch at p0 = pos[r] on slot[r]'s cache. */
    for (int r = 0; r < 4; r++) {
      g_assert_cmpint (kern_rope_kv (NULL, qkv + (gsize) r * W, 1, nh, nkv, hd, cs, sn,
                                     pos[r], NULL, NULL, 0, q3 + (gsize) r * nh * hd,
                                     k3 + slot[r] * stride * es, v3 + slot[r] * stride * es,
                                     ctx, kv_half), ==, cudaSuccess);
      g_assert_cmpmem (q1 + (gsize) r * nh * hd, nh * hd * 2, q3 + (gsize) r * nh * hd,
                       nh * hd * 2);
    }
    g_assert_cmpmem (k1, cache, k3, cache);
    g_assert_cmpmem (v1, cache, v3, cache);
    /* Row 4 (position 10 = ctx): NaN q, nothing written (slot 1 holds only
     * row 3's position 9). */
    for (int j = 0; j < nh * hd; j++)
      g_assert_true (isnan (avq_half_to_float (q1[(gsize) 4 * nh * hd + j])));
    /* Untouched: position 6 of slot 2 (row 0 wrote position 7 there). */
    g_assert_cmpint (k1[(2 * stride + 6 * hd) * es], ==, 0x5a);
  }
}

/* The batched decode attention: rows with their own lengths (positions
 * from a device array) over their own slots, GQA; every row equals the
 * single-row kernel on its slot with T = position + 1 (exactly: same code),
 * and the reference within fp16 rounding; cache entries past each row's T
 * are NaN and must not be read; a position past the context gives NaN. */
static void
test_decode_attention_rows (void)
{
  const int n = 4, nh = 6, nkv = 2, hd = 64, ctx = 300, slots_n = 3;
  const gint32 pos[4] = { 4, 0, 299, 300 }, slot[4] = { 1, 2, 0, 1 };
  const gsize stride = (gsize) nkv * ctx * hd, cn = slots_n * stride;
  g_autofree guint16 *kh = g_new (guint16, cn), *vh = g_new (guint16, cn);
  for (gsize i = 0; i < cn; i++) {
    kh[i] = avq_float_to_half ((float) g_rand_double_range (rng, -2, 2));
    vh[i] = avq_float_to_half ((float) g_rand_double_range (rng, -2, 2));
  }
  /* NaN past each valid row's length in its slot (slot 1: row 0's 5). */
  const int valid[3] = { 300, 5, 1 };
  for (int s = 0; s < slots_n; s++)
    for (int g = 0; g < nkv; g++)
      for (int j = valid[s]; j < ctx; j++)
        for (int d = 0; d < hd; d++)
          kh[s * stride + ((gsize) g * ctx + j) * hd + d] =
              vh[s * stride + ((gsize) g * ctx + j) * hd + d] = 0x7e00;
  g_autofree float *qf = random_floats ((gsize) n * nh * hd, -2, 2);
  g_autofree guint16 *q = g_new (guint16, (gsize) n * nh * hd);
  for (gsize i = 0; i < (gsize) n * nh * hd; i++)
    q[i] = avq_float_to_half (qf[i]);
  const gsize sn = AVQ_CUK_DECODE_SCRATCH (n, nh, hd, ctx);
  g_autofree float *scratch = g_new (float, sn);
  for (gsize i = 0; i < sn; i++)
    scratch[i] = NAN;
  const gsize on = (gsize) n * nh * hd;
  g_autofree guint16 *a = g_new (guint16, on), *b = g_new (guint16, on), *c = g_new (guint16, on);
  const float scale = 1.0f / sqrtf ((float) hd);
  g_assert_cmpint (kern_decode_attention (NULL, q, kh, vh, 1, n, nh, nkv, hd, 0, pos, slot,
                                          stride, ctx, scale, scratch, a), ==, cudaSuccess);
  avq_cuk_decode_attention (NULL, q, kh, vh, 1, n, nh, nkv, hd, 0, pos, slot, stride, ctx,
                            scale, scratch, b);
  g_autofree float *fa = halves_to_floats (a, on), *fb = halves_to_floats (b, on);
  assert_floats ("decode attention rows", fa, fb, on, 3e-3);
  for (int r = 0; r < 3; r++) {
    g_assert_cmpint (kern_decode_attention (NULL, q + (gsize) r * nh * hd,
                                            kh + slot[r] * stride, vh + slot[r] * stride, 1,
                                            1, nh, nkv, hd, pos[r] + 1, NULL, NULL, 0, ctx,
                                            scale, scratch, c + (gsize) r * nh * hd), ==,
                     cudaSuccess);
    g_assert_cmpmem (a + (gsize) r * nh * hd, nh * hd * 2, c + (gsize) r * nh * hd,
                     nh * hd * 2);
    for (int i = 0; i < nh * hd; i++)
      g_assert_false (isnan (fa[(gsize) r * nh * hd + i]));
  }
  for (int i = 0; i < nh * hd; i++)
    g_assert_true (isnan (fa[(gsize) 3 * nh * hd + i]));
}

/* Flash-decoding splits (avq-cuda-llama-kernels.h): rows of very different
 * lengths in one launch: T from 1 key (less than a tile) to several tiles,
 * and a row past the context (NaN). Over a 4200-position context a tile is
 * two 128-key steps (each warp carries its running max across two chunks)
 * and the longest row covers 16 tiles of 17; the other cases use 300
 * positions (tiles of one step). Head sizes 16, 64, 128, 256 (vector
 * loads: 8, 2 and 1 keys per warp pass, 1 or 2 vectors per lane), 100
 * (vectors, not a power of two of them per key) and 37 (scalar loads);
 * GQA groups of 1, 2 and 3; both cache dtypes; NaN in the cache past each
 * row's T and in the scratch before every launch. Against the definition
 * in double, and rows 1 to 4 bit-equal to single-row launches with their T
 * on their slots (the split count depends on neither n nor T). Checked by
 * hand (2026-11-29) that each of these breaks it: the combine without the
 * max rescale (f = 1), a warp's state not rescaled between chunks (corr =
 * 1; only the 4200-position case has two chunks per warp), no neutral
 * partial for a tile past T, keys read up to the context instead of T.
 * Sizes are kept small: the host shim pays a barrier per shuffle. */
static void
test_decode_attention_splits (void)
{
  const int n = 6, slots_n = 5;
  const gint32 slot[6] = { 3, 0, 4, 1, 2, 3 };
  const struct { int nh, nkv, hd, ctx, T0, T4; } cases[] = {
    { 1, 1, 128, 4200, 4000, 1400 }, { 2, 1, 16, 300, 200, 91 }, { 2, 1, 64, 300, 200, 91 },
    { 2, 2, 128, 300, 300, 130 }, { 3, 1, 256, 300, 200, 91 }, { 2, 1, 100, 300, 129, 200 },
    { 3, 3, 37, 300, 200, 91 },
  };
  for (gsize c = 0; c < G_N_ELEMENTS (cases); c++) {
    const int nh = cases[c].nh, nkv = cases[c].nkv, hd = cases[c].hd, ctx = cases[c].ctx;
    const gint32 pos[6] = { cases[c].T0 - 1, 0, 127, 2, cases[c].T4 - 1, ctx };
    int valid[5];
    for (int r = 0; r < 5; r++)
      valid[slot[r]] = pos[r] + 1;
    const gsize stride = (gsize) nkv * ctx * hd, cn = slots_n * stride;
    g_autofree float *kf = g_new (float, cn), *vf = g_new (float, cn);
    g_autofree guint16 *kh = g_new (guint16, cn), *vh = g_new (guint16, cn);
    for (int sl = 0; sl < slots_n; sl++)
      for (int g = 0; g < nkv; g++)
        for (int j = 0; j < ctx; j++)
          for (int d = 0; d < hd; d++) {
            const gsize i = sl * stride + ((gsize) g * ctx + j) * hd + d;
            kf[i] = j < valid[sl] ? (float) g_rand_double_range (rng, -2, 2) : NAN;
            vf[i] = j < valid[sl] ? (float) g_rand_double_range (rng, -2, 2) : NAN;
            kh[i] = avq_float_to_half (kf[i]);
            vh[i] = avq_float_to_half (vf[i]);
          }
    const gsize on = (gsize) n * nh * hd;
    g_autofree float *qf = random_floats (on, -2, 2);
    g_autofree guint16 *q = g_new (guint16, on);
    for (gsize i = 0; i < on; i++)
      q[i] = avq_float_to_half (qf[i]);
    const gsize sn = AVQ_CUK_DECODE_SCRATCH (n, nh, hd, ctx);
    g_autofree float *scratch = g_new (float, sn);
    g_autofree guint16 *a = g_new (guint16, on), *b = g_new (guint16, on), *one = g_new (guint16, on);
    const float scale = 1.0f / sqrtf ((float) hd);
    for (int kv_half = 0; kv_half < 2; kv_half++) {
      const void *K = kv_half ? (const void *) kh : (const void *) kf;
      const void *Vv = kv_half ? (const void *) vh : (const void *) vf;
      const gsize es = kv_half ? 2 : 4, row = (gsize) nh * hd;
      for (gsize i = 0; i < sn; i++)
        scratch[i] = NAN;
      g_assert_cmpint (kern_decode_attention (NULL, q, K, Vv, kv_half, n, nh, nkv, hd, 0, pos,
                                              slot, stride, ctx, scale, scratch, a), ==,
                       cudaSuccess);
      avq_cuk_decode_attention (NULL, q, K, Vv, kv_half, n, nh, nkv, hd, 0, pos, slot, stride,
                                ctx, scale, scratch, b);
      g_autofree float *fa = halves_to_floats (a, on), *fb = halves_to_floats (b, on);
      char what[96];
      g_snprintf (what, sizeof what, "decode splits nh=%d nkv=%d hd=%d ctx=%d %s", nh, nkv,
                  hd, ctx, kv_half ? "fp16" : "fp32");
      assert_floats (what, fa, fb, on, 3e-3);
      for (gsize i = 0; i < on; i++)
        g_assert_true (isnan (fa[i]) == (i >= 5 * row));
      for (int r = 1; r < 5; r++) {
        for (gsize i = 0; i < sn; i++)
          scratch[i] = NAN;
        g_assert_cmpint (kern_decode_attention (NULL, q + r * row,
                                                (const guint8 *) K + slot[r] * stride * es,
                                                (const guint8 *) Vv + slot[r] * stride * es,
                                                kv_half, 1, nh, nkv, hd, pos[r] + 1, NULL, NULL,
                                                0, ctx, scale, scratch, one + r * row), ==,
                         cudaSuccess);
        g_assert_cmpmem (a + r * row, row * 2, one + r * row, row * 2);
      }
    }
  }
}

/* Argmax per row (strided rows), against the reference. */
static void
test_argmax_rows (void)
{
  const int rows = 3, n = 1500, ld = 1536;
  g_autofree float *x = random_floats ((gsize) rows * ld, -5, 5);
  x[0 * ld + 1499] = 7.0f;
  x[1 * ld + 3] = 7.0f;
  x[1 * ld + 700] = 7.0f;
  x[2 * ld + 1510] = 99.0f;   /* padding past n: never read */
  gint32 a[3], b[3];
  g_assert_cmpint (kern_argmax (NULL, x, rows, n, ld, a), ==, cudaSuccess);
  avq_cuk_argmax (NULL, x, rows, n, ld, b);
  g_assert_cmpmem (a, sizeof a, b, sizeof b);
  g_assert_cmpint (a[0], ==, 1499);
  g_assert_cmpint (a[1], ==, 3);
  g_assert_cmpint (a[2], <, n);
  g_assert_cmpint (kern_argmax (NULL, x, rows, n, n - 1, a), ==, cudaErrorInvalidValue);
}

/* ---- Sampling candidates ---- */

/* What a kernel never writes: the slots of a row past min (k, n). */
#define TOP_UNTOUCHED_ID (-7)
#define TOP_UNTOUCHED_LOGIT 12345.0f

typedef struct {
  float *logit;   /* [rows k] */
  gint32 *id;     /* [rows k] */
  float *stats;   /* [rows 2] */
} TopOut;

static void
top_out_init (TopOut *o, int rows, int k)
{
  o->logit = g_new (float, (gsize) rows * k);
  o->id = g_new (gint32, (gsize) rows * k);
  o->stats = g_new (float, 2 * (gsize) rows);
  for (gsize i = 0; i < (gsize) rows * k; i++) {
    o->logit[i] = TOP_UNTOUCHED_LOGIT;
    o->id[i] = TOP_UNTOUCHED_ID;
  }
}

static void
top_out_clear (TopOut *o)
{
  g_free (o->logit);
  g_free (o->id);
  g_free (o->stats);
}

static gboolean
same_bits (float a, float b)
{
  return memcmp (&a, &b, sizeof a) == 0;
}

static gboolean
sum_close (float got, double want)
{
  if (want == 0)
    return got == 0.0f;
  return fabs (got - want) <= 1e-5 * fabs (want);
}

/* The kernel against the reference (cuda-emu-llama.cpp, i.e. the host's
 * avq_token_candidates_from_logits): ids and logits bit for bit (a -0 stays
 * -0), the max bit for bit, the sum within 1e-5 relative, a row's slots
 * past min (k, n) untouched. `got` (may be NULL) receives the kernel's. */
static void
top_check (const char *what, const float *x, int rows, int n, gsize ld, int k,
           float T, TopOut *got)
{
  TopOut a, b;
  top_out_init (&a, rows, k);
  top_out_init (&b, rows, k);
  g_assert_cmpint (kern_top_candidates (NULL, x, rows, n, ld, k, &T, a.logit, a.id,
                                        a.stats), ==, cudaSuccess);
  g_assert_cmpint (avq_cuk_top_candidates (NULL, x, rows, n, ld, k, &T, b.logit,
                                           b.id, b.stats), ==, cudaSuccess);
  const int kk = MIN (k, n);
  for (int r = 0; r < rows; r++) {
    for (int j = 0; j < k; j++) {
      const gsize i = (gsize) r * k + j;
      if (j >= kk) {
        if (a.id[i] != TOP_UNTOUCHED_ID || !same_bits (a.logit[i], TOP_UNTOUCHED_LOGIT))
          g_error ("%s n=%d k=%d row %d: slot %d past %d written", what, n, k, r, j, kk);
      } else if (a.id[i] != b.id[i] || !same_bits (a.logit[i], b.logit[i])) {
        g_error ("%s n=%d k=%d T=%g row %d candidate %d: kernel %d (%.9g), "
                 "reference %d (%.9g)", what, n, k, T, r, j, a.id[i], a.logit[i],
                 b.id[i], b.logit[i]);
      }
    }
    if (!same_bits (a.stats[2 * r], b.stats[2 * r]) ||
        !sum_close (a.stats[2 * r + 1], b.stats[2 * r + 1]))
      g_error ("%s n=%d k=%d T=%g row %d: kernel max %.9g sum %.9g, reference "
               "max %.9g sum %.9g", what, n, k, T, r, a.stats[2 * r],
               a.stats[2 * r + 1], b.stats[2 * r], b.stats[2 * r + 1]);
  }
  top_out_clear (&b);
  if (got)
    *got = a;
  else
    top_out_clear (&a);
}

static int
rank_descending (const void *pa, const void *pb)
{
  const guint64 a = *(const guint64 *) pa, b = *(const guint64 *) pb;
  return a < b ? 1 : (a > b ? -1 : 0);
}

/* A row's candidates from the definition, independently of both: every
 * rank sorted, the sum in double. */
static void
top_brute (const char *what, const float *xr, int n, int k, float T,
           const float *logit, const gint32 *id, const float *stats)
{
  g_autofree guint64 *rank = g_new (guint64, n);
  for (int i = 0; i < n; i++)
    rank[i] = avq_logit_rank (xr[i], i);
  qsort (rank, n, sizeof *rank, rank_descending);
  const int kk = MIN (k, n);
  for (int j = 0; j < kk; j++) {
    const gint32 want = (gint32) (0xffffffffu - (guint32) rank[j]);
    const float wl = isnan (xr[want]) ? -INFINITY : xr[want];
    if (id[j] != want || !same_bits (logit[j], wl))
      g_error ("%s n=%d k=%d: candidate %d is %d (%.9g), by sorting %d (%.9g)",
               what, n, k, j, id[j], logit[j], want, wl);
  }
  const float mx = isnan (xr[0xffffffffu - (guint32) rank[0]])
                       ? -INFINITY : xr[0xffffffffu - (guint32) rank[0]];
  double sum = 0;
  if (T > 0 && isfinite (mx))
    for (int i = 0; i < n; i++)
      if (!isnan (xr[i]))
        sum += exp (((double) xr[i] - mx) / T);
  if (!same_bits (stats[0], mx) || !sum_close (stats[1], sum))
    g_error ("%s n=%d k=%d T=%g: max %.9g sum %.9g, by definition %.9g %.9g",
             what, n, k, T, stats[0], stats[1], mx, sum);
}

/* Row lengths around the block (512) and the 7B vocabulary, k from the
 * fast path (1) to AVQ_CUK_TOP_MAX and past n, at several temperatures. */
static void
test_top_candidates (void)
{
  const int sizes[] = { 1, 5, 255, 256, 257, 1000, 32000, 32001, 70000 };
  const int ks[] = { 1, 2, 7, 64, 255, 256, AVQ_CUK_TOP_MAX + 1 };
  const float temps[] = { 1.0f, 0.2f, 3.0f, 0.0f };
  int c = 0;
  for (gsize s = 0; s < G_N_ELEMENTS (sizes); s++) {
    const int n = sizes[s];
    g_autofree float *x = random_floats (n, -8, 8);
    for (gsize q = 0; q < G_N_ELEMENTS (ks); q++) {
      /* the last: k past n, where the contract allows it */
      const int k = ks[q] <= AVQ_CUK_TOP_MAX ? ks[q] : n + 1;
      if (k > AVQ_CUK_TOP_MAX)
        continue;
      /* Long rows are slow under the host shim: every k at 32001 only. */
      if (n > 1000 && n != 32001 && k != 1 && k != 64 && k != 256)
        continue;
      const float T = temps[c++ % G_N_ELEMENTS (temps)];
      TopOut o;
      top_check ("sizes", x, 1, n, n, k, T, &o);
      if (n <= 1000 || k == 64)
        top_brute ("sizes", x, n, k, T, o.logit, o.id, o.stats);
      top_out_clear (&o);
    }
  }
}

/* Exact ties at the threshold: the k-th candidate's logit shared by tokens
 * spread over threads, warps and block-sized steps, so that the tie group
 * is split by id (the radix select's id digits). */
static void
test_top_candidates_ties (void)
{
  /* Few levels: groups of hundreds, every boundary inside one. */
  const int n = 1000;
  g_autofree float *x = g_new (float, n);
  for (int i = 0; i < n; i++)
    x[i] = (float) g_rand_int_range (rng, 0, 4) * 0.5f - 1.0f;
  const int ks[] = { 2, 7, 64, 255, 256 };
  for (gsize q = 0; q < G_N_ELEMENTS (ks); q++) {
    TopOut o;
    top_check ("4 levels", x, 1, n, n, ks[q], 1.0f, &o);
    top_brute ("4 levels", x, n, ks[q], 1.0f, o.logit, o.id, o.stats);
    top_out_clear (&o);
  }

  /* A 7B row: 40 tokens at 5 (ids 0, 32000 and between), 100 at 4, the
   * rest below. k = 40 closes on the first group, 41 splits the second by
   * id. */
  const int m = 32001;
  g_autofree float *y = random_floats (m, -8, 3);
  y[0] = y[m - 1] = 5.0f;
  for (int i = 1; i < 39; i++)
    y[i * 811 + (i & 7)] = 5.0f;
  for (int i = 0; i < 100; i++)
    y[i * 317 + 3] = y[i * 317 + 3] == 5.0f ? 5.0f : 4.0f;
  const int mks[] = { 40, 41 };
  for (gsize q = 0; q < G_N_ELEMENTS (mks); q++) {
    TopOut o;
    top_check ("two groups", y, 1, m, m, mks[q], 0.7f, &o);
    top_brute ("two groups", y, m, mks[q], 0.7f, o.logit, o.id, o.stats);
    g_assert_cmpint (o.id[0], ==, 0);
    g_assert_cmpfloat (o.logit[mks[q] - 1], ==, mks[q] > 40 ? 4.0f : 5.0f);
    top_out_clear (&o);
  }

  /* One value everywhere: the lowest ids; the sum is n. */
  TopOut o;
  g_autofree float *u = g_new (float, 300);
  for (int i = 0; i < 300; i++)
    u[i] = 0.25f;
  top_check ("all equal", u, 1, 300, 300, 256, 1.0f, &o);
  for (int j = 0; j < 256; j++)
    g_assert_cmpint (o.id[j], ==, j);
  g_assert_cmpfloat (fabs (o.stats[1] - 300) / 300, <=, 1e-6);
  top_out_clear (&o);

  /* A tie group across 2^8 (n = 300) and 2^16 (n = 70000), the ids'
   * highest bit: the id digits that hold it are not skipped. */
  for (int i = 0; i < 300; i++)
    u[i] = i < 250 ? 0.0f : 0.25f;
  top_check ("ids past 2^8", u, 1, 300, 300, 30, 1.0f, &o);
  top_brute ("ids past 2^8", u, 300, 30, 1.0f, o.logit, o.id, o.stats);
  g_assert_cmpint (o.id[29], ==, 279);
  top_out_clear (&o);
  const int w = 70000;
  g_autofree float *z = g_new (float, w);
  for (int i = 0; i < w; i++)
    z[i] = i < 65400 ? 0.0f : 0.25f;
  top_check ("ids past 2^16", z, 1, w, w, 256, 1.0f, &o);
  top_brute ("ids past 2^16", z, w, 256, 1.0f, o.logit, o.id, o.stats);
  for (int j = 0; j < 256; j++)
    g_assert_cmpint (o.id[j], ==, 65400 + j);
  top_out_clear (&o);

  /* Equal values at ids that differ only in their low digits, the k-th at
   * a digit boundary (0xff / 0x100). */
  g_autofree float *v = random_floats (n, -8, 0);
  const int at[] = { 0xfd, 0xfe, 0xff, 0x100, 0x101, 0x1ff, 0x200, 0x3e7 };
  for (gsize i = 0; i < G_N_ELEMENTS (at); i++)
    v[at[i]] = 2.0f;
  for (int k = 2; k <= 6; k++) {
    top_check ("digit boundary", v, 1, n, n, k, 1.0f, &o);
    top_brute ("digit boundary", v, n, k, 1.0f, o.logit, o.id, o.stats);
    top_out_clear (&o);
  }
}

/* NaN (ranks as -infinity, stored as -infinity), infinities (an infinite
 * max: no sum), -0 and +0 (equal: by id; each keeps its sign bit), the
 * temperatures that make no sum (0, negative, NaN). */
static void
test_top_candidates_special (void)
{
  const int n = 700;
  TopOut o;
  /* NaN and -inf below a few finite values: k reaches into them. */
  g_autofree float *x = g_new (float, n);
  for (int i = 0; i < n; i++)
    x[i] = i % 3 == 0 ? NAN : -INFINITY;
  x[650] = -3.0f;
  x[17] = 1.0f;
  x[400] = 1.0f;
  top_check ("nan -inf", x, 1, n, n, 64, 1.0f, &o);
  top_brute ("nan -inf", x, n, 64, 1.0f, o.logit, o.id, o.stats);
  g_assert_cmpint (o.id[0], ==, 17);
  g_assert_cmpint (o.id[2], ==, 650);
  g_assert_cmpint (o.id[3], ==, 0);     /* NaN, as -inf, lowest id */
  g_assert_cmpint (o.id[4], ==, 1);
  g_assert_true (o.logit[3] == -INFINITY);
  top_out_clear (&o);
  /* All NaN: max -inf, no sum, the lowest ids. */
  for (int i = 0; i < n; i++)
    x[i] = NAN;
  for (int k = 1; k <= 7; k += 6) {
    top_check ("all nan", x, 1, n, n, k, 1.0f, &o);
    top_brute ("all nan", x, n, k, 1.0f, o.logit, o.id, o.stats);
    g_assert_cmpint (o.id[k - 1], ==, k - 1);
    g_assert_true (o.stats[0] == -INFINITY && o.stats[1] == 0.0f);
    top_out_clear (&o);
  }
  /* +inf twice, NaN, -inf among random values: an infinite max, no sum. */
  g_autofree float *y = random_floats (n, -5, 5);
  y[3] = NAN;
  y[600] = INFINITY;
  y[90] = INFINITY;
  y[91] = -INFINITY;
  for (int k = 1; k <= 7; k += 6) {
    top_check ("+inf", y, 1, n, n, k, 1.0f, &o);
    top_brute ("+inf", y, n, k, 1.0f, o.logit, o.id, o.stats);
    g_assert_cmpint (o.id[0], ==, 90);
    g_assert_true (o.stats[0] == INFINITY && o.stats[1] == 0.0f);
    top_out_clear (&o);
  }
  /* -inf only at the bottom: a finite max sums (-inf adds 0). */
  y[600] = y[90] = 1.0f;
  top_check ("-inf", y, 1, n, n, 7, 1.0f, &o);
  top_brute ("-inf", y, n, 7, 1.0f, o.logit, o.id, o.stats);
  top_out_clear (&o);
  /* Signed zeros at the top, in ties with each other: ids in order, signs
   * kept, the max a -0 when the lowest id holds one. */
  for (int i = 0; i < n; i++)
    y[i] = i % 5 == 0 ? -1.0f : (i % 2 ? -0.0f : 0.0f);
  for (int k = 1; k <= 256; k += 85) {
    top_check ("signed zeros", y, 1, n, n, k, 1.0f, &o);
    top_brute ("signed zeros", y, n, k, 1.0f, o.logit, o.id, o.stats);
    g_assert_cmpint (o.id[0], ==, 1);
    g_assert_true (signbit (o.stats[0]) && o.stats[0] == 0.0f);
    top_out_clear (&o);
  }
  /* Temperatures without a sum; a sharp one whose terms underflow. */
  g_autofree float *z = random_floats (n, -30, 30);
  const float temps[] = { 0.0f, -1.0f, NAN, 0.2f, 0.01f, 3.0f };
  for (gsize t = 0; t < G_N_ELEMENTS (temps); t++) {
    top_check ("temperature", z, 1, n, n, 64, temps[t], &o);
    top_brute ("temperature", z, n, 64, temps[t], o.logit, o.id, o.stats);
    if (!(temps[t] > 0))
      g_assert_true (o.stats[1] == 0.0f);
    top_out_clear (&o);
  }
}

/* Several rows of a strided batch (padding past n never read), each its
 * own; the temperature read at launch from memory the caller changes
 * between launches (a replayed graph's). */
static void
test_top_candidates_rows (void)
{
  const int n = 1000, ld = 1037, k = 64;
  g_autofree float *x = random_floats ((gsize) 5 * ld, -6, 6);
  for (int r = 0; r < 5; r++)
    for (int c = n; c < ld; c++)
      x[(gsize) r * ld + c] = c % 2 ? 99.0f : NAN;   /* never read */
  x[(gsize) 2 * ld + 5] = 50.0f;
  for (int rows = 1; rows <= 5; rows++) {
    TopOut o;
    top_check ("rows", x, rows, n, ld, k, 1.5f, &o);
    for (int r = 0; r < rows; r++)
      top_brute ("rows", x + (gsize) r * ld, n, k, 1.5f, o.logit + (gsize) r * k,
                 o.id + (gsize) r * k, o.stats + 2 * r);
    if (rows >= 3)
      g_assert_cmpint (o.id[2 * k], ==, 5);
    top_out_clear (&o);
  }
  /* Temperature by pointer: the second launch sees the new value. */
  float *T = g_new (float, 1);
  TopOut a, b;
  top_out_init (&a, 2, k);
  top_out_init (&b, 2, k);
  *T = 1.0f;
  g_assert_cmpint (kern_top_candidates (NULL, x, 2, n, ld, k, T, a.logit, a.id,
                                        a.stats), ==, cudaSuccess);
  *T = 2.0f;
  g_assert_cmpint (kern_top_candidates (NULL, x, 2, n, ld, k, T, b.logit, b.id,
                                        b.stats), ==, cudaSuccess);
  for (int r = 0; r < 2; r++) {
    top_brute ("T 1", x + (gsize) r * ld, n, k, 1.0f, a.logit + r * k, a.id + r * k,
               a.stats + 2 * r);
    top_brute ("T 2", x + (gsize) r * ld, n, k, 2.0f, b.logit + r * k, b.id + r * k,
               b.stats + 2 * r);
  }
  top_out_clear (&a);
  top_out_clear (&b);
  g_free (T);
}

static void
test_top_candidates_invalid (void)
{
  float x[8] = { 0 }, T = 1.0f, l[8], s[2];
  gint32 id[8];
  const struct { int rows, n; gsize ld; int k; } bad[] = {
    { 0, 8, 8, 2 }, { -1, 8, 8, 2 }, { 1, 0, 8, 2 }, { 1, -3, 8, 2 },
    { 1, 8, 7, 2 }, { 1, 8, 8, 0 }, { 1, 8, 8, -1 },
    { 1, 8, 8, AVQ_CUK_TOP_MAX + 1 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_assert_cmpint (kern_top_candidates (NULL, x, bad[i].rows, bad[i].n, bad[i].ld,
                                          bad[i].k, &T, l, id, s), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (avq_cuk_top_candidates (NULL, x, bad[i].rows, bad[i].n,
                                             bad[i].ld, bad[i].k, &T, l, id, s), ==,
                     cudaErrorInvalidValue);
  }
  g_assert_cmpint (kern_top_candidates (NULL, x, 1, 8, 8, 2, NULL, l, id, s), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpint (avq_cuk_top_candidates (NULL, x, 1, 8, 8, 2, NULL, l, id, s), ==,
                   cudaErrorInvalidValue);
}

/* The block reduction shared by argmax (1024 threads), argmin (256) and the
 * candidates' max (512): the winner in the first and last lane of a warp,
 * in the block's last warp, past one block-sized step, with a tie in
 * another warp at a higher id. */
static void
test_block_best (void)
{
  const int n = 2100;
  g_autofree float *x = random_floats (n, -5, 5);
  const int at[] = { 0, 31, 32, 223, 224, 255, 256, 479, 480, 511, 512,
                     991, 992, 1023, 1024, 2047, 2099 };
  for (gsize i = 0; i < G_N_ELEMENTS (at); i++) {
    const int p = at[i], q = p + 700 < n ? p + 700 : p;
    const float keep = x[p], keep_q = x[q];
    x[p] = 7.0f;
    x[q] = 7.0f;   /* equal, higher id: loses */
    gint32 a = -1;
    g_assert_cmpint (kern_argmax (NULL, x, 1, n, n, &a), ==, cudaSuccess);
    g_assert_cmpint (a, ==, p);
    TopOut o;
    top_check ("block best", x, 1, n, n, 1, 1.0f, &o);
    g_assert_cmpint (o.id[0], ==, p);
    top_out_clear (&o);
    /* argmin: distance 1 - 2 x, smallest where x is largest */
    g_autofree float *sq = g_new (float, n);
    for (int k = 0; k < n; k++)
      sq[k] = 1.0f;
    gint32 ia = -1, ib = -1;
    float ma, mb;
    kern_argmin (NULL, x, sq, 1, n, &ia, &ma);
    avq_cuk_argmin (NULL, x, sq, 1, n, &ib, &mb);
    g_assert_cmpint (ia, ==, p);
    g_assert_cmpint (ia, ==, ib);
    g_assert_cmpfloat (ma, ==, mb);
    x[q] = keep_q;
    x[p] = keep;
  }
}

/* Benchmark weights: the kernel and the reference store the same values
 * (one hash), fp16 and fp32; uniform in [offset - scale, offset + scale)
 * with the mean near the offset; another seed gives other values. */
static void
test_fill_random (void)
{
  const gsize n = 70000;
  g_autofree float *f1 = g_new (float, n), *f2 = g_new (float, n), *f3 = g_new (float, n);
  g_autofree guint16 *h1 = g_new (guint16, n), *h2 = g_new (guint16, n);
  g_assert_cmpint (kern_fill_random (NULL, f1, 0, n, 42, 0.5f, 1.0f), ==, cudaSuccess);
  avq_cuk_fill_random (NULL, f2, 0, n, 42, 0.5f, 1.0f);
  g_assert_cmpmem (f1, n * 4, f2, n * 4);
  kern_fill_random (NULL, h1, 1, n, 42, 0.5f, 1.0f);
  avq_cuk_fill_random (NULL, h2, 1, n, 42, 0.5f, 1.0f);
  g_assert_cmpmem (h1, n * 2, h2, n * 2);
  double sum = 0;
  for (gsize i = 0; i < n; i++) {
    g_assert_cmpfloat (f1[i], >=, 0.5f);
    g_assert_cmpfloat (f1[i], <, 1.5f);
    g_assert_cmpfloat (avq_half_to_float (h1[i]), ==, avq_half_to_float (avq_float_to_half (f1[i])));
    sum += f1[i];
  }
  g_assert_cmpfloat (fabs (sum / n - 1.0), <, 0.01);
  kern_fill_random (NULL, f3, 0, n, 43, 0.5f, 1.0f);
  gsize same = 0;
  for (gsize i = 0; i < n; i++)
    same += f3[i] == f1[i];
  g_assert_cmpuint (same, <, n / 100);
}

/* The prefill attention (lib/cuda/avq-cuda-llama.c: strided-batched cuBLAS
 * GEMMs around the causal softmax, run on cuda-emu.cpp's cuBLAS and kernels)
 * against causal attention from the definition in double: score rows
 * padded to a multiple of 8 (partial), MHA (one call over all heads), GQA
 * groups of 3 and MQA (stride-0 K/V per kv head), a continuation at p0 > 0,
 * a single row, and cache slots past the prompt poisoned with NaN. */
static void
test_prefill_attention (void)
{
  const struct { int n, p0, nh, nkv, hd, ctx; } cases[] = {
    { 5, 0, 4, 4, 16, 8 }, { 7, 10, 6, 2, 32, 20 }, { 3, 0, 3, 1, 64, 3 },
    { 1, 20, 4, 2, 8, 24 }, { 13, 4, 2, 2, 128, 40 },
  };
  cublasHandle_t blas;
  g_assert_cmpint (cublasCreate (&blas), ==, CUBLAS_STATUS_SUCCESS);
  for (gsize c = 0; c < G_N_ELEMENTS (cases); c++) {
    const int n = cases[c].n, p0 = cases[c].p0, nh = cases[c].nh, nkv = cases[c].nkv;
    const int hd = cases[c].hd, ctx = cases[c].ctx, T = p0 + n, Tp = (T + 7) & ~7;
    const int qd = nh * hd, group = nh / nkv;
    const gsize cn = (gsize) nkv * ctx * hd;
    g_autofree guint16 *kc = g_new (guint16, cn), *vc = g_new (guint16, cn);
    for (gsize i = 0; i < cn; i++) {
      gsize j = (i / hd) % ctx;
      kc[i] = avq_float_to_half (j < (gsize) T ? (float) g_rand_double_range (rng, -2, 2) : NAN);
      vc[i] = avq_float_to_half (j < (gsize) T ? (float) g_rand_double_range (rng, -2, 2) : NAN);
    }
    g_autofree guint16 *q = g_new (guint16, (gsize) n * qd);
    for (gsize i = 0; i < (gsize) n * qd; i++)
      q[i] = avq_float_to_half ((float) g_rand_double_range (rng, -2, 2));
    g_autofree float *scores = g_new (float, (gsize) nh * n * Tp);
    g_autofree guint16 *probs = g_new (guint16, (gsize) nh * n * Tp);
    g_autofree guint16 *out = g_new (guint16, (gsize) n * qd);
    const float scale = 1.0f / sqrtf ((float) hd);
    g_autoptr (GError) error = NULL;
    g_assert_true (avq_cuda_causal_attention (blas, NULL, q, n, p0, nh, nkv, hd, kc, vc,
                                              ctx, scale, scores, probs, out, &error));
    g_assert_no_error (error);
    g_autofree float *got = halves_to_floats (out, (gsize) n * qd);
    g_autofree float *want = g_new (float, (gsize) n * qd);
    g_autofree double *s = g_new (double, T);
    for (int i = 0; i < n; i++)
      for (int h = 0; h < nh; h++) {
        const gsize base = (gsize) (h / group) * ctx * hd;
        const int valid = p0 + i + 1;
        double m = -INFINITY, sum = 0;
        for (int j = 0; j < valid; j++) {
          double dot = 0;
          for (int d = 0; d < hd; d++)
            dot += (double) avq_half_to_float (q[(gsize) i * qd + h * hd + d]) *
                   avq_half_to_float (kc[base + (gsize) j * hd + d]);
          s[j] = dot * scale;
          m = fmax (m, s[j]);
        }
        for (int j = 0; j < valid; j++)
          sum += (s[j] = exp (s[j] - m));
        for (int d = 0; d < hd; d++) {
          double o = 0;
          for (int j = 0; j < valid; j++)
            o += s[j] * avq_half_to_float (vc[base + (gsize) j * hd + d]);
          want[(gsize) i * qd + h * hd + d] = (float) (o / sum);
        }
      }
    char what[96];
    g_snprintf (what, sizeof what, "prefill attention n=%d p0=%d nh=%d nkv=%d hd=%d", n,
                p0, nh, nkv, hd);
    /* fp16 probabilities and output: a few 2^-11 relative. */
    assert_floats (what, got, want, (gsize) n * qd, 5e-3);
  }
  cublasDestroy (blas);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  rng = g_rand_new_with_seed (20261128);
  g_test_add_func ("/cuda-kernels/im2col-embed", test_im2col_embed);
  g_test_add_func ("/cuda-kernels/layernorm", test_layernorm);
  g_test_add_func ("/cuda-kernels/bias-act", test_bias_act);
  g_test_add_func ("/cuda-kernels/softmax", test_softmax);
  g_test_add_func ("/cuda-kernels/dlp-gather-half", test_dlp_gather_half);
  g_test_add_func ("/cuda-kernels/argmin", test_argmin);
  g_test_add_func ("/cuda-kernels/side", test_side);
  g_test_add_func ("/cuda-kernels/attention", test_attention);
  g_test_add_func ("/cuda-kernels/rmsnorm", test_rmsnorm);
  g_test_add_func ("/cuda-kernels/rope-kv", test_rope_kv);
  g_test_add_func ("/cuda-kernels/silu-embed-add", test_silu_embed_add);
  g_test_add_func ("/cuda-kernels/causal-softmax", test_causal_softmax);
  g_test_add_func ("/cuda-kernels/decode-attention", test_decode_attention);
  g_test_add_func ("/cuda-kernels/argmax", test_argmax);
  g_test_add_func ("/cuda-kernels/prefill-attention", test_prefill_attention);
  g_test_add_func ("/cuda-kernels/rope-kv-rows", test_rope_kv_rows);
  g_test_add_func ("/cuda-kernels/decode-attention-rows", test_decode_attention_rows);
  g_test_add_func ("/cuda-kernels/decode-attention-splits", test_decode_attention_splits);
  g_test_add_func ("/cuda-kernels/argmax-rows", test_argmax_rows);
  g_test_add_func ("/cuda-kernels/fill-random", test_fill_random);
  g_test_add_func ("/cuda-kernels/top-candidates", test_top_candidates);
  g_test_add_func ("/cuda-kernels/top-candidates-ties", test_top_candidates_ties);
  g_test_add_func ("/cuda-kernels/top-candidates-special", test_top_candidates_special);
  g_test_add_func ("/cuda-kernels/top-candidates-rows", test_top_candidates_rows);
  g_test_add_func ("/cuda-kernels/top-candidates-invalid", test_top_candidates_invalid);
  g_test_add_func ("/cuda-kernels/block-best", test_block_best);
  int rc = g_test_run ();
  g_rand_free (rng);
  return rc;
}
