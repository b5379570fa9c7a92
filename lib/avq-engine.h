/* The engine: what the CLI and the GStreamer elements call.
 *
 * An AvqEngine holds one loaded model (and optionally one AVQ file) and runs
 *  - the edge half: image -> AVQ frame,
 *  - the cloud half: AVQ frame -> projected image features [576, text hidden],
 *  - the unsplit reference path: image -> projected image features.
 * An engine is not thread-safe: use one per streaming thread. */
#pragma once
#include <glib.h>
#include "avq-frame.h"
#include "avq-image.h"
#include "avq-model.h"

G_BEGIN_DECLS

typedef enum {
  AVQ_RESIDUAL_DERIVE,
  AVQ_RESIDUAL_SIDE,
} AvqResidualMode;

typedef struct _AvqEngine AvqEngine;

typedef struct {
  const char *model_dir;      /* required */
  const char *avq_path;       /* NULL: unsplit path only */
  int threads;                /* 0: BLAS default */
  gboolean load_language_model; /* reserved for the answer path; FALSE loads vision + projector only */
} AvqEngineOptions;

AvqEngine *avq_engine_new (const AvqEngineOptions *options, GError **error);
void avq_engine_free (AvqEngine *engine);

const AvqModel *avq_engine_get_model (const AvqEngine *engine);
gboolean avq_engine_has_avq (const AvqEngine *engine);

/* Properties of the loaded AVQ file (only valid when has_avq). */
int avq_engine_split_layer (const AvqEngine *engine);
AvqResidualMode avq_engine_residual (const AvqEngine *engine);
guint avq_engine_index_bits (const AvqEngine *engine);
guint avq_engine_side_bits (const AvqEngine *engine);
const guint8 *avq_engine_codebook_id (const AvqEngine *engine);
guint avq_engine_tokens (const AvqEngine *engine);            /* 577 */
guint avq_engine_feature_tokens (const AvqEngine *engine);    /* 576 */
guint avq_engine_feature_dim (const AvqEngine *engine);       /* text hidden size */

/* Edge half from an image. */
AvqFrame *avq_engine_encode_image (AvqEngine *engine, const AvqImage *image,
                                   AvqPreprocessMode mode, GError **error);
/* Edge half from pixel values [3, S, S]. */
AvqFrame *avq_engine_encode_pixels (AvqEngine *engine, const float *pixel_values,
                                    GError **error);

/* Cloud half: `features` receives feature_tokens * feature_dim floats. The
 * frame's codebook id, token count and bit widths must match the AVQ file. */
gboolean avq_engine_decode_frame (AvqEngine *engine, const AvqFrame *frame,
                                  float *features, GError **error);

/* Unsplit reference path. */
gboolean avq_engine_features_from_image (AvqEngine *engine, const AvqImage *image,
                                         AvqPreprocessMode mode, float *features,
                                         GError **error);
gboolean avq_engine_features_from_pixels (AvqEngine *engine,
                                          const float *pixel_values,
                                          float *features, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqEngine, avq_engine_free)

G_END_DECLS
