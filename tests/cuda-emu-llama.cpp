/* CPU stand-ins for the LLaMA decoder's kernel launchers
 * (lib/cuda/avq-cuda-llama-kernels.h): independent C implementations of
 * the contracts, used by test-cuda-emu and as the reference of
 * test-cuda-kernels. See cuda-emu.cpp. */
#include <malloc.h>
#include <math.h>
#include <string.h>
#include <glib.h>
#include "avq-safetensors.h"
#include "avq-sampling.h"
#include "cuda/avq-cuda-llama-kernels.h"
#include "cuda-emu.h"


cudaError_t
avq_cuk_rmsnorm (cudaStream_t stream, const float *x, int n, int d,
                 const float *w, float eps, float *y32, uint16_t *y16)
{
  AVQ_EMU_DEFER (stream, avq_cuk_rmsnorm (stream, x, n, d, w, eps, y32, y16));
  for (int r = 0; r < n; r++) {
    const float *xr = x + (gsize) r * d;
    double ss = 0;
    for (int c = 0; c < d; c++)
      ss += (double) xr[c] * xr[c];
    float inv = (float) (1.0 / sqrt ((float) (ss / d) + eps));
    for (int c = 0; c < d; c++) {
      float o = w[c] * (xr[c] * inv);
      if (y16)
        y16[(gsize) r * d + c] = avq_float_to_half (o);
      if (y32)
        y32[(gsize) r * d + c] = o;
    }
  }
  return cudaSuccess;
}

static void
kv_put (void *cache, int kv_half, gsize i, float v)
{
  if (kv_half)
    ((guint16 *) cache)[i] = avq_float_to_half (v);
  else
    ((float *) cache)[i] = v;
}

static float
kv_get (const void *cache, int kv_half, gsize i)
{
  return kv_half ? avq_half_to_float (((const guint16 *) cache)[i])
                 : ((const float *) cache)[i];
}

cudaError_t
avq_cuk_rope_kv (cudaStream_t stream, const float *qkv, int n, int nh, int nkv,
                 int hd, const float *cos_t, const float *sin_t, int p0,
                 const int32_t *positions, const int32_t *slots,
                 size_t slot_stride, uint16_t *q16, void *kc, void *vc,
                 int max_ctx, int kv_half)
{
  AVQ_EMU_DEFER (stream, avq_cuk_rope_kv (stream, qkv, n, nh, nkv, hd, cos_t, sin_t, p0, positions, slots, slot_stride, q16, kc, vc, max_ctx, kv_half));
  if (hd <= 0 || hd % 2 != 0 || nkv <= 0 || n <= 0)
    return cudaErrorInvalidValue;
  const int W = (nh + 2 * nkv) * hd, half = hd / 2;
  float *t = g_new (float, hd);
  for (int r = 0; r < n; r++) {
    const int pos = positions != NULL ? positions[r] : p0 + r;
    if (pos < 0 || pos >= max_ctx) {
      for (int j = 0; j < nh * hd; j++)
        q16[(gsize) r * nh * hd + j] = avq_float_to_half (NAN);
      continue;
    }
    const gsize slot = slots != NULL ? (gsize) slots[r] * slot_stride : 0;
    const float *cs = cos_t + (gsize) pos * half, *sn = sin_t + (gsize) pos * half;
    for (int head = 0; head < nh + 2 * nkv; head++) {
      const float *v = qkv + (gsize) r * W + (gsize) head * hd;
      memcpy (t, v, sizeof (float) * hd);
      if (head < nh + nkv)
        for (int j = 0; j < half; j++) {
          t[j] = v[j] * cs[j] - v[j + half] * sn[j];
          t[j + half] = v[j + half] * cs[j] + v[j] * sn[j];
        }
      for (int j = 0; j < hd; j++) {
        if (head < nh)
          q16[(gsize) r * nh * hd + (gsize) head * hd + j] = avq_float_to_half (t[j]);
        else if (head < nh + nkv)
          kv_put (kc, kv_half, slot + ((gsize) (head - nh) * max_ctx + pos) * hd + j, t[j]);
        else
          kv_put (vc, kv_half, slot + ((gsize) (head - nh - nkv) * max_ctx + pos) * hd + j, t[j]);
      }
    }
  }
  g_free (t);
  return cudaSuccess;
}

cudaError_t
avq_cuk_silu_mul (cudaStream_t stream, const float *gu, int n, int ffn,
                  uint16_t *out16)
{
  AVQ_EMU_DEFER (stream, avq_cuk_silu_mul (stream, gu, n, ffn, out16));
  for (int r = 0; r < n; r++)
    for (int c = 0; c < ffn; c++) {
      float g = gu[(gsize) r * 2 * ffn + c], u = gu[(gsize) r * 2 * ffn + ffn + c];
      out16[(gsize) r * ffn + c] = avq_float_to_half (g / (1.0f + expf (-g)) * u);
    }
  return cudaSuccess;
}

cudaError_t
avq_cuk_embed_rows (cudaStream_t stream, const uint16_t *table16,
                    const int32_t *ids, int n, int d, float *x)
{
  AVQ_EMU_DEFER (stream, avq_cuk_embed_rows (stream, table16, ids, n, d, x));
  for (int r = 0; r < n; r++)
    for (int c = 0; c < d; c++)
      x[(gsize) r * d + c] = avq_half_to_float (table16[(gsize) ids[r] * d + c]);
  return cudaSuccess;
}

cudaError_t
avq_cuk_add (cudaStream_t stream, float *x, const float *y, size_t n)
{
  AVQ_EMU_DEFER (stream, avq_cuk_add (stream, x, y, n));
  for (size_t i = 0; i < n; i++)
    x[i] += y[i];
  return cudaSuccess;
}

cudaError_t
avq_cuk_causal_softmax (cudaStream_t stream, const float *s, int rows, int n,
                        int p0, int ld, uint16_t *p)
{
  AVQ_EMU_DEFER (stream, avq_cuk_causal_softmax (stream, s, rows, n, p0, ld, p));
  if (n <= 0 || rows <= 0 || p0 + n > ld)
    return cudaErrorInvalidValue;
  for (int r = 0; r < rows; r++) {
    const float *sr = s + (gsize) r * ld;
    const int valid = p0 + r % n + 1;
    double m = -INFINITY, sum = 0;
    for (int c = 0; c < valid; c++)
      m = fmax (m, sr[c]);
    for (int c = 0; c < valid; c++)
      sum += exp (sr[c] - m);
    for (int c = 0; c < ld; c++)
      p[(gsize) r * ld + c] = avq_float_to_half (c < valid ? (float) (exp (sr[c] - m) / sum) : 0.0f);
  }
  return cudaSuccess;
}

/* From the definition, in double. */
cudaError_t
avq_cuk_decode_attention (cudaStream_t stream, const uint16_t *q16,
                          const void *kc, const void *vc, int kv_half, int n,
                          int nh, int nkv, int hd, int T0,
                          const int32_t *positions, const int32_t *slots,
                          size_t slot_stride, int max_ctx, float scale,
                          float *scratch, uint16_t *out16)
{
  AVQ_EMU_DEFER (stream, avq_cuk_decode_attention (stream, q16, kc, vc, kv_half, n, nh, nkv, hd, T0, positions, slots, slot_stride, max_ctx, scale, scratch, out16));
  if (n <= 0 || nkv <= 0 || nh % nkv != 0 || hd <= 0 ||
      hd > AVQ_CUK_DECODE_MAX_HD || max_ctx <= 0 ||
      (positions == NULL && (T0 <= 0 || T0 > max_ctx)))
    return cudaErrorInvalidValue;
  /* Not used here, but its size is part of the contract: every caller
   * passes the start of a heap block (the emulated cudaMalloc's g_malloc,
   * the tests' g_new), so a host that allocates less than
   * AVQ_CUK_DECODE_SCRATCH fails under emulation, not only on the GPU. */
  const size_t need = AVQ_CUK_DECODE_SCRATCH (n, nh, hd, max_ctx) * sizeof (float);
  if (scratch == NULL || malloc_usable_size (scratch) < need)
    g_error ("decode attention: scratch of %zu bytes, the contract needs %zu",
             scratch ? malloc_usable_size (scratch) : 0, need);
  double *s = g_new (double, max_ctx);
  for (int r = 0; r < n; r++) {
    const int T = positions != NULL ? positions[r] + 1 : T0;
    const gsize slot = slots != NULL ? (gsize) slots[r] * slot_stride : 0;
    for (int h = 0; h < nh; h++) {
      const gsize qo = ((gsize) r * nh + h) * hd;
      if (T < 1 || T > max_ctx) {
        for (int d = 0; d < hd; d++)
          out16[qo + d] = avq_float_to_half (NAN);
        continue;
      }
      gsize base = slot + (gsize) (h / (nh / nkv)) * max_ctx * hd;
      double m = -INFINITY, sum = 0;
      for (int j = 0; j < T; j++) {
        double dot = 0;
        for (int d = 0; d < hd; d++)
          dot += (double) avq_half_to_float (q16[qo + d]) *
                 kv_get (kc, kv_half, base + (gsize) j * hd + d);
        s[j] = dot * scale;
        m = fmax (m, s[j]);
      }
      for (int j = 0; j < T; j++) {
        s[j] = exp (s[j] - m);
        sum += s[j];
      }
      for (int d = 0; d < hd; d++) {
        double o = 0;
        for (int j = 0; j < T; j++)
          o += s[j] * kv_get (vc, kv_half, base + (gsize) j * hd + d);
        out16[qo + d] = avq_float_to_half ((float) (o / sum));
      }
    }
  }
  g_free (s);
  return cudaSuccess;
}

cudaError_t
avq_cuk_argmax (cudaStream_t stream, const float *x, int rows, int n,
                size_t ld, int32_t *out)
{
  AVQ_EMU_DEFER (stream, avq_cuk_argmax (stream, x, rows, n, ld, out));
  if (rows <= 0 || n <= 0 || ld < (size_t) n)
    return cudaErrorInvalidValue;
  for (int r = 0; r < rows; r++) {
    const float *xr = x + (gsize) r * ld;
    int best = 0;
    for (int k = 1; k < n; k++)
      if (xr[k] > xr[best] || (isnan (xr[best]) && !isnan (xr[k])))
        best = k;
    out[r] = best;
  }
  return cudaSuccess;
}

/* The host's candidates (avq-sampling.c), row by row. */
cudaError_t
avq_cuk_top_candidates (cudaStream_t stream, const float *x, int rows, int n,
                        size_t ld, int k, const float *temperature,
                        float *cand_logit, int32_t *cand_id, float *stats)
{
  AVQ_EMU_DEFER (stream, avq_cuk_top_candidates (stream, x, rows, n, ld, k, temperature, cand_logit, cand_id, stats));
  if (rows <= 0 || n <= 0 || ld < (size_t) n || k < 1 || k > AVQ_CUK_TOP_MAX ||
      temperature == NULL)
    return cudaErrorInvalidValue;
  AvqTokenCandidates c;
  avq_token_candidates_init (&c, k);
  /* Read when the launch runs, as the kernel reads device memory. */
  const float T = *temperature;
  for (int r = 0; r < rows; r++) {
    avq_token_candidates_from_logits (x + (gsize) r * ld, n, k, T, &c);
    memcpy (cand_logit + (gsize) r * k, c.logit, sizeof (float) * c.n);
    for (int j = 0; j < c.n; j++)
      cand_id[(gsize) r * k + j] = c.id[j];
    stats[2 * (gsize) r] = c.max;
    stats[2 * (gsize) r + 1] = (float) c.sum;
  }
  avq_token_candidates_clear (&c);
  return cudaSuccess;
}

cudaError_t
avq_cuk_fill_random (cudaStream_t stream, void *dst, int half, size_t n,
                     uint64_t seed, float scale, float offset)
{
  AVQ_EMU_DEFER (stream, avq_cuk_fill_random (stream, dst, half, n, seed, scale, offset));
  for (size_t i = 0; i < n; i++) {
    const float v = offset + scale * avq_cuk_random_unit (seed, i);
    if (half)
      ((guint16 *) dst)[i] = avq_float_to_half (v);
    else
      ((float *) dst)[i] = v;
  }
  return cudaSuccess;
}
