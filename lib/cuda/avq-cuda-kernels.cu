// The CUDA backend's own kernels; see avq-cuda-kernels.h for the contract of
// each launcher. Written for clarity first: one thread block per row where a
// row needs a reduction, a grid-stride loop elsewhere. None of these is on
// the critical path next to the GEMMs except the softmax, which a fused
// attention kernel will replace.
#include "avq-cuda-kernels.h"

#include "avq-cuda-device.cuh"

namespace {

using namespace avq_cuk;

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
  b = block_reduce (b, red, [] (Best x, Best y) { return best_merge (x, y); });
  if (threadIdx.x == 0) {
    // All distances NaN or +inf: the CPU scan keeps index 0.
    index[row] = b.k == 0x7fffffff ? 0 : b.k;
    if (margin)
      margin[row] = b.second - b.d;
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
                                      const float *range, int bits,
                                      const float *g1, const float *b1, int T,
                                      int D, float *x)
{
  const float r0 = range[0], r2 = range[2];
  const float mstep = side_step (r0, range[1], bits);
  const float lstep = side_step (r2, range[3], bits);
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
                       const int32_t *codes, const float *range, int bits,
                       const float *gamma1, const float *beta1, int T, int D,
                       float *x)
{
  AVQ_LAUNCH (side_residual_kernel, grid_for ((size_t) T * D, 256), 256, stream) (
      zhat, codes, range, bits, gamma1, beta1, T, D, x);
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

}  // extern "C"
