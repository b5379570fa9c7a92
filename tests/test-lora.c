/* LoRA adapters carried by an AVQ file (AVQ-SPEC section 2): merging them
 * at load must give the same model as weights merged by hand,
 * W' = W + (alpha / r) B A, and bad adapters must be clear errors. */
#include <glib/gstdio.h>
#include <string.h>
#include "avq-error.h"
#include "avq-llama.h"
#include "avq-llava.h"
#include "avq-model.h"
#include "test-util.h"

#define RANK 2
#define ALPHA 4.0f

typedef struct {
  const char *base;   /* hub name without .weight */
  int rows, cols;
} Target;

/* tiny-llava: hidden 64, intermediate 172 */
static const Target targets[] = {
  { "language_model.model.layers.0.self_attn.q_proj", 64, 64 },
  { "language_model.model.layers.1.mlp.down_proj", 64, 172 },
};

static float *
random_matrix (GRand *rng, int rows, int cols, float amplitude)
{
  float *m = g_new (float, (gsize) rows * cols);
  for (gsize i = 0; i < (gsize) rows * cols; i++)
    m[i] = (float) g_rand_double_range (rng, -amplitude, amplitude);
  return m;
}

typedef struct {
  char *dir;
  char *lora_path;     /* AVQ-style file with only the lora tensors */
  char *merged_dir;    /* model dir with the adapted weights merged by hand */
} Fixture;

static void
fixture_set_up (Fixture *f, gconstpointer data)
{
  (void) data;
  g_autoptr (GError) error = NULL;
  f->dir = g_dir_make_tmp ("avq-lora-XXXXXX", &error);
  g_assert_no_error (error);
  f->lora_path = g_build_filename (f->dir, "lora.safetensors", NULL);
  f->merged_dir = g_build_filename (f->dir, "merged", NULL);
  g_assert_cmpint (g_mkdir (f->merged_dir, 0700), ==, 0);

  g_autofree char *model_dir = avq_test_data_path ("tiny-llava");
  g_autoptr (AvqModel) model = avq_model_open (model_dir, &error);
  g_assert_no_error (error);

  g_autoptr (GRand) rng = g_rand_new_with_seed (11);
  g_autoptr (AvqSafetensorsWriter) lora = avq_safetensors_writer_new ();
  g_autoptr (AvqSafetensorsWriter) merged = avq_safetensors_writer_new ();
  g_autoptr (GHashTable) replaced = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

  for (gsize i = 0; i < G_N_ELEMENTS (targets); i++) {
    const Target *t = &targets[i];
    g_autofree float *a = random_matrix (rng, RANK, t->cols, 0.5f);
    g_autofree float *b = random_matrix (rng, t->rows, RANK, 0.5f);
    g_autofree char *a_name = g_strdup_printf ("lora.%s.lora_A", t->base);
    g_autofree char *b_name = g_strdup_printf ("lora.%s.lora_B", t->base);
    const gint64 a_shape[2] = { RANK, t->cols }, b_shape[2] = { t->rows, RANK };
    avq_safetensors_writer_add (lora, a_name, AVQ_DTYPE_F32, 2, a_shape, a);
    avq_safetensors_writer_add (lora, b_name, AVQ_DTYPE_F32, 2, b_shape, b);

    g_autofree char *w_name = g_strdup_printf ("%s.weight", t->base);
    const AvqTensor *w = avq_model_find (model, w_name);
    g_assert_nonnull (w);
    float *m = avq_tensor_dup_f32 (w);
    /* Merged by hand, in double, the way the spec writes it. */
    for (int r = 0; r < t->rows; r++)
      for (int c = 0; c < t->cols; c++) {
        double acc = 0;
        for (int k = 0; k < RANK; k++)
          acc += (double) b[r * RANK + k] * a[k * t->cols + c];
        m[r * t->cols + c] += (float) (ALPHA / RANK * acc);
      }
    g_hash_table_insert (replaced, g_strdup (w->name), m);
  }
  avq_safetensors_writer_set_metadata (lora, "lora.alpha", "4");
  avq_safetensors_writer_set_metadata (lora, "lora.rank", "2");
  g_assert_true (avq_safetensors_writer_save (lora, f->lora_path, &error));
  g_assert_no_error (error);

  for (guint i = 0; i < avq_safetensors_n_tensors (model->weights); i++) {
    const AvqTensor *t = avq_safetensors_nth (model->weights, i);
    const float *m = g_hash_table_lookup (replaced, t->name);
    if (m != NULL)
      avq_safetensors_writer_add (merged, t->name, AVQ_DTYPE_F32, t->ndim, t->shape, m);
    else
      avq_safetensors_writer_add (merged, t->name, t->dtype, t->ndim, t->shape, t->data);
  }
  g_autofree char *weights = g_build_filename (f->merged_dir, "model.safetensors", NULL);
  g_assert_true (avq_safetensors_writer_save (merged, weights, &error));
  g_assert_no_error (error);
  g_autofree char *config_src = g_build_filename (model_dir, "config.json", NULL);
  g_autofree char *config = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (config_src, &config, &len, NULL));
  g_autofree char *config_dst = g_build_filename (f->merged_dir, "config.json", NULL);
  g_assert_true (g_file_set_contents (config_dst, config, len, NULL));
}

static void
fixture_tear_down (Fixture *f, gconstpointer data)
{
  (void) data;
  g_autofree char *weights = g_build_filename (f->merged_dir, "model.safetensors", NULL);
  g_autofree char *config = g_build_filename (f->merged_dir, "config.json", NULL);
  g_unlink (weights);
  g_unlink (config);
  g_rmdir (f->merged_dir);
  g_unlink (f->lora_path);
  g_rmdir (f->dir);
  g_free (f->dir);
  g_free (f->lora_path);
  g_free (f->merged_dir);
}

static float *
first_logits (AvqLlama *llama)
{
  /* "USER: <image>\nWhat is the cat doing? ASSISTANT:" without the image. */
  static const int ids[] = { 1, 3148, 1001, 29901, 29871, 13, 5618, 338, 278, 6635,
                             2599, 29973, 319, 1799, 9047, 13566, 29901 };
  g_autoptr (GError) error = NULL;
  float *logits = g_new (float, avq_llama_vocab_size (llama));
  g_assert_true (avq_llava_prefill (llama, ids, G_N_ELEMENTS (ids), NULL, 0, logits, &error));
  g_assert_no_error (error);
  return logits;
}

static void
test_merge_matches_hand_merged (Fixture *f, gconstpointer data)
{
  (void) data;
  g_autoptr (GError) error = NULL;
  g_autofree char *model_dir = avq_test_data_path ("tiny-llava");
  g_autoptr (AvqModel) model = avq_model_open (model_dir, &error);
  g_assert_no_error (error);
  g_autoptr (AvqModel) merged_model = avq_model_open (f->merged_dir, &error);
  g_assert_no_error (error);

  g_autoptr (AvqLlama) base = avq_llama_new (model, 64, &error);
  g_assert_no_error (error);
  g_autofree float *before = first_logits (base);

  g_autoptr (AvqLlama) adapted = avq_llama_new (model, 64, &error);
  g_assert_no_error (error);
  g_autoptr (AvqSafetensors) lora = avq_safetensors_open (f->lora_path, &error);
  g_assert_no_error (error);
  guint n = 0;
  g_assert_true (avq_llama_apply_lora (adapted, lora, &n, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (n, ==, G_N_ELEMENTS (targets));
  g_autofree float *after = first_logits (adapted);

  g_autoptr (AvqLlama) reference = avq_llama_new (merged_model, 64, &error);
  g_assert_no_error (error);
  g_autofree float *want = first_logits (reference);

  gsize vocab = avq_llama_vocab_size (adapted);
  avq_test_assert_close ("LoRA-merged logits vs hand-merged weights", after, want, vocab, 1e-5);
  /* The adapters must matter, or the comparison above proves nothing. */
  g_assert_cmpfloat (avq_test_rel_error (before, want, vocab), >, 1e-3);
}

static void
test_no_lora_is_a_no_op (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *model_dir = avq_test_data_path ("tiny-llava");
  g_autofree char *avq = avq_test_data_path ("tiny-llava/avq-L0-derive.safetensors");
  g_autoptr (AvqModel) model = avq_model_open (model_dir, &error);
  g_assert_no_error (error);
  g_autoptr (AvqLlama) llama = avq_llama_new (model, 64, &error);
  g_assert_no_error (error);
  g_autofree float *before = first_logits (llama);
  g_autoptr (AvqSafetensors) file = avq_safetensors_open (avq, &error);
  g_assert_no_error (error);
  guint n = 99;
  g_assert_true (avq_llama_apply_lora (llama, file, &n, &error));
  g_assert_cmpuint (n, ==, 0);
  g_autofree float *after = first_logits (llama);
  g_assert_cmpmem (before, avq_llama_vocab_size (llama) * sizeof (float),
                   after, avq_llama_vocab_size (llama) * sizeof (float));
}

/* Writes a LoRA file from (name, rows, cols) triples and metadata. */
static char *
write_bad (const char *name, const char *alpha, const char *rank,
           const char *const *tensors, const int *shapes, int n)
{
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  for (int i = 0; i < n; i++) {
    const gint64 shape[2] = { shapes[2 * i], shapes[2 * i + 1] };
    g_autofree float *zeros = g_new0 (float, (gsize) shape[0] * shape[1]);
    avq_safetensors_writer_add (w, tensors[i], AVQ_DTYPE_F32, 2, shape, zeros);
  }
  if (alpha)
    avq_safetensors_writer_set_metadata (w, "lora.alpha", alpha);
  if (rank)
    avq_safetensors_writer_set_metadata (w, "lora.rank", rank);
  char *path = avq_test_tmp_path (name);
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_safetensors_writer_save (w, path, &error));
  return path;
}

static void
test_bad_adapters (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *model_dir = avq_test_data_path ("tiny-llava");
  g_autoptr (AvqModel) model = avq_model_open (model_dir, &error);
  g_assert_no_error (error);
  const char *q_a = "lora.language_model.model.layers.0.self_attn.q_proj.lora_A";
  const char *q_b = "lora.language_model.model.layers.0.self_attn.q_proj.lora_B";
  const char *pair[] = { q_a, q_b };
  const int good[] = { 2, 64, 64, 2 }, wrong[] = { 2, 63, 64, 2 };
  const char *alone[] = { q_a };
  const char *unknown[] = { "lora.language_model.model.layers.9.self_attn.q_proj.lora_A",
                            "lora.language_model.model.layers.9.self_attn.q_proj.lora_B" };
  struct { char *path; int code; const char *needle; } cases[] = {
    { write_bad ("no-alpha.st", NULL, "2", pair, good, 2), AVQ_ERROR_MISSING, "lora.alpha" },
    { write_bad ("bad-rank.st", "4", "two", pair, good, 2), AVQ_ERROR_FORMAT, "lora.rank" },
    { write_bad ("rank-mismatch.st", "4", "3", pair, good, 2), AVQ_ERROR_SHAPE, "lora_A" },
    { write_bad ("wrong-shape.st", "4", "2", pair, wrong, 2), AVQ_ERROR_SHAPE, "lora_A" },
    { write_bad ("a-alone.st", "4", "2", alone, good, 1), AVQ_ERROR_MISSING, "lora_B" },
    { write_bad ("unknown.st", "4", "2", unknown, good, 2), AVQ_ERROR_MISMATCH, "layers.9" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (AvqLlama) llama = avq_llama_new (model, 16, &error);
    g_assert_no_error (error);
    g_autoptr (AvqSafetensors) file = avq_safetensors_open (cases[i].path, &error);
    g_assert_no_error (error);
    g_assert_false (avq_llama_apply_lora (llama, file, NULL, &error));
    g_assert_error (error, AVQ_ERROR, cases[i].code);
    if (strstr (error->message, cases[i].needle) == NULL ||
        strstr (error->message, cases[i].path) == NULL)
      g_error ("case %" G_GSIZE_FORMAT ": message lacks '%s' or the path: %s", i,
               cases[i].needle, error->message);
    g_clear_error (&error);
    g_free (cases[i].path);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/lora/merge-matches-hand-merged", Fixture, NULL, fixture_set_up,
              test_merge_matches_hand_merged, fixture_tear_down);
  g_test_add_func ("/lora/no-lora-is-a-no-op", test_no_lora_is_a_no_op);
  g_test_add_func ("/lora/bad-adapters", test_bad_adapters);
  return g_test_run ();
}
