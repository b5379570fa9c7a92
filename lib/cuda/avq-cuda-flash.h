/* Tensor-core flash attention (avq-cuda-flash.cu): softmax(scale Q K^T) V
 * in one kernel, for the vision tower (non-causal, q/k/v interleaved in one
 * [T, 3D] buffer, optionally several frames) and the LLM prefill (causal
 * with a position offset, K/V from the [kv_head][max_ctx][head_dim] cache,
 * grouped-query heads). Same conventions as avq-cuda-kernels.h: plain C,
 * fp16 buffers as uint16_t (IEEE binary16), the launcher enqueues on
 * `stream` and returns the launch status without synchronising.
 *
 * Numerics: Q K^T and P V on tensor cores (nvcuda::wmma 16x16x16, fp16
 * operands, fp32 accumulation); scores, the online softmax (max, rescale,
 * row sums) in fp32; probabilities rounded to fp16 as the P V operand (the
 * row sums add the rounded values, so the normalisation matches them);
 * output rounded to fp16 once. docs/CUDA.md, "Tensor-core flash
 * attention". */
#ifndef AVQ_CUDA_FLASH_H
#define AVQ_CUDA_FLASH_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AVQ_CUK_FLASH_MAX_HD 128

/* One attention problem. Element (b, h, i, d) of a tensor X lives at
 * X[b * x_batch + h * x_head + i * x_row + d]; strides count fp16 elements
 * (int64, so that frames and caches may exceed 2^31 elements).
 *
 * For batch b, query head h (0 <= h < heads), query row i (0 <= i < n_q),
 * the kernel reads K and V of kv head h / (heads / kv_heads) and rows
 * j < limit(i), where limit(i) = n_k, or with causal != 0
 * min (n_k, q_pos + i + 1) (query i sits at position q_pos + i and sees
 * keys 0 .. q_pos + i); out[b, h, i, :] = sum_j p_j v_j / sum_j p_j with
 * p_j = exp(scale q_i . k_j - max). Nothing outside those rows and the
 * first head_dim columns is read, so cache slots past the prompt may hold
 * anything (NaN included); only out rows i < n_q, columns < head_dim are
 * written.
 *
 * Requirements (else cudaErrorInvalidValue, nothing launched): q, k, v,
 * out non-NULL; 1 <= head_dim <= AVQ_CUK_FLASH_MAX_HD; n_q, n_k, heads,
 * kv_heads, batch >= 1; heads a multiple of kv_heads; heads and batch at
 * most 65535; scale > 0 and finite; q_pos >= 0. Vectorised 16-byte loads
 * are used when q, k, v are 16-byte aligned and their strides and
 * head_dim are multiples of 8, element loads otherwise (any alignment of
 * 2 bytes). */
typedef struct {
  const uint16_t *q, *k, *v;
  uint16_t *out;
  int64_t q_row, q_head, q_batch;
  int64_t k_row, k_head, k_batch;
  int64_t v_row, v_head, v_batch;
  int64_t o_row, o_head, o_batch;
  int n_q, n_k;
  int heads, kv_heads, head_dim, batch;
  float scale;
  int causal;
  int q_pos;
} AvqCukFlashParams;

cudaError_t avq_cuk_flash_attention (cudaStream_t stream,
                                     const AvqCukFlashParams *p);

/* The two callers' layouts, as parameter sets for avq_cuk_flash_attention
 * (inline, so that the kernel tests and the CUDA emulation, which stand in
 * for the general launcher, check these very strides).
 *
 * The vision tower's layout: qkv fp16 [frames][T][3D] (q | k | v, head h in
 * columns h*hd .. h*hd+hd-1 of each part, hd = D / H), out fp16
 * [frames][T][D]; non-causal. Same result as avq_cuk_attention per frame. */
static inline cudaError_t
avq_cuk_flash_attention_qkv (cudaStream_t stream, const uint16_t *qkv, int T,
                             int D, int H, int frames, float scale,
                             uint16_t *out)
{
  if (!qkv || H <= 0 || D <= 0 || D % H != 0 || T <= 0)
    return cudaErrorInvalidValue;
  AvqCukFlashParams p;
  memset (&p, 0, sizeof p);
  p.q = qkv;
  p.k = qkv + D;
  p.v = qkv + 2 * D;
  p.out = out;
  p.q_row = p.k_row = p.v_row = 3 * (int64_t) D;
  p.q_head = p.k_head = p.v_head = D / H;
  p.q_batch = p.k_batch = p.v_batch = 3 * (int64_t) T * D;
  p.o_row = D;
  p.o_head = D / H;
  p.o_batch = (int64_t) T * D;
  p.n_q = p.n_k = T;
  p.heads = p.kv_heads = H;
  p.head_dim = D / H;
  p.batch = frames;
  p.scale = scale;
  return avq_cuk_flash_attention (stream, &p);
}

/* The LLM prefill's layout: n query rows q fp16 [n, nh*hd] at positions
 * p0 .. p0+n-1 (already rotated), keys and values of positions
 * 0 .. p0+n-1 in the fp16 caches of one layer, laid out [nkv][max_ctx][hd];
 * causal, query head h reads kv head h / (nh / nkv); out fp16 [n, nh*hd].
 * Requires p0 + n <= max_ctx. */
static inline cudaError_t
avq_cuk_flash_attention_cache (cudaStream_t stream, const uint16_t *q, int n,
                               int p0, int nh, int nkv, int hd,
                               const uint16_t *k_cache,
                               const uint16_t *v_cache, int max_ctx,
                               float scale, uint16_t *out)
{
  if (n <= 0 || p0 < 0 || hd <= 0 || nh <= 0 || max_ctx <= 0 ||
      (int64_t) p0 + n > max_ctx)
    return cudaErrorInvalidValue;
  AvqCukFlashParams p;
  memset (&p, 0, sizeof p);
  p.q = q;
  p.k = k_cache;
  p.v = v_cache;
  p.out = out;
  p.q_row = p.o_row = (int64_t) nh * hd;
  p.q_head = p.o_head = hd;
  p.k_row = p.v_row = hd;
  p.k_head = p.v_head = (int64_t) max_ctx * hd;
  p.n_q = n;
  p.n_k = p0 + n;
  p.heads = nh;
  p.kv_heads = nkv;
  p.head_dim = hd;
  p.batch = 1;
  p.scale = scale;
  p.causal = 1;
  p.q_pos = p0;
  return avq_cuk_flash_attention (stream, &p);
}

#ifdef __cplusplus
}
#endif

#endif /* AVQ_CUDA_FLASH_H */
