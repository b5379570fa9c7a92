#include "avq-vision.h"
#include <string.h>
#include "avq-error.h"
#include "avq-ops.h"

#define VM "vision_tower.vision_model."

struct _AvqVisionScratch {
  float *ln1;      /* [T, D]: layer_norm1 output */
  float *z;        /* [T, D]: layer_norm2 output */
  float *qkv;      /* [T, 3D] */
  float *attn;     /* [T, D] */
  float *mlp;      /* [T, I] */
  float *scores;   /* attention scratch */
  float *patches;  /* [patches, patch_dim] */
};

/* Finds a tensor and checks its shape; with `out` non-NULL also stores an
 * fp32 copy there (g_free it). */
static gboolean
load_tensor (const AvqModel *model, int ndim, const gint64 *shape, float **out,
             GError **error, const char *name)
{
  const AvqTensor *t = avq_model_require (model, ndim, shape, error, "%s", name);
  if (t == NULL)
    return FALSE;
  if (out != NULL)
    *out = avq_tensor_dup_f32 (t);
  return TRUE;
}

static gboolean
geometry_from_config (AvqVisionTower *tw, const AvqLlavaConfig *cfg,
                      GError **error)
{
  const AvqVisionConfig *v = &cfg->vision;
  tw->hidden = v->hidden_size;
  tw->intermediate = v->intermediate_size;
  tw->heads = v->num_heads;
  tw->channels = v->num_channels;
  tw->image_size = v->image_size;
  tw->patch_size = v->patch_size;
  tw->eps = v->layer_norm_eps;
  tw->act = v->hidden_act;
  tw->select_cls = cfg->select_cls;
  tw->layers_run = avq_llava_config_vision_layers_run (cfg);

  /* The config is as untrusted as the weights: bound everything before it
   * sizes a buffer. Tensor shape checks then tie the weights to it. */
  if (tw->hidden <= 0 || tw->hidden > 65536 || tw->intermediate <= 0 ||
      tw->intermediate > 1 << 20 || tw->heads <= 0 ||
      tw->hidden % tw->heads != 0 || tw->channels <= 0 || tw->channels > 16 ||
      tw->patch_size <= 0 || tw->image_size < tw->patch_size ||
      tw->image_size > 8192) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "vision_config: inconsistent sizes (hidden %d, intermediate %d, "
                 "heads %d, channels %d, image %d, patch %d)",
                 tw->hidden, tw->intermediate, tw->heads, tw->channels,
                 tw->image_size, tw->patch_size);
    return FALSE;
  }
  if (!(tw->eps > 0.0f) || tw->eps > 1.0f) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "vision_config: layer_norm_eps %g out of range", tw->eps);
    return FALSE;
  }
  tw->grid = tw->image_size / tw->patch_size;
  tw->patches = tw->grid * tw->grid;
  tw->tokens = tw->patches + 1;
  tw->patch_dim = tw->channels * tw->patch_size * tw->patch_size;
  /* Attention scratch grows with tokens^2: 16385 tokens (a 1792 px image at
   * patch 14) is already 1 GiB, far past any LLaVA tower. */
  if (tw->tokens > AVQ_VISION_MAX_TOKENS) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "vision_config: image %d / patch %d gives %d tokens, more than "
                 "the %d this engine supports", tw->image_size, tw->patch_size,
                 tw->tokens, AVQ_VISION_MAX_TOKENS);
    return FALSE;
  }
  if (tw->layers_run < 0 || tw->layers_run > v->num_layers) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "config: vision_feature_layer %d selects hidden state %d of a "
                 "%d-layer tower", cfg->vision_feature_layer, tw->layers_run,
                 v->num_layers);
    return FALSE;
  }
  return TRUE;
}

static void
layer_clear (AvqVisionLayer *l)
{
  g_free (l->ln1_w);
  g_free (l->ln1_b);
  g_free (l->ln2_w);
  g_free (l->ln2_b);
  g_free (l->qkv_w);
  g_free (l->qkv_b);
  g_free (l->out_w);
  g_free (l->out_b);
  g_free (l->fc1_w);
  g_free (l->fc1_b);
  g_free (l->fc2_w);
  g_free (l->fc2_b);
  memset (l, 0, sizeof *l);
}

static gboolean
layer_load (const AvqModel *model, const AvqVisionTower *tw, int i,
            gboolean materialize, AvqVisionLayer *l, GError **error)
{
  const gint64 D = tw->hidden, I = tw->intermediate;
  const gint64 vec_d[1] = { D }, vec_i[1] = { I };
  const gint64 dd[2] = { D, D }, id[2] = { I, D }, di[2] = { D, I };
  float *q_w = NULL, *k_w = NULL, *v_w = NULL, *q_b = NULL, *k_b = NULL,
        *v_b = NULL;
  gboolean ok = FALSE;
  char name[160];

#define LOAD(field, nd, shape, suffix)                                     \
  do {                                                                     \
    g_snprintf (name, sizeof name, VM "encoder.layers.%d." suffix, i);     \
    if (!load_tensor (model, nd, shape, materialize ? &field : NULL,      \
                      error, name))                                        \
      goto out;                                                            \
  } while (0)

  memset (l, 0, sizeof *l);
  LOAD (l->ln1_w, 1, vec_d, "layer_norm1.weight");
  LOAD (l->ln1_b, 1, vec_d, "layer_norm1.bias");
  LOAD (q_w, 2, dd, "self_attn.q_proj.weight");
  LOAD (q_b, 1, vec_d, "self_attn.q_proj.bias");
  LOAD (k_w, 2, dd, "self_attn.k_proj.weight");
  LOAD (k_b, 1, vec_d, "self_attn.k_proj.bias");
  LOAD (v_w, 2, dd, "self_attn.v_proj.weight");
  LOAD (v_b, 1, vec_d, "self_attn.v_proj.bias");
  LOAD (l->out_w, 2, dd, "self_attn.out_proj.weight");
  LOAD (l->out_b, 1, vec_d, "self_attn.out_proj.bias");
  LOAD (l->ln2_w, 1, vec_d, "layer_norm2.weight");
  LOAD (l->ln2_b, 1, vec_d, "layer_norm2.bias");
  LOAD (l->fc1_w, 2, id, "mlp.fc1.weight");
  LOAD (l->fc1_b, 1, vec_i, "mlp.fc1.bias");
  LOAD (l->fc2_w, 2, di, "mlp.fc2.weight");
  LOAD (l->fc2_b, 1, vec_d, "mlp.fc2.bias");
#undef LOAD

  if (materialize) {
    /* One [T, 3D] GEMM for q, k and v keeps the BLAS kernels busy on a
     * single large problem instead of three medium ones. */
    gsize dd_n = (gsize) D * D;
    l->qkv_w = g_new (float, 3 * dd_n);
    memcpy (l->qkv_w, q_w, dd_n * sizeof (float));
    memcpy (l->qkv_w + dd_n, k_w, dd_n * sizeof (float));
    memcpy (l->qkv_w + 2 * dd_n, v_w, dd_n * sizeof (float));
    l->qkv_b = g_new (float, 3 * D);
    memcpy (l->qkv_b, q_b, D * sizeof (float));
    memcpy (l->qkv_b + D, k_b, D * sizeof (float));
    memcpy (l->qkv_b + 2 * D, v_b, D * sizeof (float));
  }
  ok = TRUE;

out:
  g_free (q_w);
  g_free (k_w);
  g_free (v_w);
  g_free (q_b);
  g_free (k_b);
  g_free (v_b);
  if (!ok)
    layer_clear (l);
  return ok;
}

static gboolean
check_layer_count (const AvqModel *model, const AvqVisionTower *tw,
                   int *n_layers, GError **error)
{
  if (*n_layers < 0)
    *n_layers = tw->layers_run;
  if (*n_layers > model->config.vision.num_layers) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "%s: %d vision layers requested, the model has %d",
                 model->dir ? model->dir : "model", *n_layers,
                 model->config.vision.num_layers);
    return FALSE;
  }
  return TRUE;
}

gboolean
avq_vision_tower_check (const AvqModel *model, int n_layers, GError **error)
{
  AvqVisionTower tw = { 0 };
  if (!geometry_from_config (&tw, &model->config, error) ||
      !check_layer_count (model, &tw, &n_layers, error))
    return FALSE;
  for (int i = 0; i < n_layers; i++) {
    AvqVisionLayer l;
    if (!layer_load (model, &tw, i, FALSE, &l, error))
      return FALSE;
  }
  return TRUE;
}

AvqVisionTower *
avq_vision_tower_new (const AvqModel *model, int n_layers, GError **error)
{
  g_return_val_if_fail (model != NULL, NULL);
  g_autoptr (AvqVisionTower) tw = g_new0 (AvqVisionTower, 1);
  if (!geometry_from_config (tw, &model->config, error) ||
      !check_layer_count (model, tw, &n_layers, error))
    return NULL;

  const gint64 D = tw->hidden;
  const gint64 vec_d[1] = { D };
  const gint64 conv[4] = { D, tw->channels, tw->patch_size, tw->patch_size };
  const gint64 pos[2] = { tw->tokens, D };
  if (!load_tensor (model, 4, conv, &tw->patch_w, error,
                    VM "embeddings.patch_embedding.weight") ||
      !load_tensor (model, 1, vec_d, &tw->class_emb, error,
                    VM "embeddings.class_embedding") ||
      !load_tensor (model, 2, pos, &tw->pos_emb, error,
                    VM "embeddings.position_embedding.weight") ||
      !load_tensor (model, 1, vec_d, &tw->pre_w, error,
                    VM "pre_layrnorm.weight") ||
      !load_tensor (model, 1, vec_d, &tw->pre_b, error,
                    VM "pre_layrnorm.bias"))
    return NULL;
  if (!avq_vision_tower_extend (tw, model, n_layers, error))
    return NULL;
  return g_steal_pointer (&tw);
}

gboolean
avq_vision_tower_extend (AvqVisionTower *tw, const AvqModel *model,
                         int n_layers, GError **error)
{
  if (!check_layer_count (model, tw, &n_layers, error))
    return FALSE;
  if (n_layers <= tw->n_layers)
    return TRUE;
  AvqVisionLayer *layers = g_new0 (AvqVisionLayer, n_layers);
  for (int i = tw->n_layers; i < n_layers; i++) {
    if (!layer_load (model, tw, i, TRUE, &layers[i], error)) {
      for (int j = tw->n_layers; j < i; j++)
        layer_clear (&layers[j]);
      g_free (layers);
      return FALSE;
    }
  }
  if (tw->n_layers > 0)
    memcpy (layers, tw->layers, sizeof (AvqVisionLayer) * tw->n_layers);
  g_free (tw->layers);
  tw->layers = layers;
  tw->n_layers = n_layers;
  return TRUE;
}

void
avq_vision_tower_free (AvqVisionTower *tw)
{
  if (tw == NULL)
    return;
  for (int i = 0; i < tw->n_layers; i++)
    layer_clear (&tw->layers[i]);
  g_free (tw->layers);
  g_free (tw->patch_w);
  g_free (tw->class_emb);
  g_free (tw->pos_emb);
  g_free (tw->pre_w);
  g_free (tw->pre_b);
  g_free (tw);
}

AvqVisionScratch *
avq_vision_scratch_new (const AvqVisionTower *tw)
{
  AvqVisionScratch *s = g_new0 (AvqVisionScratch, 1);
  gsize T = tw->tokens, D = tw->hidden, I = tw->intermediate;
  s->ln1 = g_new (float, T * D);
  s->z = g_new (float, T * D);
  s->qkv = g_new (float, T * 3 * D);
  s->attn = g_new (float, T * D);
  s->mlp = g_new (float, T * I);
  s->scores = g_new (float, avq_attention_scratch_floats (tw->tokens));
  s->patches = g_new (float, (gsize) tw->patches * tw->patch_dim);
  return s;
}

void
avq_vision_scratch_free (AvqVisionScratch *s)
{
  if (s == NULL)
    return;
  g_free (s->ln1);
  g_free (s->z);
  g_free (s->qkv);
  g_free (s->attn);
  g_free (s->mlp);
  g_free (s->scores);
  g_free (s->patches);
  g_free (s);
}

void
avq_vision_embed (const AvqVisionTower *tw, const float *px, float *hidden,
                  AvqVisionScratch *s)
{
  const int P = tw->patch_size, S = tw->image_size, G = tw->grid;
  const int D = tw->hidden;

  /* im2col: each patch row is laid out (channel, ky, kx), the order of the
   * flattened conv weight, so the stride-P convolution is one GEMM. */
  for (int gy = 0; gy < G; gy++)
    for (int gx = 0; gx < G; gx++) {
      float *row = s->patches + (gsize) (gy * G + gx) * tw->patch_dim;
      for (int c = 0; c < tw->channels; c++)
        for (int ky = 0; ky < P; ky++) {
          const float *src = px + ((gsize) c * S + (gsize) gy * P + ky) * S
                             + (gsize) gx * P;
          memcpy (row, src, sizeof (float) * P);
          row += P;
        }
    }

  /* Position embeddings first, so the patch GEMM accumulates onto them. */
  memcpy (hidden, tw->pos_emb, sizeof (float) * (gsize) tw->tokens * D);
  for (int c = 0; c < D; c++)
    hidden[c] += tw->class_emb[c];
  avq_linear_add (s->patches, tw->patches, tw->patch_dim, tw->patch_w, NULL, D,
                  hidden + D);
  avq_layernorm (hidden, tw->tokens, D, tw->pre_w, tw->pre_b, tw->eps, hidden,
                 NULL, NULL);
}

void
avq_vision_layer_ln1 (const AvqVisionTower *tw, int layer, const float *x,
                      float *z, float *mean, float *sigma)
{
  g_return_if_fail (layer >= 0 && layer < tw->n_layers);
  const AvqVisionLayer *l = &tw->layers[layer];
  avq_layernorm (x, tw->tokens, tw->hidden, l->ln1_w, l->ln1_b, tw->eps, z,
                 mean, sigma);
}

void
avq_vision_layer_from_ln1 (const AvqVisionTower *tw, int layer, float *x,
                           const float *z, AvqVisionScratch *s)
{
  g_return_if_fail (layer >= 0 && layer < tw->n_layers);
  const AvqVisionLayer *l = &tw->layers[layer];
  const int T = tw->tokens, D = tw->hidden, I = tw->intermediate;

  avq_linear (z, T, D, l->qkv_w, l->qkv_b, 3 * D, s->qkv);
  avq_attention (s->qkv, 3 * D, s->qkv + D, 3 * D, s->qkv + 2 * D, 3 * D, T, D,
                 tw->heads, s->attn, s->scores);
  avq_linear_add (s->attn, T, D, l->out_w, l->out_b, D, x);

  avq_layernorm (x, T, D, l->ln2_w, l->ln2_b, tw->eps, s->z, NULL, NULL);
  avq_linear (s->z, T, D, l->fc1_w, l->fc1_b, I, s->mlp);
  avq_activate (tw->act, s->mlp, (gsize) T * I);
  avq_linear_add (s->mlp, T, I, l->fc2_w, l->fc2_b, D, x);
}

void
avq_vision_run_layers (const AvqVisionTower *tw, int first, int last, float *x,
                       AvqVisionScratch *s)
{
  g_return_if_fail (first >= 0 && last <= tw->n_layers);
  for (int i = first; i < last; i++) {
    avq_vision_layer_ln1 (tw, i, x, s->ln1, NULL, NULL);
    avq_vision_layer_from_ln1 (tw, i, x, s->ln1, s);
  }
}

int
avq_vision_feature_tokens (const AvqVisionTower *tw)
{
  return tw->select_cls ? tw->tokens : tw->patches;
}

void
avq_vision_select (const AvqVisionTower *tw, const float *hidden,
                   float *features)
{
  const float *src = tw->select_cls ? hidden : hidden + tw->hidden;
  memcpy (features, src,
          sizeof (float) * (gsize) avq_vision_feature_tokens (tw) * tw->hidden);
}

static AvqProjector *
projector_load (const AvqModel *model, gboolean materialize, GError **error)
{
  g_autoptr (AvqProjector) p = g_new0 (AvqProjector, 1);
  p->in_dim = model->config.vision.hidden_size;
  p->out_dim = model->config.text.hidden_size;
  p->act = model->config.projector_act;
  if (p->in_dim <= 0 || p->in_dim > 65536 || p->out_dim <= 0 ||
      p->out_dim > 1 << 20) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "config: projector sizes %d -> %d out of range", p->in_dim,
                 p->out_dim);
    return NULL;
  }
  const gint64 s1[2] = { p->out_dim, p->in_dim }, s2[2] = { p->out_dim, p->out_dim };
  const gint64 sb[1] = { p->out_dim };
  if (!load_tensor (model, 2, s1, materialize ? &p->w1 : NULL, error,
                    "multi_modal_projector.linear_1.weight") ||
      !load_tensor (model, 2, s2, materialize ? &p->w2 : NULL, error,
                    "multi_modal_projector.linear_2.weight"))
    return NULL;
  if (model->config.projector_bias &&
      (!load_tensor (model, 1, sb, materialize ? &p->b1 : NULL, error,
                     "multi_modal_projector.linear_1.bias") ||
       !load_tensor (model, 1, sb, materialize ? &p->b2 : NULL, error,
                     "multi_modal_projector.linear_2.bias")))
    return NULL;
  return g_steal_pointer (&p);
}

AvqProjector *
avq_projector_new (const AvqModel *model, GError **error)
{
  return projector_load (model, TRUE, error);
}

gboolean
avq_projector_check (const AvqModel *model, GError **error)
{
  g_autoptr (AvqProjector) p = projector_load (model, FALSE, error);
  return p != NULL;
}

void
avq_projector_free (AvqProjector *p)
{
  if (p == NULL)
    return;
  g_free (p->w1);
  g_free (p->b1);
  g_free (p->w2);
  g_free (p->b2);
  g_free (p);
}

void
avq_projector_run (const AvqProjector *p, const float *features, int n,
                   float *out, float *tmp)
{
  avq_linear (features, n, p->in_dim, p->w1, p->b1, p->out_dim, tmp);
  avq_activate (p->act, tmp, (gsize) n * p->out_dim);
  avq_linear (tmp, n, p->out_dim, p->w2, p->b2, p->out_dim, out);
}
