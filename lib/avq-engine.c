#include "avq-engine.h"
#include <cblas.h>
#include <string.h>
#include "avq-build-config.h"
#include "avq-error.h"
#include "avq-quantizer.h"
#include "avq-vision.h"
#if AVQ_HAVE_CUDA
#include "cuda/avq-cuda.h"
#endif

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
  AvqDevice device; /* CPU or CUDA */
  char *device_description;
#if AVQ_HAVE_CUDA
  /* With CUDA the tower above holds the geometry and embeddings only; the
   * weights live on the GPU. */
  AvqCudaVision *cuda;
#endif
};

gboolean
avq_device_from_string (const char *name, AvqDevice *device)
{
  if (name == NULL)
    return FALSE;
  if (g_ascii_strcasecmp (name, "auto") == 0)
    *device = AVQ_DEVICE_AUTO;
  else if (g_ascii_strcasecmp (name, "cpu") == 0)
    *device = AVQ_DEVICE_CPU;
  else if (g_ascii_strcasecmp (name, "cuda") == 0)
    *device = AVQ_DEVICE_CUDA;
  else
    return FALSE;
  return TRUE;
}

const char *
avq_device_to_string (AvqDevice device)
{
  switch (device) {
  case AVQ_DEVICE_AUTO:
    return "auto";
  case AVQ_DEVICE_CPU:
    return "cpu";
  case AVQ_DEVICE_CUDA:
    return "cuda";
  }
  return "unknown";
}

gboolean
avq_cuda_available (GError **error)
{
#if AVQ_HAVE_CUDA
  return avq_cuda_probe (error);
#else
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE,
               "CUDA: this build of gst-avq has no CUDA backend (it was "
               "configured without nvcc or with -Dcuda=disabled)");
  return FALSE;
#endif
}

gboolean
avq_device_resolve (AvqDevice requested, AvqDevice *resolved, GError **error)
{
  AvqDevice want = requested;
  const char *env = NULL;
  if (want == AVQ_DEVICE_AUTO) {
    env = g_getenv ("AVQ_DEVICE");
    if (env != NULL && *env != '\0' && !avq_device_from_string (env, &want)) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "AVQ_DEVICE=%s: not auto, cpu or cuda", env);
      return FALSE;
    }
  }
  switch (want) {
  case AVQ_DEVICE_CPU:
    *resolved = AVQ_DEVICE_CPU;
    return TRUE;
  case AVQ_DEVICE_CUDA:
    if (!avq_cuda_available (error)) {
      g_prefix_error (error, "device cuda%s requested but unavailable: ",
                      requested == AVQ_DEVICE_AUTO ? " (AVQ_DEVICE)" : "");
      return FALSE;
    }
    *resolved = AVQ_DEVICE_CUDA;
    return TRUE;
  case AVQ_DEVICE_AUTO:
  default:
    *resolved = avq_cuda_available (NULL) ? AVQ_DEVICE_CUDA : AVQ_DEVICE_CPU;
    return TRUE;
  }
}

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
#if AVQ_HAVE_CUDA
  avq_cuda_vision_free (e->cuda);
#endif
  avq_model_free (e->model);
  g_free (e->device_description);
  g_free (e->pixels);
  g_free (e->x);
  g_free (e->zhat);
  g_free (e->selected);
  g_free (e->proj_tmp);
  g_free (e);
}

#if AVQ_HAVE_CUDA
/* Sets the engine up on the GPU: a CPU tower holding only the geometry and
 * embeddings (no layers), the weights uploaded to the device. When the
 * device was chosen by AUTO and the setup fails (out of device memory, say),
 * the engine falls back to the CPU with a warning; a CUDA request (the option
 * or AVQ_DEVICE=cuda) fails. */
static gboolean
cuda_init (AvqEngine *e, const AvqEngineOptions *opt, int first_layers,
           GError **error)
{
  g_autoptr (GError) local = NULL;
  e->tower = avq_vision_tower_new (e->model, 0, &local);
  if (e->tower != NULL)
    e->cuda = avq_cuda_vision_new (e->model, e->tower, e->quantizer,
                                   first_layers, -1, &local);
  if (e->cuda == NULL) {
    g_clear_pointer (&e->tower, avq_vision_tower_free);
    /* CUDA demanded explicitly or through AVQ_DEVICE: no fallback. */
    const char *env = g_getenv ("AVQ_DEVICE");
    if (opt->device == AVQ_DEVICE_CUDA ||
        (opt->device == AVQ_DEVICE_AUTO && env != NULL &&
         g_ascii_strcasecmp (env, "cuda") == 0)) {
      g_propagate_error (error, g_steal_pointer (&local));
      return FALSE;
    }
    g_warning ("%s: CUDA set-up failed, running on the CPU: %s",
               opt->model_dir, local->message);
    return TRUE;
  }
  e->device = AVQ_DEVICE_CUDA;
  e->device_description = g_strdup_printf (
      "cuda: %s, %.1f MiB of weights uploaded in %.1f ms",
      avq_cuda_vision_device_name (e->cuda),
      avq_cuda_vision_weight_bytes (e->cuda) / (1024.0 * 1024.0),
      avq_cuda_vision_upload_ms (e->cuda));
  g_debug ("%s", e->device_description);
  return TRUE;
}
#endif

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

  /* Before the model is mapped: an unavailable device fails at once. */
  AvqDevice device;
  if (!avq_device_resolve (opt->device, &device, error))
    return NULL;

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
  e->device = AVQ_DEVICE_CPU;
#if AVQ_HAVE_CUDA
  if (device == AVQ_DEVICE_CUDA && !cuda_init (e, opt, first_layers, error))
    return NULL;
#endif
  if (e->device == AVQ_DEVICE_CPU) {
    e->tower = avq_vision_tower_new (e->model, first_layers, error);
    if (e->tower == NULL)
      return NULL;
    e->device_description = g_strdup ("cpu");
  }

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

  e->pixels = g_new (float, (gsize) e->tower->channels * e->tower->image_size
                                * e->tower->image_size);
  if (e->device == AVQ_DEVICE_CUDA)
    return g_steal_pointer (&e);

  const gsize T = e->tower->tokens, D = e->tower->hidden;
  const gsize F = avq_vision_feature_tokens (e->tower);
  e->vscratch = avq_vision_scratch_new (e->tower);
  if (e->quantizer)
    e->qscratch = avq_quantizer_scratch_new (e->quantizer);
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

AvqDevice
avq_engine_device (const AvqEngine *e)
{
  return e->device;
}

const char *
avq_engine_device_description (const AvqEngine *e)
{
  return e->device_description;
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
#if AVQ_HAVE_CUDA
  if (e->cuda != NULL) {
    const AvqQuantizer *q = e->quantizer;
    g_autoptr (AvqFrame) frame = avq_frame_new (q->tokens, q->index_bits,
                                                q->side_bits, q->codebook_id);
    if (!avq_cuda_vision_encode (e->cuda, pixel_values, frame, NULL, error))
      return NULL;
    return g_steal_pointer (&frame);
  }
#endif
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
#if AVQ_HAVE_CUDA
  if (e->cuda != NULL)
    return avq_quantizer_check_frame (e->quantizer, frame, error) &&
           avq_cuda_vision_ensure_full (e->cuda, e->model, error) &&
           avq_cuda_vision_decode (e->cuda, frame, features, error);
#endif
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
#if AVQ_HAVE_CUDA
  if (e->cuda != NULL)
    return avq_cuda_vision_ensure_full (e->cuda, e->model, error) &&
           avq_cuda_vision_features (e->cuda, pixel_values, features, error);
#endif
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

/* ---- batches ---- */

/* The checks every batch entry point makes before running anything: a
 * non-empty batch, the input array and every input in it, and somewhere to
 * put the result. `what` names an input ("pixel values", "frame"). */
static gboolean
check_batch (const void *const *inputs, guint n, const void *out,
             const char *what, GError **error)
{
  if (n == 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "empty batch (n = 0)");
    return FALSE;
  }
  if (inputs == NULL || out == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "batch of %u: %s", n,
                 inputs == NULL ? "no input array" : "no output");
    return FALSE;
  }
  for (guint i = 0; i < n; i++)
    if (inputs[i] == NULL) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "batch input %u of %u: no %s (NULL)", i, n, what);
      return FALSE;
    }
  return TRUE;
}

gboolean
avq_engine_encode_pixels_batch (AvqEngine *e, const float *const *pixel_values,
                                guint n, AvqFrame **frames, GError **error)
{
  if (frames != NULL)
    for (guint i = 0; i < n; i++)
      frames[i] = NULL;
  if (!check_batch ((const void *const *) pixel_values, n, frames,
                    "pixel values", error))
    return FALSE;
  if (e->quantizer == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "encoding needs an AVQ file; none was loaded");
    return FALSE;
  }
#if AVQ_HAVE_CUDA
  if (e->cuda != NULL) {
    const AvqQuantizer *q = e->quantizer;
    for (guint i = 0; i < n; i++)
      frames[i] = avq_frame_new (q->tokens, q->index_bits, q->side_bits,
                                 q->codebook_id);
    if (avq_cuda_vision_encode_batch (e->cuda, pixel_values, n, frames, NULL,
                                      error))
      return TRUE;
    for (guint i = 0; i < n; i++)
      g_clear_pointer (&frames[i], avq_frame_free);
    return FALSE;
  }
#endif
  for (guint i = 0; i < n; i++) {
    frames[i] = avq_engine_encode_pixels (e, pixel_values[i], error);
    if (frames[i] == NULL) {
      g_prefix_error (error, "batch input %u of %u: ", i, n);
      for (guint j = 0; j < i; j++)
        g_clear_pointer (&frames[j], avq_frame_free);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
avq_engine_decode_frames (AvqEngine *e, const AvqFrame *const *frames,
                          guint n, float *features, GError **error)
{
  if (!check_batch ((const void *const *) frames, n, features, "frame", error))
    return FALSE;
  if (e->quantizer == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "decoding needs an AVQ file; none was loaded");
    return FALSE;
  }
  /* Every frame is checked before any is decoded: a bad one anywhere in the
   * batch fails the call with nothing written. */
  for (guint i = 0; i < n; i++)
    if (!avq_quantizer_check_frame (e->quantizer, frames[i], error)) {
      g_prefix_error (error, "batch input %u of %u: ", i, n);
      return FALSE;
    }
#if AVQ_HAVE_CUDA
  if (e->cuda != NULL)
    return avq_cuda_vision_ensure_full (e->cuda, e->model, error) &&
           avq_cuda_vision_decode_batch (e->cuda, frames, n, features, error);
#endif
  const gsize per = (gsize) avq_engine_feature_tokens (e) *
                    avq_engine_feature_dim (e);
  for (guint i = 0; i < n; i++)
    if (!avq_engine_decode_frame (e, frames[i], features + i * per, error)) {
      g_prefix_error (error, "batch input %u of %u: ", i, n);
      return FALSE;
    }
  return TRUE;
}

gboolean
avq_engine_features_from_pixels_batch (AvqEngine *e,
                                       const float *const *pixel_values,
                                       guint n, float *features,
                                       GError **error)
{
  if (!check_batch ((const void *const *) pixel_values, n, features,
                    "pixel values", error))
    return FALSE;
#if AVQ_HAVE_CUDA
  if (e->cuda != NULL)
    return avq_cuda_vision_ensure_full (e->cuda, e->model, error) &&
           avq_cuda_vision_features_batch (e->cuda, pixel_values, n, features,
                                           error);
#endif
  const gsize per = (gsize) avq_engine_feature_tokens (e) *
                    avq_engine_feature_dim (e);
  for (guint i = 0; i < n; i++)
    if (!avq_engine_features_from_pixels (e, pixel_values[i],
                                          features + i * per, error)) {
      g_prefix_error (error, "batch input %u of %u: ", i, n);
      return FALSE;
    }
  return TRUE;
}
