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

/* For tests: hidden_states[n_layers] [tokens, D] from pixels (0: the
 * pre_layrnorm output); n_layers must not exceed the uploaded layers. */
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
