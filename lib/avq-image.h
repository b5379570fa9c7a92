/* Images as the engine sees them (packed 8-bit RGB) and the CLIP
 * preprocessing that turns one into pixel values (AVQ-SPEC section 3). */
#pragma once
#include <glib.h>
#include "avq-config.h"

G_BEGIN_DECLS

/* Largest width or height accepted anywhere (files, packed frames,
 * preprocessing sizes). */
#define AVQ_IMAGE_MAX_DIM 16384

typedef struct {
  int width;
  int height;
  guint8 *rgb;   /* width * height * 3, rows packed */
} AvqImage;

typedef enum {
  AVQ_PIXEL_RGB,
  AVQ_PIXEL_RGBA,
  AVQ_PIXEL_RGBX,
  AVQ_PIXEL_BGR,
  AVQ_PIXEL_BGRA,
  AVQ_PIXEL_BGRX,
} AvqPixelFormat;

typedef enum {
  AVQ_PREPROCESS_CROP,  /* HF CLIPImageProcessor: resize shorter side, center crop */
  AVQ_PREPROCESS_PAD,   /* original LLaVA: pad to a square with the mean colour, then resize */
} AvqPreprocessMode;

/* Zero-filled; NULL if a size is outside 1..AVQ_IMAGE_MAX_DIM or memory
 * runs out. */
AvqImage *avq_image_new (int width, int height);
void avq_image_free (AvqImage *image);
/* PNG or JPEG (by content, not by name). Alpha is dropped, grey expanded. */
AvqImage *avq_image_load (const char *path, GError **error);
/* From packed pixels with a row stride in bytes. */
AvqImage *avq_image_from_packed (const guint8 *data, int width, int height,
                                 int stride, AvqPixelFormat format,
                                 GError **error);

gboolean avq_preprocess_mode_from_string (const char *s, AvqPreprocessMode *mode);
const char *avq_preprocess_mode_to_string (AvqPreprocessMode mode);

/* Writes [3, crop_height, crop_width] float pixel values (channel-major). */
gboolean avq_preprocess (const AvqImage *image, const AvqPreprocessConfig *pp,
                         AvqPreprocessMode mode, float *pixel_values,
                         GError **error);

/* torchvision-compatible antialiased bicubic resize of packed uint8 RGB
 * (exposed for tests). */
AvqImage *avq_image_resize_bicubic (const AvqImage *image, int width, int height);
/* Tests only: use the portable kernel instead of the SIMD one (results are
 * identical; this lets the test prove it). Not thread-safe. */
void avq_image_resize_force_scalar (gboolean scalar);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqImage, avq_image_free)

G_END_DECLS
