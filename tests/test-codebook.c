/* Codebook training and fidelity (`avq train-codebook`, `avq eval`, and the
 * library pieces under them) on the tiny fixture. */
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include "avq-codebook.h"
#include "avq-engine.h"
#include "avq-error.h"
#include "avq-quantizer.h"
#include "test-util.h"


static void
train (const char *out, const char *k, const char *seed)
{
  g_autofree char *model = avq_test_data_path ("tiny-llava");
  g_autofree char *images = avq_test_data_path ("tiny-llava/images");
  const char *args[] = { "train-codebook", "--model", model, "--layer", "0", "-k", k,
                         "--iters", "15", "--seed", seed, "--threads", "1", "-o", out,
                         images, NULL };
  AvqCliRun r = avq_test_run_cli (args);
  if (r.status != 0)
    g_error ("train-codebook failed (%d): %s", r.status, r.err);
  g_assert_nonnull (strstr (r.err, "iteration 1:"));
  g_free (r.out);
  g_free (r.err);
}

static void
test_deterministic_and_loads (void)
{
  g_autofree char *a = avq_test_tmp_path ("a.safetensors");
  g_autofree char *b = avq_test_tmp_path ("b.safetensors");
  g_autofree char *c = avq_test_tmp_path ("c.safetensors");
  train (a, "64", "7");
  train (b, "64", "7");
  train (c, "64", "8");
  g_autofree char *da = NULL, *db = NULL, *dc = NULL;
  gsize la, lb, lc;
  g_assert_true (g_file_get_contents (a, &da, &la, NULL));
  g_assert_true (g_file_get_contents (b, &db, &lb, NULL));
  g_assert_true (g_file_get_contents (c, &dc, &lc, NULL));
  g_assert_cmpmem (da, la, db, lb);
  g_assert_false (la == lc && memcmp (da, dc, la) == 0);

  /* The file is a valid AVQ file for the model: it loads and encodes. */
  g_autoptr (GError) error = NULL;
  g_autofree char *model = avq_test_data_path ("tiny-llava");
  AvqEngineOptions options = { .model_dir = model, .avq_path = a };
  g_autoptr (AvqEngine) engine = avq_engine_new (&options, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_engine_index_bits (engine), ==, 6);
  g_assert_cmpint (avq_engine_residual (engine), ==, AVQ_RESIDUAL_DERIVE);
  g_autofree char *png = avq_test_data_path ("tiny-llava/images/coffee.png");
  g_autoptr (AvqImage) image = avq_image_load (png, &error);
  g_assert_no_error (error);
  g_autoptr (AvqFrame) frame = avq_engine_encode_image (engine, image, AVQ_PREPROCESS_CROP, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (frame->tokens, ==, 577);
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (a, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (avq_safetensors_metadata (st, "avq.codebook_size"), ==, "64");
  g_assert_cmpstr (avq_safetensors_metadata (st, "avq.residual"), ==, "derive");
}

/* A codebook of K training vectors picked at random is the baseline k-means
 * must beat on the fidelity `avq eval` measures. */
static double
mean_cosine (AvqEngine *engine, const char *avq_path)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqFidelityMeter) meter = avq_fidelity_meter_new (engine, avq_path, &error);
  g_assert_no_error (error);
  const char *names[] = { "astronaut", "chelsea", "coffee" };
  double sum = 0;
  for (guint i = 0; i < 3; i++) {
    g_autofree char *rel = g_strdup_printf ("tiny-llava/images/%s.png", names[i]);
    g_autofree char *path = avq_test_data_path (rel);
    g_autoptr (AvqImage) image = avq_image_load (path, &error);
    g_assert_no_error (error);
    AvqFidelity f;
    g_assert_true (avq_fidelity_measure (meter, image, AVQ_PREPROCESS_CROP, &f, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (f.bytes, ==, 16 + (577 * 6 + 7) / 8);
    g_assert_cmpfloat (f.quant_mse, >=, 0);
    sum += f.cosine;
  }
  return sum / 3;
}

static void
test_beats_random_codebook (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *model_dir = avq_test_data_path ("tiny-llava");
  g_autoptr (AvqModel) model = avq_model_open (model_dir, &error);
  g_assert_no_error (error);
  g_autoptr (AvqSplitExtractor) fx = avq_split_extractor_new (model, 0, &error);
  g_assert_no_error (error);
  const int T = avq_split_extractor_tokens (fx), D = avq_split_extractor_dim (fx);
  g_autofree float *z = g_new (float, (gsize) 3 * T * D);
  const char *names[] = { "astronaut", "chelsea", "coffee" };
  for (int i = 0; i < 3; i++) {
    g_autofree char *rel = g_strdup_printf ("tiny-llava/images/%s.png", names[i]);
    g_autofree char *path = avq_test_data_path (rel);
    g_autoptr (AvqImage) image = avq_image_load (path, &error);
    g_assert_no_error (error);
    g_assert_true (avq_split_extractor_run (fx, image, AVQ_PREPROCESS_CROP, z + (gsize) i * T * D, &error));
  }
  const guint K = 64;
  g_autofree float *random_cb = g_new (float, (gsize) K * D);
  g_autoptr (GRand) rng = g_rand_new_with_seed (3);
  for (guint k = 0; k < K; k++)
    memcpy (random_cb + (gsize) k * D, z + (gsize) g_rand_int_range (rng, 0, 3 * T) * D, D * sizeof (float));
  g_autofree char *random_path = avq_test_tmp_path ("random.safetensors");
  g_assert_true (avq_codebook_write (random_path, random_cb, K, D, 0, AVQ_RESIDUAL_DERIVE, 0, &error));
  g_assert_no_error (error);
  g_autofree char *trained_path = avq_test_tmp_path ("trained.safetensors");
  train (trained_path, "64", "1");

  AvqEngineOptions options = { .model_dir = model_dir, .avq_path = trained_path };
  g_autoptr (AvqEngine) engine = avq_engine_new (&options, &error);
  g_assert_no_error (error);
  double trained = mean_cosine (engine, trained_path);
  g_autoptr (AvqEngine) engine_random = NULL;
  options.avq_path = random_path;
  engine_random = avq_engine_new (&options, &error);
  g_assert_no_error (error);
  double random = mean_cosine (engine_random, random_path);
  g_test_message ("mean cosine: trained %.4f, random training vectors %.4f", trained, random);
  g_assert_cmpfloat (trained, >, random);
}

static void
test_eval_json (void)
{
  g_autofree char *model = avq_test_data_path ("tiny-llava");
  g_autofree char *avq = avq_test_data_path ("tiny-llava/avq-L1-side8.safetensors");
  g_autofree char *images = avq_test_data_path ("tiny-llava/images");
  const char *args[] = { "eval", "--model", model, "--avq", avq, "--json", images, NULL };
  AvqCliRun r = avq_test_run_cli (args);
  g_assert_cmpint (r.status, ==, 0);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_assert_true (json_parser_load_from_data (parser, r.out, -1, &error));
  JsonObject *root = json_node_get_object (json_parser_get_root (parser));
  JsonArray *imgs = json_object_get_array_member (root, "images");
  g_assert_cmpuint (json_array_get_length (imgs), ==, 3);
  JsonObject *first = json_array_get_object_element (imgs, 0);
  g_assert_true (g_str_has_suffix (json_object_get_string_member (first, "path"), "astronaut.png"));
  g_assert_cmpint (json_object_get_int_member (first, "bytes"), ==, 16 + 866 + 16 + 1154);
  JsonObject *summary = json_object_get_object_member (root, "summary");
  double mean = json_object_get_double_member (summary, "mean_cosine");
  double worst = json_object_get_double_member (summary, "worst_cosine");
  g_assert_cmpfloat (worst, <=, mean);
  g_assert_cmpfloat (mean, >, 0.5);
  g_assert_cmpfloat (mean, <=, 1.0);
  g_assert_true (json_object_has_member (summary, "mean_rel_error"));
  g_assert_true (json_object_has_member (summary, "quant_mse"));
  g_assert_cmpint (json_object_get_int_member (summary, "bytes_per_frame"), ==, 2052);
  g_free (r.out);
  g_free (r.err);
}

static void
test_bad_inputs (void)
{
  g_autofree char *model = avq_test_data_path ("tiny-llava");
  g_autofree char *images = avq_test_data_path ("tiny-llava/images");
  g_autofree char *out = avq_test_tmp_path ("never.safetensors");
  g_autofree char *empty_dir = avq_test_tmp_path ("empty");
  g_assert_cmpint (g_mkdir (empty_dir, 0700), ==, 0);
  g_autofree char *broken = avq_test_tmp_path ("broken.png");
  g_assert_true (g_file_set_contents (broken, "\x89PNG\r\n\x1a\nbroken", 14, NULL));

  struct { int status; const char *needle; const char *args[20]; } checks[] = {
    /* 3 images hold 1731 tokens: K = 4096 cannot be trained honestly. */
    { 1, "4096", { "train-codebook", "--model", model, "--layer", "0", "-o", out, images, NULL } },
    { 2, "power of two", { "train-codebook", "--model", model, "--layer", "0", "-k", "100", "-o", out, images, NULL } },
    { 1, "out of range", { "train-codebook", "--model", model, "--layer", "3", "-k", "64", "-o", out, images, NULL } },
    { 2, "derive", { "train-codebook", "--model", model, "--layer", "1", "--residual", "derive", "-k", "64", "-o", out, images, NULL } },
    { 1, "no images", { "train-codebook", "--model", model, "--layer", "0", "-k", "64", "-o", out, empty_dir, NULL } },
    { 1, "broken.png", { "train-codebook", "--model", model, "--layer", "0", "-k", "64", "-o", out, broken, NULL } },
    { 1, "missing.png", { "train-codebook", "--model", model, "--layer", "0", "-k", "64", "-o", out, "missing.png", NULL } },
    { 2, "--layer is required", { "train-codebook", "--model", model, "-o", out, images, NULL } },
    { 2, "--avq is required", { "eval", "--model", model, images, NULL } },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (checks); i++) {
    AvqCliRun r = avq_test_run_cli (checks[i].args);
    if (r.status != checks[i].status || strstr (r.err, checks[i].needle) == NULL)
      g_error ("check %" G_GSIZE_FORMAT ": exit %d (want %d), stderr: %s", i, r.status,
               checks[i].status, r.err);
    g_free (r.out);
    g_free (r.err);
  }
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
}

static void
test_side_codebook (void)
{
  g_autofree char *model = avq_test_data_path ("tiny-llava");
  g_autofree char *images = avq_test_data_path ("tiny-llava/images");
  g_autofree char *out = avq_test_tmp_path ("side.safetensors");
  const char *args[] = { "train-codebook", "--model", model, "--layer", "1", "--residual", "side",
                         "--side-bits", "6", "-k", "32", "--iters", "5", "-o", out, images, NULL };
  AvqCliRun r = avq_test_run_cli (args);
  g_assert_cmpint (r.status, ==, 0);
  g_free (r.out);
  g_free (r.err);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqModel) m = avq_model_open (model, &error);
  g_assert_no_error (error);
  g_autoptr (AvqQuantizer) q = avq_quantizer_load (out, m, &error);
  g_assert_no_error (error);
  g_assert_cmpint (q->layer, ==, 1);
  g_assert_cmpint (q->residual, ==, AVQ_RESIDUAL_SIDE);
  g_assert_cmpuint (q->side_bits, ==, 6);
  g_assert_cmpuint (q->index_bits, ==, 5);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/codebook/deterministic-and-loads", test_deterministic_and_loads);
  g_test_add_func ("/codebook/beats-random-codebook", test_beats_random_codebook);
  g_test_add_func ("/codebook/side", test_side_codebook);
  g_test_add_func ("/codebook/eval-json", test_eval_json);
  g_test_add_func ("/codebook/bad-inputs", test_bad_inputs);
  return g_test_run ();
}
