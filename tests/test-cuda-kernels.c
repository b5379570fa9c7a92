/* The CUDA kernels' own code (lib/cuda/avq-cuda-kernels.cu, compiled for the
 * host by cuda-kernels-host.cpp: block threads as host threads, barriers,
 * emulated warp shuffles) against the C reference implementations of the
 * same contracts in cuda-emu.c, which test-cuda-emu holds to the fixture.
 * Sizes are chosen to exercise the awkward cases: rows longer than a block,
 * row strides wider than rows, K not a multiple of the block, exact ties,
 * NaN, half-way side codes. Runs on machines with the CUDA toolkit and no
 * GPU; says nothing about what only hardware shows. */
#include <math.h>
#include <string.h>
#include <glib.h>
#include "avq-safetensors.h"
#include "cuda/avq-cuda-kernels.h"

/* The same launchers under the kern_ names cuda-kernels-host.cpp gives the
 * real kernels. */
#undef AVQ_CUDA_KERNELS_H
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
#include "cuda/avq-cuda-kernels.h"
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
  kern_side_residual (NULL, zhat, c2, rg2[0], 0.01f, rg2[2], 0.02f, g1, b1, T, D, x1);
  avq_cuk_side_residual (NULL, zhat, c2, rg2[0], 0.01f, rg2[2], 0.02f, g1, b1, T, D, x2);
  assert_floats ("side residual", x1, x2, (gsize) T * D, 1e-6);

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
  int rc = g_test_run ();
  g_rand_free (rng);
  return rc;
}
