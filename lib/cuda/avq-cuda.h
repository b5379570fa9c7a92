/* The CUDA backend of the vision half: vision tower, AVQ quantiser (edge
 * encode, cloud decode) and LLaVA projector on one GPU. Internal to the
 * engine (lib/avq-engine.c dispatches here when the device resolves to
 * CUDA); only built when AVQ_HAVE_CUDA.
 *
 * Precision: GEMM weights are fp16 on the device, GEMMs take fp16 inputs and
 * accumulate in fp32 (tensor cores); the residual stream, LayerNorm, softmax
 * and every elementwise step are fp32 (LayerNorm statistics and the derive
 * solve in double). The codebook GEMM that picks indices is fp32 throughout,
 * so that an index differs from the CPU's only where the runner-up is within
 * the fp16 error of the DLP. See docs/CUDA.md.
 *
 * One AvqCudaVision owns one CUDA stream and one cuBLAS handle; like the
 * engine it is not thread-safe. */
#pragma once
#include <glib.h>
#include "avq-frame.h"
#include "avq-model.h"
#include "avq-quantizer.h"
#include "avq-vision.h"

G_BEGIN_DECLS

/* TRUE when the CUDA runtime finds at least one device; otherwise FALSE with
 * the reason (no driver, no device, ...) naming the failing call. */
gboolean avq_cuda_probe (GError **error);

typedef struct _AvqCudaVision AvqCudaVision;

/* Uploads the embeddings, pre_layrnorm, the first `n_layers` tower layers
 * (taken from the model's tensors: F16/BF16/F32, converted to fp16 through
 * pinned staging buffers) and, when `quantizer` is non-NULL, the AVQ file's
 * codebook and DLPs. `tower` supplies the geometry (it need not hold any
 * layers). `device_ordinal` < 0 picks the current device. */
AvqCudaVision *avq_cuda_vision_new (const AvqModel *model,
                                    const AvqVisionTower *tower,
                                    const AvqQuantizer *quantizer,
                                    int n_layers, int device_ordinal,
                                    GError **error);
void avq_cuda_vision_free (AvqCudaVision *cv);

/* Uploads the layers up to what LLaVA runs and the projector (the cloud
 * half); no-op when already done. */
gboolean avq_cuda_vision_ensure_full (AvqCudaVision *cv, const AvqModel *model,
                                      GError **error);

/* Edge half: pixel values [C, S, S] -> `frame` (made by the caller with the
 * quantiser's parameters) filled with indices and side information.
 * `margins` [tokens] receives the distance gap to the runner-up when
 * non-NULL. */
gboolean avq_cuda_vision_encode (AvqCudaVision *cv, const float *pixels,
                                 AvqFrame *frame, float *margins,
                                 GError **error);

/* Cloud half: a frame already validated against the quantiser ->
 * projected features [feature tokens, text hidden]. */
gboolean avq_cuda_vision_decode (AvqCudaVision *cv, const AvqFrame *frame,
                                 float *features, GError **error);

/* Unsplit path: pixels -> projected features. */
gboolean avq_cuda_vision_features (AvqCudaVision *cv, const float *pixels,
                                   float *features, GError **error);

/* ---- batches ----
 *
 * The same three paths for n >= 1 inputs run as ONE forward of n * tokens
 * rows: every GEMM, LayerNorm and elementwise step over all rows, attention
 * and the per-frame parts of the quantiser (side ranges, side residual)
 * input by input. The single-input calls above are n = 1 of these.
 * Activations grow to the largest n seen. Each (path, n) is captured once
 * as a CUDA graph and replayed (inputs and outputs go through pinned
 * buffers inside the pass; per-frame values reach the kernels through
 * device memory), unless graphs are off (avq_cuda_vision_set_graphs, or
 * AVQ_CUDA_GRAPHS=0 when the backend is created). Frames are validated by
 * the caller. */
gboolean avq_cuda_vision_encode_batch (AvqCudaVision *cv,
                                       const float *const *pixels, guint n,
                                       AvqFrame *const *frames, float *margins,
                                       GError **error);
/* features: n * feature tokens * text hidden floats, input i at offset
 * i * feature tokens * text hidden. */
gboolean avq_cuda_vision_decode_batch (AvqCudaVision *cv,
                                       const AvqFrame *const *frames, guint n,
                                       float *features, GError **error);
gboolean avq_cuda_vision_features_batch (AvqCudaVision *cv,
                                         const float *const *pixels, guint n,
                                         float *features, GError **error);

/* Graphs on or off (off drops the cached ones); graphs captured so far; the
 * batch size the activations are allocated for. For tests and benchmarks. */
void avq_cuda_vision_set_graphs (AvqCudaVision *cv, gboolean enabled);
guint avq_cuda_vision_graphs_captured (const AvqCudaVision *cv);
int avq_cuda_vision_batch_capacity (const AvqCudaVision *cv);

/* For tests: hidden_states[n_layers] [tokens, D] from pixels (0: the
 * pre_layrnorm output); n_layers must not exceed the uploaded layers. Not
 * captured into a graph. */
gboolean avq_cuda_vision_hidden (AvqCudaVision *cv, const float *pixels,
                                 int n_layers, float *hidden, GError **error);

/* What the upload cost: bytes on the device for weights, and wall time of
 * all uploads so far (conversion included). */
guint64 avq_cuda_vision_weight_bytes (const AvqCudaVision *cv);
double avq_cuda_vision_upload_ms (const AvqCudaVision *cv);
/* "NVIDIA H200 (sm_90)" */
const char *avq_cuda_vision_device_name (const AvqCudaVision *cv);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqCudaVision, avq_cuda_vision_free)

G_END_DECLS
