/* Making and judging AVQ files (issue: codebook training):
 *  - the features a codebook is trained on: layer L's layer_norm1 output,
 *    which is what the edge quantises while the DLP is the identity;
 *  - writing an AVQ file (spec section 2) around a trained codebook;
 *  - the fidelity of an AVQ file on an image: what the cloud gets through
 *    the wire against the unsplit path. */
#pragma once
#include <glib.h>
#include "avq-engine.h"
#include "avq-image.h"
#include "avq-model.h"

G_BEGIN_DECLS

typedef struct _AvqSplitExtractor AvqSplitExtractor;

/* Loads the vision layers before `layer`; fails when layer is outside
 * 0 .. (layers LLaVA runs) - 1. */
AvqSplitExtractor *avq_split_extractor_new (const AvqModel *model, int layer,
                                            GError **error);
void avq_split_extractor_free (AvqSplitExtractor *extractor);
int avq_split_extractor_tokens (const AvqSplitExtractor *extractor);
int avq_split_extractor_dim (const AvqSplitExtractor *extractor);
/* z [tokens, dim] = LN1 of `layer` on the image's residual stream. */
gboolean avq_split_extractor_run (AvqSplitExtractor *extractor,
                                  const AvqImage *image, AvqPreprocessMode mode,
                                  float *z, GError **error);

/* Writes an AVQ file with `codebook` [k, dim] (F32), identity DLPs (zero
 * weights and biases, gamma 0, ready for fine-tuning) and the metadata.
 * k must be a power of two; side_bits is 0 for derive. */
gboolean avq_codebook_write (const char *path, const float *codebook, guint k,
                             guint dim, int layer, AvqResidualMode residual,
                             guint side_bits, GError **error);

typedef struct {
  double cosine;     /* mean over feature tokens of cos(split, unsplit) */
  double rel_error;  /* ||split - unsplit|| / ||unsplit|| */
  double quant_mse;  /* mean over tokens and dims of (u - e_i)^2 at the split */
  gsize bytes;       /* serialised frame size */
} AvqFidelity;

typedef struct _AvqFidelityMeter AvqFidelityMeter;
/* `engine` must have an AVQ file; the meter borrows it. */
AvqFidelityMeter *avq_fidelity_meter_new (AvqEngine *engine, const char *avq_path,
                                          GError **error);
void avq_fidelity_meter_free (AvqFidelityMeter *meter);
gboolean avq_fidelity_measure (AvqFidelityMeter *meter, const AvqImage *image,
                               AvqPreprocessMode mode, AvqFidelity *out,
                               GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqSplitExtractor, avq_split_extractor_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqFidelityMeter, avq_fidelity_meter_free)

G_END_DECLS
