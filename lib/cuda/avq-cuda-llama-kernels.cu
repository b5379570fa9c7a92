// The LLaMA decoder's own kernels (lib/cuda/avq-cuda-llama.c); see
// avq-cuda-llama-kernels.h for the contract of each launcher.
#include "avq-cuda-llama-kernels.h"
#include "avq-cuda-device.cuh"

namespace {

using namespace avq_cuk;

__global__ void rmsnorm_kernel (const float *x, int d, const float *w,
                                float eps, float *y32, __half *y16)
{
  __shared__ double red[32];
  const size_t row = blockIdx.x;
  const float *xr = x + row * d;
  double ss = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x)
    ss += (double) xr[c] * xr[c];
  ss = block_sum (ss, red);
  // As the CPU: the mean square rounded to float before eps is added.
  const float ms = (float) (ss / d) + eps;
  const float inv = (float) (1.0 / sqrt ((double) ms));
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float out = w[c] * (xr[c] * inv);
    if (y16)
      y16[row * d + c] = __float2half_rn (out);
    if (y32)
      y32[row * d + c] = out;  // after reading xr[c]: y32 may alias x
  }
}

__device__ __forceinline__ void kv_store (void *cache, int kv_half, size_t i,
                                          float v)
{
  if (kv_half)
    reinterpret_cast<__half *> (cache)[i] = __float2half_rn (v);
  else
    reinterpret_cast<float *> (cache)[i] = v;
}

__device__ __forceinline__ float kv_load (const void *cache, int kv_half,
                                          size_t i)
{
  return kv_half ? __half2float (reinterpret_cast<const __half *> (cache)[i])
                 : reinterpret_cast<const float *> (cache)[i];
}

__global__ void rope_kv_kernel (const float *qkv, int n, int nh, int nkv,
                                int hd, const float *cos_t, const float *sin_t,
                                int p0, const int32_t *positions,
                                const int32_t *slots, size_t slot_stride,
                                __half *q16, void *kc, void *vc, int max_ctx,
                                int kv_half)
{
  const int W = (nh + 2 * nkv) * hd, half = hd / 2;
  const size_t total = (size_t) n * W;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
       i += (size_t) gridDim.x * blockDim.x) {
    const int r = (int) (i / W), c = (int) (i % W);
    const float *row = qkv + (size_t) r * W;
    const int head = c / hd, j = c % hd;
    // Per-row values from device memory: a graph replays them as they are
    // at launch, not as they were at capture.
    const int pos = positions ? positions[r] : p0 + r;
    const size_t slot = slots ? (size_t) slots[r] * slot_stride : 0;
    if (pos < 0 || pos >= max_ctx) {
      if (head < nh)
        q16[(size_t) r * nh * hd + c] = __float2half_rn (NAN);
      continue;
    }
    float out;
    if (head < nh + nkv) {
      // Rotate-half: (a, b) = (v[j'], v[j' + half]) ->
      // (a cos - b sin, b cos + a sin).
      const int jj = j < half ? j : j - half;
      const float *v = row + (size_t) head * hd;
      const float a = v[jj], b = v[jj + half];
      const float cs = cos_t[(size_t) pos * half + jj];
      const float sn = sin_t[(size_t) pos * half + jj];
      out = j < half ? a * cs - b * sn : b * cs + a * sn;
    } else {
      out = row[c];
    }
    if (head < nh) {
      q16[(size_t) r * nh * hd + c] = __float2half_rn (out);
    } else {
      const bool is_k = head < nh + nkv;
      const int g = is_k ? head - nh : head - nh - nkv;
      kv_store (is_k ? kc : vc, kv_half,
                slot + ((size_t) g * max_ctx + pos) * hd + j, out);
    }
  }
}

__global__ void silu_mul_kernel (const float *gu, int n, int ffn, __half *out)
{
  const size_t total = (size_t) n * ffn;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
       i += (size_t) gridDim.x * blockDim.x) {
    const size_t r = i / ffn;
    const int c = (int) (i % ffn);
    const float g = gu[r * 2 * ffn + c], u = gu[r * 2 * ffn + ffn + c];
    out[i] = __float2half_rn (g / (1.0f + expf (-g)) * u);
  }
}

__global__ void embed_rows_kernel (const __half *table, const int32_t *ids,
                                   int n, int d, float *x)
{
  const size_t total = (size_t) n * d;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
       i += (size_t) gridDim.x * blockDim.x) {
    const size_t r = i / d;
    const int c = (int) (i % d);
    x[i] = __half2float (table[(size_t) ids[r] * d + c]);
  }
}

__global__ void add_kernel (float *x, const float *y, size_t n)
{
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
       i += (size_t) gridDim.x * blockDim.x)
    x[i] += y[i];
}

__global__ void causal_softmax_kernel (const float *s, int n, int p0, int ld,
                                       __half *p)
{
  __shared__ float redf[32];
  const size_t row = blockIdx.x;
  const int valid = p0 + (int) (row % n) + 1;
  const float *sr = s + row * ld;
  float m = -INFINITY;
  for (int c = threadIdx.x; c < valid; c += blockDim.x)
    m = fmaxf (m, sr[c]);
  m = block_max (m, redf);
  float sum = 0.0f;
  for (int c = threadIdx.x; c < valid; c += blockDim.x)
    sum += expf (sr[c] - m);
  sum = block_sum (sum, redf);
  const float inv = 1.0f / sum;
  for (int c = threadIdx.x; c < ld; c += blockDim.x)
    p[row * ld + c] = __float2half_rn (c < valid ? expf (sr[c] - m) * inv : 0.0f);
}

// One block per (query head, row): blockIdx.x = row * nh + head.
__global__ void decode_attention_kernel (const __half *q, const void *kc,
                                         const void *vc, int kv_half, int nh,
                                         int nkv, int hd, int T0,
                                         const int32_t *positions,
                                         const int32_t *slots,
                                         size_t slot_stride, int max_ctx,
                                         float scale, float *scratch,
                                         __half *out)
{
  __shared__ float qs[AVQ_CUK_DECODE_MAX_HD];
  __shared__ float red[32];
  const int h = blockIdx.x % nh, r = blockIdx.x / nh, g = h / (nh / nkv);
  const size_t qo = ((size_t) r * nh + h) * hd;
  // The same for every thread of the block: returning here keeps the
  // barriers below uniform.
  const int T = positions ? positions[r] + 1 : T0;
  if (T < 1 || T > max_ctx) {
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
      out[qo + d] = __float2half_rn (NAN);
    return;
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x)
    qs[d] = __half2float (q[qo + d]);
  __syncthreads ();
  const size_t base = (slots ? (size_t) slots[r] * slot_stride : 0) +
                      (size_t) g * max_ctx * hd;
  float *s = scratch + ((size_t) r * nh + h) * max_ctx;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    float dot = 0.0f;
    for (int d = 0; d < hd; d++)
      dot += qs[d] * kv_load (kc, kv_half, base + (size_t) j * hd + d);
    s[j] = dot * scale;
    m = fmaxf (m, s[j]);
  }
  m = block_max (m, red);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    float e = expf (s[j] - m);
    s[j] = e;
    sum += e;
  }
  sum = block_sum (sum, red);
  __syncthreads ();  // every thread's s[j] is read by every output lane
  const float inv = 1.0f / sum;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < T; j++)
      acc += s[j] * kv_load (vc, kv_half, base + (size_t) j * hd + d);
    out[qo + d] = __float2half_rn (acc * inv);
  }
}

struct Top {
  float v;
  int k;
};

__device__ __forceinline__ Top top_merge (Top a, Top b)
{
  return (b.v > a.v || (b.v == a.v && b.k < a.k)) ? b : a;
}

// One block per row.
__global__ void argmax_kernel (const float *x, int n, size_t ld, int32_t *out)
{
  __shared__ Top red[32];
  const float *xr = x + (size_t) blockIdx.x * ld;
  Top t = { -INFINITY, 0x7fffffff };
  for (int k = threadIdx.x; k < n; k += blockDim.x)
    if (xr[k] > t.v)  // strict, k grows: lowest index on ties; NaN never wins
      t = Top{ xr[k], k };
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int off = 16; off > 0; off >>= 1) {
    Top o;
    o.v = __shfl_down_sync (0xffffffffu, t.v, off);
    o.k = __shfl_down_sync (0xffffffffu, t.k, off);
    if (lane + off < 32)
      t = top_merge (t, o);
  }
  if (lane == 0)
    red[warp] = t;
  __syncthreads ();
  if (threadIdx.x == 0) {
    const int warps = (blockDim.x + 31) >> 5;
    Top r = red[0];
    for (int w = 1; w < warps; w++)
      r = top_merge (r, red[w]);
    out[blockIdx.x] = r.k == 0x7fffffff ? 0 : r.k;
  }
}

__global__ void fill_random_kernel (void *dst, int half, size_t n,
                                    uint64_t seed, float scale, float offset)
{
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
       i += (size_t) gridDim.x * blockDim.x) {
    const float v = offset + scale * avq_cuk_random_unit (seed, i);
    if (half)
      reinterpret_cast<__half *> (dst)[i] = __float2half_rn (v);
    else
      reinterpret_cast<float *> (dst)[i] = v;
  }
}

}  // namespace

extern "C" {

cudaError_t
avq_cuk_rmsnorm (cudaStream_t stream, const float *x, int n, int d,
                 const float *w, float eps, float *y32, uint16_t *y16)
{
  AVQ_LAUNCH (rmsnorm_kernel, n, kRowThreads, stream) (x, d, w, eps, y32,
                                                       as_half (y16));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_rope_kv (cudaStream_t stream, const float *qkv, int n, int nh, int nkv,
                 int hd, const float *cos_t, const float *sin_t, int p0,
                 const int32_t *positions, const int32_t *slots,
                 size_t slot_stride, uint16_t *q16, void *k_cache,
                 void *v_cache, int max_ctx, int kv_half)
{
  if (hd <= 0 || hd % 2 != 0 || nkv <= 0 || n <= 0)
    return cudaErrorInvalidValue;
  size_t total = (size_t) n * (nh + 2 * nkv) * hd;
  AVQ_LAUNCH (rope_kv_kernel, grid_for (total, 256), 256, stream) (
      qkv, n, nh, nkv, hd, cos_t, sin_t, p0, positions, slots, slot_stride,
      as_half (q16), k_cache, v_cache, max_ctx, kv_half);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_silu_mul (cudaStream_t stream, const float *gu, int n, int ffn,
                  uint16_t *out16)
{
  AVQ_LAUNCH (silu_mul_kernel, grid_for ((size_t) n * ffn, 256), 256, stream) (
      gu, n, ffn, as_half (out16));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_embed_rows (cudaStream_t stream, const uint16_t *table16,
                    const int32_t *ids, int n, int d, float *x)
{
  AVQ_LAUNCH (embed_rows_kernel, grid_for ((size_t) n * d, 256), 256, stream) (
      reinterpret_cast<const __half *> (table16), ids, n, d, x);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_add (cudaStream_t stream, float *x, const float *y, size_t n)
{
  AVQ_LAUNCH (add_kernel, grid_for (n, 256), 256, stream) (x, y, n);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_causal_softmax (cudaStream_t stream, const float *scores, int rows,
                        int n, int p0, int ld, uint16_t *probs)
{
  if (n <= 0 || rows <= 0 || p0 + n > ld)
    return cudaErrorInvalidValue;
  AVQ_LAUNCH (causal_softmax_kernel, rows, 128, stream) (scores, n, p0, ld,
                                                         as_half (probs));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_decode_attention (cudaStream_t stream, const uint16_t *q16,
                          const void *k_cache, const void *v_cache,
                          int kv_half, int n, int nh, int nkv, int hd, int T,
                          const int32_t *positions, const int32_t *slots,
                          size_t slot_stride, int max_ctx, float scale,
                          float *scratch, uint16_t *out16)
{
  if (n <= 0 || nkv <= 0 || nh % nkv != 0 || hd <= 0 ||
      hd > AVQ_CUK_DECODE_MAX_HD || max_ctx <= 0 ||
      (positions == NULL && (T <= 0 || T > max_ctx)))
    return cudaErrorInvalidValue;
  AVQ_LAUNCH (decode_attention_kernel, nh * n, 128, stream) (
      reinterpret_cast<const __half *> (q16), k_cache, v_cache, kv_half, nh,
      nkv, hd, T, positions, slots, slot_stride, max_ctx, scale, scratch,
      as_half (out16));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_argmax (cudaStream_t stream, const float *x, int rows, int n,
                size_t ld, int32_t *out)
{
  if (rows <= 0 || n <= 0 || ld < (size_t) n)
    return cudaErrorInvalidValue;
  AVQ_LAUNCH (argmax_kernel, rows, 1024, stream) (x, n, ld, out);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_fill_random (cudaStream_t stream, void *dst, int half, size_t n,
                     uint64_t seed, float scale, float offset)
{
  AVQ_LAUNCH (fill_random_kernel, grid_for (n, 256), 256, stream) (
      dst, half, n, seed, scale, offset);
  return cudaGetLastError ();
}

}  // extern "C"
