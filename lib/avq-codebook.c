#include "avq-codebook.h"
#include "avq-error.h"
#include "avq-frame.h"
#include "avq-kmeans.h"
#include "avq-ops.h"
#include "avq-quantizer.h"
#include "avq-safetensors.h"
#include "avq-vision.h"
#include <math.h>
#include <string.h>

struct _AvqSplitExtractor {
  const AvqModel *model;
  int layer;
  AvqVisionTower *tower;
  AvqVisionScratch *scratch;
  float *pixels;   /* [C, S, S] */
  float *x;        /* [T, D] */
};

void
avq_split_extractor_free (AvqSplitExtractor *fx)
{
  if (fx == NULL)
    return;
  avq_vision_scratch_free (fx->scratch);
  avq_vision_tower_free (fx->tower);
  g_free (fx->pixels);
  g_free (fx->x);
  g_free (fx);
}

AvqSplitExtractor *
avq_split_extractor_new (const AvqModel *model, int layer, GError **error)
{
  int layers_run = avq_llava_config_vision_layers_run (&model->config);
  if (layer < 0 || layer >= layers_run) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "split layer %d is out of range: %s runs vision layers 0..%d",
                 layer, model->dir, layers_run - 1);
    return NULL;
  }
  g_autoptr (AvqSplitExtractor) fx = g_new0 (AvqSplitExtractor, 1);
  fx->model = model;
  fx->layer = layer;
  /* Layer L itself is needed for its layer_norm1. */
  fx->tower = avq_vision_tower_new (model, layer + 1, error);
  if (fx->tower == NULL)
    return NULL;
  const AvqPreprocessConfig *pp = &model->preprocess;
  if (pp->crop_height != fx->tower->image_size || pp->crop_width != fx->tower->image_size) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "%s: preprocessing crops %dx%d but the vision tower takes %dx%d images",
                 model->dir, pp->crop_width, pp->crop_height, fx->tower->image_size,
                 fx->tower->image_size);
    return NULL;
  }
  fx->scratch = avq_vision_scratch_new (fx->tower);
  fx->pixels = g_new (float, (gsize) fx->tower->channels * fx->tower->image_size *
                                 fx->tower->image_size);
  fx->x = g_new (float, (gsize) fx->tower->tokens * fx->tower->hidden);
  return g_steal_pointer (&fx);
}

int
avq_split_extractor_tokens (const AvqSplitExtractor *fx)
{
  return fx->tower->tokens;
}

int
avq_split_extractor_dim (const AvqSplitExtractor *fx)
{
  return fx->tower->hidden;
}

gboolean
avq_split_extractor_run (AvqSplitExtractor *fx, const AvqImage *image,
                         AvqPreprocessMode mode, float *z, GError **error)
{
  if (!avq_preprocess (image, &fx->model->preprocess, mode, fx->pixels, error))
    return FALSE;
  avq_vision_embed (fx->tower, fx->pixels, fx->x, fx->scratch);
  avq_vision_run_layers (fx->tower, 0, fx->layer, fx->x, fx->scratch);
  avq_vision_layer_ln1 (fx->tower, fx->layer, fx->x, z, NULL, NULL);
  return TRUE;
}

gboolean
avq_codebook_write (const char *path, const float *codebook, guint k, guint dim,
                    int layer, AvqResidualMode residual, guint side_bits,
                    GError **error)
{
  guint index_bits = 0;
  if (!avq_kmeans_check_codebook_size (k, &index_bits, error))
    return FALSE;
  if (residual == AVQ_RESIDUAL_DERIVE && (layer != 0 || side_bits != 0)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "residual \"derive\" needs layer 0 and no side bits (layer %d, side bits %u)",
                 layer, side_bits);
    return FALSE;
  }
  if (residual == AVQ_RESIDUAL_SIDE && (side_bits < 1 || side_bits > 16)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "residual \"side\" needs 1..16 side bits, not %u", side_bits);
    return FALSE;
  }
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  const gint64 cb_shape[2] = { k, dim }, sq_shape[2] = { dim, dim }, vec_shape[1] = { dim };
  const gint64 one[1] = { 1 };
  g_autofree float *zeros = g_new0 (float, (gsize) dim * dim);
  const float gamma = 0.0f;

  avq_safetensors_writer_add (w, "avq.codebook", AVQ_DTYPE_F32, 2, cb_shape, codebook);
  /* Identity DLPs: u = z + tanh(0) (W z + b) = z, what k-means clustered. */
  avq_safetensors_writer_add (w, "avq.dlp_in.weight", AVQ_DTYPE_F32, 2, sq_shape, zeros);
  avq_safetensors_writer_add (w, "avq.dlp_out.weight", AVQ_DTYPE_F32, 2, sq_shape, zeros);
  avq_safetensors_writer_add (w, "avq.dlp_in.bias", AVQ_DTYPE_F32, 1, vec_shape, zeros);
  avq_safetensors_writer_add (w, "avq.dlp_out.bias", AVQ_DTYPE_F32, 1, vec_shape, zeros);
  avq_safetensors_writer_add (w, "avq.dlp_in.gamma", AVQ_DTYPE_F32, 1, one, &gamma);
  avq_safetensors_writer_add (w, "avq.dlp_out.gamma", AVQ_DTYPE_F32, 1, one, &gamma);

  g_autofree char *layer_s = g_strdup_printf ("%d", layer);
  g_autofree char *side_s = g_strdup_printf ("%u", side_bits);
  g_autofree char *bits_s = g_strdup_printf ("%u", index_bits);
  g_autofree char *k_s = g_strdup_printf ("%u", k);
  avq_safetensors_writer_set_metadata (w, "avq.format", "1");
  avq_safetensors_writer_set_metadata (w, "avq.layer", layer_s);
  avq_safetensors_writer_set_metadata (w, "avq.site", "ln1");
  avq_safetensors_writer_set_metadata (w, "avq.residual",
                                       residual == AVQ_RESIDUAL_DERIVE ? "derive" : "side");
  avq_safetensors_writer_set_metadata (w, "avq.side_bits", side_s);
  avq_safetensors_writer_set_metadata (w, "avq.index_bits", bits_s);
  avq_safetensors_writer_set_metadata (w, "avq.codebook_size", k_s);
  avq_safetensors_writer_set_metadata (w, "avq.trainer", "avq train-codebook (k-means)");
  return avq_safetensors_writer_save (w, path, error);
}

struct _AvqFidelityMeter {
  AvqEngine *engine;
  AvqQuantizer *quantizer;
  AvqSplitExtractor *extractor;
  float *z, *u, *ref, *got;
};

void
avq_fidelity_meter_free (AvqFidelityMeter *m)
{
  if (m == NULL)
    return;
  avq_quantizer_free (m->quantizer);
  avq_split_extractor_free (m->extractor);
  g_free (m->z);
  g_free (m->u);
  g_free (m->ref);
  g_free (m->got);
  g_free (m);
}

AvqFidelityMeter *
avq_fidelity_meter_new (AvqEngine *engine, const char *avq_path, GError **error)
{
  g_return_val_if_fail (avq_engine_has_avq (engine), NULL);
  const AvqModel *model = avq_engine_get_model (engine);
  g_autoptr (AvqFidelityMeter) m = g_new0 (AvqFidelityMeter, 1);
  m->engine = engine;
  m->quantizer = avq_quantizer_load (avq_path, model, error);
  if (m->quantizer == NULL)
    return NULL;
  m->extractor = avq_split_extractor_new (model, m->quantizer->layer, error);
  if (m->extractor == NULL)
    return NULL;
  gsize td = (gsize) m->quantizer->tokens * m->quantizer->dim;
  gsize features = (gsize) avq_engine_feature_tokens (engine) * avq_engine_feature_dim (engine);
  m->z = g_new (float, td);
  m->u = g_new (float, td);
  m->ref = g_new (float, features);
  m->got = g_new (float, features);
  return g_steal_pointer (&m);
}

gboolean
avq_fidelity_measure (AvqFidelityMeter *m, const AvqImage *image,
                      AvqPreprocessMode mode, AvqFidelity *out, GError **error)
{
  AvqEngine *e = m->engine;
  const AvqQuantizer *q = m->quantizer;

  if (!avq_engine_features_from_image (e, image, mode, m->ref, error))
    return FALSE;
  g_autoptr (AvqFrame) frame = avq_engine_encode_image (e, image, mode, error);
  if (frame == NULL)
    return FALSE;
  /* Through the wire format, as a receiver sees it. */
  gsize length = 0;
  g_autofree guint8 *bytes = avq_frame_serialize (frame, &length);
  g_autoptr (AvqFrame) received = avq_frame_parse (bytes, length, error);
  if (received == NULL || !avq_engine_decode_frame (e, received, m->got, error))
    return FALSE;

  const int rows = avq_engine_feature_tokens (e), cols = avq_engine_feature_dim (e);
  double diff2 = 0, ref2 = 0, cos_sum = 0;
  for (int t = 0; t < rows; t++) {
    const float *a = m->got + (gsize) t * cols, *b = m->ref + (gsize) t * cols;
    double ab = 0, aa = 0, bb = 0;
    for (int c = 0; c < cols; c++) {
      ab += (double) a[c] * b[c];
      aa += (double) a[c] * a[c];
      bb += (double) b[c] * b[c];
      diff2 += ((double) a[c] - b[c]) * ((double) a[c] - b[c]);
    }
    ref2 += bb;
    cos_sum += (aa > 0 && bb > 0) ? ab / sqrt (aa * bb) : (aa == bb ? 1.0 : 0.0);
  }

  /* Quantisation error where it happens: u (the DLP-in output) against the
   * codeword the frame carries. */
  if (!avq_split_extractor_run (m->extractor, image, mode, m->z, error))
    return FALSE;
  const int T = q->tokens, D = q->dim;
  avq_linear (m->z, T, D, q->in_w, q->in_b, D, m->u);
  double qerr = 0;
  for (int t = 0; t < T; t++) {
    const float *z = m->z + (gsize) t * D;
    float *u = m->u + (gsize) t * D;
    const float *code = q->codebook + (gsize) frame->indices[t] * D;
    for (int c = 0; c < D; c++) {
      double uc = z[c] + (double) q->in_scale * u[c];
      qerr += (uc - code[c]) * (uc - code[c]);
    }
  }

  out->cosine = cos_sum / rows;
  out->rel_error = ref2 > 0 ? sqrt (diff2 / ref2) : sqrt (diff2);
  out->quant_mse = qerr / ((double) T * D);
  out->bytes = length;
  return TRUE;
}
