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
 * write, for n rows of qkv [n, (nh + 2 nkv) hd] fp32 (q | k | v). cos/sin
 * are tables [max_ctx][hd/2] (the CPU's, from rope_theta). q16 [n, nh hd]
 * receives rotated q; k (rotated) and v go to a cache laid out
 * [nkv][max_ctx][hd], fp16 (kv_half) or fp32.
 *
 * Row r's position is positions[r] and its cache starts slot_stride
 * elements times slots[r] after k_cache / v_cache, both read from device
 * memory (so that a captured graph replays with new values); positions ==
 * NULL means p0 + r, slots == NULL slot 0. A row whose position is outside
 * [0, max_ctx) writes nothing to the cache and NaN to its q (the host
 * checks positions; this keeps a bad one from writing out of bounds). */
cudaError_t avq_cuk_rope_kv (cudaStream_t stream, const float *qkv, int n,
                             int nh, int nkv, int hd, const float *cos_t,
                             const float *sin_t, int p0,
                             const int32_t *positions, const int32_t *slots,
                             size_t slot_stride, uint16_t *q16,
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

/* Decode attention, one query row per sequence: row r (q16 [n, nh hd])
 * attends over keys 0 .. T_r - 1 of the cache that starts slot_stride
 * elements times slots[r] after k_cache / v_cache (each [nkv][max_ctx][hd],
 * fp16 or fp32); query head h uses kv head h / (nh / nkv). T_r =
 * positions[r] + 1 read from device memory, or T for every row when
 * positions is NULL (slots NULL: slot 0). out16 [n, nh hd]. A row whose T_r
 * is outside [1, max_ctx] gets NaN. Head size at most AVQ_CUK_DECODE_MAX_HD,
 * n and nh at most 65535 (grid dimensions).
 *
 * Flash-decoding: the keys of each (head, row) are split into S tiles of a
 * multiple of AVQ_CUK_DECODE_TILE_STEP keys, S chosen on the host from
 * max_ctx, nh and the device's SM count (never from n or T, so that a row's
 * result does not depend on the rest of the batch and the launch shape is
 * fixed for a captured graph); one block per (split, head, row) leaves fp32
 * partials (max, sum, unnormalised P V) in `scratch`, tiles past T_r a
 * neutral one, and a second kernel merges them. `scratch` must hold
 * AVQ_CUK_DECODE_SCRATCH (n, nh, hd, max_ctx) floats (the bound for every
 * device: S is at most AVQ_CUK_DECODE_SPLITS_MAX (max_ctx)). */
#define AVQ_CUK_DECODE_MAX_HD 256
#define AVQ_CUK_DECODE_TILE_STEP 128
#define AVQ_CUK_DECODE_MAX_SPLITS 32
#define AVQ_CUK_DECODE_SPLITS_MAX(max_ctx)                              \
  ((size_t) (max_ctx) >                                                 \
           (size_t) AVQ_CUK_DECODE_MAX_SPLITS * AVQ_CUK_DECODE_TILE_STEP \
       ? (size_t) AVQ_CUK_DECODE_MAX_SPLITS                             \
       : ((size_t) (max_ctx) + AVQ_CUK_DECODE_TILE_STEP - 1) /          \
             AVQ_CUK_DECODE_TILE_STEP)
#define AVQ_CUK_DECODE_SCRATCH(n, nh, hd, max_ctx) \
  ((size_t) (n) * (size_t) (nh) * AVQ_CUK_DECODE_SPLITS_MAX (max_ctx) * \
   ((size_t) (hd) + 2))
cudaError_t avq_cuk_decode_attention (cudaStream_t stream,
                                      const uint16_t *q16, const void *k_cache,
                                      const void *v_cache, int kv_half, int n,
                                      int nh, int nkv, int hd, int T,
                                      const int32_t *positions,
                                      const int32_t *slots, size_t slot_stride,
                                      int max_ctx, float scale, float *scratch,
                                      uint16_t *out16);

/* out[r] = the index of the largest of row r of x (rows of n, stride ld),
 * for `rows` rows: lowest index on ties, NaN never wins (0 when nothing
 * compares). One block per row. */
cudaError_t avq_cuk_argmax (cudaStream_t stream, const float *x, int rows,
                            int n, size_t ld, int32_t *out);

/* Most candidates avq_cuk_top_candidates returns per row. */
#define AVQ_CUK_TOP_MAX 256

/* Sampling candidates (lib/avq-sampling.h) of `rows` rows of x (n logits
 * each, stride ld), one block per row: the first kk = min(k, n) tokens in
 * avq-logit-order.h's order (larger logit first, equal logits lowest id
 * first, NaN as -infinity) -> cand_id[r k + j] and their logits
 * cand_logit[r k + j] (NaN written as -infinity), j < kk (the rest of the
 * row's k slots untouched); stats[2 r] = the row's largest logit (as
 * cand_logit[r k]), stats[2 r + 1] = the sum over the row of
 * expf ((x - max) / T) (NaN adds 0) with T = *temperature read from device
 * memory (so that a captured graph replays with a new value), 0 when
 * T <= 0 (greedy needs no sum) or when the largest logit is not finite
 * (+infinity, or a row of NaN and -infinity). 1 <= k <= AVQ_CUK_TOP_MAX
 * and a non-NULL temperature, else cudaErrorInvalidValue. Ids and logits equal those of
 * avq_token_candidates_from_logits; the sum differs by summation order
 * (float here, double there). */
cudaError_t avq_cuk_top_candidates (cudaStream_t stream, const float *x,
                                    int rows, int n, size_t ld, int k,
                                    const float *temperature,
                                    float *cand_logit, int32_t *cand_id,
                                    float *stats);

/* Benchmark facility (random weights made on the device, see
 * AvqCudaLlamaDesc.random_seed): dst[i] = offset + scale u_i, u_i in
 * [-1, 1) from a hash of (seed, i) (splitmix64; the same values whatever
 * the launch shape), fp16 when `half`, else fp32. */
cudaError_t avq_cuk_fill_random (cudaStream_t stream, void *dst, int half,
                                 size_t n, uint64_t seed, float scale,
                                 float offset);

/* The value avq_cuk_fill_random stores before rounding (host and device). */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline float
avq_cuk_random_unit (uint64_t seed, uint64_t i)
{
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  /* 24 bits: exact in float; [0, 2^24) -> [-1, 1). */
  return (float) (int32_t) (z >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

#ifdef __cplusplus
}
#endif

#endif /* AVQ_CUDA_LLAMA_KERNELS_H */
