/* The AVQ file (AVQ-SPEC section 2) and the two halves of the split at
 * layer L, site ln1 (section 5):
 *  - edge: x_L -> LN1 -> DLP-in -> nearest codebook row per token (+ the
 *    per-token mean / log-scale side information) -> AvqFrame;
 *  - cloud: AvqFrame -> codebook rows -> DLP-out -> zhat, and the residual
 *    stream x^_L rebuilt from zhat (side information or closed form).
 * The quantiser keeps its own copy of the model parameters it needs (layer
 * L's layer_norm1, pre_layrnorm), so it does not depend on which tower
 * layers are loaded. */
#pragma once
#include <glib.h>
#include "avq-engine.h"
#include "avq-frame.h"
#include "avq-model.h"
#include "avq-safetensors.h"

G_BEGIN_DECLS

typedef struct {
  int layer;                  /* L */
  AvqResidualMode residual;
  guint index_bits;
  guint side_bits;            /* 0 for derive */
  int codebook_size;          /* K = 2^index_bits */
  int dim;                    /* D = vision hidden size */
  int tokens;                 /* tokens a frame carries (577 for ViT-L/14-336) */
  float eps;                  /* vision layer_norm_eps */
  guint8 codebook_id[AVQ_CODEBOOK_ID_SIZE];

  float *codebook;            /* [K, D] */
  float *codebook_sqnorm;     /* [K]: ||e_k||^2 */
  float *in_w, *in_b;         /* DLP-in [D, D], [D] */
  float *out_w, *out_b;       /* DLP-out [D, D], [D] */
  float in_scale, out_scale;  /* tanh(gamma) of each DLP */
  float *ln1_w, *ln1_b;       /* layer L's layer_norm1 */
  float *pre_w, *pre_b;       /* pre_layrnorm (for derive) */
} AvqQuantizer;

/* Opens an AVQ file and validates it against the model (see AVQ-SPEC
 * section 2): metadata, shapes, K = 2^index_bits, D = vision hidden size,
 * 0 <= L < layers LLaVA runs, derive only at L = 0, finite values. Errors
 * name the file and the offending key or tensor. */
AvqQuantizer *avq_quantizer_load (const char *path, const AvqModel *model,
                                  GError **error);
/* Same from an opened safetensors file (read only during the call). */
AvqQuantizer *avq_quantizer_new (const AvqSafetensors *file,
                                 const AvqModel *model, GError **error);
void avq_quantizer_free (AvqQuantizer *quantizer);

/* Work buffers for encode/decode; reusable across frames. */
typedef struct _AvqQuantizerScratch AvqQuantizerScratch;
AvqQuantizerScratch *avq_quantizer_scratch_new (const AvqQuantizer *quantizer);
void avq_quantizer_scratch_free (AvqQuantizerScratch *scratch);

/* Edge: x_L [tokens, D] (the residual stream entering layer L) -> a new
 * keyframe. `margins`, when non-NULL, receives per token the squared-distance
 * gap between the chosen and the runner-up codeword. */
AvqFrame *avq_quantizer_encode (const AvqQuantizer *quantizer, const float *x,
                                AvqQuantizerScratch *scratch, float *margins);

/* Checks that a frame belongs to this file: token count, bit widths, codebook
 * id (AVQ_ERROR_MISMATCH), and that its codes are in range and its side
 * ranges finite (AVQ_ERROR_FORMAT). */
gboolean avq_quantizer_check_frame (const AvqQuantizer *quantizer,
                                    const AvqFrame *frame, GError **error);

/* Cloud: frame -> zhat [tokens, D] (layer L's layer_norm1 as the cloud sees
 * it) and x_hat [tokens, D] (the residual stream x^_L). Validates the frame
 * first. */
gboolean avq_quantizer_decode (const AvqQuantizer *quantizer,
                               const AvqFrame *frame, float *zhat,
                               float *x_hat, AvqQuantizerScratch *scratch,
                               GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqQuantizer, avq_quantizer_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqQuantizerScratch, avq_quantizer_scratch_free)

G_END_DECLS
