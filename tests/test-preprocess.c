/* Image loading and CLIP preprocessing (AVQ-SPEC section 3).
 *
 * The resize must be torchvision's bit for bit, so the strongest checks are
 * exact: small resizes against arrays torchvision produced, and the fixture's
 * pixel_values, which the reference processor computed from the same PNGs.
 * Hostile files are written by the test itself (libpng / libjpeg, then cut or
 * patched) so every failure path is reached without shipping broken data. */
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <glib/gstdio.h>

#include "avq-config.h"
#include "avq-error.h"
#include "avq-image.h"
#include "test-util.h"

static char *tmp_dir;

static char *
tmp_path (const char *name)
{
  return g_build_filename (tmp_dir, name, NULL);
}

static void
write_bytes (const char *path, const void *data, gsize len)
{
  /* stdio rather than g_file_set_contents, which fsyncs every rewrite. */
  FILE *f = fopen (path, "wb");
  g_assert_nonnull (f);
  g_assert_cmpuint (fwrite (data, 1, len, f), ==, len);
  g_assert_cmpint (fclose (f), ==, 0);
}

/* Loading must fail with an AVQ_ERROR that names the file. */
static void
assert_load_fails (const char *path, const char *what)
{
  g_autoptr (GError) error = NULL;
  AvqImage *image = avq_image_load (path, &error);
  if (image != NULL)
    g_error ("%s: loaded as %dx%d, expected an error", what, image->width,
             image->height);
  g_assert_nonnull (error);
  g_assert_true (error->domain == AVQ_ERROR);
  if (strstr (error->message, path) == NULL)
    g_error ("%s: error \"%s\" does not name the file", what, error->message);
}

static AvqImage *
load_fixture_image (const char *name)
{
  g_autofree char *rel = g_strdup_printf ("tiny-llava/images/%s.png", name);
  g_autofree char *path = avq_test_data_path (rel);
  g_autoptr (GError) error = NULL;
  AvqImage *image = avq_image_load (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (image);
  return image;
}

static void
llava_config (AvqPreprocessConfig *pp)
{
  g_autofree char *path =
      avq_test_data_path ("llava-1.5-7b-hf/preprocessor_config.json");
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_preprocess_config_load (path, pp, &error));
  g_assert_no_error (error);
  g_assert_cmpint (pp->shortest_edge, ==, 336);
  g_assert_cmpint (pp->crop_width, ==, 336);
  g_assert_cmpint (pp->crop_height, ==, 336);
}

/* Deterministic content that is easy to regenerate in Python. */
static guint8
pattern (int x, int y, int c)
{
  return (guint8) ((x * 73 + y * 151 + c * 89 + x * y * 7) & 255);
}

static AvqImage *
pattern_image (int w, int h)
{
  AvqImage *image = avq_image_new (w, h);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++)
        image->rgb[((gsize) y * w + x) * 3 + c] = pattern (x, y, c);
  return image;
}

/* ---- the resampler against torchvision ---------------------------------- */

/* Generated once with torch 2.15 / torchvision 0.29 (CPU, AVX2):
 *   a[y, x, c] = (x*73 + y*151 + c*89 + x*y*7) & 255, uint8, HWC
 *   F.resize(torch.from_numpy(a).permute(2, 0, 1), [out_h, out_w],
 *            interpolation=InterpolationMode.BICUBIC, antialias=True)
 * then flattened back in HWC order. */
static const guint8 tv_7x5_to_3x4[] = {
  84, 150, 177, 143, 136, 140, 115, 117, 101, 150, 153, 138, 133, 142, 142,
  118, 134, 146, 114, 125, 142, 138, 138, 147, 163, 150, 158, 119, 103, 106,
  140, 151, 134, 162, 110, 86,
};

static const guint8 tv_5x5_to_11x9[] = {
  0, 68, 180, 0, 87, 199, 28, 132, 248, 68, 179, 250, 111, 229, 143, 153,
  242, 55, 204, 152, 78, 230, 46, 139, 157, 57, 180, 48, 116, 213, 2, 140,
  227, 43, 134, 136, 54, 132, 156, 94, 126, 205, 123, 135, 224, 116, 183, 171,
  115, 213, 117, 158, 170, 102, 198, 109, 108, 164, 92, 141, 103, 96, 185, 78,
  97, 203, 137, 247, 67, 156, 211, 85, 207, 119, 129, 216, 64, 172, 128, 101,
  214, 55, 155, 224, 80, 197, 149, 137, 217, 62, 172, 158, 76, 198, 68, 133,
  210, 31, 154, 99, 218, 141, 121, 201, 130, 176, 163, 103, 204, 125, 100, 169,
  95, 162, 125, 90, 210, 95, 142, 185, 82, 200, 136, 122, 183, 109, 183, 135,
  93, 209, 117, 84, 38, 127, 240, 56, 148, 201, 96, 203, 110, 142, 215, 53,
  198, 127, 88, 220, 53, 142, 146, 75, 196, 58, 131, 231, 70, 177, 174, 125,
  217, 83, 146, 235, 44, 140, 48, 183, 123, 75, 176, 79, 140, 164, 65, 185,
  140, 128, 175, 96, 183, 148, 74, 181, 107, 125, 155, 75, 190, 121, 114, 193,
  87, 182, 169, 71, 210, 160, 210, 30, 96, 175, 46, 122, 93, 78, 185, 41,
  122, 207, 69, 186, 129, 118, 218, 60, 178, 153, 76, 224, 72, 125, 176, 82,
  178, 92, 129, 228, 57, 148, 251, 125, 143, 29, 130, 123, 53, 145, 73, 108,
  142, 53, 153, 92, 104, 170, 60, 158, 167, 101, 178, 124, 161, 180, 82, 182,
  148, 114, 187, 103, 174, 190, 84, 199, 72, 209, 0, 101, 170, 17, 175, 74,
  62, 201, 17, 118, 109, 57, 192, 31, 120, 229, 57, 190, 154, 121, 242, 60,
  183, 187, 78, 240, 91, 140, 255, 51, 165,
};

static void
check_torchvision_case (int w, int h, int ow, int oh, const guint8 *want,
                        gsize n)
{
  g_assert_cmpuint (n, ==, (gsize) ow * oh * 3);
  g_autoptr (AvqImage) in = pattern_image (w, h);
  g_autoptr (AvqImage) out = avq_image_resize_bicubic (in, ow, oh);
  g_assert_nonnull (out);
  g_assert_cmpint (out->width, ==, ow);
  g_assert_cmpint (out->height, ==, oh);
  for (gsize i = 0; i < n; i++)
    if (out->rgb[i] != want[i])
      g_error ("%dx%d -> %dx%d: byte %" G_GSIZE_FORMAT " is %u, torchvision "
               "gives %u", w, h, ow, oh, i, out->rgb[i], want[i]);
}

static void
test_resize_torchvision (void)
{
  for (int scalar = 0; scalar < 2; scalar++) {
    avq_image_resize_force_scalar (scalar);
    check_torchvision_case (7, 5, 3, 4, tv_7x5_to_3x4, sizeof tv_7x5_to_3x4);
    check_torchvision_case (5, 5, 11, 9, tv_5x5_to_11x9, sizeof tv_5x5_to_11x9);
  }
  avq_image_resize_force_scalar (FALSE);
}

/* The SIMD kernel and the portable one must agree exactly. */
static void
test_resize_kernels_agree (void)
{
  for (int iter = 0; iter < 40; iter++) {
    int w = g_test_rand_int_range (1, 300), h = g_test_rand_int_range (1, 300);
    int ow = g_test_rand_int_range (1, 400), oh = g_test_rand_int_range (1, 400);
    g_autoptr (AvqImage) in = avq_image_new (w, h);
    for (gsize i = 0; i < (gsize) w * h * 3; i++)
      in->rgb[i] = iter % 2 ? (guint8) g_test_rand_int ()
                            : (g_test_rand_int () & 1 ? 255 : 0);
    avq_image_resize_force_scalar (TRUE);
    g_autoptr (AvqImage) a = avq_image_resize_bicubic (in, ow, oh);
    avq_image_resize_force_scalar (FALSE);
    g_autoptr (AvqImage) b = avq_image_resize_bicubic (in, ow, oh);
    g_assert_nonnull (a);
    g_assert_nonnull (b);
    if (memcmp (a->rgb, b->rgb, (gsize) ow * oh * 3) != 0)
      g_error ("%dx%d -> %dx%d: SIMD and scalar kernels differ", w, h, ow, oh);
  }
}

static void
test_resize_edges (void)
{
  /* Same size on an axis: that axis is left alone. */
  g_autoptr (AvqImage) in = pattern_image (13, 7);
  g_autoptr (AvqImage) same = avq_image_resize_bicubic (in, 13, 7);
  g_assert_nonnull (same);
  g_assert_cmpmem (same->rgb, 13 * 7 * 3, in->rgb, 13 * 7 * 3);

  /* Only the height changes: every column is resampled on its own, so a
   * horizontally constant image stays horizontally constant. */
  g_autoptr (AvqImage) stripes = avq_image_new (9, 6);
  for (int y = 0; y < 6; y++)
    for (int x = 0; x < 9; x++)
      memset (stripes->rgb + (y * 9 + x) * 3, y * 40, 3);
  g_autoptr (AvqImage) tall = avq_image_resize_bicubic (stripes, 9, 17);
  for (int y = 0; y < 17; y++)
    for (int x = 1; x < 9; x++)
      g_assert_cmpmem (tall->rgb + (y * 9 + x) * 3, 3, tall->rgb + y * 9 * 3, 3);

  /* A single pixel spreads everywhere. */
  g_autoptr (AvqImage) dot = avq_image_new (1, 1);
  dot->rgb[0] = 10;
  dot->rgb[1] = 200;
  dot->rgb[2] = 255;
  g_autoptr (AvqImage) big = avq_image_resize_bicubic (dot, 37, 5);
  for (int i = 0; i < 37 * 5; i++)
    g_assert_cmpmem (big->rgb + i * 3, 3, dot->rgb, 3);

  /* Invalid requests give NULL, not a crash. */
  g_assert_null (avq_image_resize_bicubic (in, 0, 5));
  g_assert_null (avq_image_resize_bicubic (in, 5, -1));
  g_assert_null (avq_image_resize_bicubic (in, AVQ_IMAGE_MAX_DIM + 1, 5));
  g_assert_null (avq_image_resize_bicubic (NULL, 5, 5));
  AvqImage empty = { 0, 0, NULL };
  g_assert_null (avq_image_resize_bicubic (&empty, 5, 5));
  g_assert_null (avq_image_new (0, 1));
  g_assert_null (avq_image_new (1, AVQ_IMAGE_MAX_DIM + 1));
}

/* ---- the fixture -------------------------------------------------------- */

static void
test_fixture_pixel_values (void)
{
  static const char *names[] = { "astronaut", "chelsea", "coffee" };
  AvqPreprocessConfig pp;
  llava_config (&pp);
  gsize numel;
  g_autofree float *want = avq_test_reference_f32 ("pixel_values", &numel);
  const gsize per_image = 3 * 336 * 336;
  g_assert_cmpuint (numel, ==, 3 * per_image);
  g_autofree float *got = g_new (float, per_image);

  for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
    g_autoptr (AvqImage) image = load_fixture_image (names[i]);
    g_autoptr (GError) error = NULL;
    g_assert_true (avq_preprocess (image, &pp, AVQ_PREPROCESS_CROP, got, &error));
    g_assert_no_error (error);
    const float *ref = want + i * per_image;
    double max = avq_test_max_abs_diff (got, ref, per_image), sum = 0;
    for (gsize j = 0; j < per_image; j++)
      sum += fabs ((double) got[j] - ref[j]);
    g_test_message ("%s (%dx%d): max abs %.3g, mean abs %.3g vs pixel_values",
                    names[i], image->width, image->height, max,
                    sum / per_image);
    /* The resize is exact, so only float formatting could differ. */
    g_assert_cmpfloat (max, <=, 1e-5);
    g_assert_cmpfloat (sum / per_image, <=, 1e-7);
  }
}

/* ---- packed pixel formats ----------------------------------------------- */

static void
test_packed_formats (void)
{
  static const struct { AvqPixelFormat format; int bpp, r, g, b, a; } formats[] = {
    { AVQ_PIXEL_RGB, 3, 0, 1, 2, -1 },
    { AVQ_PIXEL_RGBA, 4, 0, 1, 2, 3 },
    { AVQ_PIXEL_RGBX, 4, 0, 1, 2, 3 },
    { AVQ_PIXEL_BGR, 3, 2, 1, 0, -1 },
    { AVQ_PIXEL_BGRA, 4, 2, 1, 0, 3 },
    { AVQ_PIXEL_BGRX, 4, 2, 1, 0, 3 },
  };
  AvqPreprocessConfig pp;
  llava_config (&pp);
  g_autoptr (AvqImage) ref = load_fixture_image ("chelsea");
  const int w = ref->width, h = ref->height;
  const gsize n = 3 * 336 * 336;
  g_autofree float *want = g_new (float, n);
  g_autofree float *got = g_new (float, n);
  g_assert_true (avq_preprocess (ref, &pp, AVQ_PREPROCESS_CROP, want, NULL));

  for (guint f = 0; f < G_N_ELEMENTS (formats); f++) {
    /* An odd stride with junk in the padding and in alpha/X. */
    const int stride = w * formats[f].bpp + 13;
    g_autofree guint8 *buf = g_malloc ((gsize) stride * h);
    for (gsize i = 0; i < (gsize) stride * h; i++)
      buf[i] = (guint8) g_test_rand_int ();
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++) {
        guint8 *p = buf + (gsize) y * stride + (gsize) x * formats[f].bpp;
        const guint8 *s = ref->rgb + ((gsize) y * w + x) * 3;
        p[formats[f].r] = s[0];
        p[formats[f].g] = s[1];
        p[formats[f].b] = s[2];
      }
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqImage) image =
        avq_image_from_packed (buf, w, h, stride, formats[f].format, &error);
    g_assert_no_error (error);
    g_assert_cmpint (image->width, ==, w);
    g_assert_cmpint (image->height, ==, h);
    g_assert_cmpmem (image->rgb, (gsize) w * h * 3, ref->rgb, (gsize) w * h * 3);
    g_assert_true (avq_preprocess (image, &pp, AVQ_PREPROCESS_CROP, got, &error));
    g_assert_cmpmem (got, n * sizeof (float), want, n * sizeof (float));
  }

  /* Rejections. */
  guint8 px[64] = { 0 };
  struct { const guint8 *data; int w, h, stride, format; } bad[] = {
    { px, 4, 2, 11, AVQ_PIXEL_RGB },      /* stride shorter than a row */
    { px, 4, 2, 15, AVQ_PIXEL_RGBA },
    { px, 4, 2, 0, AVQ_PIXEL_RGB },
    { px, 4, 2, -12, AVQ_PIXEL_RGB },
    { px, 0, 2, 12, AVQ_PIXEL_RGB },
    { px, 4, 0, 12, AVQ_PIXEL_RGB },
    { px, -4, 2, 12, AVQ_PIXEL_RGB },
    { px, AVQ_IMAGE_MAX_DIM + 1, 1, (AVQ_IMAGE_MAX_DIM + 1) * 3, AVQ_PIXEL_RGB },
    { px, 1, AVQ_IMAGE_MAX_DIM + 1, 3, AVQ_PIXEL_RGB },
    { px, G_MAXINT, 1, G_MAXINT, AVQ_PIXEL_RGBA },
    { NULL, 4, 2, 12, AVQ_PIXEL_RGB },
    { px, 4, 2, 12, 42 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (GError) error = NULL;
    AvqImage *image = avq_image_from_packed (bad[i].data, bad[i].w, bad[i].h,
                                             bad[i].stride,
                                             (AvqPixelFormat) bad[i].format,
                                             &error);
    if (image != NULL)
      g_error ("packed case %u was accepted", i);
    int code = i >= 7 && i <= 9 ? AVQ_ERROR_UNSUPPORTED
                                : AVQ_ERROR_INVALID_ARGUMENT;
    g_assert_error (error, AVQ_ERROR, code);
  }
}

/* ---- pad mode ----------------------------------------------------------- */

/* (v - mean) / std for the mean colour, what the padding must turn into. */
static void
expected_fill (const AvqPreprocessConfig *pp, float out[3])
{
  for (int c = 0; c < 3; c++) {
    int v = (int) (pp->image_mean[c] * 255.0);
    out[c] = (float) ((v / 255.0 - pp->image_mean[c]) / pp->image_std[c]);
  }
}

static void
test_pad_mode (void)
{
  AvqPreprocessConfig pp;
  llava_config (&pp);
  const int S = 336;
  const gsize n = 3 * (gsize) S * S;
  g_autofree float *out = g_new (float, n);
  g_autofree float *crop = g_new (float, n);
  float fill[3];
  expected_fill (&pp, fill);
  g_assert_cmpfloat (fabs (pp.image_mean[0] * 255.0 - 122.77), <, 0.01);

  /* Wide (451x300): square of 451, image in rows 75..374, i.e. rows
   * ~56..279 after the resize; rows well outside are pure padding. */
  g_autoptr (AvqImage) wide = load_fixture_image ("chelsea");
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_preprocess (wide, &pp, AVQ_PREPROCESS_PAD, out, &error));
  g_assert_no_error (error);
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < S; y++) {
      if (y >= 50 && y < 286)
        continue;
      for (int x = 0; x < S; x++)
        g_assert_cmpfloat (fabs (out[(c * S + y) * S + x] - fill[c]), <, 1e-5);
    }
  /* The content is the image, not padding. */
  int differs = 0;
  for (int x = 0; x < S; x++)
    differs += fabs (out[(0 * S + 168) * S + x] - fill[0]) > 0.05;
  g_assert_cmpint (differs, >, S / 2);

  /* Tall (40x120): columns outside ~112..224 are padding. */
  g_autoptr (AvqImage) tall = pattern_image (40, 120);
  g_assert_true (avq_preprocess (tall, &pp, AVQ_PREPROCESS_PAD, out, &error));
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < S; y++)
      for (int x = 0; x < S; x++)
        if (x < 100 || x >= 236)
          g_assert_cmpfloat (fabs (out[(c * S + y) * S + x] - fill[c]), <, 1e-5);

  /* A square needs no padding: both modes agree exactly. */
  g_autoptr (AvqImage) square = load_fixture_image ("astronaut");
  g_assert_true (avq_preprocess (square, &pp, AVQ_PREPROCESS_PAD, out, &error));
  g_assert_true (avq_preprocess (square, &pp, AVQ_PREPROCESS_CROP, crop, &error));
  g_assert_cmpmem (out, n * sizeof (float), crop, n * sizeof (float));

  /* Padding a 1-pixel-high line to a square of 700. */
  g_autoptr (AvqImage) line = pattern_image (700, 1);
  g_assert_true (avq_preprocess (line, &pp, AVQ_PREPROCESS_PAD, out, &error));
  g_assert_cmpfloat (fabs (out[0] - fill[0]), <, 1e-5);

  /* The shortcuts for padding (shared fill rows, constant fill columns,
   * partial rows) change nothing: pad mode equals crop mode on the square
   * built by hand as LLaVA's expand2square does. */
  static const int shapes[][2] = { { 451, 300 }, { 40, 120 }, { 7, 300 },
                                   { 300, 7 }, { 1, 700 }, { 999, 1000 } };
  for (guint i = 0; i < G_N_ELEMENTS (shapes); i++) {
    const int w = shapes[i][0], h = shapes[i][1], side = MAX (w, h);
    g_autoptr (AvqImage) im = pattern_image (w, h);
    g_autoptr (AvqImage) sq = avq_image_new (side, side);
    for (int p = 0; p < side * side; p++)
      for (int c = 0; c < 3; c++)
        sq->rgb[p * 3 + c] = (guint8) (int) (pp.image_mean[c] * 255.0);
    for (int y = 0; y < h; y++)
      memcpy (sq->rgb + ((gsize) (y + (side - h) / 2) * side + (side - w) / 2) * 3,
              im->rgb + (gsize) y * w * 3, (gsize) w * 3);
    g_assert_true (avq_preprocess (im, &pp, AVQ_PREPROCESS_PAD, out, &error));
    g_assert_true (avq_preprocess (sq, &pp, AVQ_PREPROCESS_CROP, crop, &error));
    if (memcmp (out, crop, n * sizeof (float)) != 0)
      g_error ("pad mode of %dx%d differs from the hand-padded square", w, h);
  }

  AvqPreprocessMode mode;
  g_assert_true (avq_preprocess_mode_from_string ("pad", &mode));
  g_assert_cmpint (mode, ==, AVQ_PREPROCESS_PAD);
  g_assert_true (avq_preprocess_mode_from_string ("crop", &mode));
  g_assert_cmpint (mode, ==, AVQ_PREPROCESS_CROP);
  g_assert_false (avq_preprocess_mode_from_string ("square", &mode));
  g_assert_false (avq_preprocess_mode_from_string (NULL, &mode));
  g_assert_cmpstr (avq_preprocess_mode_to_string (AVQ_PREPROCESS_PAD), ==, "pad");
  g_assert_cmpstr (avq_preprocess_mode_to_string (AVQ_PREPROCESS_CROP), ==, "crop");
}

/* ---- other preprocessing paths ----------------------------------------- */

static void
test_preprocess_options (void)
{
  AvqPreprocessConfig pp;
  llava_config (&pp);
  g_autoptr (GError) error = NULL;
  const int S = 336;
  g_autofree float *out = g_new (float, 3 * 400 * 400);

  /* No resize: a plain centre crop of a 340x339 image (offset 2, 1). */
  g_autoptr (AvqImage) im = pattern_image (340, 339);
  AvqPreprocessConfig noresize = pp;
  noresize.do_resize = FALSE;
  g_assert_true (avq_preprocess (im, &noresize, AVQ_PREPROCESS_CROP, out, &error));
  g_assert_no_error (error);
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < S; y += 7)
      for (int x = 0; x < S; x += 5) {
        float want = (float) ((pattern (x + 2, y + 1, c) / 255.0 - pp.image_mean[c])
                              / pp.image_std[c]);
        g_assert_cmpfloat (fabs (out[(c * S + y) * S + x] - want), <, 1e-5);
      }

  /* A crop larger than the image pads with zeros (before normalising):
   * 336 wide in a 340 crop leaves two columns each side. */
  g_autoptr (AvqImage) sq = pattern_image (500, 500);
  AvqPreprocessConfig big = pp;
  big.crop_width = big.crop_height = 340;
  g_assert_true (avq_preprocess (sq, &big, AVQ_PREPROCESS_CROP, out, &error));
  for (int c = 0; c < 3; c++) {
    float zero = (float) ((0 - pp.image_mean[c]) / pp.image_std[c]);
    for (int y = 0; y < 340; y++) {
      const float *row = out + (c * 340 + y) * 340;
      gboolean edge_row = y < 2 || y >= 338;
      for (int x = 0; x < 340; x++)
        if (edge_row || x < 2 || x >= 338)
          g_assert_cmpfloat (fabs (row[x] - zero), <, 1e-5);
    }
  }

  /* Rescale only, no normalisation: values in [0, 1]. */
  AvqPreprocessConfig scale_only = pp;
  scale_only.do_normalize = FALSE;
  g_assert_true (avq_preprocess (sq, &scale_only, AVQ_PREPROCESS_CROP, out, &error));
  for (int i = 0; i < 3 * S * S; i++)
    g_assert_true (out[i] >= 0.0f && out[i] <= 1.0f);

  /* Without a crop the resized image has to be the output size. */
  AvqPreprocessConfig nocrop = pp;
  nocrop.do_center_crop = FALSE;
  g_assert_true (avq_preprocess (sq, &nocrop, AVQ_PREPROCESS_CROP, out, &error));
  g_autoptr (AvqImage) wide = pattern_image (500, 300);   /* -> 560x336 */
  g_assert_false (avq_preprocess (wide, &nocrop, AVQ_PREPROCESS_CROP, out, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED);
  g_clear_error (&error);

  /* Invalid images and configurations. */
  AvqImage empty = { 0, 0, NULL };
  g_assert_false (avq_preprocess (&empty, &pp, AVQ_PREPROCESS_CROP, out, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_preprocess (NULL, &pp, AVQ_PREPROCESS_CROP, out, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_preprocess (sq, &pp, (AvqPreprocessMode) 7, out, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  AvqPreprocessConfig broken[5];
  for (int i = 0; i < 5; i++)
    broken[i] = pp;
  broken[0].crop_width = 0;
  broken[1].crop_height = AVQ_IMAGE_MAX_DIM + 1;
  broken[2].shortest_edge = -3;
  broken[3].image_std[1] = 0.0f;
  broken[4].rescale_factor = NAN;
  for (int i = 0; i < 5; i++) {
    g_assert_false (avq_preprocess (sq, &broken[i], AVQ_PREPROCESS_CROP, out, &error));
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
    g_clear_error (&error);
  }

  /* Extreme aspect ratios: 16384x1 resizes to 5505024x336 and a 1x1 to
   * 336x336; only the cropped window is computed, so both are quick. */
  g_autoptr (AvqImage) thin = pattern_image (AVQ_IMAGE_MAX_DIM, 1);
  g_assert_true (avq_preprocess (thin, &pp, AVQ_PREPROCESS_CROP, out, &error));
  g_assert_no_error (error);
  g_autoptr (AvqImage) dot = pattern_image (1, 1);
  g_assert_true (avq_preprocess (dot, &pp, AVQ_PREPROCESS_CROP, out, &error));
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < S * S; i++)
      g_assert_cmpfloat (out[c * S * S + i], ==, out[c * S * S]);
}

/* ---- writing test files ------------------------------------------------- */

typedef struct {
  int color_type, depth, interlace;
  int w, h;
  const guint8 *data;   /* rows as PNG stores them after packing */
  gsize row_bytes;
  const png_color *palette;
  int n_palette;
  const guint8 *trns;
  int n_trns;
} PngSpec;

static void
write_png (const char *path, const PngSpec *s)
{
  FILE *f = fopen (path, "wb");
  g_assert_nonnull (f);
  png_structp png = png_create_write_struct (PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct (png);
  g_assert_nonnull (info);
  if (setjmp (png_jmpbuf (png)))
    g_error ("libpng failed writing %s", path);
  png_init_io (png, f);
  png_set_IHDR (png, info, s->w, s->h, s->depth, s->color_type, s->interlace,
                PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (s->palette)
    png_set_PLTE (png, info, s->palette, s->n_palette);
  if (s->trns)
    png_set_tRNS (png, info, s->trns, s->n_trns, NULL);
  png_write_info (png, info);
  if (s->depth == 16)
    png_set_swap (png);   /* our buffers hold 16-bit samples little-endian */
  int passes = png_set_interlace_handling (png);
  for (int p = 0; p < passes; p++)
    for (int y = 0; y < s->h; y++)
      png_write_row (png, s->data + (gsize) y * s->row_bytes);
  png_write_end (png, NULL);
  png_destroy_write_struct (&png, &info);
  fclose (f);
}

static AvqImage *
load_ok (const char *path)
{
  g_autoptr (GError) error = NULL;
  AvqImage *image = avq_image_load (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (image);
  return image;
}

static void
test_png_variants (void)
{
  const int w = 5, h = 3;
  g_autofree char *path = tmp_path ("variant.png");
  guint8 buf[5 * 3 * 8];

  struct { int type, depth, interlace, bytes_per_px; } kinds[] = {
    { PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, 3 },
    { PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, 3 },
    { PNG_COLOR_TYPE_RGB_ALPHA, 8, PNG_INTERLACE_NONE, 4 },
    { PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, 6 },
    { PNG_COLOR_TYPE_RGB_ALPHA, 16, PNG_INTERLACE_ADAM7, 8 },
  };
  for (guint k = 0; k < G_N_ELEMENTS (kinds); k++) {
    int bpp = kinds[k].bytes_per_px, wide = kinds[k].depth == 16;
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        for (int c = 0; c < bpp / (wide ? 2 : 1); c++) {
          guint8 *p = buf + (y * w + x) * bpp + c * (wide ? 2 : 1);
          /* Alpha (channel 3) is 0 on purpose: it must simply be dropped. */
          guint8 v = c == 3 ? 0 : pattern (x, y, c);
          if (wide) {
            p[0] = (guint8) (255 - v);   /* low byte, ignored */
            p[1] = v;
          } else {
            p[0] = v;
          }
        }
    PngSpec spec = { kinds[k].type, kinds[k].depth, kinds[k].interlace, w, h,
                     buf, (gsize) w * bpp, NULL, 0, NULL, 0 };
    write_png (path, &spec);
    g_autoptr (AvqImage) im = load_ok (path);
    g_assert_cmpint (im->width, ==, w);
    g_assert_cmpint (im->height, ==, h);
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        for (int c = 0; c < 3; c++)
          g_assert_cmpuint (im->rgb[(y * w + x) * 3 + c], ==, pattern (x, y, c));
  }

  /* Grey and grey + alpha: replicated to RGB. */
  for (int with_alpha = 0; with_alpha < 2; with_alpha++) {
    for (int i = 0; i < w * h; i++) {
      buf[i * (1 + with_alpha)] = (guint8) (i * 17);
      if (with_alpha)
        buf[i * 2 + 1] = 3;
    }
    PngSpec spec = { with_alpha ? PNG_COLOR_TYPE_GRAY_ALPHA : PNG_COLOR_TYPE_GRAY,
                     8, PNG_INTERLACE_NONE, w, h, buf,
                     (gsize) w * (1 + with_alpha), NULL, 0, NULL, 0 };
    write_png (path, &spec);
    g_autoptr (AvqImage) im = load_ok (path);
    for (int i = 0; i < w * h; i++)
      for (int c = 0; c < 3; c++)
        g_assert_cmpuint (im->rgb[i * 3 + c], ==, (guint8) (i * 17));
  }

  /* 1-bit grey: 0 and 1 become 0 and 255. Row of 5 pixels 1,0,1,1,0. */
  memset (buf, 0, sizeof buf);
  for (int y = 0; y < h; y++)
    buf[y] = 0xb0;   /* 1011 0000 */
  PngSpec bits = { PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, w, h, buf, 1,
                   NULL, 0, NULL, 0 };
  write_png (path, &bits);
  {
    g_autoptr (AvqImage) im = load_ok (path);
    static const guint8 expect[5] = { 255, 0, 255, 255, 0 };
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        g_assert_cmpuint (im->rgb[(y * w + x) * 3 + 1], ==, expect[x]);
  }

  /* Palette with transparency: colours looked up, transparency ignored. */
  static const png_color pal[3] = { { 255, 0, 0 }, { 0, 255, 0 }, { 10, 20, 30 } };
  static const guint8 trns[3] = { 0, 128, 255 };
  for (int i = 0; i < w * h; i++)
    buf[i] = (guint8) (i % 3);
  PngSpec palette = { PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, w, h, buf,
                      (gsize) w, pal, 3, trns, 3 };
  write_png (path, &palette);
  {
    g_autoptr (AvqImage) im = load_ok (path);
    for (int i = 0; i < w * h; i++) {
      g_assert_cmpuint (im->rgb[i * 3 + 0], ==, pal[i % 3].red);
      g_assert_cmpuint (im->rgb[i * 3 + 1], ==, pal[i % 3].green);
      g_assert_cmpuint (im->rgb[i * 3 + 2], ==, pal[i % 3].blue);
    }
  }
  g_unlink (path);
}

/* CRC-32 of PNG chunks (reflected polynomial 0xedb88320), to patch headers
 * into files libpng will parse past the checksum. */
static guint32
crc32_bytes (const guint8 *p, gsize n)
{
  guint32 crc = 0xffffffffu;
  for (gsize i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
  }
  return crc ^ 0xffffffffu;
}

static void
put_be32 (guint8 *p, guint32 v)
{
  p[0] = (guint8) (v >> 24);
  p[1] = (guint8) (v >> 16);
  p[2] = (guint8) (v >> 8);
  p[3] = (guint8) v;
}

static void
test_png_hostile (void)
{
  g_autofree char *src = avq_test_data_path ("tiny-llava/images/coffee.png");
  g_autofree guint8 *png = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (src, (char **) &png, &len, NULL));
  g_autofree char *path = tmp_path ("hostile.png");

  assert_load_fails ("/nonexistent/avq/picture.png", "missing file");
  write_bytes (path, "", 0);
  assert_load_fails (path, "empty file");
  write_bytes (path, "GIF89a, not a picture we read", 29);
  assert_load_fails (path, "unknown format");

  /* Cut anywhere before the end of the pixel data. */
  const gsize cuts[] = { 8, 16, 33, 60, 1000, len / 2, len - 20 };
  for (guint i = 0; i < G_N_ELEMENTS (cuts); i++) {
    write_bytes (path, png, cuts[i]);
    assert_load_fails (path, "truncated PNG");
  }

  /* A damaged byte in the compressed data (the CRC catches it). */
  g_autofree guint8 *copy = g_memdup2 (png, len);
  copy[len / 2] ^= 0x5a;
  write_bytes (path, copy, len);
  assert_load_fails (path, "corrupted IDAT");

  /* Headers with absurd or empty sizes, checksums fixed up. IHDR data
   * starts at byte 16: width, height. */
  const guint32 dims[][2] = { { 100000, 100000 }, { 16385, 10 }, { 0, 400 },
                              { 16384, 16384 }, { 0x7fffffff, 1 } };
  for (guint i = 0; i < G_N_ELEMENTS (dims); i++) {
    memcpy (copy, png, len);
    put_be32 (copy + 16, dims[i][0]);
    put_be32 (copy + 20, dims[i][1]);
    put_be32 (copy + 29, crc32_bytes (copy + 12, 17));
    write_bytes (path, copy, len);
    assert_load_fails (path, "PNG with absurd size");
  }

  /* Random damage never crashes; whatever loads has a sane size. */
  g_autofree guint8 *small = NULL;
  gsize small_len;
  {
    g_autoptr (AvqImage) im = pattern_image (24, 16);
    PngSpec spec = { PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, 24, 16, im->rgb,
                     24 * 3, NULL, 0, NULL, 0 };
    write_png (path, &spec);
    g_assert_true (g_file_get_contents (path, (char **) &small, &small_len, NULL));
  }
  for (int iter = 0; iter < 300; iter++) {
    g_autofree guint8 *m = g_memdup2 (small, small_len);
    int flips = g_test_rand_int_range (1, 6);
    for (int f = 0; f < flips; f++)
      m[g_test_rand_int_range (8, (gint32) small_len)] = (guint8) g_test_rand_int ();
    gsize mlen = iter % 3 == 0 ? (gsize) g_test_rand_int_range (8, (gint32) small_len)
                               : small_len;
    write_bytes (path, m, mlen);
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqImage) im = avq_image_load (path, &error);
    g_assert_true ((im == NULL) != (error == NULL));
    if (im)
      g_assert_true (im->width > 0 && im->width <= AVQ_IMAGE_MAX_DIM
                     && im->height > 0 && im->height <= AVQ_IMAGE_MAX_DIM);
  }
  g_unlink (path);
}

/* ---- JPEG --------------------------------------------------------------- */

static guint8 *
encode_jpeg (const guint8 *pixels, int w, int h, int components,
             J_COLOR_SPACE space, int quality, gsize *len)
{
  struct jpeg_compress_struct cinfo;
  struct jpeg_error_mgr jerr;
  unsigned char *mem = NULL;
  unsigned long mem_len = 0;
  cinfo.err = jpeg_std_error (&jerr);   /* our own data: failing is a bug */
  jpeg_create_compress (&cinfo);
  jpeg_mem_dest (&cinfo, &mem, &mem_len);
  cinfo.image_width = w;
  cinfo.image_height = h;
  cinfo.input_components = components;
  cinfo.in_color_space = space;
  jpeg_set_defaults (&cinfo);
  jpeg_set_quality (&cinfo, quality, TRUE);
  jpeg_start_compress (&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = (JSAMPROW) pixels + (gsize) cinfo.next_scanline * w * components;
    jpeg_write_scanlines (&cinfo, &row, 1);
  }
  jpeg_finish_compress (&cinfo);
  jpeg_destroy_compress (&cinfo);
  guint8 *out = g_memdup2 (mem, mem_len);
  free (mem);
  *len = mem_len;
  return out;
}

static void
test_jpeg (void)
{
  g_autofree char *path = tmp_path ("picture.jpg");
  const int w = 64, h = 48;

  /* Round trip of a smooth RGB image. */
  g_autoptr (AvqImage) src = avq_image_new (w, h);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      guint8 *p = src->rgb + (y * w + x) * 3;
      p[0] = (guint8) (x * 4);
      p[1] = (guint8) (y * 5);
      p[2] = (guint8) (128 + (x - y));
    }
  gsize len;
  g_autofree guint8 *jpg = encode_jpeg (src->rgb, w, h, 3, JCS_RGB, 95, &len);
  write_bytes (path, jpg, len);
  {
    g_autoptr (AvqImage) im = load_ok (path);
    g_assert_cmpint (im->width, ==, w);
    g_assert_cmpint (im->height, ==, h);
    double sum = 0;
    int max = 0;
    for (int i = 0; i < w * h * 3; i++) {
      int d = abs ((int) im->rgb[i] - (int) src->rgb[i]);
      sum += d;
      max = MAX (max, d);
    }
    g_test_message ("JPEG q95 round trip: mean abs %.2f, max %d levels",
                    sum / (w * h * 3), max);
    g_assert_cmpfloat (sum / (w * h * 3), <, 2.0);
    g_assert_cmpint (max, <, 24);
  }

  /* Grey: replicated. */
  g_autofree guint8 *grey = g_malloc ((gsize) w * h);
  for (int i = 0; i < w * h; i++)
    grey[i] = (guint8) (i % w * 4);
  {
    gsize glen;
    g_autofree guint8 *gj = encode_jpeg (grey, w, h, 1, JCS_GRAYSCALE, 95, &glen);
    write_bytes (path, gj, glen);
    g_autoptr (AvqImage) im = load_ok (path);
    for (int i = 0; i < w * h; i++) {
      g_assert_cmpuint (im->rgb[i * 3], ==, im->rgb[i * 3 + 1]);
      g_assert_cmpuint (im->rgb[i * 3], ==, im->rgb[i * 3 + 2]);
      g_assert_cmpint (abs ((int) im->rgb[i * 3] - grey[i]), <, 12);
    }
  }

  /* Adobe CMYK, stored inverted as Photoshop (and PIL) write it: red is
   * no cyan, full magenta and yellow, no black. */
  g_autofree guint8 *cmyk = g_malloc ((gsize) w * h * 4);
  for (int i = 0; i < w * h; i++) {
    cmyk[i * 4 + 0] = 255 - 0;
    cmyk[i * 4 + 1] = 255 - 255;
    cmyk[i * 4 + 2] = 255 - 255;
    cmyk[i * 4 + 3] = 255 - 0;
  }
  {
    gsize clen;
    g_autofree guint8 *cj = encode_jpeg (cmyk, w, h, 4, JCS_CMYK, 95, &clen);
    write_bytes (path, cj, clen);
    g_autoptr (AvqImage) im = load_ok (path);
    for (int i = 0; i < w * h; i++) {
      g_assert_cmpint (im->rgb[i * 3 + 0], >, 245);
      g_assert_cmpint (im->rgb[i * 3 + 1], <, 10);
      g_assert_cmpint (im->rgb[i * 3 + 2], <, 10);
    }
  }

  /* Truncated: an error, not a half-grey picture. */
  const gsize cuts[] = { 3, 20, len / 3, len / 2, len - 40 };
  for (guint i = 0; i < G_N_ELEMENTS (cuts); i++) {
    write_bytes (path, jpg, cuts[i]);
    assert_load_fails (path, "truncated JPEG");
  }

  /* Absurd and empty sizes in the frame header (SOF0: FF C0, length,
   * precision, height, width). */
  gsize sof = 0;
  for (gsize i = 2; i + 9 < len; i++)
    if (jpg[i] == 0xff && jpg[i + 1] == 0xc0) {
      sof = i;
      break;
    }
  g_assert_cmpuint (sof, >, 0);
  const guint16 dims[][2] = { { 60000, 60000 }, { 0, 48 }, { 48, 0 },
                              { 16385, 16 }, { 16384, 16384 } };
  g_autofree guint8 *copy = g_memdup2 (jpg, len);
  for (guint i = 0; i < G_N_ELEMENTS (dims); i++) {
    memcpy (copy, jpg, len);
    copy[sof + 5] = (guint8) (dims[i][1] >> 8);
    copy[sof + 6] = (guint8) dims[i][1];
    copy[sof + 7] = (guint8) (dims[i][0] >> 8);
    copy[sof + 8] = (guint8) dims[i][0];
    write_bytes (path, copy, len);
    assert_load_fails (path, "JPEG with absurd size");
  }

  /* Garbage after the signature. */
  static const guint8 junk[] = { 0xff, 0xd8, 0xff, 0x00, 0x12, 0x34, 0x56 };
  write_bytes (path, junk, sizeof junk);
  assert_load_fails (path, "JPEG junk");

  /* Random damage never crashes. */
  for (int iter = 0; iter < 300; iter++) {
    memcpy (copy, jpg, len);
    int flips = g_test_rand_int_range (1, 8);
    for (int f = 0; f < flips; f++)
      copy[g_test_rand_int_range (2, (gint32) len)] = (guint8) g_test_rand_int ();
    write_bytes (path, copy, len);
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqImage) im = avq_image_load (path, &error);
    g_assert_true ((im == NULL) != (error == NULL));
    if (im)
      g_assert_true (im->width > 0 && im->width <= AVQ_IMAGE_MAX_DIM
                     && im->height > 0 && im->height <= AVQ_IMAGE_MAX_DIM);
  }
  g_unlink (path);
}

/* ---- speed -------------------------------------------------------------- */

static void
test_speed_1080p (void)
{
  AvqPreprocessConfig pp;
  llava_config (&pp);
  const int w = 1920, h = 1080;
  g_autoptr (AvqImage) frame = avq_image_new (w, h);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++)
        frame->rgb[((gsize) y * w + x) * 3 + c] =
            (guint8) ((x / 7 + y / 5) * (c + 1) + ((x ^ y) & 15));
  g_autofree float *out = g_new (float, 3 * 336 * 336);
  for (int mode = 0; mode < 2; mode++) {
    const int runs = 5;
    gint64 best = G_MAXINT64;
    for (int r = 0; r < runs; r++) {
      gint64 t0 = g_get_monotonic_time ();
      g_assert_true (avq_preprocess (frame, &pp, (AvqPreprocessMode) mode, out,
                                     NULL));
      best = MIN (best, g_get_monotonic_time () - t0);
    }
    g_test_message ("1920x1080 %s: %.2f ms (best of %d)",
                    avq_preprocess_mode_to_string ((AvqPreprocessMode) mode),
                    best / 1000.0, runs);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  tmp_dir = g_dir_make_tmp ("avq-preprocess-XXXXXX", NULL);
  g_assert_nonnull (tmp_dir);

  g_test_add_func ("/preprocess/resize/torchvision", test_resize_torchvision);
  g_test_add_func ("/preprocess/resize/kernels-agree", test_resize_kernels_agree);
  g_test_add_func ("/preprocess/resize/edges", test_resize_edges);
  g_test_add_func ("/preprocess/fixture-pixel-values", test_fixture_pixel_values);
  g_test_add_func ("/preprocess/packed-formats", test_packed_formats);
  g_test_add_func ("/preprocess/pad-mode", test_pad_mode);
  g_test_add_func ("/preprocess/options", test_preprocess_options);
  g_test_add_func ("/preprocess/png/variants", test_png_variants);
  g_test_add_func ("/preprocess/png/hostile", test_png_hostile);
  g_test_add_func ("/preprocess/jpeg", test_jpeg);
  g_test_add_func ("/preprocess/speed-1080p", test_speed_1080p);

  int rc = g_test_run ();
  g_rmdir (tmp_dir);
  g_free (tmp_dir);
  return rc;
}
