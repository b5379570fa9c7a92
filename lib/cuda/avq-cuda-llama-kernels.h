/* Launchers of the LLaMA decoder's own kernels (avq-cuda-llama-kernels.cu),
 * for lib/cuda/avq-cuda-llama.c. Same conventions as avq-cuda-kernels.h:
 * plain C, fp16 buffers as uint16_t, row-major, every launcher enqueues on
 * `stream` and returns the launch status without synchronising. Numerics
 * follow the CPU decoder (lib/avq-llama.c). */
#ifndef AVQ_CUDA_LLAMA_KERNELS_H
#define AVQ_CUDA_LLAMA_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* RMSNorm as the CPU decoder (lib/avq-llama.c): per row the mean square in
 * double, inv = 1 / sqrt((float) ms + eps), y = w * (x * inv) in fp32.
 * Writes y32 and/or y16 (either may be NULL; y32 may alias x). */
cudaError_t avq_cuk_rmsnorm (cudaStream_t stream, const float *x, int n, int d,
                             const float *w, float eps, float *y32,
                             uint16_t *y16);

/* Rotary embeddings (HF rotate-half: pairs (j, j + hd/2)) and the KV cache
 * write, for n rows of qkv [n, (nh + 2 nkv) hd] fp32 (q | k | v) at
 * positions p0 .. p0+n-1. cos/sin are tables [positions][hd/2] (the CPU's,
 * from rope_theta). q16 [n, nh hd] receives rotated q; k (rotated) and v go
 * to the cache of one layer, laid out [nkv][max_ctx][hd], fp16 (kv_half)
 * or fp32. */
cudaError_t avq_cuk_rope_kv (cudaStream_t stream, const float *qkv, int n,
                             int nh, int nkv, int hd, const float *cos_t,
                             const float *sin_t, int p0, uint16_t *q16,
                             void *k_cache, void *v_cache, int max_ctx,
                             int kv_half);

/* out16[r, c] = silu(gu[r, c]) * gu[r, ffn + c] for n rows of gu [n, 2 ffn]. */
cudaError_t avq_cuk_silu_mul (cudaStream_t stream, const float *gu, int n,
                              int ffn, uint16_t *out16);

/* x[i] = table16[ids[i]] (fp16 rows of d, widened) for n ids on the device;
 * ids are checked on the host. */
cudaError_t avq_cuk_embed_rows (cudaStream_t stream, const uint16_t *table16,
                                const int32_t *ids, int n, int d, float *x);

/* x[i] += y[i], n elements. */
cudaError_t avq_cuk_add (cudaStream_t stream, float *x, const float *y,
                         size_t n);

/* Causal row softmax for prefill attention: rows = heads * n, row r is
 * query r % n at position p0 + r % n, which sees keys 0 .. p0 + r % n;
 * scores [rows, ld] fp32 -> probs [rows, ld] fp16, masked and padding
 * columns 0. */
cudaError_t avq_cuk_causal_softmax (cudaStream_t stream, const float *scores,
                                    int rows, int n, int p0, int ld,
                                    uint16_t *probs);

/* Single-token attention over the cache of one layer ([nkv][max_ctx][hd],
 * fp16 or fp32): query head h (q16 [nh hd]) uses kv head h / (nh / nkv),
 * keys 0 .. T-1; scores fp32 in `scratch` [nh, max_ctx]; out16 [nh hd].
 * Head size at most AVQ_CUK_DECODE_MAX_HD. */
#define AVQ_CUK_DECODE_MAX_HD 256
cudaError_t avq_cuk_decode_attention (cudaStream_t stream,
                                      const uint16_t *q16, const void *k_cache,
                                      const void *v_cache, int kv_half, int nh,
                                      int nkv, int hd, int T, int max_ctx,
                                      float scale, float *scratch,
                                      uint16_t *out16);

/* out[0] = the index of the largest of x[0 .. n-1], lowest index on ties,
 * NaN never wins (0 when nothing compares). */
cudaError_t avq_cuk_argmax (cudaStream_t stream, const float *x, int n,
                            int32_t *out);

#ifdef __cplusplus
}
#endif

#endif /* AVQ_CUDA_LLAMA_KERNELS_H */
