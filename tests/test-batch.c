/* The engine's batch entry points on the CPU (AVQ_DEVICE=cpu): a batch is
 * the single-input calls one after another, so results must be bit-equal to
 * them, in any order and with repeated inputs; and a batch is validated as
 * a whole before anything runs (n = 0, NULL inputs, a frame that does not
 * match the AVQ file), the error naming the bad input and nothing returned.
 * The CUDA batches (one forward of n * 577 rows) are tested by test-cuda. */
#include <string.h>
#include "avq-engine.h"
#include "avq-error.h"
#include "test-util.h"

#define T 577
#define S 336
#define PX (3 * S * S)
#define FEAT ((T - 1) * 64)

static const char *const avq_files[] = { "L0-derive", "L1-side8" };

static AvqEngine *
cpu_engine (const char *avq)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  g_autofree char *rel = avq ? g_strdup_printf ("tiny-llava/avq-%s.safetensors", avq) : NULL;
  g_autofree char *path = rel ? avq_test_data_path (rel) : NULL;
  AvqEngineOptions opt = { .model_dir = dir, .avq_path = path, .device = AVQ_DEVICE_CPU };
  AvqEngine *e = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  return e;
}

/* The three fixture images, and a batch of them in a given order. */
static const float *
image (const float *px, int b)
{
  return px + (gsize) b * PX;
}

static void
test_encode (gconstpointer data)
{
  const char *avq = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqEngine) e = cpu_engine (avq);
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  AvqFrame *single[3];
  for (int b = 0; b < 3; b++) {
    single[b] = avq_engine_encode_pixels (e, image (px, b), &error);
    g_assert_no_error (error);
  }
  /* Different images, then one twice and out of order, then one alone. */
  static const int orders[][3] = { { 0, 1, 2 }, { 2, 0, 2 }, { 1, -1, -1 } };
  static const guint sizes[] = { 3, 3, 1 };
  for (guint o = 0; o < G_N_ELEMENTS (orders); o++) {
    const float *in[3];
    AvqFrame *out[3];
    for (guint i = 0; i < sizes[o]; i++)
      in[i] = image (px, orders[o][i]);
    g_assert_true (avq_engine_encode_pixels_batch (e, in, sizes[o], out, &error));
    g_assert_no_error (error);
    for (guint i = 0; i < sizes[o]; i++) {
      const AvqFrame *want = single[orders[o][i]];
      if (!avq_frame_equal (out[i], want))
        g_error ("%s order %u input %u: the batch's frame differs from the single call's",
                 avq, o, i);
      g_assert_cmpmem (out[i]->indices, T * 2, want->indices, T * 2);
      avq_frame_free (out[i]);
    }
  }
  for (int b = 0; b < 3; b++)
    avq_frame_free (single[b]);
}

static void
test_decode (gconstpointer data)
{
  const char *avq = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqEngine) e = cpu_engine (avq);
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  AvqFrame *frames[3];
  g_autofree float *single = g_new (float, 3 * FEAT);
  for (int b = 0; b < 3; b++) {
    frames[b] = avq_engine_encode_pixels (e, image (px, b), &error);
    g_assert_no_error (error);
    g_assert_true (avq_engine_decode_frame (e, frames[b], single + b * FEAT, &error));
    g_assert_no_error (error);
  }
  g_autofree float *got = g_new (float, 3 * FEAT);
  const AvqFrame *in[3] = { frames[1], frames[1], frames[0] };
  g_assert_true (avq_engine_decode_frames (e, in, 3, got, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (got, FEAT * 4, single + FEAT, FEAT * 4);
  g_assert_cmpmem (got + FEAT, FEAT * 4, single + FEAT, FEAT * 4);
  g_assert_cmpmem (got + 2 * FEAT, FEAT * 4, single, FEAT * 4);
  const AvqFrame *all[3] = { frames[0], frames[1], frames[2] };
  g_assert_true (avq_engine_decode_frames (e, all, 3, got, &error));
  g_assert_cmpmem (got, 3 * FEAT * 4, single, 3 * FEAT * 4);

  /* A frame of another codebook at input 2: refused before anything is
   * decoded, naming the input; the output is left as it was. */
  g_autoptr (AvqFrame) bad = avq_frame_copy (frames[2]);
  bad->codebook_id[0] ^= 0xff;
  const AvqFrame *mixed[3] = { frames[0], frames[1], bad };
  memset (got, 0x7f, 3 * FEAT * 4);
  g_assert_false (avq_engine_decode_frames (e, mixed, 3, got, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH);
  g_assert_nonnull (strstr (error->message, "input 2 of 3"));
  g_clear_error (&error);
  for (gsize i = 0; i < 3 * FEAT; i++)
    if (((guint32 *) got)[i] != 0x7f7f7f7fu)
      g_error ("features[%" G_GSIZE_FORMAT "] written by a refused batch", i);
  /* A NULL frame at input 1. */
  const AvqFrame *holes[2] = { frames[0], NULL };
  g_assert_false (avq_engine_decode_frames (e, holes, 2, got, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "input 1 of 2"));
  g_clear_error (&error);
  g_assert_false (avq_engine_decode_frames (e, all, 0, got, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_engine_decode_frames (e, NULL, 2, got, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_engine_decode_frames (e, all, 3, NULL, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  for (int b = 0; b < 3; b++)
    avq_frame_free (frames[b]);
}

static void
test_features (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqEngine) e = cpu_engine (NULL);
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  g_autofree float *single = g_new (float, 3 * FEAT);
  for (int b = 0; b < 3; b++) {
    g_assert_true (avq_engine_features_from_pixels (e, image (px, b), single + b * FEAT,
                                                    &error));
    g_assert_no_error (error);
  }
  g_autofree float *got = g_new (float, 3 * FEAT);
  const float *in[3] = { image (px, 2), image (px, 0), image (px, 2) };
  g_assert_true (avq_engine_features_from_pixels_batch (e, in, 3, got, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (got, FEAT * 4, single + 2 * FEAT, FEAT * 4);
  g_assert_cmpmem (got + FEAT, FEAT * 4, single, FEAT * 4);
  g_assert_cmpmem (got + 2 * FEAT, FEAT * 4, single + 2 * FEAT, FEAT * 4);
  const float *one[1] = { image (px, 1) };
  g_assert_true (avq_engine_features_from_pixels_batch (e, one, 1, got, &error));
  g_assert_cmpmem (got, FEAT * 4, single + FEAT, FEAT * 4);

  const float *holes[3] = { image (px, 0), image (px, 1), NULL };
  g_assert_false (avq_engine_features_from_pixels_batch (e, holes, 3, got, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "input 2 of 3"));
  g_clear_error (&error);
  g_assert_false (avq_engine_features_from_pixels_batch (e, in, 0, got, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
}

/* Encode errors: nothing returned, frames[] all NULL afterwards. */
static void
test_encode_errors (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqEngine) e = cpu_engine ("L1-side8");
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  AvqFrame *out[3];
  const float *holes[3] = { image (px, 0), NULL, image (px, 2) };
  for (int i = 0; i < 3; i++)
    out[i] = (AvqFrame *) &out;   /* junk the call must overwrite */
  g_assert_false (avq_engine_encode_pixels_batch (e, holes, 3, out, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "input 1 of 3"));
  g_clear_error (&error);
  for (int i = 0; i < 3; i++)
    g_assert_null (out[i]);
  g_assert_false (avq_engine_encode_pixels_batch (e, holes, 0, out, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_engine_encode_pixels_batch (e, NULL, 2, out, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_engine_encode_pixels_batch (e, holes, 1, NULL, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  /* Without an AVQ file: nothing to encode or decode with. */
  g_autoptr (AvqEngine) plain = cpu_engine (NULL);
  const float *in[1] = { image (px, 0) };
  out[0] = (AvqFrame *) &out;
  g_assert_false (avq_engine_encode_pixels_batch (plain, in, 1, out, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_null (out[0]);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS (avq_files); i++) {
    g_autofree char *p1 = g_strdup_printf ("/batch/%s/encode", avq_files[i]);
    g_autofree char *p2 = g_strdup_printf ("/batch/%s/decode", avq_files[i]);
    g_test_add_data_func (p1, avq_files[i], test_encode);
    g_test_add_data_func (p2, avq_files[i], test_decode);
  }
  g_test_add_func ("/batch/features", test_features);
  g_test_add_func ("/batch/encode-errors", test_encode_errors);
  return g_test_run ();
}
