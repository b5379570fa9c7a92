/* config.json / preprocessor_config.json parsing: real sparse llava-hf
 * config, the tiny fixture, transformers defaults and malformed input. */
#include <math.h>
#include <string.h>
#include <glib/gstdio.h>

#include "avq-config.h"
#include "avq-error.h"
#include "test-util.h"

static void
test_real_sparse (void)
{
  g_autofree char *path = avq_test_data_path ("llava-1.5-7b-hf/config.json");
  AvqLlavaConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_llava_config_load (path, &c, &error));
  g_assert_no_error (error);

  /* CLIP ViT-L/14-336 */
  g_assert_cmpint (c.vision.hidden_size, ==, 1024);
  g_assert_cmpint (c.vision.intermediate_size, ==, 4096);
  g_assert_cmpint (c.vision.num_layers, ==, 24);
  g_assert_cmpint (c.vision.num_heads, ==, 16);
  g_assert_cmpint (c.vision.num_channels, ==, 3);
  g_assert_cmpint (c.vision.image_size, ==, 336);
  g_assert_cmpint (c.vision.patch_size, ==, 14);
  g_assert_cmpfloat (c.vision.layer_norm_eps, ==, 1e-5f);
  g_assert_cmpint (c.vision.hidden_act, ==, AVQ_ACT_QUICK_GELU);

  /* Vicuna-7B: LlamaConfig defaults except what the file gives */
  g_assert_cmpint (c.text.vocab_size, ==, 32064);
  g_assert_cmpint (c.text.hidden_size, ==, 4096);
  g_assert_cmpint (c.text.intermediate_size, ==, 11008);
  g_assert_cmpint (c.text.num_layers, ==, 32);
  g_assert_cmpint (c.text.num_heads, ==, 32);
  g_assert_cmpint (c.text.num_kv_heads, ==, 32);
  g_assert_cmpint (c.text.head_dim, ==, 128);
  g_assert_cmpint (c.text.max_position_embeddings, ==, 4096);
  g_assert_cmpfloat (c.text.rms_norm_eps, ==, 1e-5f);
  g_assert_cmpfloat (c.text.rope_theta, ==, 10000.0f);
  g_assert_cmpint (c.text.hidden_act, ==, AVQ_ACT_SILU);
  g_assert_cmpint (c.text.bos_token_id, ==, 1);
  g_assert_cmpint (c.text.eos_token_id, ==, 2);
  g_assert_false (c.text.tie_word_embeddings);

  g_assert_cmpint (c.image_token_index, ==, 32000);
  g_assert_cmpint (c.image_seq_length, ==, 576);
  g_assert_cmpint (c.vision_feature_layer, ==, -2);
  g_assert_false (c.select_cls);
  g_assert_cmpint (c.projector_act, ==, AVQ_ACT_GELU);
  g_assert_true (c.projector_bias);
  g_assert_cmpint (c.pad_token_id, ==, 32001);
  g_assert_cmpint (avq_llava_config_vision_layers_run (&c), ==, 23);
}

static void
test_tiny (void)
{
  g_autofree char *path = avq_test_data_path ("tiny-llava/config.json");
  AvqLlavaConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_llava_config_load (path, &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.vision.num_layers, ==, 4);
  g_assert_cmpint (c.vision.hidden_size, ==, 64);
  g_assert_cmpint (c.vision.intermediate_size, ==, 256);
  g_assert_cmpint (c.vision.num_heads, ==, 4);
  g_assert_cmpint (c.text.num_layers, ==, 2);
  g_assert_cmpint (c.text.hidden_size, ==, 64);
  g_assert_cmpint (c.text.intermediate_size, ==, 172);
  g_assert_cmpint (c.text.num_heads, ==, 4);
  g_assert_cmpint (c.text.num_kv_heads, ==, 4);
  g_assert_cmpint (c.text.head_dim, ==, 16);
  g_assert_cmpint (c.text.vocab_size, ==, 32064);
  g_assert_cmpfloat (c.text.rope_theta, ==, 10000.0f);
  g_assert_cmpint (c.pad_token_id, ==, 32001);   /* top level, not text_config's 0 */
  g_assert_cmpint (avq_llava_config_vision_layers_run (&c), ==, 3);
}

static gboolean
parse (const char *json, AvqLlavaConfig *c, GError **error)
{
  return avq_llava_config_parse (json, -1, "cfg.json", c, error);
}

static void
test_defaults (void)
{
  AvqLlavaConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_true (parse ("{}", &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.vision.hidden_size, ==, 1024);
  g_assert_cmpint (c.vision.intermediate_size, ==, 4096);
  g_assert_cmpint (c.vision.num_layers, ==, 24);
  g_assert_cmpint (c.vision.num_heads, ==, 16);
  g_assert_cmpint (c.vision.image_size, ==, 336);
  g_assert_cmpint (c.vision.patch_size, ==, 14);
  g_assert_cmpint (c.vision.hidden_act, ==, AVQ_ACT_QUICK_GELU);
  g_assert_cmpfloat (c.vision.layer_norm_eps, ==, 1e-5f);
  g_assert_cmpint (c.text.vocab_size, ==, 32000);
  g_assert_cmpint (c.text.hidden_size, ==, 4096);
  g_assert_cmpint (c.text.intermediate_size, ==, 11008);
  g_assert_cmpint (c.text.num_layers, ==, 32);
  g_assert_cmpint (c.text.num_heads, ==, 32);
  g_assert_cmpint (c.text.num_kv_heads, ==, 32);
  g_assert_cmpint (c.text.head_dim, ==, 128);
  g_assert_cmpint (c.text.max_position_embeddings, ==, 2048);
  g_assert_cmpfloat (c.text.rms_norm_eps, ==, 1e-6f);
  g_assert_cmpfloat (c.text.rope_theta, ==, 10000.0f);
  g_assert_cmpint (c.text.bos_token_id, ==, 1);
  g_assert_cmpint (c.text.eos_token_id, ==, 2);
  g_assert_cmpint (c.image_token_index, ==, 32000);
  g_assert_cmpint (c.image_seq_length, ==, 576);
  g_assert_cmpint (c.vision_feature_layer, ==, -2);
  g_assert_false (c.select_cls);
  g_assert_cmpint (c.projector_act, ==, AVQ_ACT_GELU);
  g_assert_true (c.projector_bias);
  g_assert_cmpint (c.pad_token_id, ==, -1);
  g_assert_cmpint (avq_llava_config_vision_layers_run (&c), ==, 23);

  /* null means "not given" */
  g_assert_true (parse ("{\"text_config\":{\"hidden_size\":null,\"rope_scaling\":null},"
                        "\"vision_config\":null}", &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.text.hidden_size, ==, 4096);
}

static void
test_variants (void)
{
  AvqLlavaConfig c;
  g_autoptr (GError) error = NULL;

  g_assert_true (parse ("{\"text_config\":{\"rope_parameters\":{\"rope_theta\":500000.0,"
                        "\"rope_type\":\"default\"},\"rope_theta\":1}}", &c, &error));
  g_assert_no_error (error);
  g_assert_cmpfloat (c.text.rope_theta, ==, 500000.0f);
  g_assert_true (parse ("{\"text_config\":{\"rope_theta\":20000}}", &c, &error));
  g_assert_cmpfloat (c.text.rope_theta, ==, 20000.0f);
  g_assert_true (parse ("{\"text_config\":{\"rope_parameters\":{\"rope_type\":\"default\"},"
                        "\"rope_theta\":30000}}", &c, &error));
  g_assert_cmpfloat (c.text.rope_theta, ==, 30000.0f);

  /* GQA, explicit head_dim that is not hidden / heads */
  g_assert_true (parse ("{\"text_config\":{\"hidden_size\":64,\"num_attention_heads\":8,"
                        "\"num_key_value_heads\":2,\"head_dim\":32,\"eos_token_id\":[7,2],"
                        "\"tie_word_embeddings\":true}}", &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.text.num_kv_heads, ==, 2);
  g_assert_cmpint (c.text.head_dim, ==, 32);
  g_assert_cmpint (c.text.eos_token_id, ==, 7);
  g_assert_true (c.text.tie_word_embeddings);

  g_assert_true (parse ("{\"image_token_id\":31999,\"vision_feature_layer\":-1,"
                        "\"vision_feature_select_strategy\":\"full\","
                        "\"multimodal_projector_bias\":false,"
                        "\"projector_hidden_act\":\"gelu_pytorch_tanh\"}", &c, &error));
  g_assert_no_error (error);
  g_assert_cmpint (c.image_token_index, ==, 31999);
  g_assert_true (c.select_cls);
  g_assert_cmpint (c.image_seq_length, ==, 577);
  g_assert_false (c.projector_bias);
  g_assert_cmpint (c.projector_act, ==, AVQ_ACT_GELU_TANH);
  g_assert_cmpint (avq_llava_config_vision_layers_run (&c), ==, 24);

  g_assert_true (parse ("{\"text_config\":{\"pad_token_id\":0}}", &c, &error));
  g_assert_cmpint (c.pad_token_id, ==, 0);
  g_assert_true (parse ("{\"vision_feature_layer\":5}", &c, &error));
  g_assert_cmpint (avq_llava_config_vision_layers_run (&c), ==, 5);
  g_assert_true (parse ("{\"vision_feature_layer\":-25}", &c, &error));
  g_assert_cmpint (avq_llava_config_vision_layers_run (&c), ==, 0);
  g_assert_true (parse ("{\"vision_config\":{\"num_hidden_layers\":4},"
                        "\"vision_feature_layer\":4}", &c, &error));
  g_assert_cmpint (avq_llava_config_vision_layers_run (&c), ==, 4);
  /* a smaller vision tower changes the default token count */
  g_assert_true (parse ("{\"vision_config\":{\"image_size\":224}}", &c, &error));
  g_assert_cmpint (c.image_seq_length, ==, 256);

  g_assert_cmpstr (avq_activation_name (AVQ_ACT_QUICK_GELU), ==, "quick_gelu");
  g_assert_cmpstr (avq_activation_name (AVQ_ACT_GELU), ==, "gelu");
  g_assert_cmpstr (avq_activation_name (AVQ_ACT_SILU), ==, "silu");
  g_assert_cmpstr (avq_activation_name (AVQ_ACT_RELU), ==, "relu");
  g_assert_cmpstr (avq_activation_name (AVQ_ACT_GELU_TANH), ==, "gelu_pytorch_tanh");

  /* a failed parse leaves the caller's struct alone */
  AvqLlavaConfig before;
  memset (&before, 0x5a, sizeof before);
  c = before;
  g_assert_false (parse ("{\"text_config\":{\"hidden_size\":-1}}", &c, &error));
  g_assert_cmpmem (&c, sizeof c, &before, sizeof before);
}

typedef struct {
  const char *json;
  int code;
  const char *key;   /* must appear in the message */
} BadConfig;

static const BadConfig bad_configs[] = {
  { "", AVQ_ERROR_FORMAT, "empty" },
  { "  \n ", AVQ_ERROR_FORMAT, "empty" },
  { "{\"a\":", AVQ_ERROR_FORMAT, "invalid JSON" },
  { "[1]", AVQ_ERROR_FORMAT, "object" },
  { "{\"a\":1,\"a\":2}", AVQ_ERROR_FORMAT, "duplicate key \"a\"" },
  { "{\"text_config\":{\"hidden_size\":64,\"hidden_size\":64}}", AVQ_ERROR_FORMAT,
    "duplicate key \"hidden_size\"" },
  { "{\"vision_config\":[]}", AVQ_ERROR_FORMAT, "vision_config" },
  { "{\"text_config\":\"llama\"}", AVQ_ERROR_FORMAT, "text_config" },
  { "{\"text_config\":{\"hidden_size\":\"4096\"}}", AVQ_ERROR_FORMAT, "text_config.hidden_size" },
  { "{\"text_config\":{\"hidden_size\":0}}", AVQ_ERROR_FORMAT, "text_config.hidden_size" },
  { "{\"text_config\":{\"hidden_size\":-4096}}", AVQ_ERROR_FORMAT, "text_config.hidden_size" },
  { "{\"text_config\":{\"hidden_size\":4096.0}}", AVQ_ERROR_FORMAT, "text_config.hidden_size" },
  { "{\"text_config\":{\"hidden_size\":40960000000}}", AVQ_ERROR_FORMAT, "text_config.hidden_size" },
  { "{\"text_config\":{\"hidden_size\":true}}", AVQ_ERROR_FORMAT, "text_config.hidden_size" },
  { "{\"text_config\":{\"num_hidden_layers\":0}}", AVQ_ERROR_FORMAT, "text_config.num_hidden_layers" },
  { "{\"text_config\":{\"vocab_size\":[32000]}}", AVQ_ERROR_FORMAT, "text_config.vocab_size" },
  { "{\"vocab_size\":-1}", AVQ_ERROR_FORMAT, "vocab_size" },
  { "{\"text_config\":{\"num_attention_heads\":7}}", AVQ_ERROR_FORMAT,
    "text_config.num_attention_heads" },
  { "{\"text_config\":{\"num_key_value_heads\":5}}", AVQ_ERROR_FORMAT,
    "text_config.num_key_value_heads" },
  { "{\"text_config\":{\"num_key_value_heads\":64}}", AVQ_ERROR_FORMAT,
    "text_config.num_key_value_heads" },
  { "{\"text_config\":{\"head_dim\":33}}", AVQ_ERROR_FORMAT, "text_config.head_dim" },
  { "{\"text_config\":{\"rms_norm_eps\":0}}", AVQ_ERROR_FORMAT, "text_config.rms_norm_eps" },
  { "{\"text_config\":{\"rms_norm_eps\":-1e-6}}", AVQ_ERROR_FORMAT, "text_config.rms_norm_eps" },
  { "{\"text_config\":{\"rms_norm_eps\":\"1e-6\"}}", AVQ_ERROR_FORMAT, "text_config.rms_norm_eps" },
  { "{\"text_config\":{\"rms_norm_eps\":1e-300}}", AVQ_ERROR_FORMAT, "text_config.rms_norm_eps" },
  { "{\"text_config\":{\"rope_theta\":-10000}}", AVQ_ERROR_FORMAT, "text_config.rope_theta" },
  { "{\"text_config\":{\"rope_parameters\":{\"rope_theta\":\"x\"}}}", AVQ_ERROR_FORMAT,
    "text_config.rope_parameters.rope_theta" },
  { "{\"text_config\":{\"rope_parameters\":5}}", AVQ_ERROR_FORMAT, "text_config.rope_parameters" },
  { "{\"text_config\":{\"rope_parameters\":{\"rope_type\":\"yarn\",\"rope_theta\":1e4}}}",
    AVQ_ERROR_UNSUPPORTED, "text_config.rope_parameters.rope_type" },
  { "{\"text_config\":{\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}}",
    AVQ_ERROR_UNSUPPORTED, "text_config.rope_scaling" },
  { "{\"text_config\":{\"hidden_act\":\"mish\"}}", AVQ_ERROR_UNSUPPORTED, "text_config.hidden_act" },
  { "{\"text_config\":{\"hidden_act\":1}}", AVQ_ERROR_FORMAT, "text_config.hidden_act" },
  { "{\"text_config\":{\"bos_token_id\":99999}}", AVQ_ERROR_FORMAT, "text_config.bos_token_id" },
  { "{\"text_config\":{\"eos_token_id\":[]}}", AVQ_ERROR_FORMAT, "text_config.eos_token_id" },
  { "{\"text_config\":{\"eos_token_id\":-2}}", AVQ_ERROR_FORMAT, "text_config.eos_token_id" },
  { "{\"text_config\":{\"tie_word_embeddings\":1}}", AVQ_ERROR_FORMAT,
    "text_config.tie_word_embeddings" },
  { "{\"text_config\":{\"max_position_embeddings\":0}}", AVQ_ERROR_FORMAT,
    "text_config.max_position_embeddings" },
  { "{\"vision_config\":{\"hidden_size\":1000}}", AVQ_ERROR_FORMAT,
    "vision_config.num_attention_heads" },
  { "{\"vision_config\":{\"patch_size\":15}}", AVQ_ERROR_UNSUPPORTED, "vision_config.patch_size" },
  { "{\"vision_config\":{\"patch_size\":0}}", AVQ_ERROR_FORMAT, "vision_config.patch_size" },
  { "{\"vision_config\":{\"image_size\":-336}}", AVQ_ERROR_FORMAT, "vision_config.image_size" },
  { "{\"vision_config\":{\"num_channels\":4}}", AVQ_ERROR_FORMAT, "vision_config.num_channels" },
  { "{\"vision_config\":{\"layer_norm_eps\":\"1e-5\"}}", AVQ_ERROR_FORMAT,
    "vision_config.layer_norm_eps" },
  { "{\"vision_config\":{\"hidden_act\":\"tanh\"}}", AVQ_ERROR_UNSUPPORTED,
    "vision_config.hidden_act" },
  { "{\"vision_feature_layer\":[-2,-5]}", AVQ_ERROR_UNSUPPORTED, "vision_feature_layer" },
  { "{\"vision_feature_layer\":\"-2\"}", AVQ_ERROR_FORMAT, "vision_feature_layer" },
  { "{\"vision_feature_layer\":25}", AVQ_ERROR_FORMAT, "vision_feature_layer" },
  { "{\"vision_feature_layer\":-26}", AVQ_ERROR_FORMAT, "vision_feature_layer" },
  { "{\"vision_feature_select_strategy\":\"cls\"}", AVQ_ERROR_UNSUPPORTED,
    "vision_feature_select_strategy" },
  { "{\"vision_feature_select_strategy\":0}", AVQ_ERROR_FORMAT,
    "vision_feature_select_strategy" },
  { "{\"projector_hidden_act\":\"swiglu\"}", AVQ_ERROR_UNSUPPORTED, "projector_hidden_act" },
  { "{\"multimodal_projector_bias\":\"yes\"}", AVQ_ERROR_FORMAT, "multimodal_projector_bias" },
  { "{\"image_token_index\":1e3}", AVQ_ERROR_FORMAT, "image_token_index" },
  { "{\"image_token_index\":99999999}", AVQ_ERROR_FORMAT, "image_token_index" },
  { "{\"image_token_id\":-1}", AVQ_ERROR_FORMAT, "image_token_id" },
  { "{\"image_seq_length\":577}", AVQ_ERROR_MISMATCH, "image_seq_length" },
  { "{\"image_seq_length\":0}", AVQ_ERROR_FORMAT, "image_seq_length" },
  { "{\"pad_token_id\":\"0\"}", AVQ_ERROR_FORMAT, "pad_token_id" },
};

static void
test_malformed (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (bad_configs); i++) {
    const BadConfig *b = &bad_configs[i];
    AvqLlavaConfig c;
    g_autoptr (GError) error = NULL;
    if (avq_llava_config_parse (b->json, -1, "cfg.json", &c, &error))
      g_error ("config %s was accepted", b->json);
    g_assert_nonnull (error);
    g_test_message ("%s -> %s", b->json, error->message);
    g_assert_error (error, AVQ_ERROR, b->code);
    g_assert_true (g_str_has_prefix (error->message, "cfg.json: "));
    if (strstr (error->message, b->key) == NULL)
      g_error ("config %s: '%s' does not name '%s'", b->json, error->message, b->key);
  }

  /* explicit lengths: a prefix of valid JSON, and bytes after a NUL */
  AvqLlavaConfig c;
  g_autoptr (GError) error = NULL;
  g_assert_false (avq_llava_config_parse ("{\"a\":1}", 4, "cut.json", &c, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  g_clear_error (&error);
  g_assert_false (avq_llava_config_parse ("{}\0{", 4, "nul.json", &c, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  g_clear_error (&error);
  g_assert_true (avq_llava_config_parse ("{}xx", 2, "ok.json", &c, &error));
  g_assert_no_error (error);

  g_assert_false (avq_llava_config_load ("/nonexistent/config.json", &c, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "/nonexistent/config.json"));
}

/* ---- preprocessor_config.json ------------------------------------------ */

static void
test_preprocess_real (void)
{
  AvqPreprocessConfig pp;
  avq_preprocess_config_init (&pp, 224);
  g_autofree char *path = avq_test_data_path ("llava-1.5-7b-hf/preprocessor_config.json");
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_preprocess_config_load (path, &pp, &error));
  g_assert_no_error (error);
  g_assert_cmpint (pp.shortest_edge, ==, 336);
  g_assert_cmpint (pp.crop_height, ==, 336);
  g_assert_cmpint (pp.crop_width, ==, 336);
  g_assert_true (pp.do_resize && pp.do_center_crop && pp.do_rescale
                 && pp.do_normalize && pp.do_convert_rgb);
  g_assert_cmpfloat (pp.rescale_factor, ==, (float) 0.00392156862745098);
  g_assert_cmpfloat (pp.image_mean[0], ==, 0.48145466f);
  g_assert_cmpfloat (pp.image_mean[1], ==, 0.4578275f);
  g_assert_cmpfloat (pp.image_mean[2], ==, 0.40821073f);
  g_assert_cmpfloat (pp.image_std[0], ==, 0.26862954f);
  g_assert_cmpfloat (pp.image_std[1], ==, 0.26130258f);
  g_assert_cmpfloat (pp.image_std[2], ==, 0.27577711f);
}

static void
test_preprocess_init (void)
{
  AvqPreprocessConfig pp;
  avq_preprocess_config_init (&pp, 336);
  g_assert_cmpint (pp.shortest_edge, ==, 336);
  g_assert_cmpint (pp.crop_height, ==, 336);
  g_assert_cmpint (pp.crop_width, ==, 336);
  g_assert_true (pp.do_resize && pp.do_center_crop && pp.do_rescale
                 && pp.do_normalize && pp.do_convert_rgb);
  g_assert_cmpfloat (pp.rescale_factor, ==, 1.0f / 255.0f);
  g_assert_cmpfloat (pp.image_mean[0], ==, 0.48145466f);
  g_assert_cmpfloat (pp.image_std[2], ==, 0.27577711f);
}

static gboolean
load_pp_text (const char *text, AvqPreprocessConfig *pp, GError **error)
{
  g_autofree char *dir = g_dir_make_tmp ("avq-cfg-XXXXXX", NULL);
  g_assert_nonnull (dir);
  g_autofree char *path = g_build_filename (dir, "preprocessor_config.json", NULL);
  g_assert_true (g_file_set_contents (path, text, -1, NULL));
  gboolean ok = avq_preprocess_config_load (path, pp, error);
  g_unlink (path);
  g_rmdir (dir);
  return ok;
}

static void
test_preprocess_variants (void)
{
  AvqPreprocessConfig pp;
  g_autoptr (GError) error = NULL;
  avq_preprocess_config_init (&pp, 336);
  g_assert_true (load_pp_text ("{\"size\":224,\"crop_size\":200,\"do_center_crop\":false,"
                               "\"image_mean\":0.5,\"image_std\":[0.5,0.25,1],"
                               "\"rescale_factor\":1}", &pp, &error));
  g_assert_no_error (error);
  g_assert_cmpint (pp.shortest_edge, ==, 224);
  g_assert_cmpint (pp.crop_height, ==, 200);
  g_assert_cmpint (pp.crop_width, ==, 200);
  g_assert_false (pp.do_center_crop);
  g_assert_true (pp.do_resize);   /* untouched default */
  g_assert_cmpfloat (pp.image_mean[1], ==, 0.5f);
  g_assert_cmpfloat (pp.image_std[1], ==, 0.25f);
  g_assert_cmpfloat (pp.rescale_factor, ==, 1.0f);

  g_assert_true (load_pp_text ("{\"crop_size\":{\"height\":300,\"width\":320}}", &pp, &error));
  g_assert_cmpint (pp.crop_height, ==, 300);
  g_assert_cmpint (pp.crop_width, ==, 320);
  g_assert_cmpint (pp.shortest_edge, ==, 224);   /* kept from the previous load */

  static const struct {
    const char *json;
    int code;
    const char *key;
  } bad[] = {
    { "{\"size\":{\"height\":336,\"width\":336}}", AVQ_ERROR_UNSUPPORTED, "size" },
    { "{\"size\":{\"shortest_edge\":0}}", AVQ_ERROR_FORMAT, "size.shortest_edge" },
    { "{\"size\":\"336\"}", AVQ_ERROR_FORMAT, "size" },
    { "{\"crop_size\":{\"height\":336}}", AVQ_ERROR_MISSING, "crop_size.width" },
    { "{\"crop_size\":{\"height\":-1,\"width\":3}}", AVQ_ERROR_FORMAT, "crop_size.height" },
    { "{\"crop_size\":[336,336]}", AVQ_ERROR_FORMAT, "crop_size" },
    { "{\"resample\":2}", AVQ_ERROR_UNSUPPORTED, "resample" },
    { "{\"do_resize\":\"true\"}", AVQ_ERROR_FORMAT, "do_resize" },
    { "{\"do_normalize\":1}", AVQ_ERROR_FORMAT, "do_normalize" },
    { "{\"rescale_factor\":0}", AVQ_ERROR_FORMAT, "rescale_factor" },
    { "{\"image_mean\":[0.5,0.5]}", AVQ_ERROR_FORMAT, "image_mean" },
    { "{\"image_mean\":[0.5,\"a\",0.5]}", AVQ_ERROR_FORMAT, "image_mean" },
    { "{\"image_std\":[0.5,0,0.5]}", AVQ_ERROR_FORMAT, "image_std" },
    { "{\"image_std\":1e300}", AVQ_ERROR_FORMAT, "image_std" },
    { "[]", AVQ_ERROR_FORMAT, "object" },
    { "{", AVQ_ERROR_FORMAT, "JSON" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    AvqPreprocessConfig before;
    avq_preprocess_config_init (&before, 336);
    pp = before;
    if (load_pp_text (bad[i].json, &pp, &error))
      g_error ("preprocessor config %s was accepted", bad[i].json);
    g_test_message ("%s -> %s", bad[i].json, error->message);
    g_assert_error (error, AVQ_ERROR, bad[i].code);
    g_assert_nonnull (strstr (error->message, "preprocessor_config.json"));
    if (strstr (error->message, bad[i].key) == NULL)
      g_error ("%s: '%s' does not name '%s'", bad[i].json, error->message, bad[i].key);
    g_assert_cmpmem (&pp, sizeof pp, &before, sizeof before);
    g_clear_error (&error);
  }
  g_assert_false (avq_preprocess_config_load ("/nonexistent/pp.json", &pp, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_IO);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/config/real-sparse", test_real_sparse);
  g_test_add_func ("/config/tiny", test_tiny);
  g_test_add_func ("/config/defaults", test_defaults);
  g_test_add_func ("/config/variants", test_variants);
  g_test_add_func ("/config/malformed", test_malformed);
  g_test_add_func ("/config/preprocess/real", test_preprocess_real);
  g_test_add_func ("/config/preprocess/init", test_preprocess_init);
  g_test_add_func ("/config/preprocess/variants", test_preprocess_variants);
  return g_test_run ();
}
