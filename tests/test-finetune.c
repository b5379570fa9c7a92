/* The fine-tuned AVQ file committed in tests/data/finetune (made by the
 * PyTorch recipe in models/finetune: trained codebook, DLPs and LoRA
 * adapters) run through the C engine must reproduce what PyTorch computed:
 * indices, image features and the first-token logits. This is the C half
 * of the equivalence check, independent of Python. */
#include <string.h>
#include "avq-answerer.h"
#include "avq-error.h"
#include "avq-llava.h"
#include "avq-quantizer.h"
#include "test-util.h"

#define T 577
#define CLEAR_MARGIN 1e-3

static const char *images[] = { "astronaut", "chelsea", "coffee" };

static AvqSafetensors *
reference (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = avq_test_data_path ("finetune/reference.safetensors");
  AvqSafetensors *st = avq_safetensors_open (path, &error);
  g_assert_no_error (error);
  return st;
}

static float *
ref_f32 (const AvqSafetensors *st, const char *name, gsize *n)
{
  const AvqTensor *t = avq_safetensors_find (st, name);
  g_assert_nonnull (t);
  if (n)
    *n = avq_tensor_numel (t);
  return avq_tensor_dup_f32 (t);
}

static const gint32 *
ref_i32 (const AvqSafetensors *st, const char *name, gsize *n)
{
  const AvqTensor *t = avq_safetensors_find (st, name);
  g_assert_nonnull (t);
  g_assert_cmpint (t->dtype, ==, AVQ_DTYPE_I32);
  *n = avq_tensor_numel (t);
  return t->data;
}

static AvqAnswerer *
trained_answerer (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *model = avq_test_data_path ("tiny-llava");
  g_autofree char *avq = avq_test_data_path ("finetune/trained.safetensors");
  AvqAnswererOptions options = { .model_dir = model, .avq_path = avq, .threads = 1 };
  AvqAnswerer *a = avq_answerer_new (&options, &error);
  g_assert_no_error (error);
  return a;
}

static AvqImage *
load_image (int i)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *rel = g_strdup_printf ("tiny-llava/images/%s.png", images[i]);
  g_autofree char *path = avq_test_data_path (rel);
  AvqImage *image = avq_image_load (path, &error);
  g_assert_no_error (error);
  return image;
}

static void
test_indices_and_features (void)
{
  g_autoptr (AvqSafetensors) ref = reference ();
  g_autoptr (AvqAnswerer) answerer = trained_answerer ();
  AvqEngine *engine = avq_answerer_get_engine (answerer);
  gsize n = 0;
  const gint32 *indices = ref_i32 (ref, "indices", &n);
  g_assert_cmpuint (n, ==, 3 * T);
  g_autofree float *margin = ref_f32 (ref, "margin", NULL);
  g_autofree float *features = ref_f32 (ref, "image_features", &n);
  gsize per = n / 3;
  g_autofree float *got = g_new (float, per);

  for (int i = 0; i < 3; i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqImage) image = load_image (i);
    g_autoptr (AvqFrame) frame = avq_engine_encode_image (engine, image, AVQ_PREPROCESS_CROP, &error);
    g_assert_no_error (error);
    for (int t = 0; t < T; t++)
      if (margin[i * T + t] > CLEAR_MARGIN && frame->indices[t] != indices[i * T + t])
        g_error ("%s token %d: index %u, PyTorch %d (margin %g)", images[i], t,
                 frame->indices[t], indices[i * T + t], margin[i * T + t]);
    g_assert_true (avq_engine_decode_frame (engine, frame, got, &error));
    g_assert_no_error (error);
    g_autofree char *what = g_strdup_printf ("fine-tuned features, %s", images[i]);
    avq_test_assert_close (what, got, features + i * per, per, 1e-4);
  }
}

static void
test_first_logits (void)
{
  g_autoptr (AvqSafetensors) ref = reference ();
  g_autoptr (AvqAnswerer) answerer = trained_answerer ();
  AvqEngine *engine = avq_answerer_get_engine (answerer);
  g_autoptr (GError) error = NULL;

  /* The prompt PyTorch used, built by our own template and tokenizer. */
  gsize n_ids = 0, n_ref = 0;
  const gint32 *ref_ids = ref_i32 (ref, "prompt_ids", &n_ref);
  const char *question = avq_safetensors_metadata (ref, "question");
  g_assert_nonnull (question);
  g_autofree gint32 *ids = avq_answerer_prompt_ids (answerer, question, NULL, &n_ids, &error);
  g_assert_no_error (error);
  int rows = avq_engine_feature_tokens (engine);
  /* Ours keeps <image> as one id; PyTorch's is expanded to `rows` ids. */
  g_assert_cmpuint (n_ids + rows - 1, ==, n_ref);
  for (gsize i = 0, j = 0; i < n_ids; i++) {
    if (ids[i] == 32000) {
      for (int r = 0; r < rows; r++)
        g_assert_cmpint (ref_ids[j++], ==, 32000);
    } else {
      g_assert_cmpint (ids[i], ==, ref_ids[j++]);
    }
  }

  g_autoptr (AvqImage) image = load_image (1);
  g_autoptr (AvqFrame) frame = avq_engine_encode_image (engine, image, AVQ_PREPROCESS_CROP, &error);
  g_assert_no_error (error);
  g_autofree float *features = g_new (float, (gsize) rows * avq_engine_feature_dim (engine));
  g_assert_true (avq_engine_decode_frame (engine, frame, features, &error));

  /* A fresh decoder with the file's adapters, as avq ask builds it. */
  g_autofree char *avq = avq_test_data_path ("finetune/trained.safetensors");
  g_autoptr (AvqLlama) llama = avq_llama_new (avq_engine_get_model (engine), n_ref + 8, &error);
  g_assert_no_error (error);
  g_autoptr (AvqSafetensors) file = avq_safetensors_open (avq, &error);
  g_assert_no_error (error);
  guint merged = 0;
  g_assert_true (avq_llama_apply_lora (llama, file, &merged, &error));
  g_assert_cmpuint (merged, >, 0);

  g_autofree int *prompt = g_new (int, n_ref);
  for (gsize i = 0; i < n_ref; i++)
    prompt[i] = ref_ids[i];
  gsize vocab = 0;
  g_autofree float *want = ref_f32 (ref, "first_logits", &vocab);
  g_autofree float *base = ref_f32 (ref, "base_first_logits", NULL);
  g_autofree float *logits = g_new (float, vocab);
  g_assert_true (avq_llava_prefill (llama, prompt, n_ref, features, rows, logits, &error));
  g_assert_no_error (error);
  avq_test_assert_close ("fine-tuned first-token logits", logits, want, vocab, 1e-4);
  /* Without the adapters the logits are PyTorch's base model's. */
  g_assert_cmpfloat (avq_test_rel_error (want, base, vocab), >, 1e-2);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/finetune/indices-and-features", test_indices_and_features);
  g_test_add_func ("/finetune/first-logits", test_first_logits);
  return g_test_run ();
}
