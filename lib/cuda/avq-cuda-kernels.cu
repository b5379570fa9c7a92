// The CUDA backend's own kernels; see avq-cuda-kernels.h for the contract of
// each launcher. Written for clarity first: one thread block per row where a
// row needs a reduction, a grid-stride loop elsewhere. None of these is on
// the critical path next to the GEMMs except the softmax, which a fused
// attention kernel will replace.
#include "avq-cuda-kernels.h"

#ifndef AVQ_KERNEL_HOST_EMU
#include <cuda_fp16.h>
#include <cuda_runtime.h>
// tests/cuda-kernels-host.cpp compiles this file with a host shim for
// threads, barriers and warp shuffles instead, and its own AVQ_LAUNCH.
#define AVQ_LAUNCH(kernel, grid, block, stream) \
  kernel<<<(grid), (block), 0, (stream)>>>
#endif
#include <math.h>

namespace {

constexpr int kRowThreads = 256;

__host__ __device__ __forceinline__ __half *as_half (uint16_t *p)
{
  return reinterpret_cast<__half *> (p);
}

template <typename T>
__device__ __forceinline__ T warp_sum (T v)
{
  for (int off = 16; off > 0; off >>= 1)
    v += __shfl_down_sync (0xffffffffu, v, off);
  return v;
}

// Sum over the block; every thread gets the result. `shared` holds 32 T.
template <typename T>
__device__ T block_sum (T v, T *shared)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = warp_sum (v);
  __syncthreads ();  // `shared` may still be read from a previous call
  if (lane == 0)
    shared[warp] = v;
  __syncthreads ();
  T total = 0;
  for (int w = 0; w < warps; w++)
    total += shared[w];
  return total;
}

__device__ float block_max (float v, float *shared)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  for (int off = 16; off > 0; off >>= 1)
    v = fmaxf (v, __shfl_down_sync (0xffffffffu, v, off));
  __syncthreads ();
  if (lane == 0)
    shared[warp] = v;
  __syncthreads ();
  float m = shared[0];
  for (int w = 1; w < warps; w++)
    m = fmaxf (m, shared[w]);
  return m;
}

__device__ float block_min (float v, float *shared)
{
  return -block_max (-v, shared);
}

__device__ __forceinline__ float activate (int act, float x)
{
  switch (act) {
  case 0:  // quick_gelu
    return x / (1.0f + expf (-1.702f * x));
  case 1:  // gelu (erf)
    return 0.5f * x * (1.0f + erff (x * 0.70710678118654752f));
  case 2: {  // gelu (tanh)
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf (k * (x + 0.044715f * x * x * x)));
  }
  case 3:  // silu
    return x / (1.0f + expf (-x));
  case 4:  // relu
    return x > 0.0f ? x : 0.0f;
  default:
    return x;
  }
}

int grid_for (size_t n, int threads)
{
  size_t blocks = (n + threads - 1) / threads;
  return (int) (blocks > 65535 * 8 ? 65535 * 8 : (blocks == 0 ? 1 : blocks));
}

__global__ void im2col_kernel (const float *px, int C, int S, int P, int G,
                               __half *out)
{
  const int pd = C * P * P;
  const size_t n = (size_t) G * G * pd;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
       i += (size_t) gridDim.x * blockDim.x) {
    int r = (int) (i / pd), j = (int) (i % pd);
    int c = j / (P * P), ky = (j / P) % P, kx = j % P;
    int gy = r / G, gx = r % G;
    out[i] = __float2half_rn (
        px[((size_t) c * S + (size_t) gy * P + ky) * S + (size_t) gx * P + kx]);
  }
}

__global__ void embed_init_kernel (const float *pos, const float *cls, int T,
                                   int D, float *x)
{
  const size_t n = (size_t) T * D;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
       i += (size_t) gridDim.x * blockDim.x)
    x[i] = pos[i] + (i < (size_t) D ? cls[i] : 0.0f);
}

__global__ void layernorm_kernel (const float *x, int d, const float *gamma,
                                  const float *beta, float eps, float *y32,
                                  __half *y16, float *mean, float *sigma)
{
  __shared__ double red[32];
  const size_t row = blockIdx.x;
  const float *xr = x + row * d;
  double s = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x)
    s += xr[c];
  const double m = block_sum (s, red) / d;
  double v = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    double e = xr[c] - m;
    v += e * e;
  }
  v = block_sum (v, red) / d;
  const float inv = (float) (1.0 / sqrt (v + (double) eps));
  const float mf = (float) m;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float out = (xr[c] - mf) * inv * gamma[c] + beta[c];
    if (y16)
      y16[row * d + c] = __float2half_rn (out);
    if (y32)
      y32[row * d + c] = out;  // after reading xr[c]: y32 may alias x
  }
  if (threadIdx.x == 0) {
    if (mean)
      mean[row] = mf;
    if (sigma)
      sigma[row] = (float) sqrt (v + (double) eps);
  }
}

__global__ void bias_act_kernel (const float *y, int ldy, int n, int d,
                                 const float *bias, int act, float *o32,
                                 __half *o16, int ldo)
{
  const size_t total = (size_t) n * d;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
       i += (size_t) gridDim.x * blockDim.x) {
    size_t r = i / d;
    int c = (int) (i % d);
    float v = y[r * ldy + c] + (bias ? bias[c] : 0.0f);
    v = activate (act, v);
    if (o32)
      o32[r * ldo + c] = v;
    if (o16)
      o16[r * ldo + c] = __float2half_rn (v);
  }
}

__global__ void softmax_kernel (const float *s, int cols, int ld, __half *p)
{
  __shared__ float redf[32];
  const size_t row = blockIdx.x;
  const float *sr = s + row * ld;
  float m = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    m = fmaxf (m, sr[c]);
  m = block_max (m, redf);
  float sum = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    sum += expf (sr[c] - m);
  sum = block_sum (sum, redf);
  const float inv = 1.0f / sum;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    p[row * ld + c] = __float2half_rn (expf (sr[c] - m) * inv);
  // The padding columns of a row feed the PV GEMM's K dimension only
  // through zero-sized ranges, but keep them defined.
  for (int c = cols + threadIdx.x; c < ld; c += blockDim.x)
    p[row * ld + c] = __float2half_rn (0.0f);
}

__global__ void dlp_kernel (const float *z, const float *t, const float *b,
                            float scale, int n, int d, float *u32, __half *u16)
{
  const size_t total = (size_t) n * d;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
       i += (size_t) gridDim.x * blockDim.x) {
    float v = z[i] + scale * (t[i] + b[i % d]);
    if (u32)
      u32[i] = v;
    if (u16)
      u16[i] = __float2half_rn (v);
  }
}

struct Best {
  float d;       // best distance
  int k;         // its index
  float second;  // runner-up distance
};

__device__ __forceinline__ Best best_merge (Best a, Best b)
{
  // The loser's best competes for second place with both seconds; an exact
  // tie makes second == best, margin 0, as in the CPU scan.
  bool b_wins = b.d < a.d || (b.d == a.d && b.k < a.k);
  Best w = b_wins ? b : a, l = b_wins ? a : b;
  Best r;
  r.d = w.d;
  r.k = w.k;
  r.second = fminf (fminf (w.second, l.second), l.d);
  return r;
}

__global__ void argmin_kernel (const float *scores, const float *sqnorm, int K,
                               int32_t *index, float *margin)
{
  __shared__ Best red[32];
  const size_t row = blockIdx.x;
  const float *sr = scores + row * K;
  Best b = { INFINITY, 0x7fffffff, INFINITY };
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    float dist = sqnorm[k] - 2.0f * sr[k];
    // Strict comparisons: NaN never wins, k grows so ties keep the lowest.
    if (dist < b.d) {
      b.second = b.d;
      b.d = dist;
      b.k = k;
    } else if (dist < b.second) {
      b.second = dist;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int off = 16; off > 0; off >>= 1) {
    Best o;
    o.d = __shfl_down_sync (0xffffffffu, b.d, off);
    o.k = __shfl_down_sync (0xffffffffu, b.k, off);
    o.second = __shfl_down_sync (0xffffffffu, b.second, off);
    if (lane + off < 32)
      b = best_merge (b, o);
  }
  if (lane == 0)
    red[warp] = b;
  __syncthreads ();
  if (threadIdx.x == 0) {
    const int warps = (blockDim.x + 31) >> 5;
    Best r = red[0];
    for (int w = 1; w < warps; w++)
      r = best_merge (r, red[w]);
    // All distances NaN or +inf: the CPU scan keeps index 0.
    index[row] = r.k == 0x7fffffff ? 0 : r.k;
    if (margin)
      margin[row] = r.second - r.d;
  }
}

__device__ __forceinline__ float side_step (float lo, float hi, int bits)
{
  return hi == lo ? 1.0f : (hi - lo) / (float) ((1u << bits) - 1);
}

__device__ __forceinline__ int32_t side_quantize (float v, float lo,
                                                  float step, int bits)
{
  float r = rintf ((v - lo) / step);  // half to even, as C's rintf
  float top = (float) ((1u << bits) - 1);
  r = r < 0.0f ? 0.0f : (r > top ? top : r);
  return (int32_t) r;
}

__global__ void side_encode_kernel (const float *mean, const float *sigma,
                                    int T, int bits, float *range,
                                    int32_t *codes)
{
  __shared__ float red[32];
  float mlo = INFINITY, mhi = -INFINITY, llo = INFINITY, lhi = -INFINITY;
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    float ls = logf (sigma[t]);
    mlo = fminf (mlo, mean[t]);
    mhi = fmaxf (mhi, mean[t]);
    llo = fminf (llo, ls);
    lhi = fmaxf (lhi, ls);
  }
  mlo = block_min (mlo, red);
  mhi = block_max (mhi, red);
  llo = block_min (llo, red);
  lhi = block_max (lhi, red);
  const float ms = side_step (mlo, mhi, bits), ls = side_step (llo, lhi, bits);
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    codes[2 * t] = side_quantize (mean[t], mlo, ms, bits);
    codes[2 * t + 1] = side_quantize (logf (sigma[t]), llo, ls, bits);
  }
  if (threadIdx.x == 0) {
    range[0] = mlo;
    range[1] = mhi;
    range[2] = llo;
    range[3] = lhi;
  }
}

__global__ void gather_kernel (const float *cb, const int32_t *index, int T,
                               int D, float *q32, __half *q16)
{
  const size_t total = (size_t) T * D;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
       i += (size_t) gridDim.x * blockDim.x) {
    size_t t = i / D;
    int c = (int) (i % D);
    float v = cb[(size_t) index[t] * D + c];
    if (q32)
      q32[i] = v;
    if (q16)
      q16[i] = __float2half_rn (v);
  }
}

__global__ void side_residual_kernel (const float *zhat, const int32_t *codes,
                                      float r0, float mstep, float r2,
                                      float lstep, const float *g1,
                                      const float *b1, int T, int D, float *x)
{
  const size_t total = (size_t) T * D;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
       i += (size_t) gridDim.x * blockDim.x) {
    size_t t = i / D;
    int c = (int) (i % D);
    float mu = r0 + (float) codes[2 * t] * mstep;
    float sg = expf (r2 + (float) codes[2 * t + 1] * lstep);
    x[i] = mu + sg * (zhat[i] - b1[c]) / g1[c];
  }
}

__global__ void derive_residual_kernel (const float *zhat, const float *g1,
                                        const float *b1, const float *pw,
                                        const double *qq, double B, double C,
                                        double R, int D, float *x)
{
  __shared__ double red[32];
  const size_t t = blockIdx.x;
  const float *zr = zhat + t * D;
  double A = 0;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    double u = ((double) zr[c] - b1[c]) / g1[c];
    A += u / pw[c];
  }
  A = block_sum (A, red) / D;
  double P = 0, Q = 0;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    double u = ((double) zr[c] - b1[c]) / g1[c];
    double p = u / pw[c] - A / B / pw[c];
    P += p * p;
    Q += p * qq[c];
  }
  P = block_sum (P, red) / D;
  Q = block_sum (Q, red) / D;
  const double disc = Q * Q - P * R;
  const double sc = P > 0 ? (-Q + sqrt (disc > 0.0 ? disc : 0.0)) / P : 0.0;
  const double m = (C - sc * A) / B;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    double u = ((double) zr[c] - b1[c]) / g1[c];
    x[t * D + c] = (float) (m + sc * u);
  }
}

constexpr int kAttnWarps = 4;   // query rows per block
constexpr int kAttnTile = 32;   // keys per shared-memory tile (one per lane)

__global__ void attention_kernel (const __half *qkv, int T, int D, int H,
                                  float scale, __half *out)
{
  constexpr int MHD = AVQ_CUK_ATTN_MAX_HD;
  constexpr int PER_LANE = MHD / 32;
  __shared__ float ks[kAttnTile][MHD + 1];   // +1: no bank conflicts on rows
  __shared__ float vs[kAttnTile][MHD];
  __shared__ float qs[kAttnWarps][MHD];
  __shared__ float ps[kAttnWarps][kAttnTile];
  const int hd = D / H, h = blockIdx.y, ld = 3 * D;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int row = blockIdx.x * kAttnWarps + w;
  const bool active = row < T;   // inactive warps still help load tiles

  if (active)
    for (int d = lane; d < hd; d += 32)
      qs[w][d] = __half2float (qkv[(size_t) row * ld + h * hd + d]) * scale;
  float m = -INFINITY, l = 0.0f, acc[PER_LANE];
  for (int i = 0; i < PER_LANE; i++)
    acc[i] = 0.0f;

  for (int j0 = 0; j0 < T; j0 += kAttnTile) {
    __syncthreads ();  // the previous tile is no longer read
    for (int i = threadIdx.x; i < kAttnTile * hd; i += blockDim.x) {
      int j = i / hd, d = i % hd;
      bool in = j0 + j < T;
      size_t base = (size_t) (j0 + j) * ld + h * hd + d;
      ks[j][d] = in ? __half2float (qkv[base + D]) : 0.0f;
      vs[j][d] = in ? __half2float (qkv[base + 2 * D]) : 0.0f;
    }
    __syncthreads ();
    // Lane = key: its score against this warp's query.
    float s = -INFINITY;
    if (j0 + lane < T) {
      s = 0.0f;
      for (int d = 0; d < hd; d++)
        s += qs[w][d] * ks[lane][d];
    }
    float tmax = s;
    for (int off = 16; off > 0; off >>= 1)
      tmax = fmaxf (tmax, __shfl_down_sync (0xffffffffu, tmax, off));
    tmax = __shfl_sync (0xffffffffu, tmax, 0);
    const float m_new = fmaxf (m, tmax);   // finite: a tile has a valid key
    const float p = j0 + lane < T ? expf (s - m_new) : 0.0f;
    const float corr = expf (m - m_new);     // 0 on the first tile
    float psum = p;
    for (int off = 16; off > 0; off >>= 1)
      psum += __shfl_down_sync (0xffffffffu, psum, off);
    psum = __shfl_sync (0xffffffffu, psum, 0);
    l = l * corr + psum;
    m = m_new;
    ps[w][lane] = p;
    __syncwarp ();
    // Lane = output dims lane, lane + 32, ...
    for (int i = 0; i < PER_LANE; i++) {
      int d = lane + 32 * i;
      if (d < hd) {
        float a = acc[i] * corr;
        for (int j = 0; j < kAttnTile; j++)
          a += ps[w][j] * vs[j][d];
        acc[i] = a;
      }
    }
    __syncwarp ();  // ps is rewritten by the next tile
  }
  if (active) {
    const float inv = 1.0f / l;
    for (int i = 0; i < PER_LANE; i++) {
      int d = lane + 32 * i;
      if (d < hd)
        out[(size_t) row * D + h * hd + d] = __float2half_rn (acc[i] * inv);
    }
  }
}

__global__ void to_half_kernel (const float *x, size_t n, __half *y)
{
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
       i += (size_t) gridDim.x * blockDim.x)
    y[i] = __float2half_rn (x[i]);
}

// ---- LLaMA -----------------------------------------------------------------

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
                                int p0, __half *q16, void *kc, void *vc,
                                int max_ctx, int kv_half)
{
  const int W = (nh + 2 * nkv) * hd, half = hd / 2;
  const size_t total = (size_t) n * W;
  for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
       i += (size_t) gridDim.x * blockDim.x) {
    const int r = (int) (i / W), c = (int) (i % W);
    const float *row = qkv + (size_t) r * W;
    const int head = c / hd, j = c % hd, pos = p0 + r;
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
                ((size_t) g * max_ctx + pos) * hd + j, out);
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

__global__ void decode_attention_kernel (const __half *q, const void *kc,
                                         const void *vc, int kv_half, int nh,
                                         int nkv, int hd, int T, int max_ctx,
                                         float scale, float *scratch,
                                         __half *out)
{
  __shared__ float qs[AVQ_CUK_DECODE_MAX_HD];
  __shared__ float red[32];
  const int h = blockIdx.x, g = h / (nh / nkv);
  for (int d = threadIdx.x; d < hd; d += blockDim.x)
    qs[d] = __half2float (q[(size_t) h * hd + d]);
  __syncthreads ();
  const size_t base = (size_t) g * max_ctx * hd;
  float *s = scratch + (size_t) h * max_ctx;
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
    out[(size_t) h * hd + d] = __float2half_rn (acc * inv);
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

__global__ void argmax_kernel (const float *x, int n, int32_t *out)
{
  __shared__ Top red[32];
  Top t = { -INFINITY, 0x7fffffff };
  for (int k = threadIdx.x; k < n; k += blockDim.x)
    if (x[k] > t.v)  // strict, k grows: lowest index on ties; NaN never wins
      t = Top{ x[k], k };
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
    out[0] = r.k == 0x7fffffff ? 0 : r.k;
  }
}

}  // namespace

extern "C" {

cudaError_t
avq_cuk_im2col (cudaStream_t stream, const float *pixels, int C, int S, int P,
                int G, uint16_t *patches)
{
  size_t n = (size_t) G * G * C * P * P;
  AVQ_LAUNCH (im2col_kernel, grid_for (n, 256), 256, stream) (pixels, C, S, P, G,
                                                        as_half (patches));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_embed_init (cudaStream_t stream, const float *pos, const float *cls,
                    int T, int D, float *x)
{
  AVQ_LAUNCH (embed_init_kernel, grid_for ((size_t) T * D, 256), 256, stream) (
      pos, cls, T, D, x);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_layernorm (cudaStream_t stream, const float *x, int n, int d,
                   const float *gamma, const float *beta, float eps,
                   float *y32, uint16_t *y16, float *mean, float *sigma)
{
  AVQ_LAUNCH (layernorm_kernel, n, kRowThreads, stream) (
      x, d, gamma, beta, eps, y32, as_half (y16), mean, sigma);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_bias_act (cudaStream_t stream, const float *y, int ldy, int n, int d,
                  const float *bias, int act, float *out32, uint16_t *out16,
                  int ldo)
{
  AVQ_LAUNCH (bias_act_kernel, grid_for ((size_t) n * d, 256), 256, stream) (
      y, ldy, n, d, bias, act, out32, as_half (out16), ldo);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_softmax_rows (cudaStream_t stream, const float *scores, int rows,
                      int cols, int ld, uint16_t *probs)
{
  AVQ_LAUNCH (softmax_kernel, rows, 128, stream) (scores, cols, ld, as_half (probs));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_dlp (cudaStream_t stream, const float *z, const float *t,
             const float *bias, float scale, int n, int d, float *u32,
             uint16_t *u16)
{
  AVQ_LAUNCH (dlp_kernel, grid_for ((size_t) n * d, 256), 256, stream) (
      z, t, bias, scale, n, d, u32, as_half (u16));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_argmin (cudaStream_t stream, const float *scores, const float *sqnorm,
                int T, int K, int32_t *index, float *margin)
{
  AVQ_LAUNCH (argmin_kernel, T, kRowThreads, stream) (scores, sqnorm, K, index,
                                                margin);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_side_encode (cudaStream_t stream, const float *mean,
                     const float *sigma, int T, int bits, float *range,
                     int32_t *codes)
{
  AVQ_LAUNCH (side_encode_kernel, 1, 1024, stream) (mean, sigma, T, bits, range,
                                              codes);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_gather (cudaStream_t stream, const float *codebook,
                const int32_t *index, int T, int D, float *q32, uint16_t *q16)
{
  AVQ_LAUNCH (gather_kernel, grid_for ((size_t) T * D, 256), 256, stream) (
      codebook, index, T, D, q32, as_half (q16));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_side_residual (cudaStream_t stream, const float *zhat,
                       const int32_t *codes, float r0, float mstep, float r2,
                       float lstep, const float *gamma1, const float *beta1,
                       int T, int D, float *x)
{
  AVQ_LAUNCH (side_residual_kernel, grid_for ((size_t) T * D, 256), 256, stream) (
      zhat, codes, r0, mstep, r2, lstep, gamma1, beta1, T, D, x);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_derive_residual (cudaStream_t stream, const float *zhat,
                         const float *gamma1, const float *beta1,
                         const float *pre_w, const double *qq, double B,
                         double C, double R, int T, int D, float *x)
{
  AVQ_LAUNCH (derive_residual_kernel, T, kRowThreads, stream) (
      zhat, gamma1, beta1, pre_w, qq, B, C, R, D, x);
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_attention (cudaStream_t stream, const uint16_t *qkv, int T, int D,
                   int H, float scale, uint16_t *out)
{
  if (H <= 0 || D % H != 0 || D / H > AVQ_CUK_ATTN_MAX_HD || T <= 0)
    return cudaErrorInvalidValue;
  dim3 grid ((unsigned) ((T + kAttnWarps - 1) / kAttnWarps), (unsigned) H);
  AVQ_LAUNCH (attention_kernel, grid, kAttnWarps * 32, stream) (
      reinterpret_cast<const __half *> (qkv), T, D, H, scale, as_half (out));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_to_half (cudaStream_t stream, const float *x, size_t n, uint16_t *y)
{
  AVQ_LAUNCH (to_half_kernel, grid_for (n, 256), 256, stream) (x, n, as_half (y));
  return cudaGetLastError ();
}

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
                 uint16_t *q16, void *k_cache, void *v_cache, int max_ctx,
                 int kv_half)
{
  if (hd <= 0 || hd % 2 != 0 || nkv <= 0 || n <= 0)
    return cudaErrorInvalidValue;
  size_t total = (size_t) n * (nh + 2 * nkv) * hd;
  AVQ_LAUNCH (rope_kv_kernel, grid_for (total, 256), 256, stream) (
      qkv, n, nh, nkv, hd, cos_t, sin_t, p0, as_half (q16), k_cache, v_cache,
      max_ctx, kv_half);
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
                          int kv_half, int nh, int nkv, int hd, int T,
                          int max_ctx, float scale, float *scratch,
                          uint16_t *out16)
{
  if (nkv <= 0 || nh % nkv != 0 || hd <= 0 || hd > AVQ_CUK_DECODE_MAX_HD ||
      T <= 0 || T > max_ctx)
    return cudaErrorInvalidValue;
  AVQ_LAUNCH (decode_attention_kernel, nh, 128, stream) (
      reinterpret_cast<const __half *> (q16), k_cache, v_cache, kv_half, nh,
      nkv, hd, T, max_ctx, scale, scratch, as_half (out16));
  return cudaGetLastError ();
}

cudaError_t
avq_cuk_argmax (cudaStream_t stream, const float *x, int n, int32_t *out)
{
  AVQ_LAUNCH (argmax_kernel, 1, 1024, stream) (x, n, out);
  return cudaGetLastError ();
}

}  // extern "C"
