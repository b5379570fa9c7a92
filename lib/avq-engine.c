#include "avq-engine.h"
#include <cblas.h>
#include <string.h>
#include "avq-error.h"
#include "avq-quantizer.h"
#include "avq-vision.h"

struct _AvqEngine {
  AvqModel *model;
  AvqVisionTower *tower;
  AvqProjector *projector;       /* NULL until the first cloud-side call */
  AvqQuantizer *quantizer;       /* NULL without an AVQ file */
  AvqVisionScratch *vscratch;
  AvqQuantizerScratch *qscratch;
  /* Per-frame buffers, allocated once: frames arrive at video rate and
   * the tower's activations are megabytes each. */
  float *pixels;    /* [C, S, S] */
  float *x;         /* [T, D] residual stream */
  float *zhat;      /* [T, D] */
  float *selected;  /* [feature tokens, D] */
  float *proj_tmp;  /* [feature tokens, text hidden] */
};

void
avq_engine_free (AvqEngine *e)
{
  if (e == NULL)
    return;
  avq_vision_scratch_free (e->vscratch);
  avq_quantizer_scratch_free (e->qscratch);
  avq_quantizer_free (e->quantizer);
  avq_projector_free (e->projector);
  avq_vision_tower_free (e->tower);
  avq_model_free (e->model);
  g_free (e->pixels);
  g_free (e->x);
  g_free (e->zhat);
  g_free (e->selected);
  g_free (e->proj_tmp);
  g_free (e);
}

AvqEngine *
avq_engine_new (const AvqEngineOptions *opt, GError **error)
{
  g_return_val_if_fail (opt != NULL, NULL);
  if (opt->model_dir == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "no model directory given");
    return NULL;
  }
  if (opt->threads < 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "threads must be 0 (BLAS default) or positive, not %d",
                 opt->threads);
    return NULL;
  }
  /* OpenBLAS has one process-wide pool: the last engine created wins. */
  if (opt->threads > 0)
    openblas_set_num_threads (opt->threads);

  g_autoptr (AvqEngine) e = g_new0 (AvqEngine, 1);
  e->model = avq_model_open (opt->model_dir, error);
  if (e->model == NULL)
    return NULL;

  /* Every layer LLaVA runs and the projector are checked now, so a broken
   * model fails at startup; but only the layers before the split are
   * converted to fp32 up front. An edge device that never decodes never
   * holds the rest of the tower in memory. */
  if (!avq_vision_tower_check (e->model, -1, error) ||
      !avq_projector_check (e->model, error))
    return NULL;

  int first_layers = -1;
  if (opt->avq_path != NULL) {
    e->quantizer = avq_quantizer_load (opt->avq_path, e->model, error);
    if (e->quantizer == NULL)
      return NULL;
    first_layers = e->quantizer->layer;
  }
  e->tower = avq_vision_tower_new (e->model, first_layers, error);
  if (e->tower == NULL)
    return NULL;

  if (e->tower->channels != 3) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: vision tower takes %d channels; images give 3 (RGB)",
                 opt->model_dir, e->tower->channels);
    return NULL;
  }
  const AvqPreprocessConfig *pp = &e->model->preprocess;
  if (pp->crop_height != e->tower->image_size ||
      pp->crop_width != e->tower->image_size) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "%s: preprocessor crop %dx%d does not match the vision "
                 "tower's %d px input", opt->model_dir, pp->crop_width,
                 pp->crop_height, e->tower->image_size);
    return NULL;
  }

  const gsize T = e->tower->tokens, D = e->tower->hidden;
  const gsize F = avq_vision_feature_tokens (e->tower);
  e->vscratch = avq_vision_scratch_new (e->tower);
  if (e->quantizer)
    e->qscratch = avq_quantizer_scratch_new (e->quantizer);
  e->pixels = g_new (float, (gsize) e->tower->channels * e->tower->image_size
                                * e->tower->image_size);
  e->x = g_new (float, T * D);
  e->zhat = g_new (float, T * D);
  e->selected = g_new (float, F * D);
  e->proj_tmp = g_new (float, F * (gsize) e->model->config.text.hidden_size);
  return g_steal_pointer (&e);
}

/* Loads what the cloud half and the unsplit path need beyond the edge's
 * layers. */
static gboolean
ensure_full (AvqEngine *e, GError **error)
{
  if (!avq_vision_tower_extend (e->tower, e->model, e->tower->layers_run, error))
    return FALSE;
  if (e->projector == NULL) {
    e->projector = avq_projector_new (e->model, error);
    if (e->projector == NULL)
      return FALSE;
  }
  return TRUE;
}

const AvqModel *
avq_engine_get_model (const AvqEngine *e)
{
  return e->model;
}

gboolean
avq_engine_has_avq (const AvqEngine *e)
{
  return e->quantizer != NULL;
}

int
avq_engine_split_layer (const AvqEngine *e)
{
  g_return_val_if_fail (e->quantizer != NULL, -1);
  return e->quantizer->layer;
}

AvqResidualMode
avq_engine_residual (const AvqEngine *e)
{
  g_return_val_if_fail (e->quantizer != NULL, AVQ_RESIDUAL_DERIVE);
  return e->quantizer->residual;
}

guint
avq_engine_index_bits (const AvqEngine *e)
{
  g_return_val_if_fail (e->quantizer != NULL, 0);
  return e->quantizer->index_bits;
}

guint
avq_engine_side_bits (const AvqEngine *e)
{
  g_return_val_if_fail (e->quantizer != NULL, 0);
  return e->quantizer->side_bits;
}

const guint8 *
avq_engine_codebook_id (const AvqEngine *e)
{
  g_return_val_if_fail (e->quantizer != NULL, NULL);
  return e->quantizer->codebook_id;
}

guint
avq_engine_tokens (const AvqEngine *e)
{
  return (guint) e->tower->tokens;
}

guint
avq_engine_feature_tokens (const AvqEngine *e)
{
  return (guint) avq_vision_feature_tokens (e->tower);
}

guint
avq_engine_feature_dim (const AvqEngine *e)
{
  return (guint) e->model->config.text.hidden_size;
}

AvqFrame *
avq_engine_encode_pixels (AvqEngine *e, const float *pixel_values,
                          GError **error)
{
  if (e->quantizer == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "encoding needs an AVQ file; none was loaded");
    return NULL;
  }
  avq_vision_embed (e->tower, pixel_values, e->x, e->vscratch);
  avq_vision_run_layers (e->tower, 0, e->quantizer->layer, e->x, e->vscratch);
  return avq_quantizer_encode (e->quantizer, e->x, e->qscratch, NULL);
}

AvqFrame *
avq_engine_encode_image (AvqEngine *e, const AvqImage *image,
                         AvqPreprocessMode mode, GError **error)
{
  if (!avq_preprocess (image, &e->model->preprocess, mode, e->pixels, error))
    return NULL;
  return avq_engine_encode_pixels (e, e->pixels, error);
}

static void
finish_features (AvqEngine *e, float *features)
{
  avq_vision_select (e->tower, e->x, e->selected);
  avq_projector_run (e->projector, e->selected,
                     avq_vision_feature_tokens (e->tower), features,
                     e->proj_tmp);
}

gboolean
avq_engine_decode_frame (AvqEngine *e, const AvqFrame *frame, float *features,
                         GError **error)
{
  if (e->quantizer == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "decoding needs an AVQ file; none was loaded");
    return FALSE;
  }
  if (!ensure_full (e, error))
    return FALSE;
  if (!avq_quantizer_decode (e->quantizer, frame, e->zhat, e->x, e->qscratch,
                             error))
    return FALSE;
  int L = e->quantizer->layer;
  avq_vision_layer_from_ln1 (e->tower, L, e->x, e->zhat, e->vscratch);
  avq_vision_run_layers (e->tower, L + 1, e->tower->layers_run, e->x,
                         e->vscratch);
  finish_features (e, features);
  return TRUE;
}

gboolean
avq_engine_features_from_pixels (AvqEngine *e, const float *pixel_values,
                                 float *features, GError **error)
{
  if (!ensure_full (e, error))
    return FALSE;
  avq_vision_embed (e->tower, pixel_values, e->x, e->vscratch);
  avq_vision_run_layers (e->tower, 0, e->tower->layers_run, e->x, e->vscratch);
  finish_features (e, features);
  return TRUE;
}

gboolean
avq_engine_features_from_image (AvqEngine *e, const AvqImage *image,
                                AvqPreprocessMode mode, float *features,
                                GError **error)
{
  if (!avq_preprocess (image, &e->model->preprocess, mode, e->pixels, error))
    return FALSE;
  return avq_engine_features_from_pixels (e, e->pixels, features, error);
}
