/* Launchers of the CUDA backend's own kernels (avq-cuda-kernels.cu): what
 * cuBLAS does not do. Plain C interface, so that the host code stays C:
 * fp16 buffers are passed as uint16_t (IEEE binary16 bit patterns), every
 * matrix is row-major, every launcher enqueues on `stream` and returns the
 * launch status (cudaGetLastError) without synchronising.
 *
 * Numerics follow the CPU reference (lib/avq-ops.c, lib/avq-quantizer.c):
 * LayerNorm statistics and the derive solve in double, everything else in
 * fp32; fp16 appears only as GEMM inputs. */
#ifndef AVQ_CUDA_KERNELS_H
#define AVQ_CUDA_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activations, numbered as AvqActivation in avq-config.h; -1: none. */
#define AVQ_CUK_ACT_NONE (-1)

/* pixels [C, S, S] fp32 -> patches [G*G, C*P*P] fp16, each row laid out
 * (channel, ky, kx) like the flattened conv weight; G = S / P. */
cudaError_t avq_cuk_im2col (cudaStream_t stream, const float *pixels, int C,
                            int S, int P, int G, uint16_t *patches);

/* x[t, c] = pos[t, c] + (t == 0 ? cls[c] : 0) for T rows of D. */
cudaError_t avq_cuk_embed_init (cudaStream_t stream, const float *pos,
                                const float *cls, int T, int D, float *x);

/* Row LayerNorm (biased variance, two passes in double). Writes any of
 * y32 (fp32), y16 (fp16), mean, sigma = sqrt(var + eps) that is non-NULL.
 * y32 may alias x. */
cudaError_t avq_cuk_layernorm (cudaStream_t stream, const float *x, int n,
                               int d, const float *gamma, const float *beta,
                               float eps, float *y32, uint16_t *y16,
                               float *mean, float *sigma);

/* out = act(y + bias) over n rows of d with row strides ldy / ldo (bias may
 * be NULL). Writes out32 and/or out16 (either may be NULL; out32 may alias
 * y). */
cudaError_t avq_cuk_bias_act (cudaStream_t stream, const float *y, int ldy,
                              int n, int d, const float *bias, int act,
                              float *out32, uint16_t *out16, int ldo);

/* Row softmax (max-subtracted, fp32) of scores [rows, cols] with row
 * stride ld; probabilities written as fp16 with the same stride. */
cudaError_t avq_cuk_softmax_rows (cudaStream_t stream, const float *scores,
                                  int rows, int cols, int ld, uint16_t *probs);

/* u = z + scale * (t + bias) (the DLP): u32 and/or u16. */
cudaError_t avq_cuk_dlp (cudaStream_t stream, const float *z, const float *t,
                         const float *bias, float scale, int n, int d,
                         float *u32, uint16_t *u16);

/* Per row t of scores [T, K] (scores = u . e_k): the k minimising
 * sqnorm[k] - 2 scores[t, k], lowest k on ties (NaN never wins); margin[t]
 * (may be NULL) = runner-up distance - best distance. */
cudaError_t avq_cuk_argmin (cudaStream_t stream, const float *scores,
                            const float *sqnorm, int T, int K, int32_t *index,
                            float *margin);

/* Side information (AVQ-SPEC 5.5), one block: log of sigma, per-frame
 * ranges range[4] = (mu_lo, mu_hi, ls_lo, ls_hi), and codes [T, 2]
 * interleaved (mu, logsigma), rounded half to even. */
cudaError_t avq_cuk_side_encode (cudaStream_t stream, const float *mean,
                                 const float *sigma, int T, int bits,
                                 float *range, int32_t *codes);

/* q[t] = codebook[index[t]] for T rows of D: q32 and/or q16. */
cudaError_t avq_cuk_gather (cudaStream_t stream, const float *codebook,
                            const int32_t *index, int T, int D, float *q32,
                            uint16_t *q16);

/* "side" residual of one frame: x = mu^ + exp(ls^) * (zhat - beta1) /
 * gamma1, with mu^ = r0 + code * mstep and ls^ = r2 + code * lstep, where
 * range[4] = (r0, r1, r2, r3) is read from DEVICE memory (a captured graph
 * replays with the current frame's ranges) and the steps are derived there
 * as the CPU does: (hi - lo) / (2^bits - 1), or 1 when hi == lo. */
cudaError_t avq_cuk_side_residual (cudaStream_t stream, const float *zhat,
                                   const int32_t *codes, const float *range,
                                   int bits, const float *gamma1,
                                   const float *beta1, int T, int D, float *x);

/* "derive" residual (AVQ-SPEC 5, cloud step 2), one block per token, in
 * double. qq[D], B, C, R are the per-model constants of the closed form
 * (see derive_residual in lib/avq-quantizer.c). */
cudaError_t avq_cuk_derive_residual (cudaStream_t stream, const float *zhat,
                                     const float *gamma1, const float *beta1,
                                     const float *pre_w, const double *qq,
                                     double B, double C, double R, int T,
                                     int D, float *x);

/* Fused multi-head attention (non-causal), flash-style: one warp per query
 * row, keys and values streamed through shared memory in tiles of 32 with an
 * online softmax in fp32, so the [T, T] scores never exist. qkv is fp16
 * [T, 3D] (q | k | v, head h in columns h*hd .. h*hd+hd-1 of each), out fp16
 * [T, D]; scale is usually hd^-0.5. Head size at most AVQ_CUK_ATTN_MAX_HD. */
#define AVQ_CUK_ATTN_MAX_HD 128
cudaError_t avq_cuk_attention (cudaStream_t stream, const uint16_t *qkv, int T,
                               int D, int H, float scale, uint16_t *out);

/* y = fp16(x), n elements. */
cudaError_t avq_cuk_to_half (cudaStream_t stream, const float *x, size_t n,
                             uint16_t *y);

#ifdef __cplusplus
}
#endif

#endif /* AVQ_CUDA_KERNELS_H */
