/* The tensor-core flash attention (lib/cuda/avq-cuda-flash.cu), its real
 * kernel code compiled for the host by cuda-flash-host.cpp (block threads as
 * host threads, barriers, warp shuffles, and an emulation of the
 * nvcuda::wmma subset it uses, tests/cuda-wmma-host.h, whose fragments hold
 * their elements in a scrambled order), against attention computed from the
 * definition in double from the same fp16 inputs.
 *
 * Cases: the vision layout (q | k | v interleaved in [T, 3D], heads of 64,
 * T = 77 and the tower's 577, a batch of 2 frames), the LLM prefill layout
 * (causal over the [kv_head][max_ctx][hd] cache, p0 = 0 and p0 > 0, GQA
 * groups 1, 2 and 4, head size 128, n not a multiple of 16, several query
 * tiles, a single query row), and the general launcher with head sizes that
 * are padded (20, 80), strides and pointers that force element loads,
 * gaps between rows, heads and batch items, a causal key count smaller than
 * q_pos + n_q, and a sharp softmax (large scale) whose maximum moves from
 * tile to tile. Every element the contract says is not read holds NaN, and
 * every output element it says is not written holds a sentinel that must
 * survive.
 *
 * Tolerance: fp16 probabilities (relative 2^-12 on average) and the fp16
 * output (2^-11 relative): |kernel - reference| <= 2e-3 |reference| + 1e-3
 * with values in [-2, 2]. Measured maxima are printed (g_test_message).
 *
 * Mutations of the kernel checked by hand on 2026-11-29, each made this
 * test fail: the causal limit off by one (q_pos + i + 2); the rescale of O
 * skipped (alpha forced to 1); the row sum not rescaled (l = l + ls); the
 * GQA map h % kv_heads instead of h / group; P not masked past the key
 * limit (zero-padded keys get weight); K/V tile rows not bounded by the key
 * count (NaN / foreign rows read); the epilogue writing rows past n_q
 * (sentinel); the rowmap replaced by a row-major assumption about the
 * fragment (i / 16: the emulation's scrambled element order). Removing the
 * __syncwarp between the score store and the softmax made the repeat-run
 * comparison fail (a race: likely, not certain, to show). */
#include <math.h>
#include <string.h>
#include <glib.h>
#include "avq-safetensors.h"
/* The launchers under the kern_flash_ names cuda-flash-host.cpp gives them
 * (libavq holds the nvcc-built ones under the real names). */
#define avq_cuk_flash_attention kern_flash_attention
#define avq_cuk_flash_attention_qkv kern_flash_attention_qkv
#define avq_cuk_flash_attention_cache kern_flash_attention_cache
#include "cuda/avq-cuda-flash.h"

#define NAN_H 0x7e00          /* fp16 quiet NaN: never-read inputs */
#define SENTINEL_H 0x7e55     /* fp16 NaN with a payload: never-written output */

static GRand *rng;

static guint16
random_half (void)
{
  return avq_float_to_half ((float) g_rand_double_range (rng, -2, 2));
}

/* Index span of a [batch][heads][rows][hd] view with the given strides. */
static gsize
span (int batch, int heads, int rows, int hd, gint64 row, gint64 head,
      gint64 bstride)
{
  return (gsize) ((batch - 1) * bstride + (heads - 1) * head + (rows - 1) * row + hd);
}

/* buf[0 .. len) = NaN, then random fp16 on the elements of the view. */
static void
fill_view (guint16 *buf, gsize len, int batch, int heads, int rows, int hd,
           gint64 row, gint64 head, gint64 bstride)
{
  for (gsize i = 0; i < len; i++)
    buf[i] = NAN_H;
  for (int b = 0; b < batch; b++)
    for (int h = 0; h < heads; h++)
      for (int i = 0; i < rows; i++)
        for (int d = 0; d < hd; d++)
          buf[b * bstride + h * head + i * row + d] = random_half ();
}

static int
key_limit (const AvqCukFlashParams *p, int i)
{
  if (!p->causal)
    return p->n_k;
  return MIN (p->n_k, p->q_pos + i + 1);
}

/* Compares p->out (out_len elements, the sentinel wherever the kernel was
 * not to write) with attention from the definition of p (host pointers). */
static void
check_case (const char *what, const AvqCukFlashParams *p, gsize out_len,
            double secs)
{
  const guint16 *out = p->out;

  const int hd = p->head_dim, group = p->heads / p->kv_heads;
  g_autofree guint8 *written = g_new0 (guint8, out_len);
  g_autofree double *s = g_new (double, p->n_k);
  double max_abs = 0, max_rel = 0, err2 = 0, ref2 = 0;
  for (int b = 0; b < p->batch; b++)
    for (int h = 0; h < p->heads; h++) {
      const guint16 *q = p->q + b * p->q_batch + h * p->q_head;
      const guint16 *k = p->k + b * p->k_batch + (h / group) * p->k_head;
      const guint16 *v = p->v + b * p->v_batch + (h / group) * p->v_head;
      for (int i = 0; i < p->n_q; i++) {
        const int lim = key_limit (p, i);
        double m = -INFINITY, sum = 0;
        for (int j = 0; j < lim; j++) {
          double dot = 0;
          for (int d = 0; d < hd; d++)
            dot += (double) avq_half_to_float (q[i * p->q_row + d]) *
                   avq_half_to_float (k[j * p->k_row + d]);
          s[j] = dot * p->scale;
          m = fmax (m, s[j]);
        }
        for (int j = 0; j < lim; j++)
          sum += (s[j] = exp (s[j] - m));
        for (int d = 0; d < hd; d++) {
          double o = 0;
          for (int j = 0; j < lim; j++)
            o += s[j] * avq_half_to_float (v[j * p->v_row + d]);
          const double want = o / sum;
          const gsize at = (gsize) (b * p->o_batch + h * p->o_head + i * p->o_row + d);
          g_assert_cmpuint (at, <, out_len);
          written[at] = 1;
          const double got = avq_half_to_float (out[at]);
          const double err = fabs (got - want);
          if (!(err <= 2e-3 * fabs (want) + 1e-3))
            g_error ("%s: b=%d h=%d i=%d d=%d: kernel %.7g, reference %.7g", what, b,
                     h, i, d, got, want);
          max_abs = MAX (max_abs, err);
          if (fabs (want) > 0.05)
            max_rel = MAX (max_rel, err / fabs (want));
          err2 += err * err;
          ref2 += want * want;
        }
      }
    }
  for (gsize i = 0; i < out_len; i++)
    if (!written[i] && out[i] != SENTINEL_H)
      g_error ("%s: out[%" G_GSIZE_FORMAT "] written (%04x) outside the contract",
               what, i, out[i]);
  g_test_message ("%s: max |err| %.2e, max rel err (|ref| > 0.05) %.2e, "
                  "rms err / rms ref %.2e, %.2f s", what, max_abs, max_rel,
                  sqrt (err2 / ref2), secs);
}

/* Runs the general launcher on p (p->out is out_len elements, filled with
 * the sentinel here) and checks the result. */
static void
run_case (const char *what, AvqCukFlashParams *p, gsize out_len)
{
  for (gsize i = 0; i < out_len; i++)
    p->out[i] = SENTINEL_H;
  gint64 t0 = g_get_monotonic_time ();
  g_assert_cmpint (kern_flash_attention (NULL, p), ==, cudaSuccess);
  check_case (what, p, out_len, (g_get_monotonic_time () - t0) / 1e6);
}

/* The vision tower's layout through avq_cuk_flash_attention_qkv; the
 * reference reads the same buffer through the layout stated here. twice:
 * run the general launcher on the same problem too, which must give the
 * same bits (a missing __syncwarp showed as a difference here). */
static void
vision_case (int T, int H, int hd, int frames, gboolean twice)
{
  const int D = H * hd;
  const gsize n_in = (gsize) frames * T * 3 * D, n_out = (gsize) frames * T * D;
  /* out has 64 spare rows, which must keep the sentinel. */
  const gsize out_len = n_out + (gsize) 64 * D;
  g_autofree guint16 *qkv = g_new (guint16, n_in);
  for (gsize i = 0; i < n_in; i++)
    qkv[i] = random_half ();
  g_autofree guint16 *out = g_new (guint16, out_len);
  for (gsize i = 0; i < out_len; i++)
    out[i] = SENTINEL_H;
  const float scale = 1.0f / sqrtf ((float) hd);
  gint64 t0 = g_get_monotonic_time ();
  g_assert_cmpint (kern_flash_attention_qkv (NULL, qkv, T, D, H, frames, scale, out),
                   ==, cudaSuccess);
  double secs = (g_get_monotonic_time () - t0) / 1e6;

  AvqCukFlashParams p = {
    .q = qkv, .k = qkv + D, .v = qkv + 2 * D, .out = out,
    .q_row = 3 * D, .q_head = hd, .q_batch = (gint64) T * 3 * D,
    .k_row = 3 * D, .k_head = hd, .k_batch = (gint64) T * 3 * D,
    .v_row = 3 * D, .v_head = hd, .v_batch = (gint64) T * 3 * D,
    .o_row = D, .o_head = hd, .o_batch = (gint64) T * D,
    .n_q = T, .n_k = T, .heads = H, .kv_heads = H, .head_dim = hd,
    .batch = frames, .scale = scale,
  };
  char what[80];
  g_snprintf (what, sizeof what, "vision T=%d H=%d hd=%d frames=%d", T, H, hd, frames);
  check_case (what, &p, out_len, secs);
  if (twice) {
    g_autofree guint16 *copy = g_memdup2 (out, out_len * sizeof *out);
    run_case (what, &p, out_len);
    g_assert_cmpmem (copy, out_len * sizeof *out, out, out_len * sizeof *out);
  }
}

static void
test_vision (void)
{
  vision_case (77, 2, 64, 1, TRUE);
  vision_case (40, 2, 64, 2, TRUE);
  vision_case (33, 1, 128, 1, FALSE);
  vision_case (577, 2, 64, 1, FALSE);   /* the tower's token count, 2 of its 16 heads */
}

/* The LLM prefill's layout through avq_cuk_flash_attention_cache: cache
 * slots past p0 + n hold NaN. */
static void
cache_case (int n, int p0, int nh, int nkv, int hd, int max_ctx)
{
  const int T = p0 + n, qd = nh * hd;
  const gsize cn = (gsize) nkv * max_ctx * hd;
  g_autofree guint16 *kc = g_new (guint16, cn), *vc = g_new (guint16, cn);
  fill_view (kc, cn, 1, nkv, T, hd, hd, (gint64) max_ctx * hd, 0);
  fill_view (vc, cn, 1, nkv, T, hd, hd, (gint64) max_ctx * hd, 0);
  g_autofree guint16 *q = g_new (guint16, (gsize) n * qd);
  fill_view (q, (gsize) n * qd, 1, nh, n, hd, qd, hd, 0);
  /* out has 64 spare rows, which must keep the sentinel. */
  const gsize out_len = (gsize) (n + 64) * qd;
  g_autofree guint16 *out = g_new (guint16, out_len);
  for (gsize i = 0; i < out_len; i++)
    out[i] = SENTINEL_H;
  const float scale = 1.0f / sqrtf ((float) hd);
  gint64 t0 = g_get_monotonic_time ();
  g_assert_cmpint (kern_flash_attention_cache (NULL, q, n, p0, nh, nkv, hd, kc, vc,
                                               max_ctx, scale, out),
                   ==, cudaSuccess);
  double secs = (g_get_monotonic_time () - t0) / 1e6;
  AvqCukFlashParams p = {
    .q = q, .k = kc, .v = vc, .out = out,
    .q_row = qd, .q_head = hd,
    .k_row = hd, .k_head = (gint64) max_ctx * hd,
    .v_row = hd, .v_head = (gint64) max_ctx * hd,
    .o_row = qd, .o_head = hd,
    .n_q = n, .n_k = T, .heads = nh, .kv_heads = nkv, .head_dim = hd, .batch = 1,
    .scale = scale, .causal = 1, .q_pos = p0,
  };
  char what[96];
  g_snprintf (what, sizeof what, "prefill n=%d p0=%d nh=%d nkv=%d hd=%d", n, p0, nh,
              nkv, hd);
  check_case (what, &p, out_len, secs);
}

static void
test_prefill (void)
{
  cache_case (37, 0, 4, 4, 128, 48);    /* MHA, first prompt */
  cache_case (21, 50, 8, 2, 128, 80);   /* GQA 4, continuation */
  cache_case (1, 70, 4, 1, 128, 72);    /* a single row, MQA */
  cache_case (70, 3, 4, 2, 64, 80);     /* GQA 2, two query tiles */
  cache_case (16, 0, 2, 2, 128, 16);    /* n a multiple of 16, full cache */
  cache_case (40, 560, 2, 1, 128, 640); /* the last rows of a 600-token prompt */
}

/* The general launcher: element loads, padded head sizes, gaps. */
static void
general_case (const char *what, int n_q, int n_k, int heads, int kv_heads,
              int hd, int batch, int causal, int q_pos, float scale, int pad,
              int misalign)
{
  AvqCukFlashParams p = { 0 };
  /* Rows, heads and batch items separated by `pad` unread elements. */
  p.q_row = (gint64) heads * (hd + pad) + pad;
  p.q_head = hd + pad;
  p.q_batch = n_q * p.q_row + pad;
  p.k_row = hd + pad;
  p.k_head = (gint64) n_k * p.k_row + pad;
  p.k_batch = kv_heads * p.k_head + pad;
  p.v_row = hd + 2 * pad;
  p.v_head = (gint64) n_k * p.v_row + pad;
  p.v_batch = kv_heads * p.v_head + pad;
  p.o_row = (gint64) heads * hd + pad;
  p.o_head = hd;
  p.o_batch = n_q * p.o_row + pad;
  const int kread = causal ? MIN (n_k, q_pos + n_q) : n_k;
  const gsize qn = span (batch, heads, n_q, hd, p.q_row, p.q_head, p.q_batch) + misalign;
  const gsize kn = span (batch, kv_heads, n_k, hd, p.k_row, p.k_head, p.k_batch);
  const gsize vn = span (batch, kv_heads, n_k, hd, p.v_row, p.v_head, p.v_batch);
  const gsize on = span (batch, heads, n_q + 64, hd, p.o_row, p.o_head, p.o_batch);
  g_autofree guint16 *q = g_new (guint16, qn), *k = g_new (guint16, kn);
  g_autofree guint16 *v = g_new (guint16, vn), *out = g_new (guint16, on);
  /* misalign: q starts one element in, 2-byte aligned only. */
  q[0] = NAN_H;
  fill_view (q + misalign, qn - misalign, batch, heads, n_q, hd, p.q_row, p.q_head,
             p.q_batch);
  fill_view (k, kn, batch, kv_heads, kread, hd, p.k_row, p.k_head, p.k_batch);
  fill_view (v, vn, batch, kv_heads, kread, hd, p.v_row, p.v_head, p.v_batch);
  p.q = q + misalign;
  p.k = k;
  p.v = v;
  p.out = out;
  p.n_q = n_q;
  p.n_k = n_k;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.head_dim = hd;
  p.batch = batch;
  p.scale = scale;
  p.causal = causal;
  p.q_pos = q_pos;
  run_case (what, &p, on);
}

static void
test_general (void)
{
  general_case ("hd=20 odd strides, 2 items, non-causal 19 x 45", 19, 45, 3, 3, 20, 2,
                0, 0, 1.0f / sqrtf (20.0f), 5, 0);
  general_case ("hd=80 causal q_pos=10, n_k < q_pos + n_q, GQA 2", 40, 45, 4, 2, 80, 1,
                1, 10, 1.0f / sqrtf (80.0f), 8, 0);
  general_case ("hd=64 misaligned q, causal q_pos=0", 30, 30, 2, 1, 64, 1, 1, 0,
                0.125f, 0, 1);
  general_case ("hd=64 sharp softmax (scale 0.6), 100 x 150", 100, 150, 1, 1, 64, 1, 0,
                0, 0.6f, 8, 0);
  general_case ("hd=128 sharp causal (scale 0.4), gaps, 2 items", 45, 120, 2, 2, 128, 2,
                1, 75, 0.4f, 16, 0);
}

static void
test_invalid (void)
{
  guint16 buf[64] = { 0 }, out[64];
  AvqCukFlashParams ok = {
    .q = buf, .k = buf, .v = buf, .out = out, .q_row = 8, .k_row = 8, .v_row = 8,
    .o_row = 8, .n_q = 2, .n_k = 2, .heads = 1, .kv_heads = 1, .head_dim = 8,
    .batch = 1, .scale = 1.0f,
  };
  AvqCukFlashParams p = ok;
  g_assert_cmpint (kern_flash_attention (NULL, &p), ==, cudaSuccess);
  g_assert_cmpint (kern_flash_attention (NULL, NULL), ==, cudaErrorInvalidValue);
  p = ok, p.head_dim = 0;
  g_assert_cmpint (kern_flash_attention (NULL, &p), ==, cudaErrorInvalidValue);
  p = ok, p.head_dim = AVQ_CUK_FLASH_MAX_HD + 1;
  g_assert_cmpint (kern_flash_attention (NULL, &p), ==, cudaErrorInvalidValue);
  p = ok, p.heads = 3, p.kv_heads = 2;
  g_assert_cmpint (kern_flash_attention (NULL, &p), ==, cudaErrorInvalidValue);
  p = ok, p.n_k = 0;
  g_assert_cmpint (kern_flash_attention (NULL, &p), ==, cudaErrorInvalidValue);
  p = ok, p.scale = NAN;
  g_assert_cmpint (kern_flash_attention (NULL, &p), ==, cudaErrorInvalidValue);
  p = ok, p.out = NULL;
  g_assert_cmpint (kern_flash_attention (NULL, &p), ==, cudaErrorInvalidValue);
  p = ok, p.q_pos = -1;
  g_assert_cmpint (kern_flash_attention (NULL, &p), ==, cudaErrorInvalidValue);
  g_assert_cmpint (kern_flash_attention_cache (NULL, buf, 4, 5, 1, 1, 8, buf, buf, 8,
                                                  1.0f, out),
                   ==, cudaErrorInvalidValue);   /* p0 + n > max_ctx */
  g_assert_cmpint (kern_flash_attention_qkv (NULL, buf, 2, 10, 3, 1, 1.0f, out), ==,
                   cudaErrorInvalidValue);       /* D % H != 0 */
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  rng = g_rand_new_with_seed (20261129);
  g_test_add_func ("/cuda-flash/vision", test_vision);
  g_test_add_func ("/cuda-flash/prefill", test_prefill);
  g_test_add_func ("/cuda-flash/general", test_general);
  g_test_add_func ("/cuda-flash/invalid", test_invalid);
  int rc = g_test_run ();
  g_rand_free (rng);
  return rc;
}
