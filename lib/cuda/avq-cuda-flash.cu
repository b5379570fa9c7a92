// Tensor-core flash attention (avq-cuda-flash.h has the contract). One block
// of four warps per (64 query rows, query head, batch item); warp w owns
// query rows 16 w .. 16 w + 15 of the block, kept as fp16 matrix_a fragments
// for the whole key loop. Keys and values stream through shared memory in
// tiles of BK rows (64 for head sizes up to 64, 32 up to 128, so that the
// static shared memory stays under 48 KiB). Per tile and warp:
//   S = Q K^T           wmma 16x16x16, fp16 operands, fp32 accumulators,
//                       stored to the warp's fp32 scratch in shared memory;
//   online softmax      on that scratch in fp32 (two lanes per row, scores
//                       scaled in the log2 domain), masked columns (past
//                       n_k, causal) get p = 0; P rounded to fp16 into
//                       shared memory, the row sum adds the rounded values;
//   O = diag(alpha) O + P V
//                       O stays in fp32 accumulator fragments; the per-row
//                       rescale needs each fragment element's row, which
//                       CUDA leaves unspecified, so it is measured once: a
//                       16x16 tile holding its row index in every entry is
//                       loaded into an accumulator fragment (`rowmap`), and
//                       element i of every accumulator fragment (same type,
//                       same layout) belongs to row rowmap.x[i] (rowid[i]).
// At the end O goes through the scratch once more, divided by the row sum,
// rounded to fp16 and written for rows < n_q, columns < head_dim. Head
// sizes below the template's (64 or 128) are zero-padded in shared memory.
//
// tests/cuda-flash-host.cpp compiles this file for the host with the
// thread shim and tests/cuda-wmma-host.h (an emulation of the wmma subset
// used here that scrambles the fragment element order on purpose).
#include "avq-cuda-flash.h"
#include "avq-cuda-device.cuh"
#ifndef AVQ_KERNEL_HOST_EMU
#include <mma.h>
#define AVQ_UNROLL _Pragma ("unroll")
#else
#define AVQ_UNROLL
#endif

namespace {

using namespace avq_cuk;
using namespace nvcuda;

constexpr int kFlashWarps = 4;
constexpr int kFlashRows = 16 * kFlashWarps;   // query rows per block

__device__ __forceinline__ int
imin (int a, int b)
{
  return a < b ? a : b;
}

template <int HD>
struct FlashTile {
  static constexpr int BK = HD > 64 ? 32 : 64;   // keys per tile
  static constexpr int LDH = HD + 8;   // fp16 row stride of Q, K, V tiles
  static constexpr int LDS = BK + 4;   // fp32 row stride of the scratch
  static constexpr int LDP = BK + 8;   // fp16 row stride of P
  static constexpr int KV_BYTES = 2 * BK * LDH * 2;
  static constexpr int Q_BYTES = kFlashRows * LDH * 2;
  // Q is staged where K and V go, before the key loop.
  static constexpr int STAGE_BYTES = KV_BYTES > Q_BYTES ? KV_BYTES : Q_BYTES;
  static constexpr int S_BYTES = kFlashWarps * 16 * LDS * 4;
  static constexpr int P_BYTES = kFlashWarps * 16 * LDP * 2;
  static constexpr int A_BYTES = kFlashWarps * 16 * 4;
  static constexpr int BYTES = STAGE_BYTES + S_BYTES + P_BYTES + A_BYTES;
  // wmma pointers must be 256-bit aligned: every region and every fragment
  // origin in them is a multiple of 32 bytes.
  static_assert (STAGE_BYTES % 32 == 0 && S_BYTES % 32 == 0 && P_BYTES % 32 == 0,
                 "shared regions 32-byte aligned");
  static_assert ((BK * LDH * 2) % 32 == 0 && (16 * LDH * 2) % 32 == 0 &&
                 (16 * LDS * 4) % 32 == 0 && (16 * LDP * 2) % 32 == 0,
                 "fragment origins 32-byte aligned");
  static_assert (BYTES <= 48 * 1024, "static shared memory limit");
  static_assert (HD % BK == 0, "the epilogue writes O in chunks of BK columns");
};

// rows_total rows of HD fp16 into dst (row stride LDH): the first
// rows_valid rows' first hd columns from src (row stride ld), zeros
// elsewhere. vec: 16-byte loads (src 16-byte aligned, ld and hd multiples
// of 8).
template <int HD>
__device__ __forceinline__ void
load_tile (__half *dst, const __half *src, int64_t ld, int rows_valid,
           int rows_total, int hd, int vec)
{
  constexpr int LDH = FlashTile<HD>::LDH;
  if (vec) {
    constexpr int CH = HD / 8;
    for (int i = threadIdx.x; i < rows_total * CH; i += blockDim.x) {
      const int r = i / CH, c = (i % CH) * 8;
      uint4 v = { 0u, 0u, 0u, 0u };
      if (r < rows_valid && c < hd)
        v = *reinterpret_cast<const uint4 *> (src + r * ld + c);
      *reinterpret_cast<uint4 *> (dst + r * LDH + c) = v;
    }
  } else {
    const __half zero = __float2half_rn (0.0f);
    for (int i = threadIdx.x; i < rows_total * HD; i += blockDim.x) {
      const int r = i / HD, c = i % HD;
      dst[r * LDH + c] = r < rows_valid && c < hd ? src[r * ld + c] : zero;
    }
  }
}

template <int HD>
__global__ void __launch_bounds__ (kFlashWarps * 32)
flash_kernel (AvqCukFlashParams p, int vec)
{
  using Tile = FlashTile<HD>;
  constexpr int BK = Tile::BK, LDH = Tile::LDH, LDS = Tile::LDS, LDP = Tile::LDP;
  constexpr int NJ = HD / 16, NC = BK / 16;   // fragments across HD and BK
  typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> FragA;
  typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> FragKt;
  typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> FragV;
  typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragC;

  __shared__ __align__ (128) unsigned char smem[Tile::BYTES];
  __half *const qs = reinterpret_cast<__half *> (smem);   // [64][LDH]
  __half *const ks = reinterpret_cast<__half *> (smem);   // [BK][LDH]
  __half *const vs = ks + BK * LDH;                        // [BK][LDH]
  float *const ss = reinterpret_cast<float *> (smem + Tile::STAGE_BYTES);
  __half *const ps = reinterpret_cast<__half *> (smem + Tile::STAGE_BYTES +
                                                 Tile::S_BYTES);
  float *const as = reinterpret_cast<float *> (smem + Tile::STAGE_BYTES +
                                               Tile::S_BYTES + Tile::P_BYTES);

  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int h = blockIdx.y, b = blockIdx.z, q0 = blockIdx.x * kFlashRows;
  const int kvh = h / (p.heads / p.kv_heads);
  const __half *q = reinterpret_cast<const __half *> (p.q) + b * p.q_batch +
                    h * p.q_head + q0 * p.q_row;
  const __half *k = reinterpret_cast<const __half *> (p.k) + b * p.k_batch +
                    kvh * p.k_head;
  const __half *v = reinterpret_cast<const __half *> (p.v) + b * p.v_batch +
                    kvh * p.v_head;
  const int hd = p.head_dim;

  // Rows of this block and of this warp; keys any of them may see.
  const int n_rows = imin (kFlashRows, p.n_q - q0);
  const int kend = p.causal ? imin (p.n_k, p.q_pos + q0 + n_rows) : p.n_k;
  const int wrow0 = 16 * w;   // within the block
  const int wrows = n_rows > wrow0 ? imin (16, n_rows - wrow0) : 0;
  const int wkend = wrows == 0 ? 0
                    : p.causal ? imin (p.n_k, p.q_pos + q0 + wrow0 + wrows) : p.n_k;

  float *const sw = ss + w * 16 * LDS;   // this warp's fp32 scratch [16][LDS]
  __half *const pw = ps + w * 16 * LDP;  // its probabilities [16][LDP]
  float *const aw = as + w * 16;         // its per-row factors

  load_tile<HD> (qs, q, p.q_row, n_rows, kFlashRows, hd, vec);
  __syncthreads ();
  FragA qf[NJ];
  AVQ_UNROLL
  for (int j = 0; j < NJ; j++)
    wmma::load_matrix_sync (qf[j], qs + wrow0 * LDH + 16 * j, LDH);

  // rowmap.x[i] = the row of element i of any FragC.
  for (int e = lane; e < 256; e += 32)
    sw[(e / 16) * LDS + e % 16] = (float) (e / 16);
  __syncwarp ();
  FragC rowmap;
  wmma::load_matrix_sync (rowmap, sw, LDS, wmma::mem_row_major);
  int rowid[FragC::num_elements];
  AVQ_UNROLL
  for (int i = 0; i < FragC::num_elements; i++)
    rowid[i] = (int) rowmap.x[i];

  FragC of[NJ];
  AVQ_UNROLL
  for (int j = 0; j < NJ; j++)
    wmma::fill_fragment (of[j], 0.0f);

  // Softmax bookkeeping: lanes 2r and 2r + 1 share row r of the warp, each
  // taking every other column; both hold its running max m and sum l.
  const int r = lane >> 1, par = lane & 1;
  const int qi = q0 + wrow0 + r;
  const int klim = r < wrows ? (p.causal ? imin (p.n_k, p.q_pos + qi + 1) : p.n_k) : 0;
  const float sl2 = p.scale * 1.4426950408889634f;   // scale * log2(e)
  float m = -INFINITY, l = 0.0f;

  for (int k0 = 0; k0 < kend; k0 += BK) {
    __syncthreads ();   // Q fragments loaded / the previous tile consumed
    const int kr = imin (BK, kend - k0);
    load_tile<HD> (ks, k + k0 * p.k_row, p.k_row, kr, BK, hd, vec);
    load_tile<HD> (vs, v + k0 * p.v_row, p.v_row, kr, BK, hd, vec);
    __syncthreads ();
    if (k0 >= wkend)
      continue;   // warp-uniform: none of this warp's rows sees these keys

    // S = Q K^T for the warp's 16 rows and the tile's BK keys.
    AVQ_UNROLL
    for (int c = 0; c < NC; c++) {
      FragC sf;
      wmma::fill_fragment (sf, 0.0f);
      AVQ_UNROLL
      for (int j = 0; j < NJ; j++) {
        FragKt kf;
        wmma::load_matrix_sync (kf, ks + 16 * c * LDH + 16 * j, LDH);
        wmma::mma_sync (sf, qf[j], kf, sf);
      }
      wmma::store_matrix_sync (sw + 16 * c, sf, LDS, wmma::mem_row_major);
    }
    __syncwarp ();

    // Online softmax of row r, in fp32.
    const float *srow = sw + r * LDS;
    float mt = -INFINITY;
    for (int c = par; c < BK; c += 2)
      if (k0 + c < klim)
        mt = fmaxf (mt, srow[c] * sl2);
    mt = fmaxf (mt, __shfl_xor_sync (0xffffffffu, mt, 1));
    const float m_new = fmaxf (m, mt);
    // m_new == -inf: no key seen yet by this row; O and l stay 0.
    const float alpha = m_new == -INFINITY ? 1.0f : exp2f (m - m_new);
    float ls = 0.0f;
    for (int c = par; c < BK; c += 2) {
      float pr = 0.0f;
      if (k0 + c < klim)
        pr = exp2f (srow[c] * sl2 - m_new);
      const __half ph = __float2half_rn (pr);
      pw[r * LDP + c] = ph;
      ls += __half2float (ph);
    }
    ls += __shfl_xor_sync (0xffffffffu, ls, 1);
    l = l * alpha + ls;
    m = m_new;
    if (par == 0)
      aw[r] = alpha;
    __syncwarp ();

    // O = diag(alpha) O + P V.
    float af[FragC::num_elements];
    AVQ_UNROLL
    for (int i = 0; i < FragC::num_elements; i++)
      af[i] = aw[rowid[i]];
    AVQ_UNROLL
    for (int j = 0; j < NJ; j++)
      AVQ_UNROLL
      for (int i = 0; i < FragC::num_elements; i++)
        of[j].x[i] *= af[i];
    FragA pf[NC];
    AVQ_UNROLL
    for (int c = 0; c < NC; c++)
      wmma::load_matrix_sync (pf[c], pw + 16 * c, LDP);
    AVQ_UNROLL
    for (int j = 0; j < NJ; j++)
      AVQ_UNROLL
      for (int c = 0; c < NC; c++) {
        FragV vf;
        wmma::load_matrix_sync (vf, vs + 16 * c * LDH + 16 * j, LDH);
        wmma::mma_sync (of[j], pf[c], vf, of[j]);
      }
  }

  if (wrows == 0)
    return;   // warp-uniform; no __syncthreads follows
  __syncwarp ();   // aw and sw are no longer read
  if (par == 0)
    aw[r] = l > 0.0f ? 1.0f / l : 0.0f;
  __half *o = reinterpret_cast<__half *> (p.out) + b * p.o_batch + h * p.o_head +
              (q0 + wrow0) * p.o_row;
  AVQ_UNROLL
  for (int c0 = 0; c0 < HD; c0 += BK) {
    if (c0 >= hd)
      break;
    AVQ_UNROLL
    for (int c = 0; c < NC; c++)
      wmma::store_matrix_sync (sw + 16 * c, of[c0 / 16 + c], LDS, wmma::mem_row_major);
    __syncwarp ();
    for (int e = lane; e < 16 * BK; e += 32) {
      const int rr = e / BK, cc = e % BK;
      if (rr < wrows && c0 + cc < hd)
        o[rr * p.o_row + c0 + cc] = __float2half_rn (sw[rr * LDS + cc] * aw[rr]);
    }
    __syncwarp ();
  }
}

bool
aligned16 (const void *ptr)
{
  return ((uintptr_t) ptr & 15) == 0;
}

}  // namespace

extern "C" {

cudaError_t
avq_cuk_flash_attention (cudaStream_t stream, const AvqCukFlashParams *p)
{
  if (!p || !p->q || !p->k || !p->v || !p->out || p->head_dim < 1 ||
      p->head_dim > AVQ_CUK_FLASH_MAX_HD || p->n_q < 1 || p->n_k < 1 ||
      p->heads < 1 || p->kv_heads < 1 || p->heads % p->kv_heads != 0 ||
      p->heads > 65535 || p->batch < 1 || p->batch > 65535 ||
      !(p->scale > 0.0f && p->scale < INFINITY) || p->q_pos < 0)
    return cudaErrorInvalidValue;
  const int64_t strides = p->q_row | p->q_head | p->q_batch | p->k_row |
                          p->k_head | p->k_batch | p->v_row | p->v_head |
                          p->v_batch;
  const int vec = aligned16 (p->q) && aligned16 (p->k) && aligned16 (p->v) &&
                  strides % 8 == 0 && p->head_dim % 8 == 0;
  dim3 grid ((unsigned) ((p->n_q + kFlashRows - 1) / kFlashRows),
             (unsigned) p->heads, (unsigned) p->batch);
  if (p->head_dim <= 64)
    AVQ_LAUNCH (flash_kernel<64>, grid, kFlashWarps * 32, stream) (*p, vec);
  else
    AVQ_LAUNCH (flash_kernel<128>, grid, kFlashWarps * 32, stream) (*p, vec);
  return cudaGetLastError ();
}

}  // extern "C"
