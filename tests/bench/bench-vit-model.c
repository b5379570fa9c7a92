#include "bench-vit-model.h"

#define D AVQ_BENCH_D
#define VM "vision_tower.vision_model."

float
avq_bench_rng_uniform (AvqBenchRng *r)
{
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  guint64 v = r->s * G_GUINT64_CONSTANT (2685821657736338717);
  return (float) ((v >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

void
avq_bench_put_random (AvqSafetensorsWriter *w, const char *name, int ndim,
                      const gint64 *shape, float center, float spread, AvqBenchRng *r)
{
  gsize n = 1;
  for (int i = 0; i < ndim; i++)
    n *= (gsize) shape[i];
  g_autofree guint16 *h = g_new (guint16, n);
  for (gsize i = 0; i < n; i++)
    h[i] = avq_float_to_half (center + spread * avq_bench_rng_uniform (r));
  avq_safetensors_writer_add (w, name, AVQ_DTYPE_F16, ndim, shape, h);
}

static void
put_layer (AvqSafetensorsWriter *w, int i, float fc2_spread, AvqBenchRng *r)
{
  const gint64 dd[2] = { D, D }, md[2] = { AVQ_BENCH_MLP, D }, dm[2] = { D, AVQ_BENCH_MLP };
  const gint64 vd[1] = { D }, vm[1] = { AVQ_BENCH_MLP };
  const float ws = 0.035f;   /* uniform spread for std ~0.02 */
  char name[160];
#define PUT(suffix, nd, shape, c, s)                                        \
  g_snprintf (name, sizeof name, VM "encoder.layers.%d." suffix, i);       \
  avq_bench_put_random (w, name, nd, shape, c, s, r)
  PUT ("layer_norm1.weight", 1, vd, 1.0f, 0.2f);
  PUT ("layer_norm1.bias", 1, vd, 0.0f, 0.1f);
  PUT ("self_attn.q_proj.weight", 2, dd, 0.0f, ws);
  PUT ("self_attn.q_proj.bias", 1, vd, 0.0f, 0.02f);
  PUT ("self_attn.k_proj.weight", 2, dd, 0.0f, ws);
  PUT ("self_attn.k_proj.bias", 1, vd, 0.0f, 0.02f);
  PUT ("self_attn.v_proj.weight", 2, dd, 0.0f, ws);
  PUT ("self_attn.v_proj.bias", 1, vd, 0.0f, 0.02f);
  PUT ("self_attn.out_proj.weight", 2, dd, 0.0f, ws);
  PUT ("self_attn.out_proj.bias", 1, vd, 0.0f, 0.02f);
  PUT ("layer_norm2.weight", 1, vd, 1.0f, 0.2f);
  PUT ("layer_norm2.bias", 1, vd, 0.0f, 0.1f);
  PUT ("mlp.fc1.weight", 2, md, 0.0f, ws);
  PUT ("mlp.fc1.bias", 1, vm, 0.0f, 0.02f);
  PUT ("mlp.fc2.weight", 2, dm, 0.0f, fc2_spread);
  PUT ("mlp.fc2.bias", 1, vd, 0.0f, 0.02f);
#undef PUT
}

void
avq_bench_write_vit_model (const char *dir, const AvqBenchVitOptions *o, AvqBenchRng *r)
{
  g_autoptr (GError) error = NULL;
  const char *config =
    "{\"model_type\": \"llava\", \"vision_feature_layer\": -2,\n"
    " \"vision_feature_select_strategy\": \"default\",\n"
    " \"projector_hidden_act\": \"gelu\",\n"
    " \"vision_config\": {\"hidden_size\": 1024, \"intermediate_size\": 4096,\n"
    "   \"num_hidden_layers\": 24, \"num_attention_heads\": 16,\n"
    "   \"image_size\": 336, \"patch_size\": 14, \"hidden_act\": \"quick_gelu\",\n"
    "   \"layer_norm_eps\": 1e-5, \"model_type\": \"clip_vision_model\"},\n"
    " \"text_config\": {\"hidden_size\": 4096, \"model_type\": \"llama\"}}\n";
  g_autofree char *cfg = g_build_filename (dir, "config.json", NULL);
  if (!g_file_set_contents (cfg, config, -1, &error))
    g_error ("%s", error->message);

  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  const int grid = AVQ_BENCH_IMAGE / AVQ_BENCH_PATCH;
  const gint64 conv[4] = { D, 3, AVQ_BENCH_PATCH, AVQ_BENCH_PATCH };
  const gint64 pos[2] = { grid * grid + 1, D }, vd[1] = { D };
  avq_bench_put_random (w, VM "embeddings.patch_embedding.weight", 4, conv, 0, 0.07f, r);
  avq_bench_put_random (w, VM "embeddings.class_embedding", 1, vd, 0, 0.5f, r);
  avq_bench_put_random (w, VM "embeddings.position_embedding.weight", 2, pos, 0, 0.1f, r);
  avq_bench_put_random (w, VM "pre_layrnorm.weight", 1, vd, 1.0f, 0.2f, r);
  avq_bench_put_random (w, VM "pre_layrnorm.bias", 1, vd, 0, 0.1f, r);
  for (int i = 0; i < o->layers; i++)
    put_layer (w, i, o->fc2_spread, r);
  if (o->next_ln1) {
    char name[160];
    g_snprintf (name, sizeof name, VM "encoder.layers.%d.layer_norm1.weight", o->layers);
    avq_bench_put_random (w, name, 1, vd, 1.0f, 0.2f, r);
    g_snprintf (name, sizeof name, VM "encoder.layers.%d.layer_norm1.bias", o->layers);
    avq_bench_put_random (w, name, 1, vd, 0, 0.1f, r);
  }
  if (o->projector) {
    const gint64 p1[2] = { AVQ_BENCH_TEXT, D }, p2[2] = { AVQ_BENCH_TEXT, AVQ_BENCH_TEXT };
    const gint64 pt[1] = { AVQ_BENCH_TEXT };
    avq_bench_put_random (w, "multi_modal_projector.linear_1.weight", 2, p1, 0, 0.05f, r);
    avq_bench_put_random (w, "multi_modal_projector.linear_1.bias", 1, pt, 0, 0.02f, r);
    avq_bench_put_random (w, "multi_modal_projector.linear_2.weight", 2, p2, 0, 0.025f, r);
    avq_bench_put_random (w, "multi_modal_projector.linear_2.bias", 1, pt, 0, 0.02f, r);
  }
  g_autofree char *path = g_build_filename (dir, "model.safetensors", NULL);
  if (!avq_safetensors_writer_save (w, path, &error))
    g_error ("%s", error->message);
}

char *
avq_bench_write_avq (const char *dir, int layer, AvqBenchRng *r)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  const gint64 kd[2] = { AVQ_BENCH_K, D }, dd[2] = { D, D }, vd[1] = { D }, one[1] = { 1 };
  avq_bench_put_random (w, "avq.codebook", 2, kd, 0, 1.7f, r);
  avq_bench_put_random (w, "avq.dlp_in.weight", 2, dd, 0, 0.035f, r);
  avq_bench_put_random (w, "avq.dlp_in.bias", 1, vd, 0, 0.02f, r);
  avq_bench_put_random (w, "avq.dlp_in.gamma", 1, one, 0.5f, 0, r);
  avq_bench_put_random (w, "avq.dlp_out.weight", 2, dd, 0, 0.035f, r);
  avq_bench_put_random (w, "avq.dlp_out.bias", 1, vd, 0, 0.02f, r);
  avq_bench_put_random (w, "avq.dlp_out.gamma", 1, one, 0.5f, 0, r);
  g_autofree char *l = g_strdup_printf ("%d", layer);
  avq_safetensors_writer_set_metadata (w, "avq.format", "1");
  avq_safetensors_writer_set_metadata (w, "avq.layer", l);
  avq_safetensors_writer_set_metadata (w, "avq.site", "ln1");
  avq_safetensors_writer_set_metadata (w, "avq.residual", layer == 0 ? "derive" : "side");
  avq_safetensors_writer_set_metadata (w, "avq.side_bits", layer == 0 ? "0" : "8");
  avq_safetensors_writer_set_metadata (w, "avq.index_bits", "12");
  avq_safetensors_writer_set_metadata (w, "avq.codebook_size", "4096");
  char *path = g_strdup_printf ("%s/avq-L%d.safetensors", dir, layer);
  if (!avq_safetensors_writer_save (w, path, &error))
    g_error ("%s", error->message);
  return path;
}
