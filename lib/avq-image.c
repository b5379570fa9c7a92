/* Image loading (PNG, JPEG) and packed-pixel import.
 *
 * Files come from users and cameras, so every decoder error becomes a GError
 * naming the file, sizes are capped before anything is allocated, and a
 * truncated file is an error rather than a half-grey picture. Colour handling
 * follows what PIL's convert('RGB') gives the reference processor: alpha is
 * dropped (not composited), grey is replicated, 16-bit samples keep their
 * high byte, and no gamma or colour profile is applied. */
#include "avq-image.h"
#include "avq-error.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

AvqImage *
avq_image_new (int width, int height)
{
  if (width <= 0 || height <= 0 || width > AVQ_IMAGE_MAX_DIM
      || height > AVQ_IMAGE_MAX_DIM)
    return NULL;
  guint8 *rgb = g_try_malloc0 ((gsize) width * (gsize) height * 3);
  if (rgb == NULL)
    return NULL;
  AvqImage *image = g_new0 (AvqImage, 1);
  image->width = width;
  image->height = height;
  image->rgb = rgb;
  return image;
}

void
avq_image_free (AvqImage *image)
{
  if (image == NULL)
    return;
  g_free (image->rgb);
  g_free (image);
}

static AvqImage *
new_checked (const char *what, gint64 width, gint64 height, GError **error)
{
  if (width <= 0 || height <= 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: image has no pixels (%" G_GINT64_FORMAT "x%"
                 G_GINT64_FORMAT ")", what, width, height);
    return NULL;
  }
  if (width > AVQ_IMAGE_MAX_DIM || height > AVQ_IMAGE_MAX_DIM) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: image is %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
                 ", larger than the %dx%d this engine accepts", what, width,
                 height, AVQ_IMAGE_MAX_DIM, AVQ_IMAGE_MAX_DIM);
    return NULL;
  }
  AvqImage *image = avq_image_new ((int) width, (int) height);
  if (image == NULL)
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO,
                 "%s: out of memory for a %" G_GINT64_FORMAT "x%"
                 G_GINT64_FORMAT " image", what, width, height);
  return image;
}

/* ---- PNG ---------------------------------------------------------------- */

/* Everything the decoder touches lives on the heap, so nothing that changes
 * between setjmp and longjmp is an indeterminate local. */
typedef struct {
  const guint8 *data;
  gsize size;
  gsize pos;
  char message[200];
  png_structp png;
  png_infop info;
  AvqImage *image;
  png_bytep *rows;
} PngState;

static void
png_read_mem (png_structp png, png_bytep out, png_size_t n)
{
  PngState *src = png_get_io_ptr (png);
  if (n > src->size - src->pos)
    png_error (png, "file is truncated");
  memcpy (out, src->data + src->pos, n);
  src->pos += n;
}

static void
png_on_error (png_structp png, png_const_charp msg)
{
  PngState *src = png_get_error_ptr (png);
  g_strlcpy (src->message, msg ? msg : "decoder error", sizeof src->message);
  png_longjmp (png, 1);
}

static void
png_on_warning (png_structp png, png_const_charp msg)
{
  /* Warnings (bad ancillary chunks, unknown profiles) do not change the
   * pixels we use; PIL ignores them too. */
  (void) png;
  (void) msg;
}

static AvqImage *
load_png (const char *path, const guint8 *data, gsize size, GError **error)
{
  PngState *st = g_new0 (PngState, 1);
  AvqImage *result = NULL;

  st->data = data;
  st->size = size;
  st->png = png_create_read_struct (PNG_LIBPNG_VER_STRING, st, png_on_error,
                                    png_on_warning);
  if (st->png == NULL || (st->info = png_create_info_struct (st->png)) == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO,
                 "%s: cannot initialise the PNG decoder", path);
    goto out;
  }
  if (setjmp (png_jmpbuf (st->png))) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: corrupt PNG: %s",
                 path, st->message);
    avq_image_free (st->image);
    st->image = NULL;
    goto out;
  }
  png_set_read_fn (st->png, st, png_read_mem);
  /* libpng rejects larger headers itself, before any row is allocated. */
  png_set_user_limits (st->png, AVQ_IMAGE_MAX_DIM, AVQ_IMAGE_MAX_DIM);
  png_read_info (st->png, st->info);

  png_uint_32 width, height;
  int depth, colour, interlace;
  png_get_IHDR (st->png, st->info, &width, &height, &depth, &colour, &interlace,
                NULL, NULL);
  /* Deflate cannot compress better than 1032:1, so a header promising far
   * more pixels than the file could hold is refused before anything is
   * allocated for them. */
  guint64 raw = (guint64) height
      * (1 + ((guint64) width * png_get_channels (st->png, st->info) * depth + 7) / 8);
  if (raw / 1032 > size) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: corrupt PNG: %ux%u pixels cannot fit in %" G_GSIZE_FORMAT
                 " bytes (truncated?)", path, (unsigned) width, (unsigned) height,
                 size);
    goto out;
  }
  if (depth == 16)
    png_set_strip_16 (st->png);   /* high byte, as PIL does */
  if (colour == PNG_COLOR_TYPE_PALETTE)
    png_set_palette_to_rgb (st->png);
  if (colour == PNG_COLOR_TYPE_GRAY && depth < 8)
    png_set_expand_gray_1_2_4_to_8 (st->png);
  if (colour == PNG_COLOR_TYPE_GRAY || colour == PNG_COLOR_TYPE_GRAY_ALPHA)
    png_set_gray_to_rgb (st->png);
  /* Alpha, whether a channel or from tRNS (which palette expansion turns
   * into one), is dropped, not composited. */
  png_set_strip_alpha (st->png);
  png_set_interlace_handling (st->png);
  png_read_update_info (st->png, st->info);

  if (png_get_rowbytes (st->png, st->info) != (png_size_t) width * 3
      || png_get_channels (st->png, st->info) != 3) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: PNG colour type %d, depth %d did not convert to RGB",
                 path, colour, depth);
    goto out;
  }
  st->image = new_checked (path, width, height, error);
  if (st->image == NULL)
    goto out;
  st->rows = g_new (png_bytep, height);
  for (png_uint_32 y = 0; y < height; y++)
    st->rows[y] = st->image->rgb + (gsize) y * width * 3;
  png_read_image (st->png, st->rows);
  /* The end chunk is not read: a missing IEND after complete pixel data
   * is harmless, and PIL accepts it as well. */
  result = st->image;
  st->image = NULL;

out:
  if (st->png)
    png_destroy_read_struct (&st->png, st->info ? &st->info : NULL, NULL);
  g_free (st->rows);
  g_free (st);
  return result;
}

/* ---- JPEG --------------------------------------------------------------- */

typedef struct {
  struct jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
} JpegError;

static void
jpeg_on_error (j_common_ptr cinfo)
{
  JpegError *err = (JpegError *) cinfo->err;
  err->mgr.format_message (cinfo, err->message);
  longjmp (err->jump, 1);
}

static void
jpeg_on_message (j_common_ptr cinfo, int level)
{
  JpegError *err = (JpegError *) cinfo->err;
  /* libjpeg "recovers" from truncated or damaged entropy data by inventing
   * grey pixels and only warns; a question about a picture must not be
   * answered from such a guess, so those warnings are fatal. Stray bytes
   * between markers are common in camera files and harmless. */
  if (level < 0 && err->mgr.msg_code != JWRN_EXTRANEOUS_DATA)
    jpeg_on_error (cinfo);
}

typedef struct {
  struct jpeg_decompress_struct cinfo;
  JpegError err;
  AvqImage *image;
  guint8 *row;
} JpegState;

static AvqImage *
load_jpeg (const char *path, const guint8 *data, gsize size, GError **error)
{
  JpegState *st = g_new0 (JpegState, 1);
  AvqImage *result = NULL;

  st->cinfo.err = jpeg_std_error (&st->err.mgr);
  st->err.mgr.error_exit = jpeg_on_error;
  st->err.mgr.emit_message = jpeg_on_message;
  if (setjmp (st->err.jump)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: corrupt JPEG: %s",
                 path, st->err.message);
    avq_image_free (st->image);
    st->image = NULL;
    goto out;
  }
  jpeg_create_decompress (&st->cinfo);
  /* Progressive files keep every coefficient in memory; past this libjpeg
   * fails cleanly (no backing store) instead of exhausting the machine. */
  st->cinfo.mem->max_memory_to_use = 1024L * 1024 * 1024;
  if (size > G_MAXULONG)
    ERREXIT (&st->cinfo, JERR_INPUT_EMPTY);
  jpeg_mem_src (&st->cinfo, data, (unsigned long) size);
  jpeg_read_header (&st->cinfo, TRUE);

  gboolean cmyk = FALSE;
  switch (st->cinfo.jpeg_color_space) {
  case JCS_GRAYSCALE:
  case JCS_RGB:
  case JCS_YCbCr:
    st->cinfo.out_color_space = JCS_RGB;
    break;
  case JCS_CMYK:
  case JCS_YCCK:
    st->cinfo.out_color_space = JCS_CMYK;
    cmyk = TRUE;
    break;
  default:
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: JPEG colour space %d is not supported", path,
                 (int) st->cinfo.jpeg_color_space);
    goto out;
  }
  st->image = new_checked (path, st->cinfo.image_width, st->cinfo.image_height,
                           error);
  if (st->image == NULL)
    goto out;
  jpeg_start_decompress (&st->cinfo);
  if ((int) st->cinfo.output_width != st->image->width
      || (int) st->cinfo.output_height != st->image->height
      || st->cinfo.output_components != (cmyk ? 4 : 3)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: JPEG decoder produced an unexpected layout", path);
    avq_image_free (st->image);
    st->image = NULL;
    goto out;
  }
  int w = st->image->width;
  if (cmyk)
    st->row = g_malloc ((gsize) w * 4);
  while (st->cinfo.output_scanline < st->cinfo.output_height) {
    guint8 *dst = st->image->rgb + (gsize) st->cinfo.output_scanline * w * 3;
    JSAMPROW row = cmyk ? st->row : dst;
    if (jpeg_read_scanlines (&st->cinfo, &row, 1) != 1)
      ERREXIT (&st->cinfo, JERR_INPUT_EOF);
    if (cmyk) {
      /* Adobe writes CMYK inverted (0 = full ink); PIL reads it the same way
       * and then takes rgb = (255 - c) * (255 - k) / 255. */
      gboolean inverted = st->cinfo.saw_Adobe_marker;
      for (int x = 0; x < w; x++) {
        int ink[4];
        for (int c = 0; c < 4; c++)
          ink[c] = inverted ? 255 - st->row[x * 4 + c] : st->row[x * 4 + c];
        for (int c = 0; c < 3; c++) {
          int v = (255 - ink[c]) * (255 - ink[3]);
          dst[x * 3 + c] = (guint8) ((v + 127) / 255);
        }
      }
    }
  }
  /* Not jpeg_finish_decompress: every pixel has been decoded, and a file
   * that only lacks its end marker is as good as complete (PNG's IEND is
   * not required either). */
  result = st->image;
  st->image = NULL;

out:
  jpeg_destroy_decompress (&st->cinfo);
  g_free (st->row);
  g_free (st);
  return result;
}

/* ---- entry points ------------------------------------------------------- */

AvqImage *
avq_image_load (const char *path, GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  g_autoptr (GError) local = NULL;
  g_autoptr (GMappedFile) file = g_mapped_file_new (path, FALSE, &local);
  if (file == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: %s", path,
                 local->message);
    return NULL;
  }
  const guint8 *data = (const guint8 *) g_mapped_file_get_contents (file);
  gsize size = g_mapped_file_get_length (file);
  static const guint8 png_magic[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
  if (size >= 8 && memcmp (data, png_magic, 8) == 0)
    return load_png (path, data, size, error);
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
    return load_jpeg (path, data, size, error);
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
               "%s: not a PNG or JPEG file%s", path, size == 0 ? " (empty)" : "");
  return NULL;
}

AvqImage *
avq_image_from_packed (const guint8 *data, int width, int height, int stride,
                       AvqPixelFormat format, GError **error)
{
  int bpp, r, g, b;
  switch (format) {
  case AVQ_PIXEL_RGB:  bpp = 3; r = 0; g = 1; b = 2; break;
  case AVQ_PIXEL_RGBA:
  case AVQ_PIXEL_RGBX: bpp = 4; r = 0; g = 1; b = 2; break;
  case AVQ_PIXEL_BGR:  bpp = 3; r = 2; g = 1; b = 0; break;
  case AVQ_PIXEL_BGRA:
  case AVQ_PIXEL_BGRX: bpp = 4; r = 2; g = 1; b = 0; break;
  default:
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "packed image: unknown pixel format %d", (int) format);
    return NULL;
  }
  if (data == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "packed image: no pixel data");
    return NULL;
  }
  if (width <= 0 || height <= 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "packed image: %dx%d has no pixels", width, height);
    return NULL;
  }
  if (width <= AVQ_IMAGE_MAX_DIM
      && (stride <= 0 || (gint64) stride < (gint64) width * bpp)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "packed image: stride %d is smaller than a %d-pixel row of "
                 "%d bytes per pixel", stride, width, bpp);
    return NULL;
  }
  AvqImage *image = new_checked ("packed image", width, height, error);
  if (image == NULL)
    return NULL;
  for (int y = 0; y < height; y++) {
    const guint8 *src = data + (gsize) y * (gsize) stride;
    guint8 *dst = image->rgb + (gsize) y * width * 3;
    if (format == AVQ_PIXEL_RGB) {
      memcpy (dst, src, (gsize) width * 3);
      continue;
    }
    for (int x = 0; x < width; x++, src += bpp, dst += 3) {
      dst[0] = src[r];
      dst[1] = src[g];
      dst[2] = src[b];
    }
  }
  return image;
}
