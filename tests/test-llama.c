/* LLaMA decoder and LLaVA generation against the tiny-llava fixture
 * (HF transformers outputs) and against a naive double-precision decoder
 * written here for a grouped-query model built in a temp dir. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "avq-error.h"
#include "avq-llama.h"
#include "avq-llava.h"
#include "avq-model.h"
#include "test-util.h"

#define IMAGE_TOKEN 32000

/* ---------------------------------------------------------------------- */
/* fixture helpers */

static AvqLlama *
tiny_llama (void)
{
  static AvqLlama *llama;
  if (llama == NULL) {
    g_autoptr (GError) error = NULL;
    llama = avq_llama_new (avq_test_tiny_model (), 1024, &error);
    g_assert_no_error (error);
    avq_llama_set_threads (llama, 2);
  }
  return llama;
}

static void
append_ids (GArray *ids, JsonArray *array)
{
  for (guint i = 0; i < json_array_get_length (array); i++) {
    int id = (int) json_array_get_int_element (array, i);
    g_array_append_val (ids, id);
  }
}

/* prefix + (576 or 1) image tokens + suffix */
static GArray *
fixture_prompt (gboolean expanded)
{
  JsonObject *p = json_object_get_object_member (avq_test_reference_json (),
                                                 "llm.prompt_ids");
  GArray *ids = g_array_new (FALSE, FALSE, sizeof (int));
  append_ids (ids, json_object_get_array_member (p, "prefix"));
  int n_image = expanded ? (int) json_object_get_int_member (p, "image_tokens") : 1;
  int image = (int) json_object_get_int_member (p, "image_token_id");
  g_assert_cmpint (image, ==, IMAGE_TOKEN);
  for (int i = 0; i < n_image; i++)
    g_array_append_val (ids, image);
  append_ids (ids, json_object_get_array_member (p, "suffix"));
  return ids;
}

typedef struct {
  const char *tag;        /* llm.<tag>.* */
  const char *features;   /* reference tensor [3, 576, 64]; image 1 = chelsea */
} Case;

static const Case cases[] = {
  { "hf", "projector.out" },
  { "avq.L0-derive", "avq.L0-derive.projector" },
  { "avq.L1-side8", "avq.L1-side8.projector" },
};

static float *
chelsea_features (const Case *c)
{
  gsize numel;
  float *all = avq_test_reference_f32 (c->features, &numel);
  g_assert_cmpuint (numel, ==, 3 * 576 * 64);
  float *f = g_memdup2 (all + 576 * 64, 576 * 64 * sizeof (float));
  g_free (all);
  return f;
}

static void
test_fixture (gconstpointer data)
{
  const Case *c = data;
  AvqLlama *llama = tiny_llama ();
  int V = avq_llama_vocab_size (llama);
  g_autofree float *features = chelsea_features (c);
  g_autofree char *logits_name = g_strdup_printf ("llm.%s.first_logits", c->tag);
  gsize n_ref;
  g_autofree float *want = avq_test_reference_f32 (logits_name, &n_ref);
  g_assert_cmpuint (n_ref, ==, (gsize) V);

  g_autofree char *greedy_name = g_strdup_printf ("llm.%s.greedy", c->tag);
  JsonArray *greedy = json_object_get_array_member (avq_test_reference_json (),
                                                    greedy_name);
  g_assert_nonnull (greedy);

  g_autofree float *expanded_logits = g_new (float, V);
  for (int form = 0; form < 2; form++) {
    g_autoptr (GArray) prompt = fixture_prompt (form == 0);
    g_autoptr (GError) error = NULL;
    g_autofree float *logits = g_new (float, V);

    avq_llava_prefill (llama, (int *) prompt->data, prompt->len, features, 576,
                       logits, &error);
    g_assert_no_error (error);
    g_assert_cmpint (avq_llama_n_past (llama), ==, 5 + 576 + 13);
    double rel = avq_test_rel_error (logits, want, V);
    g_test_message ("%s %s: first logits rel err %.3g", c->tag,
                    form == 0 ? "expanded" : "single <image>", rel);
    g_assert_cmpfloat (rel, <=, 1e-4);
    if (form == 0)
      memcpy (expanded_logits, logits, V * sizeof (float));
    else   /* both forms build the very same embeddings */
      g_assert_cmpmem (logits, V * sizeof (float), expanded_logits, V * sizeof (float));

    AvqGenerateOptions opts;
    avq_generate_options_init (&opts);
    opts.max_new_tokens = 8;
    AvqGenerateStats stats;
    g_autoptr (GArray) out = g_array_new (FALSE, FALSE, sizeof (int));
    avq_llava_generate (llama, (int *) prompt->data, prompt->len, features, 576,
                        &opts, out, &stats, &error);
    g_assert_no_error (error);
    g_assert_cmpint (stats.prompt_positions, ==, 594);
    g_assert_true (stats.prefill_ms >= 0 && stats.decode_ms >= 0);
    g_assert_cmpuint (json_array_get_length (greedy), ==, 8);
    int compared = 0;
    for (guint i = 0; i < out->len && i < 8; i++) {
      JsonObject *step = json_array_get_object_element (greedy, i);
      int want_id = (int) json_object_get_int_member (step, "id");
      double margin = json_object_get_double_member (step, "margin");
      if (margin <= 1e-3)
        break;   /* a near tie: later steps continue from another context */
      g_assert_cmpint (g_array_index (out, int, i), ==, want_id);
      compared++;
    }
    if (!stats.hit_eos)
      g_assert_cmpuint (out->len, ==, 8);
    g_test_message ("%s: %d greedy ids equal", c->tag, compared);
    g_assert_cmpint (compared, ==, 8);   /* every fixture margin is clear */
  }
}

/* Sampling with a vanishing nucleus is greedy; a fixed seed repeats; the
 * callback and EOS stop generation. */
static gboolean
stop_after_three (int token, gpointer user_data)
{
  GArray *seen = user_data;
  g_array_append_val (seen, token);
  return seen->len < 3;
}

static void
test_generation_options (void)
{
  AvqLlama *llama = tiny_llama ();
  g_autofree float *features = chelsea_features (&cases[0]);
  g_autoptr (GArray) prompt = fixture_prompt (FALSE);
  g_autoptr (GError) error = NULL;
  AvqGenerateOptions opts;
  AvqGenerateStats stats;

  avq_generate_options_init (&opts);
  opts.max_new_tokens = 8;
  g_autoptr (GArray) greedy = g_array_new (FALSE, FALSE, sizeof (int));
  avq_llava_generate (llama, (int *) prompt->data, prompt->len, features, 576,
                      &opts, greedy, &stats, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (greedy->len, ==, 8);

  opts.temperature = 1.0f;
  opts.top_p = 1e-9f;
  g_autoptr (GArray) nucleus = g_array_new (FALSE, FALSE, sizeof (int));
  avq_llava_generate (llama, (int *) prompt->data, prompt->len, features, 576,
                      &opts, nucleus, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (nucleus->data, nucleus->len * sizeof (int),
                   greedy->data, greedy->len * sizeof (int));

  opts.top_p = 0.9f;
  opts.seed = 1234;
  g_autoptr (GArray) s1 = g_array_new (FALSE, FALSE, sizeof (int));
  g_autoptr (GArray) s2 = g_array_new (FALSE, FALSE, sizeof (int));
  avq_llava_generate (llama, (int *) prompt->data, prompt->len, features, 576,
                      &opts, s1, NULL, &error);
  g_assert_no_error (error);
  avq_llava_generate (llama, (int *) prompt->data, prompt->len, features, 576,
                      &opts, s2, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (s1->len, <=, 8);   /* shorter only if EOS was drawn */
  g_assert_cmpmem (s1->data, s1->len * sizeof (int), s2->data, s2->len * sizeof (int));
  for (guint i = 0; i < s1->len; i++)
    g_assert_cmpint (g_array_index (s1, int, i), <, avq_llama_vocab_size (llama));

  /* the first greedy token as EOS: nothing is generated */
  avq_generate_options_init (&opts);
  opts.max_new_tokens = 8;
  opts.eos_token_id = g_array_index (greedy, int, 0);
  g_autoptr (GArray) none = g_array_new (FALSE, FALSE, sizeof (int));
  avq_llava_generate (llama, (int *) prompt->data, prompt->len, features, 576,
                      &opts, none, &stats, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (none->len, ==, 0);
  g_assert_true (stats.hit_eos);

  avq_generate_options_init (&opts);
  opts.max_new_tokens = 8;
  g_autoptr (GArray) seen = g_array_new (FALSE, FALSE, sizeof (int));
  opts.on_token = stop_after_three;
  opts.user_data = seen;
  g_autoptr (GArray) three = g_array_new (FALSE, FALSE, sizeof (int));
  avq_llava_generate (llama, (int *) prompt->data, prompt->len, features, 576,
                      &opts, three, &stats, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (three->len, ==, 3);
  g_assert_cmpmem (seen->data, 3 * sizeof (int), greedy->data, 3 * sizeof (int));
  g_assert_false (stats.hit_eos);
}

static void
test_prompt_errors (void)
{
  AvqLlama *llama = tiny_llama ();
  g_autofree float *features = chelsea_features (&cases[0]);
  g_autofree float *logits = g_new (float, avq_llama_vocab_size (llama));
  int n;

  /* 576 rows, two single <image> tokens */
  int two[] = { 1, IMAGE_TOKEN, 13, IMAGE_TOKEN, 13 };
  g_autoptr (GError) e1 = NULL;
  g_assert_null (avq_llava_embed_prompt (llama, two, 5, features, 576, &n, &e1));
  g_assert_error (e1, AVQ_ERROR, AVQ_ERROR_MISMATCH);

  /* image features without an image token */
  int text[] = { 1, 3148, 1001 };
  g_autoptr (GError) e2 = NULL;
  g_assert_false (avq_llava_prefill (llama, text, 3, features, 576, logits, &e2));
  g_assert_error (e2, AVQ_ERROR, AVQ_ERROR_MISMATCH);

  /* a token outside the vocabulary */
  int bad[] = { 1, 32064 };
  g_autoptr (GError) e3 = NULL;
  g_assert_false (avq_llava_prefill (llama, bad, 2, NULL, 0, logits, &e3));
  g_assert_error (e3, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);

  /* text only works; two compact images take 2 x 576 rows */
  g_autoptr (GError) e4 = NULL;
  g_assert_true (avq_llava_prefill (llama, text, 3, NULL, 0, logits, &e4));
  g_assert_no_error (e4);
  g_autofree float *twice = g_new (float, 2 * 576 * 64);
  memcpy (twice, features, 576 * 64 * sizeof (float));
  memcpy (twice + 576 * 64, features, 576 * 64 * sizeof (float));
  g_autofree float *emb = avq_llava_embed_prompt (llama, two, 5, twice, 1152, &n, &e4);
  g_assert_no_error (e4);
  g_assert_cmpint (n, ==, 3 + 1152);
  g_assert_cmpmem (emb + 1 * 64, 64 * sizeof (float), features, 64 * sizeof (float));
  g_assert_cmpmem (emb + (1 + 576 + 1) * 64, 64 * sizeof (float), features, 64 * sizeof (float));

  /* the context may not outgrow max_position_embeddings (4096) */
  g_autoptr (GError) e5 = NULL;
  g_assert_false (avq_llama_reserve (llama, 5000, &e5));
  g_assert_error (e5, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
}

/* ---------------------------------------------------------------------- */
/* broken model directories */

static char *
broken_model_dir (const char *drop, const char *reshape)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("avq-llama-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *src_cfg = avq_test_data_path ("tiny-llava/config.json");
  g_autofree char *cfg = NULL;
  gsize len;
  g_file_get_contents (src_cfg, &cfg, &len, &error);
  g_assert_no_error (error);
  g_autofree char *dst_cfg = g_build_filename (dir, "config.json", NULL);
  g_file_set_contents (dst_cfg, cfg, len, &error);
  g_assert_no_error (error);

  const AvqSafetensors *st = avq_test_tiny_model ()->weights;
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  for (guint i = 0; i < avq_safetensors_n_tensors (st); i++) {
    const AvqTensor *t = avq_safetensors_nth (st, i);
    if (drop && strcmp (t->name, drop) == 0)
      continue;
    if (reshape && strcmp (t->name, reshape) == 0) {
      /* same bytes, one row fewer */
      gint64 shape[2] = { t->shape[0] - 1, t->shape[1] };
      avq_safetensors_writer_add (w, t->name, t->dtype, 2, shape, t->data);
      continue;
    }
    avq_safetensors_writer_add (w, t->name, t->dtype, t->ndim, t->shape, t->data);
  }
  g_autofree char *path = g_build_filename (dir, "model.safetensors", NULL);
  avq_safetensors_writer_save (w, path, &error);
  g_assert_no_error (error);
  return dir;
}

static void
test_broken_models (void)
{
  static const struct {
    const char *drop, *reshape;
    int code;
  } broken[] = {
    { "language_model.model.layers.1.mlp.up_proj.weight", NULL, AVQ_ERROR_MISSING },
    { "language_model.lm_head.weight", NULL, AVQ_ERROR_MISSING },
    { "language_model.model.norm.weight", NULL, AVQ_ERROR_MISSING },
    { NULL, "language_model.model.layers.0.self_attn.k_proj.weight", AVQ_ERROR_SHAPE },
    { NULL, "language_model.model.embed_tokens.weight", AVQ_ERROR_SHAPE },
  };
  for (guint i = 0; i < G_N_ELEMENTS (broken); i++) {
    g_autofree char *dir = broken_model_dir (broken[i].drop, broken[i].reshape);
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqModel) model = avq_model_open (dir, &error);
    g_assert_no_error (error);
    g_autoptr (AvqLlama) llama = avq_llama_new (model, 64, &error);
    g_assert_null (llama);
    g_assert_error (error, AVQ_ERROR, broken[i].code);
    const char *name = broken[i].drop ? broken[i].drop : broken[i].reshape;
    g_test_message ("%s", error->message);
    g_assert_nonnull (strstr (error->message, name));
    avq_test_remove_model_dir (dir);
  }
}

/* ---------------------------------------------------------------------- */
/* grouped-query attention against a naive decoder */

#define G_VOCAB 50
#define G_HIDDEN 32
#define G_FFN 40
#define G_LAYERS 2
#define G_HEADS 4
#define G_KV_HEADS 2
#define G_HEAD_DIM 8
#define G_THETA 500.0
#define G_EPS 1e-5

static const char gqa_config[] =
  "{\"image_token_index\": 48, \"text_config\": {\"vocab_size\": 50, \"hidden_size\": 32, "
  "\"intermediate_size\": 40, \"num_hidden_layers\": 2, "
  "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8, "
  "\"rms_norm_eps\": 1e-5, \"rope_theta\": 500.0, "
  "\"max_position_embeddings\": 2048, \"tie_word_embeddings\": %s}}";

static guint16
float_to_bf16 (float f)
{
  guint32 b;
  memcpy (&b, &f, sizeof b);
  return (guint16) ((b + 0x7fff + ((b >> 16) & 1)) >> 16);   /* nearest even */
}

static void
add_random (AvqSafetensorsWriter *w, GRand *rng, AvqDType dtype, const char *name,
            int rows, int cols, double offset, double scale)
{
  gsize n = (gsize) rows * MAX (cols, 1);
  g_autofree guint16 *h = g_new (guint16, n);
  g_autofree float *f = g_new (float, n);
  for (gsize i = 0; i < n; i++) {
    f[i] = (float) (offset + scale * g_rand_double_range (rng, -1, 1));
    h[i] = dtype == AVQ_DTYPE_F16 ? avq_float_to_half (f[i])
        : float_to_bf16 (f[i]);
  }
  gint64 shape[2] = { rows, cols };
  avq_safetensors_writer_add (w, name, dtype, cols > 0 ? 2 : 1, shape,
                              dtype == AVQ_DTYPE_F32 ? (const void *) f : (const void *) h);
}

static char *
gqa_model_dir (AvqDType dtype, gboolean tied)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("avq-gqa-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *cfg = g_strdup_printf (gqa_config, tied ? "true" : "false");
  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  g_file_set_contents (cfg_path, cfg, -1, &error);
  g_assert_no_error (error);

  g_autoptr (GRand) rng = g_rand_new_with_seed (7);
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  const char *P = "language_model.model";
  g_autofree char *emb = g_strdup_printf ("%s.embed_tokens.weight", P);
  add_random (w, rng, dtype, emb, G_VOCAB, G_HIDDEN, 0, 1.0);
  if (!tied)
    add_random (w, rng, dtype, "language_model.lm_head.weight", G_VOCAB, G_HIDDEN, 0, 0.3);
  g_autofree char *norm = g_strdup_printf ("%s.norm.weight", P);
  add_random (w, rng, dtype, norm, G_HIDDEN, 0, 1.0, 0.3);
  for (int l = 0; l < G_LAYERS; l++) {
    static const struct { const char *name; int rows, cols; } m[] = {
      { "self_attn.q_proj", G_HEADS * G_HEAD_DIM, G_HIDDEN },
      { "self_attn.k_proj", G_KV_HEADS * G_HEAD_DIM, G_HIDDEN },
      { "self_attn.v_proj", G_KV_HEADS * G_HEAD_DIM, G_HIDDEN },
      { "self_attn.o_proj", G_HIDDEN, G_HEADS * G_HEAD_DIM },
      { "mlp.gate_proj", G_FFN, G_HIDDEN },
      { "mlp.up_proj", G_FFN, G_HIDDEN },
      { "mlp.down_proj", G_HIDDEN, G_FFN },
    };
    for (guint i = 0; i < G_N_ELEMENTS (m); i++) {
      g_autofree char *name = g_strdup_printf ("%s.layers.%d.%s.weight", P, l, m[i].name);
      /* large q/k so that attention is far from uniform */
      add_random (w, rng, dtype, name, m[i].rows, m[i].cols, 0, i < 2 ? 0.6 : 0.3);
    }
    g_autofree char *n1 = g_strdup_printf ("%s.layers.%d.input_layernorm.weight", P, l);
    g_autofree char *n2 = g_strdup_printf ("%s.layers.%d.post_attention_layernorm.weight", P, l);
    add_random (w, rng, dtype, n1, G_HIDDEN, 0, 1.0, 0.3);
    add_random (w, rng, dtype, n2, G_HIDDEN, 0, 1.0, 0.3);
  }
  g_autofree char *path = g_build_filename (dir, "model.safetensors", NULL);
  avq_safetensors_writer_save (w, path, &error);
  g_assert_no_error (error);
  return dir;
}

static double *
weight_f64 (const AvqModel *model, const char *fmt, int l)
{
  g_autofree char *name = g_strdup_printf (fmt, l);
  const AvqTensor *t = avq_model_find (model, name);
  g_assert_nonnull (t);
  gsize n = avq_tensor_numel (t);
  g_autofree float *f = avq_tensor_dup_f32 (t);
  double *d = g_new (double, n);
  for (gsize i = 0; i < n; i++)
    d[i] = f[i];
  return d;
}

static void
naive_rms (const double *x, const double *w, double *out)
{
  double ss = 0;
  for (int c = 0; c < G_HIDDEN; c++)
    ss += x[c] * x[c];
  double inv = 1.0 / sqrt (ss / G_HIDDEN + G_EPS);
  for (int c = 0; c < G_HIDDEN; c++)
    out[c] = w[c] * x[c] * inv;
}

static void
naive_matvec (const double *w, int rows, int cols, const double *x, double *y)
{
  for (int r = 0; r < rows; r++) {
    double s = 0;
    for (int c = 0; c < cols; c++)
      s += w[(gsize) r * cols + c] * x[c];
    y[r] = s;
  }
}

static void
naive_rope (double *v, int pos)
{
  int half = G_HEAD_DIM / 2;
  for (int i = 0; i < half; i++) {
    double ang = pos * pow (G_THETA, -2.0 * i / G_HEAD_DIM);
    double a = v[i], b = v[i + half];
    v[i] = a * cos (ang) - b * sin (ang);
    v[i + half] = b * cos (ang) + a * sin (ang);
  }
}

/* Logits of the last of `n` tokens, recomputing everything: no cache. */
static void
naive_logits (const AvqModel *model, const int *ids, int n, double *logits)
{
  const char *P = "language_model.model.layers.%d.";
  int qd = G_HEADS * G_HEAD_DIM, kd = G_KV_HEADS * G_HEAD_DIM;
  g_autofree double *emb = weight_f64 (model, "language_model.model.embed_tokens.weight", 0);
  g_autofree double *x = g_new0 (double, n * G_HIDDEN);
  for (int i = 0; i < n; i++)
    memcpy (x + i * G_HIDDEN, emb + ids[i] * G_HIDDEN, G_HIDDEN * sizeof (double));
  g_autofree double *h = g_new (double, G_HIDDEN);
  g_autofree double *q = g_new (double, n * qd);
  g_autofree double *k = g_new (double, n * kd);
  g_autofree double *v = g_new (double, n * kd);
  g_autofree double *att = g_new (double, qd);
  g_autofree double *tmp = g_new (double, G_FFN);
  g_autofree double *g = g_new (double, G_FFN);
  g_autofree double *u = g_new (double, G_FFN);
  g_autofree double *s = g_new (double, n);

  for (int l = 0; l < G_LAYERS; l++) {
    g_autofree char *f_an = g_strconcat (P, "input_layernorm.weight", NULL);
    g_autofree char *f_mn = g_strconcat (P, "post_attention_layernorm.weight", NULL);
    g_autofree char *f_q = g_strconcat (P, "self_attn.q_proj.weight", NULL);
    g_autofree char *f_k = g_strconcat (P, "self_attn.k_proj.weight", NULL);
    g_autofree char *f_v = g_strconcat (P, "self_attn.v_proj.weight", NULL);
    g_autofree char *f_o = g_strconcat (P, "self_attn.o_proj.weight", NULL);
    g_autofree char *f_g = g_strconcat (P, "mlp.gate_proj.weight", NULL);
    g_autofree char *f_u = g_strconcat (P, "mlp.up_proj.weight", NULL);
    g_autofree char *f_d = g_strconcat (P, "mlp.down_proj.weight", NULL);
    g_autofree double *an = weight_f64 (model, f_an, l), *mn = weight_f64 (model, f_mn, l);
    g_autofree double *wq = weight_f64 (model, f_q, l), *wk = weight_f64 (model, f_k, l);
    g_autofree double *wv = weight_f64 (model, f_v, l), *wo = weight_f64 (model, f_o, l);
    g_autofree double *wg = weight_f64 (model, f_g, l), *wu = weight_f64 (model, f_u, l);
    g_autofree double *wd = weight_f64 (model, f_d, l);

    for (int i = 0; i < n; i++) {
      naive_rms (x + i * G_HIDDEN, an, h);
      naive_matvec (wq, qd, G_HIDDEN, h, q + i * qd);
      naive_matvec (wk, kd, G_HIDDEN, h, k + i * kd);
      naive_matvec (wv, kd, G_HIDDEN, h, v + i * kd);
      for (int hh = 0; hh < G_HEADS; hh++)
        naive_rope (q + i * qd + hh * G_HEAD_DIM, i);
      for (int hh = 0; hh < G_KV_HEADS; hh++)
        naive_rope (k + i * kd + hh * G_HEAD_DIM, i);
    }
    /* all rows see only their past; update x afterwards */
    g_autofree double *nx = g_memdup2 (x, n * G_HIDDEN * sizeof (double));
    for (int i = 0; i < n; i++) {
      for (int hh = 0; hh < G_HEADS; hh++) {
        int kv = hh / (G_HEADS / G_KV_HEADS);
        double m = -INFINITY, sum = 0;
        for (int j = 0; j <= i; j++) {
          double d = 0;
          for (int c = 0; c < G_HEAD_DIM; c++)
            d += q[i * qd + hh * G_HEAD_DIM + c] * k[j * kd + kv * G_HEAD_DIM + c];
          s[j] = d / sqrt (G_HEAD_DIM);
          m = fmax (m, s[j]);
        }
        for (int j = 0; j <= i; j++)
          sum += (s[j] = exp (s[j] - m));
        for (int c = 0; c < G_HEAD_DIM; c++) {
          double o = 0;
          for (int j = 0; j <= i; j++)
            o += s[j] / sum * v[j * kd + kv * G_HEAD_DIM + c];
          att[hh * G_HEAD_DIM + c] = o;
        }
      }
      naive_matvec (wo, G_HIDDEN, qd, att, h);
      for (int c = 0; c < G_HIDDEN; c++)
        nx[i * G_HIDDEN + c] += h[c];
      naive_rms (nx + i * G_HIDDEN, mn, h);
      naive_matvec (wg, G_FFN, G_HIDDEN, h, g);
      naive_matvec (wu, G_FFN, G_HIDDEN, h, u);
      for (int c = 0; c < G_FFN; c++)
        tmp[c] = g[c] / (1 + exp (-g[c])) * u[c];
      naive_matvec (wd, G_HIDDEN, G_FFN, tmp, h);
      for (int c = 0; c < G_HIDDEN; c++)
        nx[i * G_HIDDEN + c] += h[c];
    }
    memcpy (x, nx, n * G_HIDDEN * sizeof (double));
  }
  g_autofree double *fn = weight_f64 (model, "language_model.model.norm.weight", 0);
  g_autofree double *head = model->config.text.tie_word_embeddings
      ? g_memdup2 (emb, G_VOCAB * G_HIDDEN * sizeof (double))
      : weight_f64 (model, "language_model.lm_head.weight", 0);
  naive_rms (x + (n - 1) * G_HIDDEN, fn, h);
  naive_matvec (head, G_VOCAB, G_HIDDEN, h, logits);
}

static void
assert_logits_tol (const AvqModel *model, const int *ids, int n, const float *got,
                   const char *what, double tol)
{
  double want[G_VOCAB];
  float wantf[G_VOCAB];
  naive_logits (model, ids, n, want);
  for (int i = 0; i < G_VOCAB; i++)
    wantf[i] = (float) want[i];
  double rel = avq_test_rel_error (got, wantf, G_VOCAB);
  g_test_message ("%s, %d tokens: rel err %.3g", what, n, rel);
  g_assert_cmpfloat (rel, <=, tol);
}

/* float32 against double on a few positions */
static void
assert_logits (const AvqModel *model, const int *ids, int n, const float *got,
               const char *what)
{
  assert_logits_tol (model, ids, n, got, what, 2e-5);
}

typedef struct {
  AvqDType dtype;
  gboolean tied, no_simd;
  int threads;
  int block_rows;
} GqaCase;

static void
test_gqa (gconstpointer data)
{
  const GqaCase *c = data;
  g_autofree char *dir = gqa_model_dir (c->dtype, c->tied);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (model->config.text.num_kv_heads, ==, G_KV_HEADS);
  g_autoptr (AvqLlama) llama = avq_llama_new (model, 8, &error);
  g_assert_no_error (error);
  if (c->no_simd)
    avq_llama_set_simd (llama, FALSE);
  avq_llama_set_block_rows (llama, c->block_rows);
  avq_llama_set_threads (llama, c->threads);

  const int ids[] = { 3, 17, 42, 0, 49, 8, 8, 25, 31, 11 };
  float logits[G_VOCAB], emb[10 * G_HIDDEN];
  g_assert_true (avq_llama_embed (llama, ids, 10, emb, &error));

  /* whole prompt at once (GEMM path) */
  g_assert_true (avq_llama_prefill (llama, emb, 7, logits, &error));
  g_assert_no_error (error);
  assert_logits (model, ids, 7, logits, "prefill 7");

  /* pieces: 2 rows, 3 more on top of the cache, then single tokens; the
   * cache then grows past its initial 8 positions */
  avq_llama_reset (llama);
  g_assert_true (avq_llama_prefill (llama, emb, 2, logits, &error));
  assert_logits (model, ids, 2, logits, "prefill 2");
  g_assert_true (avq_llama_prefill (llama, emb + 2 * G_HIDDEN, 3, logits, &error));
  assert_logits (model, ids, 5, logits, "prefill 2+3");
  for (int n = 6; n <= 10; n++) {
    if (n == 9) {
      g_assert_false (avq_llama_decode (llama, ids[n - 1], logits, &error));
      g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
      g_clear_error (&error);
      g_assert_true (avq_llama_reserve (llama, 16, &error));
    }
    g_assert_true (avq_llama_decode (llama, ids[n - 1], logits, &error));
    g_assert_no_error (error);
    assert_logits (model, ids, n, logits, "decode");
  }
  g_assert_cmpint (avq_llama_n_past (llama), ==, 10);

  /* a prefill without logits still fills the cache of every layer */
  avq_llama_reset (llama);
  g_assert_true (avq_llama_prefill (llama, emb, 5, NULL, &error));
  g_assert_true (avq_llama_decode (llama, ids[5], logits, &error));
  g_assert_no_error (error);
  assert_logits (model, ids, 6, logits, "prefill 5 without logits, decode");

  g_assert_false (avq_llama_decode (llama, G_VOCAB, logits, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  avq_test_remove_model_dir (dir);
}

/* A prompt longer than the decoder's prefill chunk (1024 rows): the second
 * chunk attends to the first through the cache. */
static void
test_gqa_long_prompt (void)
{
  g_autofree char *dir = gqa_model_dir (AVQ_DTYPE_F16, FALSE);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  g_assert_no_error (error);
  enum { N = 1100 };
  g_autoptr (AvqLlama) llama = avq_llama_new (model, N + 1, &error);
  g_assert_no_error (error);
  avq_llama_set_threads (llama, 2);
  g_autofree int *ids = g_new (int, N);
  for (int i = 0; i < N; i++)
    ids[i] = (i * 7 + i / 13) % G_VOCAB;
  g_autofree float *emb = g_new (float, N * G_HIDDEN);
  float logits[G_VOCAB];
  g_assert_true (avq_llama_embed (llama, ids, N, emb, &error));
  g_assert_true (avq_llama_prefill (llama, emb, N, logits, &error));
  g_assert_no_error (error);
  /* sums over ~1100 positions: the spec's fp32 tolerance */
  assert_logits_tol (model, ids, N, logits, "long prefill", 1e-4);
  int next = 5;
  g_assert_true (avq_llama_decode (llama, next, logits, &error));
  ids = g_renew (int, ids, N + 1);
  ids[N] = next;
  assert_logits_tol (model, ids, N + 1, logits, "decode after long prefill", 1e-4);
  avq_test_remove_model_dir (dir);
}

/* ---------------------------------------------------------------------- */
/* several sequences and batched decode */

/* The fixture's text around the image, without the image: 18 positions. */
static GArray *
text_prompt (void)
{
  JsonObject *p = json_object_get_object_member (avq_test_reference_json (),
                                                 "llm.prompt_ids");
  GArray *ids = g_array_new (FALSE, FALSE, sizeof (int));
  append_ids (ids, json_object_get_array_member (p, "prefix"));
  append_ids (ids, json_object_get_array_member (p, "suffix"));
  return ids;
}

static float *
embed_prompt (AvqLlama *llama, GArray *ids, const float *features, int *n)
{
  g_autoptr (GError) error = NULL;
  float *emb = avq_llava_embed_prompt (llama, (int *) ids->data, ids->len, features,
                                       features ? 576 : 0, n, &error);
  g_assert_no_error (error);
  return emb;
}

#define B_SEQS 3
#define B_STEPS 5

static double
assert_rel (const float *got, const float *want, int n, double tol, const char *what,
            int seq, int step)
{
  double rel = avq_test_rel_error (got, want, n);
  if (rel > tol)
    g_test_message ("%s, sequence %d, step %d: rel err %.3g", what, seq, step, rel);
  g_assert_cmpfloat (rel, <=, tol);
  return rel;
}

/* Three sequences of 594, 18 and 5 positions decoded together, in varying
 * order and subsets, against each decoded alone by avq_llama_decode. */
static void
test_batch_fixture (void)
{
  const AvqModel *model = avq_test_tiny_model ();
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqLlama) ref = avq_llama_new (model, 1024, &error);
  g_assert_no_error (error);
  avq_llama_set_threads (ref, 2);
  int V = avq_llama_vocab_size (ref);

  g_autofree float *features = chelsea_features (&cases[0]);
  g_autoptr (GArray) image = fixture_prompt (FALSE);
  g_autoptr (GArray) text = text_prompt ();
  g_autoptr (GArray) prefix = g_array_sized_new (FALSE, FALSE, sizeof (int), 5);
  g_array_append_vals (prefix, text->data, 5);
  float *emb[B_SEQS];
  int len[B_SEQS];
  emb[0] = embed_prompt (ref, image, features, &len[0]);
  emb[1] = embed_prompt (ref, text, NULL, &len[1]);
  emb[2] = embed_prompt (ref, prefix, NULL, &len[2]);
  g_assert_cmpint (len[0], ==, 594);
  g_assert_cmpint (len[1], ==, 18);
  g_assert_cmpint (len[2], ==, 5);

  /* references: each sequence alone; step 0 is the prefill, the tokens fed
   * are the greedy ones */
  g_autofree float *want = g_new (float, (gsize) B_SEQS * (B_STEPS + 1) * V);
  int tokens[B_SEQS][B_STEPS];
  for (int s = 0; s < B_SEQS; s++) {
    float *w = want + (gsize) s * (B_STEPS + 1) * V;
    avq_llama_reset (ref);
    g_assert_true (avq_llama_prefill (ref, emb[s], len[s], w, &error));
    g_assert_no_error (error);
    for (int k = 0; k < B_STEPS; k++) {
      tokens[s][k] = avq_logits_argmax (w + (gsize) k * V, V);
      g_assert_true (avq_llama_decode (ref, tokens[s][k], w + (gsize) (k + 1) * V, &error));
      g_assert_no_error (error);
    }
  }

  g_autoptr (AvqLlama) llama = avq_llama_new (model, 1024, &error);
  g_assert_no_error (error);
  avq_llama_set_threads (llama, 2);
  g_assert_cmpint (avq_llama_sequences (llama), ==, 1);
  g_assert_true (avq_llama_set_sequences (llama, B_SEQS, &error));
  g_assert_no_error (error);
  g_assert_cmpint (avq_llama_sequences (llama), ==, B_SEQS);
  g_autofree float *logits = g_new (float, (gsize) B_SEQS * V);
  /* prefill in another order than the sequence numbers */
  for (int s = B_SEQS - 1; s >= 0; s--) {
    g_assert_true (avq_llama_prefill_sequence (llama, s, emb[s], len[s], logits, &error));
    g_assert_no_error (error);
    assert_rel (logits, want + (gsize) s * (B_STEPS + 1) * V, V, 1e-6, "prefill", s, 0);
  }

  /* each step: calls of (sequences); every sequence advances once */
  static const int plan[B_STEPS][2][4] = {
    { { 3, 0, 1, 2 }, { 0 } },
    { { 3, 2, 0, 1 }, { 0 } },
    { { 2, 2, 0 }, { 1, 1 } },     /* a subset, then a batch of one */
    { { 1, 1 }, { 2, 0, 2 } },
    { { 3, 1, 2, 0 }, { 0 } },
  };
  double worst = 0;
  for (int k = 0; k < B_STEPS; k++) {
    for (int c = 0; c < 2; c++) {
      int n = plan[k][c][0];
      if (n == 0)
        continue;
      int seqs[3], toks[3];
      for (int i = 0; i < n; i++) {
        seqs[i] = plan[k][c][1 + i];
        toks[i] = tokens[seqs[i]][k];
      }
      g_assert_true (avq_llama_decode_batch (llama, seqs, toks, n, logits, &error));
      g_assert_no_error (error);
      for (int i = 0; i < n; i++)
        worst = MAX (worst, assert_rel (logits + (gsize) i * V,
                                        want + ((gsize) seqs[i] * (B_STEPS + 1) + k + 1) * V,
                                        V, 1e-5, "batch decode", seqs[i], k + 1));
    }
    for (int s = 0; s < B_SEQS; s++)
      g_assert_cmpint (avq_llama_sequence_n_past (llama, s), ==, len[s] + k + 1);
  }
  g_test_message ("%d sequences, %d steps: worst rel err %.3g against each sequence alone",
                  B_SEQS, B_STEPS, worst);

  /* the single-sequence API is sequence 0's: decode continues it, n_past
   * and reset are its own */
  g_assert_cmpint (avq_llama_n_past (llama), ==, len[0] + B_STEPS);
  int next = avq_logits_argmax (want + ((gsize) B_STEPS) * V, V);
  avq_llama_reset (ref);
  g_autofree float *alone = g_new (float, V);
  g_assert_true (avq_llama_prefill (ref, emb[0], len[0], NULL, &error));
  for (int k = 0; k < B_STEPS; k++)
    g_assert_true (avq_llama_decode (ref, tokens[0][k], alone, &error));
  g_assert_true (avq_llama_decode (ref, next, alone, &error));
  g_assert_true (avq_llama_decode (llama, next, logits, &error));
  g_assert_no_error (error);
  assert_rel (logits, alone, V, 1e-5, "decode on sequence 0", 0, B_STEPS + 1);
  g_assert_cmpint (avq_llama_n_past (llama), ==, len[0] + B_STEPS + 1);
  g_assert_cmpint (avq_llama_sequence_n_past (llama, 1), ==, len[1] + B_STEPS);
  avq_llama_reset (llama);
  g_assert_cmpint (avq_llama_sequence_n_past (llama, 0), ==, 0);
  g_assert_cmpint (avq_llama_sequence_n_past (llama, 1), ==, len[1] + B_STEPS);
  avq_llama_reset_sequence (llama, 2);
  g_assert_cmpint (avq_llama_sequence_n_past (llama, 2), ==, 0);
  g_assert_cmpint (avq_llama_sequence_n_past (llama, 1), ==, len[1] + B_STEPS);

  /* sequence 1 was left alone by all that: one more batched step of it */
  int seq1 = 1, tok1 = avq_logits_argmax (want + ((gsize) 1 * (B_STEPS + 1) + B_STEPS) * V, V);
  avq_llama_reset (ref);
  g_assert_true (avq_llama_prefill (ref, emb[1], len[1], NULL, &error));
  for (int k = 0; k < B_STEPS; k++)
    g_assert_true (avq_llama_decode (ref, tokens[1][k], alone, &error));
  g_assert_true (avq_llama_decode (ref, tok1, alone, &error));
  g_assert_true (avq_llama_decode_batch (llama, &seq1, &tok1, 1, logits, &error));
  g_assert_no_error (error);
  assert_rel (logits, alone, V, 1e-5, "sequence 1 after the others' resets", 1, B_STEPS + 1);

  /* the same count again only forgets; another count reallocates */
  g_assert_true (avq_llama_set_sequences (llama, B_SEQS, &error));
  for (int s = 0; s < B_SEQS; s++)
    g_assert_cmpint (avq_llama_sequence_n_past (llama, s), ==, 0);
  g_assert_true (avq_llama_set_sequences (llama, 1, &error));
  g_assert_no_error (error);
  g_assert_cmpint (avq_llama_sequences (llama), ==, 1);
  g_assert_true (avq_llama_prefill (llama, emb[1], len[1], logits, &error));
  assert_rel (logits, want + (gsize) 1 * (B_STEPS + 1) * V, V, 1e-6,
              "prefill after going back to one sequence", 0, 0);
  for (int s = 0; s < B_SEQS; s++)
    g_free (emb[s]);
}

/* The GQA model in many sequences at once, each row against the naive
 * decoder: 6, 7 and 9 sequences (groups of 3 and 4 inputs in the fused
 * kernels), 70 (more rows than the fused kernels take: widened blocks +
 * sgemm), and the cache growing under all of them. */
typedef struct {
  AvqDType dtype;
  gboolean tied, no_simd;
  int n_seqs;
} BatchGqaCase;

#define MAX_IDS 24

static void
test_batch_gqa (gconstpointer data)
{
  const BatchGqaCase *c = data;
  g_autofree char *dir = gqa_model_dir (c->dtype, c->tied);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  g_assert_no_error (error);
  g_autoptr (AvqLlama) llama = avq_llama_new (model, 8, &error);
  g_assert_no_error (error);
  if (c->no_simd)
    avq_llama_set_simd (llama, FALSE);
  avq_llama_set_threads (llama, 2);
  int S = c->n_seqs;
  g_assert_cmpint (S, >=, 6);
  g_assert_true (avq_llama_set_sequences (llama, S, &error));
  g_assert_no_error (error);

  /* sequence s: a prompt of 1 + s % 6 positions */
  g_autofree int *ids = g_new (int, (gsize) S * MAX_IDS);
  g_autofree int *n_ids = g_new (int, S);
  float logits1[G_VOCAB], emb[8 * G_HIDDEN];
  for (int s = 0; s < S; s++) {
    int *sid = ids + (gsize) s * MAX_IDS;
    n_ids[s] = 1 + s % 6;
    for (int j = 0; j < n_ids[s]; j++)
      sid[j] = (s * 7 + j * 13 + 3) % G_VOCAB;
    g_assert_true (avq_llama_embed (llama, sid, n_ids[s], emb, &error));
    g_assert_true (avq_llama_prefill_sequence (llama, s, emb, n_ids[s], logits1, &error));
    g_assert_no_error (error);
    if (s < 3)
      assert_logits (model, sid, n_ids[s], logits1, "prefill of one sequence");
  }

  g_autofree float *logits = g_new (float, (gsize) S * G_VOCAB);
  g_autofree int *seqs = g_new (int, S);
  g_autofree int *toks = g_new (int, S);
  for (int step = 0; step < 6; step++) {
    if (step == 2) {
      /* prompts of 6 positions (S >= 6) + 2 steps fill their caches of 8 */
      g_assert_false (avq_llama_decode_batch (llama, seqs, toks, S, logits, &error));
      g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
      g_clear_error (&error);
      g_assert_true (avq_llama_reserve (llama, 12, &error));
      g_assert_no_error (error);
      g_assert_cmpint (avq_llama_max_context (llama), ==, 12);
    }
    for (int i = 0; i < S; i++) {
      /* every other step in reverse order */
      int s = step % 2 ? S - 1 - i : i;
      seqs[i] = s;
      toks[i] = (s * 5 + step * 11 + 1) % G_VOCAB;
    }
    if (step == 2)   /* the failed step changed nothing */
      for (int s = 0; s < S; s++)
        g_assert_cmpint (avq_llama_sequence_n_past (llama, s), ==, n_ids[s]);
    g_assert_true (avq_llama_decode_batch (llama, seqs, toks, S, logits, &error));
    g_assert_no_error (error);
    double worst = 0;
    for (int i = 0; i < S; i++) {
      int s = seqs[i];
      int *sid = ids + (gsize) s * MAX_IDS;
      sid[n_ids[s]++] = toks[i];
      g_assert_cmpint (avq_llama_sequence_n_past (llama, s), ==, n_ids[s]);
      double want[G_VOCAB];
      float wantf[G_VOCAB];
      naive_logits (model, sid, n_ids[s], want);
      for (int v = 0; v < G_VOCAB; v++)
        wantf[v] = (float) want[v];
      double rel = avq_test_rel_error (logits + (gsize) i * G_VOCAB, wantf, G_VOCAB);
      worst = MAX (worst, rel);
      g_assert_cmpfloat (rel, <=, 2e-5);
    }
    g_test_message ("step %d, %d sequences: worst rel err %.3g against the naive decoder",
                    step, S, worst);
  }
  avq_test_remove_model_dir (dir);
}

/* Invalid batches are refused before anything changes. */
static void
test_batch_errors (void)
{
  g_autofree char *dir = gqa_model_dir (AVQ_DTYPE_F16, FALSE);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  g_assert_no_error (error);
  g_autoptr (AvqLlama) llama = avq_llama_new (model, 2048, &error);
  g_assert_no_error (error);
  g_assert_true (avq_llama_set_sequences (llama, 3, &error));
  int ids[3][MAX_IDS] = { { 4, 9, 1 }, { 30 }, { 2, 2, 7, 41 } };
  int n_ids[3] = { 3, 1, 4 };
  float emb[4 * G_HIDDEN], logits[3 * G_VOCAB];
  for (int s = 0; s < 3; s++) {
    g_assert_true (avq_llama_embed (llama, ids[s], n_ids[s], emb, &error));
    g_assert_true (avq_llama_prefill_sequence (llama, s, emb, n_ids[s], NULL, &error));
    g_assert_no_error (error);
  }

  static const struct {
    int n, seqs[3], toks[3];
    const char *says;
  } bad[] = {
    { 2, { 0, 0 }, { 1, 2 }, "appears in rows 0 and 1" },
    { 3, { 1, 2, 1 }, { 1, 2, 3 }, "appears in rows 0 and 2" },
    { 2, { 0, 3 }, { 1, 2 }, "sequence 3 does not exist" },
    { 1, { -1 }, { 1 }, "sequence -1 does not exist" },
    { 2, { 2, 1 }, { 5, G_VOCAB }, "token id 50" },
    { 1, { 0 }, { -1 }, "token id -1" },
    { 0, { 0 }, { 1 }, "at least one" },
  };
  for (guint b = 0; b < G_N_ELEMENTS (bad); b++) {
    g_assert_false (avq_llama_decode_batch (llama, bad[b].seqs, bad[b].toks, bad[b].n,
                                            logits, &error));
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
    g_test_message ("%s", error->message);
    g_assert_nonnull (strstr (error->message, bad[b].says));
    g_clear_error (&error);
    for (int s = 0; s < 3; s++)
      g_assert_cmpint (avq_llama_sequence_n_past (llama, s), ==, n_ids[s]);
  }
  g_assert_false (avq_llama_prefill_sequence (llama, 3, emb, 1, NULL, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (avq_llama_set_sequences (llama, 0, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  /* 2^31 caches of 2048 positions (512 KiB each) exceed any address space.
   * AddressSanitizer aborts on such a request unless told to fail it. */
  gboolean asan = FALSE;
#if defined(__SANITIZE_ADDRESS__)
  asan = TRUE;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  asan = TRUE;
#endif
#endif
  const char *asan_options = g_getenv ("ASAN_OPTIONS");
  if (!asan || (asan_options && strstr (asan_options, "allocator_may_return_null=1"))) {
    g_assert_false (avq_llama_set_sequences (llama, G_MAXINT, &error));
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
    g_test_message ("%s", error->message);
    g_assert_nonnull (strstr (error->message, "KiB a position a sequence"));
    g_clear_error (&error);
    g_assert_cmpint (avq_llama_sequences (llama), ==, 3);
  } else {
    g_test_message ("impossible allocation not tried: AddressSanitizer without "
                    "ASAN_OPTIONS=allocator_may_return_null=1 would abort");
  }

  /* a full cache refuses the whole batch */
  g_autoptr (AvqLlama) small = avq_llama_new (model, 4, &error);
  g_assert_true (avq_llama_set_sequences (small, 2, &error));
  g_assert_true (avq_llama_embed (small, ids[2], 4, emb, &error));
  g_assert_true (avq_llama_prefill_sequence (small, 1, emb, 4, NULL, &error));
  g_assert_true (avq_llama_prefill_sequence (small, 0, emb, 1, NULL, &error));
  int both[2] = { 0, 1 }, toks[2] = { 3, 4 };
  g_assert_false (avq_llama_decode_batch (small, both, toks, 2, logits, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "sequence 1"));
  g_clear_error (&error);
  g_assert_cmpint (avq_llama_sequence_n_past (small, 0), ==, 1);
  g_assert_cmpint (avq_llama_sequence_n_past (small, 1), ==, 4);

  /* after all that, every sequence still continues correctly */
  int all[3] = { 2, 0, 1 }, next[3] = { 11, 12, 13 };
  g_assert_true (avq_llama_decode_batch (llama, all, next, 3, logits, &error));
  g_assert_no_error (error);
  for (int i = 0; i < 3; i++) {
    int s = all[i];
    ids[s][n_ids[s]++] = next[i];
    assert_logits (model, ids[s], n_ids[s], logits + i * G_VOCAB, "after refused batches");
  }
  /* logits may be NULL: the caches still advance */
  g_assert_true (avq_llama_decode_batch (llama, all, next, 3, NULL, &error));
  g_assert_no_error (error);
  for (int s = 0; s < 3; s++)
    g_assert_cmpint (avq_llama_sequence_n_past (llama, s), ==, n_ids[s] + 1);
  avq_test_remove_model_dir (dir);
}

/* avq_llava_generate_batch against avq_llava_generate per request: the
 * three fixture prompts (whose greedy ids HF gave) and a text-only one. */
static void
test_generate_batch (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqLlama) llama = avq_llama_new (avq_test_tiny_model (), 64, &error);
  g_assert_no_error (error);
  avq_llama_set_threads (llama, 2);
  enum { N = 4 };
  float *features[3];
  GArray *prompts[N];
  AvqLlavaRequest req[N];
  for (int i = 0; i < 3; i++) {
    features[i] = chelsea_features (&cases[i]);
    prompts[i] = fixture_prompt (i == 1);   /* both forms */
    req[i] = (AvqLlavaRequest) { (int *) prompts[i]->data, prompts[i]->len, features[i], 576 };
  }
  prompts[3] = text_prompt ();
  req[3] = (AvqLlavaRequest) { (int *) prompts[3]->data, prompts[3]->len, NULL, 0 };

  AvqGenerateOptions opts;
  avq_generate_options_init (&opts);
  opts.max_new_tokens = 8;
  GArray *out[N];
  AvqGenerateStats stats[N];
  for (int i = 0; i < N; i++)
    out[i] = g_array_new (FALSE, FALSE, sizeof (int));
  g_assert_true (avq_llava_generate_batch (llama, req, N, &opts, out, stats, &error));
  g_assert_no_error (error);
  g_assert_cmpint (avq_llama_sequences (llama), ==, N);
  for (int i = 0; i < 3; i++) {
    g_autofree char *name = g_strdup_printf ("llm.%s.greedy", cases[i].tag);
    JsonArray *greedy = json_object_get_array_member (avq_test_reference_json (),
                                                      name);
    g_assert_cmpuint (out[i]->len, ==, 8);
    for (guint k = 0; k < 8; k++) {
      JsonObject *step = json_array_get_object_element (greedy, k);
      g_assert_cmpint (g_array_index (out[i], int, k), ==,
                       (int) json_object_get_int_member (step, "id"));
    }
    g_assert_cmpint (stats[i].prompt_positions, ==, 594);
  }
  g_assert_cmpint (stats[3].prompt_positions, ==, 18);
  for (int i = 0; i < N; i++) {
    g_assert_cmpint (stats[i].generated, ==, (int) out[i]->len);
    g_assert_true (stats[i].prefill_ms >= 0 && stats[i].decode_ms >= 0);
  }

  /* each alone (sequence 0 of the same decoder), with the batch's options:
   * greedy; an EOS that stops request 0 after 2 tokens while the others
   * go on; sampling, every request from the options' seed */
  for (int round = 0; round < 3; round++) {
    avq_generate_options_init (&opts);
    opts.max_new_tokens = 8;
    if (round == 1)
      opts.eos_token_id = g_array_index (out[0], int, 2);
    if (round == 2) {
      opts.temperature = 1.0f;
      opts.top_p = 0.9f;
      opts.seed = 99;
    }
    GArray *got[N];
    AvqGenerateStats st[N];
    for (int i = 0; i < N; i++)
      got[i] = g_array_new (FALSE, FALSE, sizeof (int));
    g_assert_true (avq_llava_generate_batch (llama, req, N, &opts, got, st, &error));
    g_assert_no_error (error);
    for (int i = 0; i < N; i++) {
      AvqGenerateOptions alone_opts = opts;
      AvqGenerateStats alone_st;
      g_autoptr (GArray) alone = g_array_new (FALSE, FALSE, sizeof (int));
      g_assert_true (avq_llava_generate (llama, req[i].prompt_ids, req[i].n_ids,
                                         req[i].image_features, req[i].n_image_rows,
                                         &alone_opts, alone, &alone_st, &error));
      g_assert_no_error (error);
      g_test_message ("round %d, request %d: %u tokens%s", round, i, got[i]->len,
                      st[i].hit_eos ? " then EOS" : "");
      g_assert_cmpmem (got[i]->data, got[i]->len * sizeof (int),
                       alone->data, alone->len * sizeof (int));
      g_assert_cmpint (st[i].hit_eos, ==, alone_st.hit_eos);
      g_assert_cmpint (st[i].generated, ==, alone_st.generated);
      g_assert_cmpint (st[i].prompt_positions, ==, alone_st.prompt_positions);
    }
    if (round == 1) {
      g_assert_cmpuint (got[0]->len, ==, 2);
      g_assert_true (st[0].hit_eos);
    }
    for (int i = 0; i < N; i++)
      g_array_unref (got[i]);
  }

  /* a bad request fails the call before anything runs */
  int bad_ids[] = { 1, 32064 };
  AvqLlavaRequest bad[2] = { req[3], { bad_ids, 2, NULL, 0 } };
  GArray *two[2] = { out[0], out[1] };
  guint before = out[0]->len;
  g_assert_false (avq_llava_generate_batch (llama, bad, 2, NULL, two, NULL, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, "request 1"));
  g_clear_error (&error);
  g_assert_cmpuint (out[0]->len, ==, before);

  for (int i = 0; i < N; i++) {
    g_array_unref (out[i]);
    g_array_unref (prompts[i]);
    if (i < 3)
      g_free (features[i]);
  }
}

/* The candidates path of generation decides as whole rows do: greedy,
 * a sharp nucleus (decided by candidates), and flat distributions over
 * the 32064-token vocabulary (the draw often lands past 256 candidates:
 * whole rows fetched). */
static void
test_sampling_as_rows (void)
{
  AvqLlama *llama = tiny_llama ();
  g_autofree float *features = chelsea_features (&cases[0]);
  g_autoptr (GArray) prompt = fixture_prompt (FALSE);
  const int fetched = avq_test_assert_sampling_rules_as_rows (
      llama, (int *) prompt->data, prompt->len, features, 576, 6);
  g_assert_cmpint (fetched, >, 0);
}

/* Candidates of a decode step are those of its logits; the logits are kept
 * for one step only. */
static void
test_decode_candidates (void)
{
  AvqLlama *llama = tiny_llama ();
  const int V = avq_llama_vocab_size (llama);
  g_autofree float *features = chelsea_features (&cases[0]);
  g_autoptr (GArray) prompt = fixture_prompt (FALSE);
  g_autoptr (GError) error = NULL;
  g_autofree float *first = g_new (float, V), *plain = g_new (float, V),
                   *kept = g_new (float, V);
  AvqTokenCandidates got, want;
  avq_token_candidates_init (&got, 300);
  avq_token_candidates_init (&want, 300);

  g_assert_true (avq_llava_prefill (llama, (int *) prompt->data, prompt->len,
                                    features, 576, first, &error));
  int tok = avq_logits_argmax (first, V);
  g_assert_true (avq_llama_decode (llama, tok, plain, &error));
  g_assert_false (avq_llama_step_logits (llama, 0, kept, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);

  g_assert_true (avq_llava_prefill (llama, (int *) prompt->data, prompt->len,
                                    features, 576, first, &error));
  g_assert_true (avq_llama_decode_candidates (llama, tok, 300, 0.8f, &got, &error));
  g_assert_no_error (error);
  g_assert_true (avq_llama_step_logits (llama, 0, kept, &error));
  g_assert_cmpmem (kept, V * sizeof (float), plain, V * sizeof (float));
  g_assert_false (avq_llama_step_logits (llama, 1, kept, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  /* clamped to AVQ_SAMPLING_CANDIDATES */
  avq_token_candidates_from_logits (plain, V, AVQ_SAMPLING_CANDIDATES, 0.8f, &want);
  g_assert_cmpint (got.n, ==, AVQ_SAMPLING_CANDIDATES);
  g_assert_false (got.complete);
  g_assert_cmpmem (got.id, got.n * sizeof (int), want.id, want.n * sizeof (int));
  g_assert_cmpmem (got.logit, got.n * sizeof (float), want.logit, want.n * sizeof (float));
  g_assert_cmpfloat (got.max, ==, want.max);
  g_assert_cmpfloat (got.sum, ==, want.sum);

  /* a prefill forgets the step */
  g_assert_true (avq_llava_prefill (llama, (int *) prompt->data, prompt->len,
                                    features, 576, first, &error));
  g_assert_false (avq_llama_step_logits (llama, 0, kept, &error));
  g_clear_error (&error);
  avq_token_candidates_clear (&got);
  avq_token_candidates_clear (&want);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *path = g_strdup_printf ("/llama/fixture/%s", cases[i].tag);
    g_test_add_data_func (path, &cases[i], test_fixture);
  }
  g_test_add_func ("/llama/generation-options", test_generation_options);
  g_test_add_func ("/llama/sampling-as-rows", test_sampling_as_rows);
  g_test_add_func ("/llama/decode-candidates", test_decode_candidates);
  g_test_add_func ("/llama/prompt-errors", test_prompt_errors);
  g_test_add_func ("/llama/broken-models", test_broken_models);

  static const GqaCase gqa[] = {
    { AVQ_DTYPE_F32, FALSE, FALSE, 1, 0 },
    { AVQ_DTYPE_F16, FALSE, FALSE, 2, 0 },
    { AVQ_DTYPE_F16, FALSE, FALSE, 2, 12 },   /* several blocks, a partial one */
    { AVQ_DTYPE_BF16, TRUE, FALSE, 2, 0 },
    { AVQ_DTYPE_F16, TRUE, TRUE, 1, 0 },
    { AVQ_DTYPE_BF16, FALSE, TRUE, 2, 7 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (gqa); i++) {
    g_autofree char *path = g_strdup_printf ("/llama/gqa/%s%s%s/threads-%d-block-%d",
                                             avq_dtype_name (gqa[i].dtype),
                                             gqa[i].tied ? "-tied" : "",
                                             gqa[i].no_simd ? "-scalar" : "",
                                             gqa[i].threads, gqa[i].block_rows);
    g_test_add_data_func (path, &gqa[i], test_gqa);
  }
  g_test_add_func ("/llama/gqa/long-prompt", test_gqa_long_prompt);

  g_test_add_func ("/llama/batch/fixture", test_batch_fixture);
  g_test_add_func ("/llama/batch/errors", test_batch_errors);
  g_test_add_func ("/llama/batch/generate", test_generate_batch);
  static const BatchGqaCase batch[] = {
    { AVQ_DTYPE_F16, FALSE, FALSE, 6 },
    { AVQ_DTYPE_F32, FALSE, FALSE, 9 },
    { AVQ_DTYPE_BF16, TRUE, FALSE, 7 },
    { AVQ_DTYPE_F16, TRUE, TRUE, 6 },
    { AVQ_DTYPE_F16, FALSE, FALSE, 70 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (batch); i++) {
    g_autofree char *path = g_strdup_printf ("/llama/batch/gqa/%s%s%s/%d-sequences",
                                             avq_dtype_name (batch[i].dtype),
                                             batch[i].tied ? "-tied" : "",
                                             batch[i].no_simd ? "-scalar" : "",
                                             batch[i].n_seqs);
    g_test_add_data_func (path, &batch[i], test_batch_gqa);
  }
  return g_test_run ();
}
