/* The CLIP tower, the projector and the ops under them against the tiny
 * fixture (HF transformers reference), stage by stage from pixel_values. */
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include "avq-engine.h"
#include "avq-error.h"
#include "avq-ops.h"
#include "avq-vision.h"
#include "test-util.h"

#define TOL 1e-4
#define B 3
#define T 577
#define D 64
#define S 336

static AvqModel *
open_tiny (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  AvqModel *m = avq_model_open (dir, &error);
  g_assert_no_error (error);
  return m;
}

static void
test_ops_scalar (void)
{
  float x[5] = { -2.0f, -0.5f, 0.0f, 1.0f, 3.0f };
  float g[5], qg[5];
  memcpy (g, x, sizeof x);
  memcpy (qg, x, sizeof x);
  avq_gelu (g, 5);
  avq_quick_gelu (qg, 5);
  for (int i = 0; i < 5; i++) {
    double want = 0.5 * x[i] * (1 + erf (x[i] / sqrt (2.0)));
    double qwant = x[i] / (1 + exp (-1.702 * x[i]));
    g_assert_cmpfloat_with_epsilon (g[i], want, 1e-6);
    g_assert_cmpfloat_with_epsilon (qg[i], qwant, 1e-6);
  }
  float ties[6] = { 3, 1, NAN, 1, 0.5f, 0.5f };
  g_assert_cmpuint (avq_argmin (ties, 6), ==, 4);
  float nans[2] = { NAN, NAN };
  g_assert_cmpuint (avq_argmin (nans, 2), ==, 0);

  /* layernorm with a large common offset: statistics must not cancel. */
  float row[4] = { 1000.0f, 1001.0f, 1002.0f, 1003.0f }, out[4], mu, sd;
  float one[4] = { 1, 1, 1, 1 }, zero[4] = { 0 };
  avq_layernorm (row, 1, 4, one, zero, 1e-5f, out, &mu, &sd);
  g_assert_cmpfloat_with_epsilon (mu, 1001.5, 1e-3);
  g_assert_cmpfloat_with_epsilon (sd, sqrt (1.25 + 1e-5), 1e-5);
  g_assert_cmpfloat_with_epsilon (out[0], -1.5 / sqrt (1.25 + 1e-5), 1e-5);
}

/* The vectorised exp under softmax and the activations, against libm in
 * double, over the whole range including saturation and the scalar tail. */
static void
test_ops_exp (void)
{
  enum { N = 4003 };
  static float x[N], q[N], sl[N];
  for (int i = 0; i < N; i++)
    x[i] = -120.0f + 240.0f * i / (N - 1);
  memcpy (q, x, sizeof x);
  memcpy (sl, x, sizeof x);
  avq_quick_gelu (q, N);
  avq_activate (AVQ_ACT_SILU, sl, N);
  for (int i = 0; i < N; i++) {
    /* The float product -1.702f * x is the kernel's input: its own rounding
     * (relative 6e-8 of an argument up to 200) is not the exp's error. */
    double want = x[i] / (1 + exp ((double) (-1.702f * x[i])));
    double err = fabs (q[i] - want);
    if (!(err <= 1e-6 * fabs (want) + 1e-30))
      g_error ("quick_gelu(%g) = %.9g, want %.9g", x[i], q[i], want);
    want = x[i] / (1 + exp (-(double) x[i]));
    err = fabs (sl[i] - want);
    if (!(err <= 1e-6 * fabs (want) + 1e-30))
      g_error ("silu(%g) = %.9g, want %.9g", x[i], sl[i], want);
  }

  /* Rows of 13 (8 + a tail of 5) and 577 columns, with a huge spread. */
  const int cols[2] = { 13, 577 };
  for (int k = 0; k < 2; k++) {
    int n = cols[k];
    float *row = g_new (float, 2 * n);
    double *want = g_new (double, n);
    for (int r = 0; r < 2; r++)
      for (int c = 0; c < n; c++)
        row[r * n + c] = (float) (30.0 * sin (0.37 * c + r)) - (r ? 500.0f : 0.0f);
    double mx = -1e300, sum = 0;
    for (int c = 0; c < n; c++)
      mx = MAX (mx, row[c]);
    for (int c = 0; c < n; c++)
      sum += (want[c] = exp (row[c] - mx));
    avq_softmax_rows (row, 2, n, n);
    double total = 0;
    for (int c = 0; c < n; c++) {
      g_assert_cmpfloat_with_epsilon (row[c], want[c] / sum, 1e-6 * want[c] / sum + 1e-12);
      total += row[n + c];
    }
    g_assert_cmpfloat_with_epsilon (total, 1.0, 1e-5);
    g_free (row);
    g_free (want);
  }
}

/* Attention against a naive triple loop, with q/k/v read from a fused
 * buffer, as the tower passes them. */
static void
test_ops_attention (void)
{
  const int t = 7, d = 8, heads = 2, hd = 4;
  float qkv[7 * 24], out[7 * 8], scratch[49];
  GRand *r = g_rand_new_with_seed (7);
  for (int i = 0; i < t * 3 * d; i++)
    qkv[i] = (float) g_rand_double_range (r, -2, 2);
  g_rand_free (r);
  avq_attention (qkv, 3 * d, qkv + d, 3 * d, qkv + 2 * d, 3 * d, t, d, heads,
                 out, scratch);
  for (int h = 0; h < heads; h++)
    for (int i = 0; i < t; i++) {
      double s[7], mx = -1e30, sum = 0;
      for (int j = 0; j < t; j++) {
        s[j] = 0;
        for (int c = 0; c < hd; c++)
          s[j] += qkv[i * 24 + h * hd + c] * qkv[j * 24 + d + h * hd + c];
        s[j] /= sqrt (hd);
        mx = MAX (mx, s[j]);
      }
      for (int j = 0; j < t; j++)
        sum += (s[j] = exp (s[j] - mx));
      for (int c = 0; c < hd; c++) {
        double o = 0;
        for (int j = 0; j < t; j++)
          o += s[j] / sum * qkv[j * 24 + 2 * d + h * hd + c];
        g_assert_cmpfloat_with_epsilon (out[i * d + h * hd + c], o, 1e-5);
      }
    }

  /* linear: y = x W^T + b, W [out, in]. */
  float x[2 * 3] = { 1, 2, 3, -1, 0, 2 }, w[2 * 3] = { 1, 0, -1, 2, 1, 0 };
  float b[2] = { 0.5f, -1 }, y[4];
  avq_linear (x, 2, 3, w, b, 2, y);
  g_assert_cmpfloat (y[0], ==, 1 - 3 + 0.5f);
  g_assert_cmpfloat (y[1], ==, 2 + 2 - 1);
  g_assert_cmpfloat (y[2], ==, -1 - 2 + 0.5f);
  g_assert_cmpfloat (y[3], ==, -2 + 0 - 1);
}

static void
test_tower_stages (void)
{
  g_autoptr (AvqModel) model = open_tiny ();
  g_autoptr (GError) error = NULL;
  /* All 4 layers, one more than LLaVA runs, to check hidden_states[4]. */
  g_autoptr (AvqVisionTower) tw = avq_vision_tower_new (model, 4, &error);
  g_assert_no_error (error);
  g_assert_cmpint (tw->tokens, ==, T);
  g_assert_cmpint (tw->layers_run, ==, 3);
  g_assert_cmpint (avq_vision_feature_tokens (tw), ==, T - 1);
  g_autoptr (AvqVisionScratch) s = avq_vision_scratch_new (tw);
  g_autoptr (AvqProjector) proj = avq_projector_new (model, &error);
  g_assert_no_error (error);

  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  g_autofree float *x = g_new (float, T * D);
  g_autofree float *z = g_new (float, T * D);
  g_autofree float *sel = g_new (float, (T - 1) * D);
  g_autofree float *out = g_new (float, (T - 1) * D);
  g_autofree float *tmp = g_new (float, (T - 1) * D);
  g_autofree float *selected = avq_test_reference_f32 ("vision.selected", NULL);
  g_autofree float *projected = avq_test_reference_f32 ("projector.out", NULL);

  for (int b = 0; b < B; b++) {
    char what[64];
    avq_vision_embed (tw, px + (gsize) b * 3 * S * S, x, s);
    g_autofree float *h0 = avq_test_reference_f32 ("vision.hidden.0", NULL);
    g_snprintf (what, sizeof what, "image %d hidden.0", b);
    avq_test_assert_close (what, x, h0 + (gsize) b * T * D, T * D, TOL);
    for (int i = 0; i < 4; i++) {
      char name[64];
      g_snprintf (name, sizeof name, "vision.ln1_out.%d", i);
      g_autofree float *want_z = avq_test_reference_f32 (name, NULL);
      avq_vision_layer_ln1 (tw, i, x, z, NULL, NULL);
      g_snprintf (what, sizeof what, "image %d ln1_out.%d", b, i);
      avq_test_assert_close (what, z, want_z + (gsize) b * T * D, T * D, TOL);

      avq_vision_layer_from_ln1 (tw, i, x, z, s);
      g_snprintf (name, sizeof name, "vision.hidden.%d", i + 1);
      g_autofree float *want_h = avq_test_reference_f32 (name, NULL);
      g_snprintf (what, sizeof what, "image %d hidden.%d", b, i + 1);
      avq_test_assert_close (what, x, want_h + (gsize) b * T * D, T * D, TOL);

      if (i + 1 == tw->layers_run) {
        avq_vision_select (tw, x, sel);
        g_snprintf (what, sizeof what, "image %d selected", b);
        avq_test_assert_close (what, sel, selected + (gsize) b * (T - 1) * D,
                               (T - 1) * D, TOL);
        avq_projector_run (proj, sel, T - 1, out, tmp);
        g_snprintf (what, sizeof what, "image %d projector", b);
        avq_test_assert_close (what, out, projected + (gsize) b * (T - 1) * D,
                               (T - 1) * D, TOL);
      }
    }

    /* run_layers must agree with the step-by-step path. */
    avq_vision_embed (tw, px + (gsize) b * 3 * S * S, x, s);
    avq_vision_run_layers (tw, 0, 4, x, s);
    g_autofree float *h4 = avq_test_reference_f32 ("vision.hidden.4", NULL);
    g_snprintf (what, sizeof what, "image %d run_layers hidden.4", b);
    avq_test_assert_close (what, x, h4 + (gsize) b * T * D, T * D, TOL);
  }
}

static void
test_tower_layer_count (void)
{
  g_autoptr (AvqModel) model = open_tiny ();
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqVisionTower) tw = avq_vision_tower_new (model, -1, &error);
  g_assert_no_error (error);
  g_assert_cmpint (tw->n_layers, ==, 3);   /* feature layer -2 of 4 */

  g_autoptr (AvqVisionTower) edge = avq_vision_tower_new (model, 1, &error);
  g_assert_no_error (error);
  g_assert_cmpint (edge->n_layers, ==, 1);
  g_assert_true (avq_vision_tower_extend (edge, model, 3, &error));
  g_assert_no_error (error);
  g_assert_cmpint (edge->n_layers, ==, 3);
  g_assert_cmpmem (edge->layers[2].fc2_w, 64 * 256 * sizeof (float),
                   tw->layers[2].fc2_w, 64 * 256 * sizeof (float));

  g_autoptr (AvqVisionTower) bad = avq_vision_tower_new (model, 5, &error);
  g_assert_null (bad);
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
}

/* Writes a copy of the tiny model with one tensor dropped or replaced. */
static char *
write_broken_model (const char *drop, const char *replace, AvqDType dtype,
                    int ndim, const gint64 *shape, const void *data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *src = avq_test_data_path ("tiny-llava");
  g_autofree char *st_path = g_build_filename (src, "model.safetensors", NULL);
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (st_path, &error);
  g_assert_no_error (error);
  char *dir = g_dir_make_tmp ("avq-vision-XXXXXX", &error);
  g_assert_no_error (error);

  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  for (guint i = 0; i < avq_safetensors_n_tensors (st); i++) {
    const AvqTensor *t = avq_safetensors_nth (st, i);
    if (drop && strcmp (t->name, drop) == 0)
      continue;
    if (replace && strcmp (t->name, replace) == 0)
      avq_safetensors_writer_add (w, t->name, dtype, ndim, shape, data);
    else
      avq_safetensors_writer_add (w, t->name, t->dtype, t->ndim, t->shape, t->data);
  }
  g_autofree char *out = g_build_filename (dir, "model.safetensors", NULL);
  g_assert_true (avq_safetensors_writer_save (w, out, &error));
  g_assert_no_error (error);
  g_autofree char *cfg_src = g_build_filename (src, "config.json", NULL);
  g_autofree char *cfg_dst = g_build_filename (dir, "config.json", NULL);
  g_autofree char *json = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (cfg_src, &json, &len, NULL));
  g_assert_true (g_file_set_contents (cfg_dst, json, len, NULL));
  return dir;
}

static void
expect_tower_error (const char *dir, int n_layers, int code, const char *needle)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  g_assert_no_error (error);
  g_autoptr (AvqVisionTower) tw = avq_vision_tower_new (model, n_layers, &error);
  g_assert_null (tw);
  g_assert_error (error, AVQ_ERROR, code);
  g_test_message ("expected error: %s", error->message);
  g_assert_nonnull (strstr (error->message, needle));
}

static void
test_tower_malformed (void)
{
  const char *fc1 = "vision_tower.vision_model.encoder.layers.2.mlp.fc1.weight";
  char *dir = write_broken_model (fc1, NULL, 0, 0, NULL, NULL);
  expect_tower_error (dir, -1, AVQ_ERROR_MISSING, fc1);
  {
    /* The edge of a split at L = 1 needs layer 0 only: still loads. */
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqModel) model = avq_model_open (dir, &error);
    g_autoptr (AvqVisionTower) tw = avq_vision_tower_new (model, 1, &error);
    g_assert_no_error (error);
    g_assert_cmpint (tw->n_layers, ==, 1);
    g_assert_false (avq_vision_tower_check (model, -1, &error));
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISSING);
  }
  avq_test_remove_model_dir (dir);
  g_free (dir);

  const char *q = "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight";
  static float junk[577 * 65];
  const gint64 wrong[2] = { 64, 65 };
  dir = write_broken_model (NULL, q, AVQ_DTYPE_F32, 2, wrong, junk);
  expect_tower_error (dir, -1, AVQ_ERROR_SHAPE, q);
  avq_test_remove_model_dir (dir);
  g_free (dir);

  const char *pos = "vision_tower.vision_model.embeddings.position_embedding.weight";
  const gint64 short_pos[2] = { 576, 64 };
  dir = write_broken_model (NULL, pos, AVQ_DTYPE_F32, 2, short_pos, junk);
  expect_tower_error (dir, 0, AVQ_ERROR_SHAPE, pos);
  avq_test_remove_model_dir (dir);
  g_free (dir);

  const char *cls = "vision_tower.vision_model.embeddings.class_embedding";
  const gint64 vec[1] = { 64 };
  static gint32 ints[64];
  dir = write_broken_model (NULL, cls, AVQ_DTYPE_I32, 1, vec, ints);
  expect_tower_error (dir, 0, AVQ_ERROR_SHAPE, cls);
  avq_test_remove_model_dir (dir);
  g_free (dir);

  const char *p1 = "multi_modal_projector.linear_1.bias";
  dir = write_broken_model (p1, NULL, 0, 0, NULL, NULL);
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqModel) model = avq_model_open (dir, &error);
    g_autoptr (AvqProjector) p = avq_projector_new (model, &error);
    g_assert_null (p);
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISSING);
    g_clear_error (&error);
    AvqEngineOptions opt = { .model_dir = dir };
    g_autoptr (AvqEngine) e = avq_engine_new (&opt, &error);
    g_assert_null (e);
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISSING);
  }
  avq_test_remove_model_dir (dir);
  g_free (dir);
}

/* A config.json that disagrees with itself or asks for absurd sizes must fail
 * at load, whichever layer notices first (config parser or tower). */
static void
test_tower_bad_config (void)
{
  static const char *edits[][2] = {
    { "\"num_attention_heads\": 4", "\"num_attention_heads\": 5" },
    { "\"image_size\": 336", "\"image_size\": 2000" },
    { "\"image_size\": 336", "\"image_size\": 1806" },  /* 16642 tokens */
    { "\"hidden_size\": 64,\n    \"intermediate_size\": 256",
      "\"hidden_size\": 0,\n    \"intermediate_size\": 256" },
    { "\"vision_feature_layer\": -2", "\"vision_feature_layer\": -9" },
  };
  g_autofree char *src = avq_test_data_path ("tiny-llava");
  g_autofree char *cfg_src = g_build_filename (src, "config.json", NULL);
  g_autofree char *json = NULL;
  g_assert_true (g_file_get_contents (cfg_src, &json, NULL, NULL));
  for (guint i = 0; i < G_N_ELEMENTS (edits); i++) {
    g_autoptr (GError) error = NULL;
    char *at = strstr (json, edits[i][0]);
    g_assert_nonnull (at);
    g_autofree char *head = g_strndup (json, at - json);
    g_autofree char *edited = g_strconcat (head, edits[i][1],
                                           at + strlen (edits[i][0]), NULL);
    g_autofree char *dir = write_broken_model (NULL, NULL, 0, 0, NULL, NULL);
    g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
    g_assert_true (g_file_set_contents (cfg, edited, -1, NULL));
    g_autoptr (AvqModel) model = avq_model_open (dir, &error);
    g_autoptr (AvqVisionTower) tw = NULL;
    if (model != NULL)
      tw = avq_vision_tower_new (model, -1, &error);
    g_assert_null (tw);
    g_assert_nonnull (error);
    g_assert_true (error->domain == AVQ_ERROR);
    g_test_message ("config edit %u: %s", i, error->message);
    avq_test_remove_model_dir (dir);
  }
}

static void
test_engine_unsplit (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  AvqEngineOptions opt = { .model_dir = dir, .threads = 2 };
  g_autoptr (AvqEngine) e = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  g_assert_false (avq_engine_has_avq (e));
  g_assert_cmpuint (avq_engine_tokens (e), ==, T);
  g_assert_cmpuint (avq_engine_feature_tokens (e), ==, T - 1);
  g_assert_cmpuint (avq_engine_feature_dim (e), ==, 64);

  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  g_autofree float *want = avq_test_reference_f32 ("projector.out", NULL);
  g_autofree float *got = g_new (float, (T - 1) * 64);
  for (int b = 0; b < B; b++) {
    char what[64];
    g_assert_true (avq_engine_features_from_pixels (e, px + (gsize) b * 3 * S * S,
                                                    got, &error));
    g_assert_no_error (error);
    g_snprintf (what, sizeof what, "engine image %d projector", b);
    avq_test_assert_close (what, got, want + (gsize) b * (T - 1) * 64,
                           (T - 1) * 64, TOL);
  }

  /* Without an AVQ file there is nothing to encode or decode with. */
  AvqFrame *f = avq_engine_encode_pixels (e, px, &error);
  g_assert_null (f);
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
}

/* From the PNG through preprocessing: the preprocessing reproduces the
 * reference's resize exactly, so the same tolerance holds. */
static void
test_engine_image (void)
{
  static const char *images[B] = { "astronaut", "chelsea", "coffee" };
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  AvqEngineOptions opt = { .model_dir = dir };
  g_autoptr (AvqEngine) e = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  g_autofree float *want = avq_test_reference_f32 ("projector.out", NULL);
  g_autofree float *got = g_new (float, (T - 1) * 64);
  for (int b = 0; b < B; b++) {
    g_autofree char *rel = g_strdup_printf ("tiny-llava/images/%s.png", images[b]);
    g_autofree char *path = avq_test_data_path (rel);
    g_autoptr (AvqImage) img = avq_image_load (path, &error);
    g_assert_no_error (error);
    g_assert_true (avq_engine_features_from_image (e, img, AVQ_PREPROCESS_CROP,
                                                   got, &error));
    g_assert_no_error (error);
    char what[64];
    g_snprintf (what, sizeof what, "engine %s.png projector", images[b]);
    avq_test_assert_close (what, got, want + (gsize) b * (T - 1) * 64,
                           (T - 1) * 64, TOL);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ops/scalar", test_ops_scalar);
  g_test_add_func ("/ops/exp", test_ops_exp);
  g_test_add_func ("/ops/attention-linear", test_ops_attention);
  g_test_add_func ("/vision/tower-stages", test_tower_stages);
  g_test_add_func ("/vision/layer-count", test_tower_layer_count);
  g_test_add_func ("/vision/malformed", test_tower_malformed);
  g_test_add_func ("/vision/bad-config", test_tower_bad_config);
  g_test_add_func ("/vision/engine-unsplit", test_engine_unsplit);
  g_test_add_func ("/vision/engine-image", test_engine_image);
  return g_test_run ();
}
