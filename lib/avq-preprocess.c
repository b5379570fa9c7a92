/* CLIP image preprocessing (AVQ-SPEC section 3).
 *
 * The reference is transformers' CLIPImageProcessor on its torchvision
 * backend, whose resize is torch's antialiased bicubic on uint8 images. That
 * kernel is integer arithmetic, so it can be reproduced exactly, and it is:
 * the vision tower then sees the same pixel values as the reference instead
 * of values a level or two off on edges.
 *
 * The resampler, as torch defines it (derived from its documented behaviour
 * and checked bit for bit against torchvision on random sizes):
 *   - separable; the horizontal pass runs first, each pass rounds and clamps
 *     to uint8, and an axis whose size does not change is not resampled;
 *   - Keys cubic, a = -0.5, support 2 widened by the scale when shrinking;
 *   - output i is centred on scale * (i + 0.5) in input coordinates
 *     (scale = in / out), taps from int(center - support + 0.5) (at least 0)
 *     to int(center + support + 0.5) (at most in), tap j weighted by
 *     filter((j - center + 0.5) / max(scale, 1)), normalised to sum 1;
 *   - weights become int16 with a per-axis number of fraction bits: the most
 *     (below 22) that keep the axis' largest weight under 2^15; a pass sums
 *     pixel * weight onto 2^(bits-1) and shifts right by bits.
 *
 * Only the pixels that survive the center crop are computed: the horizontal
 * pass produces the cropped columns of the rows the vertical pass reads, the
 * vertical pass only the cropped rows. Each output depends only on its own
 * taps, so this changes no value, and it roughly halves the work on 16:9
 * frames. */
#include "avq-image.h"
#include "avq-error.h"

#include <math.h>
#include <string.h>

#define CUBIC_A (-0.5)
#define CUBIC_SUPPORT 2.0   /* half of the 4-tap kernel */
#define MAX_WEIGHT_BITS 22

gboolean
avq_preprocess_mode_from_string (const char *s, AvqPreprocessMode *mode)
{
  if (s == NULL)
    return FALSE;
  if (g_ascii_strcasecmp (s, "crop") == 0) {
    *mode = AVQ_PREPROCESS_CROP;
    return TRUE;
  }
  if (g_ascii_strcasecmp (s, "pad") == 0) {
    *mode = AVQ_PREPROCESS_PAD;
    return TRUE;
  }
  return FALSE;
}

const char *
avq_preprocess_mode_to_string (AvqPreprocessMode mode)
{
  switch (mode) {
  case AVQ_PREPROCESS_CROP: return "crop";
  case AVQ_PREPROCESS_PAD: return "pad";
  }
  return "unknown";
}

/* ---- weights ------------------------------------------------------------ */

static double
cubic (double x)
{
  /* Evaluated in this exact order: the weights are rounded to int16 later,
   * and a different association could move one across a rounding edge. */
  x = fabs (x);
  if (x < 1.0)
    return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1;
  if (x < 2.0)
    return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A;
  return 0.0;
}

typedef struct {
  int in_size;
  int first, count;   /* the outputs this axis was prepared for */
  int taps;           /* stride of `weights` */
  int bits;           /* fraction bits of the int16 weights */
  int *start;         /* first input index per output */
  int *n;             /* number of taps per output */
  gint16 *weights;
} Axis;

static void
axis_clear (Axis *ax)
{
  g_free (ax->start);
  g_free (ax->n);
  g_free (ax->weights);
  memset (ax, 0, sizeof *ax);
}

/* Float weights of output i, normalised; returns the tap count. */
static int
axis_weights (int in_size, double scale, double support, int taps, gint64 i,
              double *w, int *start)
{
  double center = scale * (i + 0.5);
  double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  gint64 lo = (gint64) (center - support + 0.5);
  gint64 hi = (gint64) (center + support + 0.5);
  if (lo < 0)
    lo = 0;
  if (hi > in_size)
    hi = in_size;
  gint64 n = CLAMP (hi - lo, 0, taps);
  double total = 0.0;
  for (gint64 j = 0; j < n; j++) {
    w[j] = cubic ((j + lo - center + 0.5) * invscale);
    total += w[j];
  }
  if (total != 0.0)
    for (gint64 j = 0; j < n; j++)
      w[j] /= total;
  *start = (int) lo;
  return (int) n;
}

/* Prepares outputs [first, first + count) of an in_size -> out_size axis.
 * The precision depends on the largest weight of the whole axis, so every
 * output is evaluated once, but only the requested ones are stored. */
static gboolean
axis_init (Axis *ax, int in_size, int out_size, int first, int count)
{
  memset (ax, 0, sizeof *ax);
  double scale = (double) in_size / out_size;
  double support = scale >= 1.0 ? CUBIC_SUPPORT * scale : CUBIC_SUPPORT;
  int taps = (int) ceil (support) * 2 + 1;
  double *w = g_new (double, taps);
  int start;

  double wmax = 0.0;
  for (int i = 0; i < out_size; i++) {
    int n = axis_weights (in_size, scale, support, taps, i, w, &start);
    for (int j = 0; j < n; j++)
      wmax = MAX (wmax, w[j]);
  }
  int bits;
  for (bits = 0; bits < MAX_WEIGHT_BITS; bits++)
    if ((int) (0.5 + wmax * (double) (1 << (bits + 1))) >= (1 << 15))
      break;

  ax->in_size = in_size;
  ax->first = first;
  ax->count = count;
  ax->taps = taps;
  ax->bits = bits;
  ax->start = g_try_new (int, count);
  ax->n = g_try_new (int, count);
  ax->weights = g_try_new0 (gint16, (gsize) count * taps);
  if (ax->start == NULL || ax->n == NULL || ax->weights == NULL) {
    g_free (w);
    axis_clear (ax);
    return FALSE;
  }
  for (int i = 0; i < count; i++) {
    int n = axis_weights (in_size, scale, support, taps, (gint64) first + i, w,
                          &ax->start[i]);
    ax->n[i] = n;
    gint16 *q = ax->weights + (gsize) i * taps;
    for (int j = 0; j < n; j++) {
      double v = w[j] * (double) (1 << bits);
      q[j] = (gint16) (v < 0 ? (int) (-0.5 + v) : (int) (0.5 + v));
    }
  }
  g_free (w);
  return TRUE;
}

static inline guint8
clamp_u8 (gint32 v)
{
  return (guint8) (v < 0 ? 0 : v > 255 ? 255 : v);
}

/* ---- the source: an image, possibly centred on a padded square ----------- */

typedef struct {
  const AvqImage *image;
  int width, height;     /* of the (virtual) source */
  int off_x, off_y;      /* position of the image inside it */
  guint8 fill[3];
  guint8 *scratch;       /* one padded row; NULL when there is no padding */
} Source;

static gboolean
source_is_fill_row (const Source *s, int y)
{
  return y < s->off_y || y >= s->off_y + s->image->height;
}

/* Row y of the source; only columns [xa, xb) are guaranteed valid. */
static const guint8 *
source_row (Source *s, int y, int xa, int xb)
{
  const AvqImage *im = s->image;
  if (s->scratch == NULL)
    return im->rgb + (gsize) y * im->width * 3;
  int ia = xb, ib = xb;   /* the part of [xa, xb) the image covers */
  if (!source_is_fill_row (s, y)) {
    ia = CLAMP (s->off_x, xa, xb);
    ib = CLAMP (s->off_x + im->width, ia, xb);
  }
  guint8 *row = s->scratch;
  for (int x = xa; x < ia; x++)
    memcpy (row + (gsize) x * 3, s->fill, 3);
  if (ib > ia)
    memcpy (row + (gsize) ia * 3,
            im->rgb + ((gsize) (y - s->off_y) * im->width + (ia - s->off_x)) * 3,
            (gsize) (ib - ia) * 3);
  for (int x = ib; x < xb; x++)
    memcpy (row + (gsize) x * 3, s->fill, 3);
  return row;
}

/* ---- the multiply-add kernel -------------------------------------------- */

/* Both passes reduce to the same operation on equally spaced rows of bytes:
 *   out[j] = clamp((2^(bits-1) + sum_k w[k] * row_k[j]) >> bits, 0, 255)
 * with row_k = base + k * stride. The vertical pass reads image rows; the
 * horizontal pass reads a transposed block, where each "row" holds one input
 * column of BLOCK_ROWS rows. Rows must be readable up to len rounded up to
 * 16 bytes. Integer sums are exact, so the SIMD and scalar versions agree
 * bit for bit (the test checks). */
static gboolean force_scalar;

void
avq_image_resize_force_scalar (gboolean scalar)
{
  force_scalar = scalar;
}

static void
mac_rows_scalar (const guint8 *base, gsize stride, const gint16 *w, int n,
                 int bits, gsize len, guint8 *out)
{
  const gint32 bias = 1 << (bits - 1);
  for (gsize j = 0; j < len; j++) {
    gint32 sum = bias;
    const guint8 *p = base + j;
    for (int k = 0; k < n; k++, p += stride)
      sum += w[k] * *p;
    out[j] = clamp_u8 (sum >> bits);
  }
}

#ifdef __SSE2__
#include <emmintrin.h>

/* Two rows at a time: interleaving their bytes lets one pmaddwd form
 * a * w[k] + b * w[k + 1] for four pixels. */
static void
mac_rows_sse2 (const guint8 *base, gsize stride, const gint16 *w, int n,
               int bits, gsize len, guint8 *out)
{
  const __m128i zero = _mm_setzero_si128 ();
  const __m128i bias = _mm_set1_epi32 (1 << (bits - 1));
  const __m128i shift = _mm_cvtsi32_si128 (bits);
  for (gsize j = 0; j < len; j += 16) {
    __m128i s0 = bias, s1 = bias, s2 = bias, s3 = bias;
    const guint8 *p = base + j;
    for (int k = 0; k < n; k += 2, p += 2 * stride) {
      __m128i a = _mm_loadu_si128 ((const __m128i *) p);
      __m128i b = zero;
      guint32 pair = (guint16) w[k];
      if (k + 1 < n) {
        b = _mm_loadu_si128 ((const __m128i *) (p + stride));
        pair |= (guint32) (guint16) w[k + 1] << 16;
      }
      const __m128i wk = _mm_set1_epi32 ((gint32) pair);
      const __m128i lo = _mm_unpacklo_epi8 (a, b);
      const __m128i hi = _mm_unpackhi_epi8 (a, b);
      s0 = _mm_add_epi32 (s0, _mm_madd_epi16 (_mm_unpacklo_epi8 (lo, zero), wk));
      s1 = _mm_add_epi32 (s1, _mm_madd_epi16 (_mm_unpackhi_epi8 (lo, zero), wk));
      s2 = _mm_add_epi32 (s2, _mm_madd_epi16 (_mm_unpacklo_epi8 (hi, zero), wk));
      s3 = _mm_add_epi32 (s3, _mm_madd_epi16 (_mm_unpackhi_epi8 (hi, zero), wk));
    }
    /* The shifted sums fit int16 (|sum| <= 1.3 * 255 << bits), so the
     * saturating packs are exactly the clamp to 0..255. */
    __m128i v = _mm_packus_epi16 (
        _mm_packs_epi32 (_mm_sra_epi32 (s0, shift), _mm_sra_epi32 (s1, shift)),
        _mm_packs_epi32 (_mm_sra_epi32 (s2, shift), _mm_sra_epi32 (s3, shift)));
    if (j + 16 <= len) {
      _mm_storeu_si128 ((__m128i *) (out + j), v);
    } else {
      guint8 tail[16];
      _mm_storeu_si128 ((__m128i *) tail, v);
      memcpy (out + j, tail, len - j);
    }
  }
}
#endif

static void
mac_rows (const guint8 *base, gsize stride, const gint16 *w, int n, int bits,
          gsize len, guint8 *out)
{
#ifdef __SSE2__
  if (!force_scalar) {
    mac_rows_sse2 (base, stride, w, n, bits, len, out);
    return;
  }
#endif
  mac_rows_scalar (base, stride, w, n, bits, len, out);
}

#define BLOCK_ROWS 16
#define BLOCK_BYTES (BLOCK_ROWS * 3)

/* Resizes the source to out_w x out_h and writes the window
 * [x0, x1) x [y0, y1) of the result, packed RGB, to dst. */
static gboolean
resample_window (Source *src, int out_w, int out_h, int x0, int x1, int y0,
                 int y1, guint8 *dst)
{
  const int cols = x1 - x0, rows = y1 - y0;
  const gsize row_bytes = (gsize) cols * 3;
  /* Padded so the kernel may read whole 16-byte groups. */
  const gsize tmp_stride = (row_bytes + 15) & ~(gsize) 15;
  const gboolean horiz = out_w != src->width;
  const gboolean vert = out_h != src->height;
  Axis ax = { 0 }, ay = { 0 };
  guint8 *tmp = NULL, *block = NULL;
  guint8 *constant = NULL;   /* per output column: flag and 3 bytes */
  gboolean ok = FALSE;

  if (horiz && !axis_init (&ax, src->width, out_w, x0, cols))
    goto out;
  if (vert && !axis_init (&ay, src->height, out_h, y0, rows))
    goto out;

  /* Source rows the vertical pass will read. */
  int r0 = y0, r1 = y1;
  if (vert) {
    r0 = G_MAXINT;
    r1 = 0;
    for (int i = 0; i < rows; i++) {
      if (ay.n[i] == 0)
        continue;
      r0 = MIN (r0, ay.start[i]);
      r1 = MAX (r1, ay.start[i] + ay.n[i]);
    }
    if (r0 >= r1)
      r0 = r1 = 0;
    tmp = g_try_malloc0 ((gsize) (r1 - r0) * tmp_stride + 16);
    if (tmp == NULL)
      goto out;
  }

  /* Source columns the horizontal pass will read. In a padded source an
   * output whose taps all fall on fill columns is the same in every row:
   * each tap reads the fill value v, so the sum is bias + v * sum(w). Such
   * outputs are computed once and their columns never read, which keeps
   * padding a tall image cheap. */
  int c0 = x0, c1 = x1;
  if (horiz) {
    const int img_x0 = src->off_x, img_x1 = src->off_x + src->image->width;
    if (src->scratch != NULL && (constant = g_try_malloc0 ((gsize) cols * 4)) == NULL)
      goto out;
    c0 = G_MAXINT;
    c1 = 0;
    for (int i = 0; i < cols; i++) {
      const int s0 = ax.start[i], s1 = s0 + ax.n[i];
      if (constant != NULL && (s1 <= img_x0 || s0 >= img_x1)) {
        const gint16 *w = ax.weights + (gsize) i * ax.taps;
        gint32 wsum = 0;
        for (int k = 0; k < ax.n[i]; k++)
          wsum += w[k];
        constant[i * 4] = 1;
        for (int c = 0; c < 3; c++)
          constant[i * 4 + 1 + c] =
              clamp_u8 (((1 << (ax.bits - 1)) + src->fill[c] * wsum) >> ax.bits);
        continue;
      }
      if (ax.n[i] == 0)
        continue;
      c0 = MIN (c0, s0);
      c1 = MAX (c1, s1);
    }
    if (c0 >= c1)
      c0 = c1 = 0;
    block = g_try_malloc0 ((gsize) (c1 - c0) * BLOCK_BYTES + 16);
    if (block == NULL)
      goto out;
  }

  /* Horizontal pass, BLOCK_ROWS rows at a time: the block is transposed so
   * that one input column of all its rows is contiguous, and each output
   * pixel becomes one kernel call over 16 rows x 3 channels. In a padded
   * source every all-fill row resamples to the same thing, so blocks made
   * only of fill rows copy the first one computed. */
  guint8 *hout = vert ? tmp : dst;
  const gsize hstride = vert ? tmp_stride : row_bytes;
  int fill_done = -1;
  for (int y = r0; y < r1; y += BLOCK_ROWS) {
    const int nr = MIN (BLOCK_ROWS, r1 - y);
    gboolean all_fill = src->scratch != NULL, any_fill = FALSE;
    for (int r = 0; r < nr; r++) {
      gboolean f = src->scratch != NULL && source_is_fill_row (src, y + r);
      all_fill = all_fill && f;
      any_fill = any_fill || f;
    }
    if (all_fill && fill_done >= 0) {
      for (int r = 0; r < nr; r++)
        memcpy (hout + (gsize) (y + r - r0) * hstride,
                hout + (gsize) (fill_done - r0) * hstride, row_bytes);
      continue;
    }
    if (!horiz) {
      for (int r = 0; r < nr; r++)
        memcpy (hout + (gsize) (y + r - r0) * hstride,
                source_row (src, y + r, x0, x1) + (gsize) x0 * 3, row_bytes);
    } else {
      for (int r = 0; r < nr; r++) {
        const guint8 *in = source_row (src, y + r, c0, c1) + (gsize) c0 * 3;
        guint8 *t = block + r * 3;
        for (int x = c0; x < c1; x++, in += 3, t += BLOCK_BYTES) {
          t[0] = in[0];
          t[1] = in[1];
          t[2] = in[2];
        }
      }
      guint8 res[BLOCK_BYTES];
      for (int i = 0; i < cols; i++) {
        if (constant != NULL && constant[i * 4]) {
          guint8 *o = hout + (gsize) (y - r0) * hstride + (gsize) i * 3;
          for (int r = 0; r < nr; r++, o += hstride)
            memcpy (o, constant + i * 4 + 1, 3);
          continue;
        }
        if (ax.n[i] == 0) {
          guint8 *o = hout + (gsize) (y - r0) * hstride + (gsize) i * 3;
          for (int r = 0; r < nr; r++, o += hstride)
            memset (o, 0, 3);
          continue;
        }
        mac_rows (block + (gsize) (ax.start[i] - c0) * BLOCK_BYTES, BLOCK_BYTES,
                  ax.weights + (gsize) i * ax.taps, ax.n[i], ax.bits,
                  (gsize) nr * 3, res);
        guint8 *o = hout + (gsize) (y - r0) * hstride + (gsize) i * 3;
        for (int r = 0; r < nr; r++, o += hstride) {
          o[0] = res[r * 3 + 0];
          o[1] = res[r * 3 + 1];
          o[2] = res[r * 3 + 2];
        }
      }
    }
    if (any_fill && fill_done < 0)
      for (int r = 0; r < nr && fill_done < 0; r++)
        if (source_is_fill_row (src, y + r))
          fill_done = y + r;
  }

  /* Vertical pass. */
  if (vert)
    for (int i = 0; i < rows; i++)
      mac_rows (tmp + (gsize) (ay.start[i] - r0) * tmp_stride, tmp_stride,
                ay.weights + (gsize) i * ay.taps, ay.n[i], ay.bits, row_bytes,
                dst + (gsize) i * row_bytes);
  ok = TRUE;

out:
  axis_clear (&ax);
  axis_clear (&ay);
  g_free (tmp);
  g_free (block);
  g_free (constant);
  return ok;
}

AvqImage *
avq_image_resize_bicubic (const AvqImage *image, int width, int height)
{
  if (image == NULL || image->rgb == NULL || image->width <= 0
      || image->height <= 0 || image->width > AVQ_IMAGE_MAX_DIM
      || image->height > AVQ_IMAGE_MAX_DIM)
    return NULL;
  AvqImage *out = avq_image_new (width, height);
  if (out == NULL)
    return NULL;
  Source src = { image, image->width, image->height, 0, 0, { 0 }, NULL };
  if (!resample_window (&src, width, height, 0, width, 0, height, out->rgb)) {
    avq_image_free (out);
    return NULL;
  }
  return out;
}

/* ---- the processor ------------------------------------------------------ */

/* Top-left of a centred crop of n to c. Shrinking uses floor((n - c) / 2)
 * like the reference; growing pads (c - n) // 2 on the leading side, which
 * is the negative of that only when c - n is even. */
static int
crop_offset (int n, int c)
{
  return n >= c ? (n - c) / 2 : -((c - n) / 2);
}

/* The value the reference computes for pixel value v of channel c, in its
 * float32 arithmetic: with both steps on it folds the rescale into mean and
 * std ((v - mean / factor) / (std / factor)), otherwise it scales, then
 * normalises. */
static void
build_lut (const AvqPreprocessConfig *pp, float lut[3][256])
{
  /* The factor is stored as a float; its reciprocal then lands an ulp away
   * from the 255 the reference gets from 1/255 in double. */
  double inv = 1.0 / (double) pp->rescale_factor;
  if (fabs (inv - nearbyint (inv)) < 1e-4 * fabs (inv))
    inv = nearbyint (inv);
  for (int c = 0; c < 3; c++) {
    float mean = pp->image_mean[c], std = pp->image_std[c];
    if (pp->do_rescale && pp->do_normalize) {
      mean = mean * (float) inv;
      std = std * (float) inv;
    }
    for (int v = 0; v < 256; v++) {
      float x = (float) v;
      if (pp->do_rescale && !pp->do_normalize)
        x = x * pp->rescale_factor;
      else if (pp->do_normalize)
        x = (x - mean) / std;
      lut[c][v] = x;
    }
  }
}

static gboolean
check_config (const AvqPreprocessConfig *pp, GError **error)
{
  if (pp->do_resize
      && (pp->shortest_edge <= 0 || pp->shortest_edge > AVQ_IMAGE_MAX_DIM)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "preprocess: shortest_edge %d is outside 1..%d",
                 pp->shortest_edge, AVQ_IMAGE_MAX_DIM);
    return FALSE;
  }
  if (pp->crop_width <= 0 || pp->crop_height <= 0
      || pp->crop_width > AVQ_IMAGE_MAX_DIM
      || pp->crop_height > AVQ_IMAGE_MAX_DIM) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "preprocess: crop size %dx%d is outside 1..%d",
                 pp->crop_width, pp->crop_height, AVQ_IMAGE_MAX_DIM);
    return FALSE;
  }
  for (int c = 0; c < 3; c++) {
    if (pp->do_normalize && !(isfinite (pp->image_std[c])
                              && pp->image_std[c] != 0.0f
                              && isfinite (pp->image_mean[c]))) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "preprocess: image_mean/image_std of channel %d "
                   "(%g, %g) cannot normalise", c, pp->image_mean[c],
                   pp->image_std[c]);
      return FALSE;
    }
  }
  if (pp->do_rescale && !(isfinite (pp->rescale_factor)
                          && pp->rescale_factor > 0.0f)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "preprocess: rescale_factor %g is not a positive number",
                 pp->rescale_factor);
    return FALSE;
  }
  return TRUE;
}

gboolean
avq_preprocess (const AvqImage *image, const AvqPreprocessConfig *pp,
                AvqPreprocessMode mode, float *pixel_values, GError **error)
{
  g_return_val_if_fail (pp != NULL && pixel_values != NULL, FALSE);
  if (image == NULL || image->rgb == NULL || image->width <= 0
      || image->height <= 0 || image->width > AVQ_IMAGE_MAX_DIM
      || image->height > AVQ_IMAGE_MAX_DIM) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "preprocess: image of %dx%d is empty or larger than %d",
                 image ? image->width : 0, image ? image->height : 0,
                 AVQ_IMAGE_MAX_DIM);
    return FALSE;
  }
  if (mode != AVQ_PREPROCESS_CROP && mode != AVQ_PREPROCESS_PAD) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "preprocess: unknown mode %d", (int) mode);
    return FALSE;
  }
  if (!check_config (pp, error))
    return FALSE;

  Source src = { image, image->width, image->height, 0, 0, { 0 }, NULL };
  if (mode == AVQ_PREPROCESS_PAD && image->width != image->height) {
    /* LLaVA's expand2square: background int(mean * 255), image pasted at
     * ((side - w) // 2, (side - h) // 2). */
    int side = MAX (image->width, image->height);
    src.width = src.height = side;
    src.off_x = (side - image->width) / 2;
    src.off_y = (side - image->height) / 2;
    for (int c = 0; c < 3; c++)
      src.fill[c] = (guint8) CLAMP ((int) ((double) pp->image_mean[c] * 255.0),
                                    0, 255);
  }

  /* Shorter side to shortest_edge; the longer one is truncated the way the
   * reference's int(edge * long / short) truncates a double. */
  gint64 rw = src.width, rh = src.height;
  if (pp->do_resize) {
    gint64 s = MIN (rw, rh), l = MAX (rw, rh);
    if (s != pp->shortest_edge) {
      gint64 nl = (gint64) ((double) ((gint64) pp->shortest_edge * l)
                            / (double) s);
      if (rw <= rh) {
        rw = pp->shortest_edge;
        rh = nl;
      } else {
        rh = pp->shortest_edge;
        rw = nl;
      }
    }
  }
  if (rw <= 0 || rh <= 0 || rw > G_MAXINT / 4 || rh > G_MAXINT / 4) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "preprocess: a %dx%d image resizes to %" G_GINT64_FORMAT "x%"
                 G_GINT64_FORMAT ", out of range", image->width, image->height,
                 rw, rh);
    return FALSE;
  }

  const int cw = pp->crop_width, ch = pp->crop_height;
  int top = 0, left = 0;
  if (pp->do_center_crop) {
    top = crop_offset ((int) rh, ch);
    left = crop_offset ((int) rw, cw);
  } else if (rw != cw || rh != ch) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "preprocess: without center crop the %" G_GINT64_FORMAT "x%"
                 G_GINT64_FORMAT " result does not fill the %dx%d output",
                 rw, rh, cw, ch);
    return FALSE;
  }
  /* Output window covered by the resized image; the rest is zero padding. */
  int ox0 = MAX (0, -left), ox1 = (int) MIN ((gint64) cw, rw - left);
  int oy0 = MAX (0, -top), oy1 = (int) MIN ((gint64) ch, rh - top);
  int cols = ox1 - ox0, rows = oy1 - oy0;

  guint8 *window = g_try_malloc ((gsize) cols * rows * 3 + 1);
  if (window == NULL
      || ((src.width != image->width || src.height != image->height)
          && (src.scratch = g_try_malloc ((gsize) src.width * 3)) == NULL)) {
    g_free (window);
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO,
                 "preprocess: out of memory for a %dx%d image", image->width,
                 image->height);
    return FALSE;
  }
  gboolean ok = resample_window (&src, (int) rw, (int) rh, ox0 + left,
                                 ox1 + left, oy0 + top, oy1 + top, window);
  g_free (src.scratch);
  if (!ok) {
    g_free (window);
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO,
                 "preprocess: out of memory resizing %dx%d to %" G_GINT64_FORMAT
                 "x%" G_GINT64_FORMAT, image->width, image->height, rw, rh);
    return FALSE;
  }

  float lut[3][256];
  build_lut (pp, lut);
  const gsize plane = (gsize) cw * ch;
  for (int c = 0; c < 3; c++) {
    float *dst = pixel_values + c * plane;
    const float pad = lut[c][0];
    for (int y = 0; y < ch; y++) {
      float *o = dst + (gsize) y * cw;
      if (y < oy0 || y >= oy1) {
        for (int x = 0; x < cw; x++)
          o[x] = pad;
        continue;
      }
      const guint8 *in = window + (gsize) (y - oy0) * cols * 3 + c;
      for (int x = 0; x < ox0; x++)
        o[x] = pad;
      for (int x = ox0; x < ox1; x++)
        o[x] = lut[c][in[(gsize) (x - ox0) * 3]];
      for (int x = ox1; x < cw; x++)
        o[x] = pad;
    }
  }
  g_free (window);
  return TRUE;
}
