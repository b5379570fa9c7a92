/* fp32 CPU building blocks shared by the vision tower, the quantiser and the
 * language model. Matrices are row-major. Every function works on buffers
 * the caller owns (scratch included), keeps no state between calls and is
 * safe to call from several threads on distinct buffers. GEMMs go through
 * OpenBLAS, whose thread count (openblas_set_num_threads) is process-wide. */
#pragma once
#include <glib.h>
#include "avq-config.h"

G_BEGIN_DECLS

/* Sets the BLAS thread count for the whole process (threads <= 0: leave
 * the library's default, all cores). */
void avq_set_compute_threads (int threads);

/* y[n, out] = x[n, in] W^T + b, with W stored [out, in] as PyTorch does.
 * `b` may be NULL. `y` must not alias `x`. */
void avq_linear (const float *x, int n, int in, const float *w, const float *b,
                 int out, float *y);

/* Same with explicit row strides (elements) for x and y, so that slices of
 * wider buffers (fused q|k|v rows, for instance) can be read or written. */
void avq_linear_strided (const float *x, int ldx, int n, int in,
                         const float *w, const float *b, int out,
                         float *y, int ldy);

/* y[n, out] += x[n, in] W^T + b (b may be NULL): a residual add fused into
 * the GEMM. */
void avq_linear_add (const float *x, int n, int in, const float *w,
                     const float *b, int out, float *y);

/* y[t] = gamma * (x[t] - mean) / sqrt(var + eps) + beta over rows of length
 * d, with the biased variance (as torch.nn.LayerNorm). In place allowed
 * (y == x). `mean` and `sigma` (sqrt(var + eps)) receive the per-row
 * statistics when non-NULL. */
void avq_layernorm (const float *x, int n, int d, const float *gamma,
                    const float *beta, float eps, float *y, float *mean,
                    float *sigma);

/* Elementwise activations, in place. */
void avq_quick_gelu (float *x, gsize n);  /* x * sigmoid(1.702 x) */
void avq_gelu (float *x, gsize n);        /* 0.5 x (1 + erf(x / sqrt 2)) */
void avq_gelu_tanh (float *x, gsize n);  /* tanh approximation */
/* Any activation a config can name (silu and relu included). */
void avq_activate (AvqActivation act, float *x, gsize n);

/* Row-wise softmax (max-subtracted) of a [rows, cols] matrix with row stride
 * `ld`, in place. */
void avq_softmax_rows (float *x, int rows, int cols, int ld);

/* Floats of scratch avq_attention() needs for `t` tokens. */
gsize avq_attention_scratch_floats (int t);

/* Non-causal multi-head attention, scale head_dim^-0.5. q, k, v are [t, d]
 * with row strides ldq/ldk/ldv (so a fused [t, 3d] q|k|v buffer can be passed
 * as three offsets with stride 3d); head h uses columns [h*hd, (h+1)*hd).
 * `out` is [t, d] with stride d and must not alias q, k or v. `scratch`
 * holds avq_attention_scratch_floats(t) floats. */
void avq_attention (const float *q, int ldq, const float *k, int ldk,
                    const float *v, int ldv, int t, int d, int heads,
                    float *out, float *scratch);

/* Index of the smallest element (the first one on ties); NaNs never win. */
gsize avq_argmin (const float *x, gsize n);

G_END_DECLS
