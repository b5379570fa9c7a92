// The LLaMA decoder's own kernels (lib/cuda/avq-cuda-llama.c); see
// avq-cuda-llama-kernels.h for the contract of each launcher.
#include "avq-cuda-llama-kernels.h"
#include "avq-cuda-device.cuh"
#include "avq-logit-order.h"
#include <atomic>

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

// ---- Decode attention: flash-decoding ----
//
// Phase 1, one block per (split, head, row): the block's four warps take
// 32-key chunks of the split's tile in turn. In a chunk, a group of L lanes
// (L a power of two, up to 32) computes a key's score, each lane loading P
// vectors of V consecutive elements (8 or 16 bytes per lane when V = 4, so
// that a warp reads whole key rows coalesced) and the group reducing by
// shuffles; 32 / L keys go at once, U passes' loads are issued before their
// reductions so that several rows are in flight per warp. Lane k ends with
// the score of the chunk's key k; the warp keeps a running max m, sum l and
// P V accumulator (online softmax, rescaled once per chunk), the P V step
// again a group per key with lanes covering head_dim. The warps' states
// merge in shared memory into the split's partial (max, sum, acc), fp32.
// Phase 2 merges the splits of each (head, row) into the fp16 output.

// The host test's compiler does not know the pragma (-Werror).
#ifdef AVQ_KERNEL_HOST_EMU
#define AVQ_DEC_UNROLL
#else
#define AVQ_DEC_UNROLL _Pragma ("unroll")
#endif

constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
static_assert (32 * kDecodeWarps == AVQ_CUK_DECODE_TILE_STEP,
               "a tile step gives every warp of the block one 32-key chunk");

__device__ __forceinline__ float half_bits_to_float (unsigned b)
{
#ifdef AVQ_KERNEL_HOST_EMU
  return avq_half_to_float ((unsigned short) b);
#else
  return __half2float (__ushort_as_half ((unsigned short) b));
#endif
}

__device__ __forceinline__ float to_float (float v)
{
  return v;
}

__device__ __forceinline__ float to_float (__half v)
{
  return __half2float (v);
}

// V consecutive cache elements (V = 4: one aligned 8-byte fp16 or 16-byte
// fp32 load), kept raw until used so that loads stay cheap in registers.
template <typename KT, int V>
struct KvVec;

template <>
struct KvVec<__half, 4> {
  uint2 raw;
  __device__ __forceinline__ void load (const __half *p)
  {
    raw = *reinterpret_cast<const uint2 *> (p);
  }
  __device__ __forceinline__ void get (float *o) const
  {
    o[0] = half_bits_to_float (raw.x & 0xffffu);
    o[1] = half_bits_to_float (raw.x >> 16);
    o[2] = half_bits_to_float (raw.y & 0xffffu);
    o[3] = half_bits_to_float (raw.y >> 16);
  }
};

template <>
struct KvVec<float, 4> {
  float4 raw;
  __device__ __forceinline__ void load (const float *p)
  {
    raw = *reinterpret_cast<const float4 *> (p);
  }
  __device__ __forceinline__ void get (float *o) const
  {
    o[0] = raw.x;
    o[1] = raw.y;
    o[2] = raw.z;
    o[3] = raw.w;
  }
};

template <typename KT>
struct KvVec<KT, 1> {
  KT raw;
  __device__ __forceinline__ void load (const KT *p)
  {
    raw = *p;
  }
  __device__ __forceinline__ void get (float *o) const
  {
    o[0] = to_float (raw);
  }
};

__device__ __forceinline__ float warp_max_all (float v)
{
  for (int off = 16; off > 0; off >>= 1)
    v = fmaxf (v, __shfl_xor_sync (0xffffffffu, v, off));
  return v;
}

__device__ __forceinline__ float warp_sum_all (float v)
{
  for (int off = 16; off > 0; off >>= 1)
    v += __shfl_xor_sync (0xffffffffu, v, off);
  return v;
}

// Phase 1: blockIdx = (split, head, row). `part` holds [n][nh][S][hd]
// accumulators, then [n][nh][S][2] (max, sum).
template <typename KT, int V, int P, int U>
__global__ void __launch_bounds__ (kDecodeThreads)
decode_split_kernel (const __half *q, const KT *kc, const KT *vc, int nh,
                     int nkv, int hd, int T0, const int32_t *positions,
                     const int32_t *slots, size_t slot_stride, int max_ctx,
                     int tile, float scale, float *part)
{
  __shared__ float wm[kDecodeWarps], wl[kDecodeWarps];
  __shared__ float wacc[kDecodeWarps][AVQ_CUK_DECODE_MAX_HD];
  const int sp = blockIdx.x, h = blockIdx.y, r = blockIdx.z;
  const int S = gridDim.x;
  const size_t pi = ((size_t) r * nh + h) * S + sp;
  float *pacc = part + pi * hd;
  float *pml = part + (size_t) gridDim.z * nh * S * hd + pi * 2;
  const int T = positions ? positions[r] + 1 : T0;
  const int j0 = sp * tile;
  const int j1 = T < j0 + tile ? T : j0 + tile;
  // Uniform over the block, so returning keeps the barriers below uniform.
  // A tile past T (or a row the combine turns into NaN) still leaves a
  // neutral partial: the scratch is never cleared between launches.
  if (T < 1 || T > max_ctx || j0 >= j1) {
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
      pacc[d] = 0.0f;
    if (threadIdx.x == 0) {
      pml[0] = -INFINITY;
      pml[1] = 0.0f;
    }
    return;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nv = hd / V;  // vectors per key row
  int L = 1;              // lanes per key
  while (L < nv && L < 32)
    L <<= 1;
  const int KP = 32 / L, gl = lane & (L - 1), grp = lane / L;
  const __half *qr = q + ((size_t) r * nh + h) * hd;
  float qv[P][V], acc[P][V];
  AVQ_DEC_UNROLL
  for (int i = 0; i < P; i++)
    AVQ_DEC_UNROLL
    for (int e = 0; e < V; e++) {
      const int vi = gl + i * L;
      qv[i][e] = vi < nv ? __half2float (qr[vi * V + e]) : 0.0f;
      acc[i][e] = 0.0f;
    }
  const int g = h / (nh / nkv);
  const size_t base = (slots ? (size_t) slots[r] * slot_stride : 0) +
                      (size_t) g * max_ctx * hd;
  const KT *kb = kc + base, *vb = vc + base;
  // U >= 32: a chunk is one batch, and its values are loaded together with
  // its keys (one memory round trip per chunk instead of two).
  constexpr bool kOneBatch = U >= 32;
  float m = -INFINITY, l = 0.0f;
  for (int c0 = j0 + 32 * warp; c0 < j1; c0 += 32 * kDecodeWarps) {
    const int cn = j1 - c0 < 32 ? j1 - c0 : 32;
    float s = -INFINITY;  // lane k: the score of key c0 + k
    KvVec<KT, V> vr[U][P] = {};
    // This lane's vectors of rows c0 + p0 + u KP + grp (u < U) of cache
    // `b`, never past T (NaN may lie there).
    auto load_rows = [&] (KvVec<KT, V> (&rows)[U][P], const KT *b, int p0) {
      AVQ_DEC_UNROLL
      for (int u = 0; u < U; u++) {
        const int k = p0 + u * KP + grp;
        AVQ_DEC_UNROLL
        for (int i = 0; i < P; i++)
          if (k < cn && gl + i * L < nv)
            rows[u][i].load (b + (size_t) (c0 + k) * hd + (gl + i * L) * V);
      }
    };
    for (int p0 = 0; p0 < cn; p0 += U * KP) {
      KvVec<KT, V> kr[U][P] = {};
      load_rows (kr, kb, p0);
      if constexpr (kOneBatch)
        load_rows (vr, vb, p0);
      AVQ_DEC_UNROLL
      for (int u = 0; u < U; u++) {
        const int p = p0 + u * KP, k = p + grp;
        float dot = 0.0f;
        AVQ_DEC_UNROLL
        for (int i = 0; i < P; i++)
          if (k < cn && gl + i * L < nv) {
            float kv[V];
            kr[u][i].get (kv);
            AVQ_DEC_UNROLL
            for (int e = 0; e < V; e++)
              dot += qv[i][e] * kv[e];
          }
        for (int off = L >> 1; off > 0; off >>= 1)
          dot += __shfl_xor_sync (0xffffffffu, dot, off);
        // Lane p + j takes the key of group j (p is a multiple of KP).
        const float got = __shfl_sync (0xffffffffu, dot, (lane & (KP - 1)) * L);
        if (lane >= p && lane < p + KP && lane < cn)
          s = got * scale;
      }
    }
    const float mn = fmaxf (m, warp_max_all (s));
    // mn stays -inf only when every score so far is -inf (infinite inputs):
    // keep the state rather than make NaN of -inf - -inf.
    const float corr = mn == -INFINITY ? 1.0f : expf (m - mn);
    const float pk = s == -INFINITY ? 0.0f : expf (s - mn);
    l = l * corr + warp_sum_all (pk);
    m = mn;
    AVQ_DEC_UNROLL
    for (int i = 0; i < P; i++)
      AVQ_DEC_UNROLL
      for (int e = 0; e < V; e++)
        acc[i][e] *= corr;
    for (int p0 = 0; p0 < cn; p0 += U * KP) {
      if constexpr (!kOneBatch)
        load_rows (vr, vb, p0);
      AVQ_DEC_UNROLL
      for (int u = 0; u < U; u++) {
        const int k = p0 + u * KP + grp;
        const float w = __shfl_sync (0xffffffffu, pk, k & 31);
        AVQ_DEC_UNROLL
        for (int i = 0; i < P; i++)
          if (k < cn && gl + i * L < nv) {
            float vv[V];
            vr[u][i].get (vv);
            AVQ_DEC_UNROLL
            for (int e = 0; e < V; e++)
              acc[i][e] += w * vv[e];
          }
      }
    }
  }
  // The groups of a warp took different keys under the same m: add them.
  for (int off = L; off < 32; off <<= 1)
    AVQ_DEC_UNROLL
    for (int i = 0; i < P; i++)
      AVQ_DEC_UNROLL
      for (int e = 0; e < V; e++)
        acc[i][e] += __shfl_xor_sync (0xffffffffu, acc[i][e], off);
  if (grp == 0)
    AVQ_DEC_UNROLL
    for (int i = 0; i < P; i++)
      if (gl + i * L < nv)
        AVQ_DEC_UNROLL
        for (int e = 0; e < V; e++)
          wacc[warp][(gl + i * L) * V + e] = acc[i][e];
  if (lane == 0) {
    wm[warp] = m;
    wl[warp] = l;
  }
  __syncthreads ();
  // Warps without a chunk (a short last tile) hold m = -inf, acc = 0.
  float M = -INFINITY;
  for (int w = 0; w < kDecodeWarps; w++)
    M = fmaxf (M, wm[w]);
  float f[kDecodeWarps], lsum = 0.0f;
  for (int w = 0; w < kDecodeWarps; w++) {
    f[w] = wm[w] == -INFINITY ? 0.0f : expf (wm[w] - M);
    lsum += wl[w] * f[w];
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < kDecodeWarps; w++)
      a += wacc[w][d] * f[w];
    pacc[d] = a;
  }
  if (threadIdx.x == 0) {
    pml[0] = M;
    pml[1] = lsum;
  }
}

// Phase 2: blockIdx = (head, row); each split's partial rescaled to the
// overall max before the sums (dropping that rescale fails the tests).
__global__ void __launch_bounds__ (kDecodeThreads)
decode_combine_kernel (const float *part, int nh, int hd, int T0,
                       const int32_t *positions, int max_ctx, int S,
                       __half *out)
{
  const int h = blockIdx.x, r = blockIdx.y;
  const size_t hr = (size_t) r * nh + h, qo = hr * hd;
  const int T = positions ? positions[r] + 1 : T0;
  if (T < 1 || T > max_ctx) {
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
      out[qo + d] = __float2half_rn (NAN);
    return;
  }
  const float *pacc = part + hr * S * hd;
  const float *pml = part + (size_t) gridDim.y * nh * S * hd + hr * S * 2;
  float M = -INFINITY;
  for (int s = 0; s < S; s++)
    M = fmaxf (M, pml[2 * s]);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.0f, l = 0.0f;
    for (int s = 0; s < S; s++) {
      const float ms = pml[2 * s];
      if (ms == -INFINITY)  // a tile past T: neutral
        continue;
      const float f = expf (ms - M);
      a += pacc[(size_t) s * hd + d] * f;
      l += pml[2 * s + 1] * f;
    }
    out[qo + d] = __float2half_rn (a / l);
  }
}

// When the device cannot say (the host test's emulation): an H100 / H200.
constexpr int kDefaultSms = 132;

// The SM count of the current device, asked once per device.
int device_sms ()
{
  static std::atomic<int> cached[16];
  int dev = 0;
  if (cudaGetDevice (&dev) != cudaSuccess || dev < 0)
    return kDefaultSms;
  if (dev < 16) {
    const int v = cached[dev].load (std::memory_order_relaxed);
    if (v > 0)
      return v;
  }
  cudaDeviceProp prop;
  int v = kDefaultSms;
  if (cudaGetDeviceProperties (&prop, dev) == cudaSuccess &&
      prop.multiProcessorCount > 0)
    v = prop.multiProcessorCount;
  if (dev < 16)
    cached[dev].store (v, std::memory_order_relaxed);
  return v;
}

template <typename KT>
void launch_decode_split (bool vec, dim3 grid, cudaStream_t stream,
                          const __half *q, const void *kc, const void *vc,
                          int nh, int nkv, int hd, int T0,
                          const int32_t *positions, const int32_t *slots,
                          size_t slot_stride, int max_ctx, int tile,
                          float scale, float *part)
{
  // A pointer, not the template-id, in the macro (its commas).
  void (*kern) (const __half *, const KT *, const KT *, int, int, int, int,
                const int32_t *, const int32_t *, size_t, int, int, float,
                float *);
  if (!vec)
    kern = decode_split_kernel<KT, 1, AVQ_CUK_DECODE_MAX_HD / 32, 4>;
  else if (hd / 4 <= 32)  // fp16: a whole 32-key chunk's rows in flight
    kern = decode_split_kernel<KT, 4, 1, sizeof (KT) == 2 ? 32 : 16>;
  else
    kern = decode_split_kernel<KT, 4, AVQ_CUK_DECODE_MAX_HD / 128,
                               sizeof (KT) == 2 ? 16 : 8>;
  AVQ_LAUNCH (kern, grid, kDecodeThreads, stream) (
      q, static_cast<const KT *> (kc), static_cast<const KT *> (vc), nh, nkv,
      hd, T0, positions, slots, slot_stride, max_ctx, tile, scale, part);
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
  t = block_reduce (t, red, [] (Top a, Top b) { return top_merge (a, b); });
  if (threadIdx.x == 0)
    out[blockIdx.x] = t.k == 0x7fffffff ? 0 : t.k;
}

// ---- Sampling candidates ----
//
// One block per row. Ranks (avq_logit_rank: the order key above the
// complemented id) are distinct, so the kk-th largest of them is a threshold
// that takes exactly kk tokens. Pass 1 finds the largest rank (the max, and
// the whole answer when k = 1). Pass 2 sums expf ((x - max) / T) and starts
// a radix select on the rank, 8 bits at a time from the top: a histogram of
// the digit over the ranks that agree with the threshold so far picks the
// bin where the count still needed falls, until that bin holds exactly it
// (mostly within the key's 4 digits; the id's digits only split a group of
// equal logits at the threshold). The kk ranks at or above the threshold
// then land in shared memory in any order, and each finds its place by
// counting the larger ones: the result is independent of thread timing.

constexpr int kTopThreads = 512;
constexpr int kTopBins = 256;

__device__ __forceinline__ int rank_id (uint64_t rank)
{
  return (int) (0xffffffffu - (uint32_t) rank);
}

__device__ __forceinline__ float candidate_logit (float v)
{
  return v == v ? v : -INFINITY;
}

// Counts digit d (< 0: none) of each lane of the warp into `hist`, one
// atomic per distinct digit: the top digits of a row's logits crowd into a
// few bins, and same-address atomics from one warp would serialise.
__device__ __forceinline__ void histogram_add (int *hist, int d)
{
  const unsigned peers = __match_any_sync (0xffffffffu, d);
  if (d >= 0 && (int) (threadIdx.x & 31) == __ffs (peers) - 1)
    atomicAdd (&hist[d], __popc (peers));
}

__global__ void __launch_bounds__ (kTopThreads)
top_candidates_kernel (const float *x, int n, size_t ld, int k,
                       const float *temperature, float *cand_logit,
                       int32_t *cand_id, float *stats)
{
  __shared__ uint64_t red[32];
  __shared__ float redf[32];
  __shared__ int hist[2][kTopBins];
  __shared__ uint64_t sel[AVQ_CUK_TOP_MAX];
  __shared__ uint64_t s_prefix;
  __shared__ int s_rem, s_done, s_nsel;
  const size_t row = blockIdx.x;
  const float *xr = x + row * ld;
  const int kk = k < n ? k : n;
  const bool select = kk > 1 && kk < n;
  // Ordered before the atomics of pass 2 by block_reduce's barriers.
  for (int i = threadIdx.x; i < 2 * kTopBins; i += blockDim.x)
    hist[i / kTopBins][i % kTopBins] = 0;
  if (threadIdx.x == 0)
    s_nsel = 0;

  uint64_t best = 0;  // below every rank
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const uint64_t r = avq_logit_rank (xr[i], i);
    best = r > best ? r : best;
  }
  best = block_reduce (best, red,
                       [] (uint64_t a, uint64_t b) { return a > b ? a : b; });
  const float mx = candidate_logit (xr[rank_id (best)]);
  // As the host: no distribution to sum under an infinite max (or none).
  const float T = *temperature;
  const bool sum = T > 0.0f && fabsf (mx) < INFINITY;

  // Pass 2, in steps of the block so that a warp's lanes stay together for
  // the histogram.
  float s = 0.0f;
  if (sum || select)
    for (int base = 0; base < n; base += blockDim.x) {
      const int i = base + threadIdx.x;
      int d = -1;
      if (i < n) {
        const float v = xr[i];
        if (sum && v == v)
          s += expf ((v - mx) / T);
        d = (int) (avq_logit_order_key (v) >> 24);
      }
      if (select)
        histogram_add (hist[0], d);
    }
  if (sum)
    s = block_sum (s, redf);

  uint64_t thr = kk == n ? 0 : best;  // take the ranks >= thr
  if (select) {
    // Ids are below 2^id_bits: the digits of the complemented id above
    // that are all ones and need no pass.
    const int id_bits = 32 - __clz (n - 1);
    uint64_t prefix = 0;
    int rem = kk, shift = 56;
    for (int pass = 0;; pass++) {
      __syncthreads ();  // hist[pass & 1] complete
      if (threadIdx.x < 32) {
        // Lane l sums bins 255 - 8 l down to 248 - 8 l; ranks descend with
        // the lanes, so the lane where the running count reaches rem holds
        // the threshold's bin.
        const int lane = threadIdx.x, top = kTopBins - 1 - 8 * lane;
        const int *h = hist[pass & 1];
        int c = 0;
        for (int j = 0; j < 8; j++)
          c += h[top - j];
        int incl = c;
        for (int off = 1; off < 32; off <<= 1) {
          const int o = __shfl_up_sync (0xffffffffu, incl, off);
          if (lane >= off)
            incl += o;
        }
        int above = incl - c;
        if (above < rem && rem <= incl) {
          int b = top;
          while (above + h[b] < rem)
            above += h[b--];
          s_prefix = prefix | (uint64_t) b << shift;
          s_rem = rem - above;
          s_done = h[b] == rem - above;
        }
      }
      __syncthreads ();
      prefix = s_prefix;
      rem = s_rem;
      // Ranks are distinct: the last digit always ends it (the test of
      // shift only keeps a broken histogram from looping forever).
      if (s_done || shift == 0)
        break;
      for (shift -= 8; shift < 32 && shift >= id_bits; shift -= 8)
        prefix |= (uint64_t) 0xff << shift;
      // The next histogram, over the ranks that agree with prefix above
      // `shift`; the other buffer, read above, is cleared for the pass
      // after.
      int *h = hist[(pass + 1) & 1], *old = hist[pass & 1];
      for (int i = threadIdx.x; i < kTopBins; i += blockDim.x)
        old[i] = 0;
      const uint64_t mask = ~(uint64_t) 0 << (shift + 8);
      for (int base = 0; base < n; base += blockDim.x) {
        const int i = base + threadIdx.x;
        int d = -1;
        if (i < n) {
          const uint64_t r = avq_logit_rank (xr[i], i);
          if (((r ^ prefix) & mask) == 0)
            d = (int) (r >> shift) & 0xff;
        }
        histogram_add (h, d);
      }
    }
    thr = prefix;
  }

  const size_t o = row * (size_t) k;
  if (kk == 1) {
    if (threadIdx.x == 0) {
      cand_id[o] = rank_id (best);
      cand_logit[o] = mx;
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const uint64_t r = avq_logit_rank (xr[i], i);
      if (r >= thr) {
        const int slot = atomicAdd (&s_nsel, 1);
        if (slot < AVQ_CUK_TOP_MAX)
          sel[slot] = r;
      }
    }
    __syncthreads ();
    for (int t = threadIdx.x; t < kk; t += blockDim.x) {
      const uint64_t r = sel[t];
      int pos = 0;
      for (int j = 0; j < kk; j++)
        pos += sel[j] > r;
      const int id = rank_id (r);
      cand_id[o + pos] = id;
      cand_logit[o + pos] = candidate_logit (xr[id]);
    }
  }
  if (threadIdx.x == 0) {
    stats[2 * row] = mx;
    stats[2 * row + 1] = sum ? s : 0.0f;
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
  if (n <= 0 || n > 65535 || nh <= 0 || nh > 65535 || nkv <= 0 ||
      nh % nkv != 0 || hd <= 0 || hd > AVQ_CUK_DECODE_MAX_HD ||
      max_ctx <= 0 || (positions == NULL && (T <= 0 || T > max_ctx)))
    return cudaErrorInvalidValue;
  // Splits: about eight blocks per SM for one row whatever T turns out to
  // be (T lives in device memory), within AVQ_CUK_DECODE_SPLITS_MAX; tiles
  // of whole steps so that every warp of a full tile has a chunk. Neither n
  // nor T enters, so a row's result does not depend on its batch.
  const int steps = (max_ctx + AVQ_CUK_DECODE_TILE_STEP - 1) /
                    AVQ_CUK_DECODE_TILE_STEP;
  int S = (8 * device_sms () + nh - 1) / nh;
  const int smax = (int) AVQ_CUK_DECODE_SPLITS_MAX (max_ctx);
  S = S < 1 ? 1 : (S > smax ? smax : S);
  const int tile = (steps + S - 1) / S * AVQ_CUK_DECODE_TILE_STEP;
  S = (max_ctx + tile - 1) / tile;
  // Vector loads need every row start aligned to 4 elements.
  const uintptr_t align = kv_half ? 8 : 16;
  const bool vec = hd % 4 == 0 && slot_stride % 4 == 0 &&
                   (uintptr_t) k_cache % align == 0 &&
                   (uintptr_t) v_cache % align == 0;
  const __half *q = reinterpret_cast<const __half *> (q16);
  const dim3 grid ((unsigned) S, (unsigned) nh, (unsigned) n);
  if (kv_half)
    launch_decode_split<__half> (vec, grid, stream, q, k_cache, v_cache, nh,
                                 nkv, hd, T, positions, slots, slot_stride,
                                 max_ctx, tile, scale, scratch);
  else
    launch_decode_split<float> (vec, grid, stream, q, k_cache, v_cache, nh,
                                nkv, hd, T, positions, slots, slot_stride,
                                max_ctx, tile, scale, scratch);
  cudaError_t e = cudaGetLastError ();
  if (e != cudaSuccess)
    return e;
  AVQ_LAUNCH (decode_combine_kernel, dim3 ((unsigned) nh, (unsigned) n),
              kDecodeThreads, stream) (scratch, nh, hd, T, positions,
                                       max_ctx, S, as_half (out16));
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
avq_cuk_top_candidates (cudaStream_t stream, const float *x, int rows, int n,
                        size_t ld, int k, const float *temperature,
                        float *cand_logit, int32_t *cand_id, float *stats)
{
  if (rows <= 0 || n <= 0 || ld < (size_t) n || k < 1 ||
      k > AVQ_CUK_TOP_MAX || temperature == nullptr)
    return cudaErrorInvalidValue;
  AVQ_LAUNCH (top_candidates_kernel, rows, kTopThreads, stream) (
      x, n, ld, k, temperature, cand_logit, cand_id, stats);
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
