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

/* Where the vision half (tower, quantiser, projector) runs. AUTO (the zero
 * value) picks CUDA when this build has the CUDA backend and the runtime
 * finds a device, else the CPU; the environment variable AVQ_DEVICE
 * (auto, cpu or cuda) overrides what AUTO means, so that a test suite or a
 * deployment can pin it without new options. An explicit CPU or CUDA is
 * never overridden; CUDA when it is unavailable is an error, never a silent
 * fallback. */
typedef enum {
  AVQ_DEVICE_AUTO = 0,
  AVQ_DEVICE_CPU,
  AVQ_DEVICE_CUDA,
} AvqDevice;

/* "auto", "cpu", "cuda" (case-insensitive); FALSE for anything else. */
gboolean avq_device_from_string (const char *name, AvqDevice *device);
const char *avq_device_to_string (AvqDevice device);

/* TRUE when this build has the CUDA backend and the CUDA runtime finds a
 * device; otherwise FALSE with the reason (AVQ_ERROR_DEVICE): not built with
 * CUDA, no driver, no device. */
gboolean avq_cuda_available (GError **error);

/* The device `requested` resolves to (CPU or CUDA), AUTO by the rules above.
 * FALSE with a GError when CUDA is demanded (explicitly or by AVQ_DEVICE)
 * but unavailable, or AVQ_DEVICE holds an unknown name. */
gboolean avq_device_resolve (AvqDevice requested, AvqDevice *resolved,
                             GError **error);

typedef struct {
  const char *model_dir;      /* required */
  const char *avq_path;       /* NULL: unsplit path only */
  int threads;                /* 0: BLAS default */
  gboolean load_language_model; /* reserved for the answer path; FALSE loads vision + projector only */
  AvqDevice device;           /* AVQ_DEVICE_AUTO (0) by default */
} AvqEngineOptions;

AvqEngine *avq_engine_new (const AvqEngineOptions *options, GError **error);
void avq_engine_free (AvqEngine *engine);

const AvqModel *avq_engine_get_model (const AvqEngine *engine);
/* The device the engine runs on (CPU or CUDA, never AUTO), and a line for
 * logs: "cpu" or "cuda: <GPU>, <N> MiB of weights uploaded in <T> ms". */
AvqDevice avq_engine_device (const AvqEngine *engine);
const char *avq_engine_device_description (const AvqEngine *engine);
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

/* ---- batches ----
 *
 * The same three paths for n inputs at once (a cloud serving several
 * cameras, an edge with several sensors). On CUDA the n inputs run as one
 * forward of n * 577 rows (GEMMs n times taller, attention per input), the
 * pass captured once per n as a CUDA graph; on the CPU they run one after
 * another. Results equal the single-input calls' (on CUDA up to the GEMMs'
 * summation order for the different row count). The batch size is not
 * limited by the API: device buffers grow to the largest n seen. On error
 * nothing is returned (frames[] all NULL). */
gboolean avq_engine_encode_pixels_batch (AvqEngine *engine,
                                         const float *const *pixel_values,
                                         guint n, AvqFrame **frames,
                                         GError **error);
/* features: n * feature_tokens * feature_dim floats, input i at offset
 * i * feature_tokens * feature_dim. */
gboolean avq_engine_decode_frames (AvqEngine *engine,
                                   const AvqFrame *const *frames, guint n,
                                   float *features, GError **error);
gboolean avq_engine_features_from_pixels_batch (AvqEngine *engine,
                                                const float *const *pixel_values,
                                                guint n, float *features,
                                                GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqEngine, avq_engine_free)

G_END_DECLS
