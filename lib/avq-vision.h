/* The CLIP vision tower as LLaVA runs it (AVQ-SPEC section 4) and the LLaVA
 * projector, in fp32 on the CPU.
 *
 * The tower is split into the steps the AVQ split needs: the embedding
 * (hidden_states[0]), layer_norm1 of a layer alone, and the rest of a layer
 * given its layer_norm1 output, so that the cloud can continue a layer from
 * transmitted features. Weights are converted to fp32 once, at load. */
#pragma once
#include <glib.h>
#include "avq-model.h"

G_BEGIN_DECLS

/* Largest token count a tower may have (128 x 128 patches + CLS). */
#define AVQ_VISION_MAX_TOKENS 16385

typedef struct {
  float *ln1_w, *ln1_b;
  float *ln2_w, *ln2_b;
  float *qkv_w;          /* [3D, D]: q_proj, k_proj, v_proj rows stacked */
  float *qkv_b;          /* [3D] */
  float *out_w, *out_b;  /* [D, D], [D] */
  float *fc1_w, *fc1_b;  /* [I, D], [I] */
  float *fc2_w, *fc2_b;  /* [D, I], [D] */
} AvqVisionLayer;

typedef struct {
  int hidden;        /* D */
  int intermediate;  /* I */
  int heads;
  int channels;
  int image_size;
  int patch_size;
  int grid;          /* image_size / patch_size */
  int patches;       /* grid^2 */
  int tokens;        /* patches + 1 (CLS first) */
  int patch_dim;     /* channels * patch_size^2 */
  float eps;
  AvqActivation act;
  int layers_run;    /* layers LLaVA runs (hidden_states index it selects) */
  gboolean select_cls;

  float *patch_w;    /* [D, patch_dim] (conv weight flattened c, ky, kx) */
  float *class_emb;  /* [D] */
  float *pos_emb;    /* [tokens, D] */
  float *pre_w, *pre_b;
  int n_layers;      /* layers loaded: 0 .. n_layers-1 */
  AvqVisionLayer *layers;
} AvqVisionTower;

/* Loads the embeddings, pre_layrnorm and the first `n_layers` encoder layers
 * (-1: the layers LLaVA runs; at most num_hidden_layers). Every tensor is
 * checked for presence, shape and dtype; the GError names the tensor. */
AvqVisionTower *avq_vision_tower_new (const AvqModel *model, int n_layers,
                                      GError **error);
/* Loads further layers so that n_layers are present (no-op if already). */
gboolean avq_vision_tower_extend (AvqVisionTower *tower, const AvqModel *model,
                                  int n_layers, GError **error);
/* Checks that layers [0, n_layers) are present and well-formed without
 * converting them (to fail early on a model whose later layers are loaded
 * lazily). */
gboolean avq_vision_tower_check (const AvqModel *model, int n_layers,
                                 GError **error);
void avq_vision_tower_free (AvqVisionTower *tower);

/* Work buffers for one forward pass; reusable across frames. */
typedef struct _AvqVisionScratch AvqVisionScratch;
AvqVisionScratch *avq_vision_scratch_new (const AvqVisionTower *tower);
void avq_vision_scratch_free (AvqVisionScratch *scratch);

/* pixel_values [channels, image_size, image_size] -> hidden_states[0]
 * [tokens, D] (CLS first, + position embedding, pre_layrnorm). */
void avq_vision_embed (const AvqVisionTower *tower, const float *pixel_values,
                       float *hidden, AvqVisionScratch *scratch);

/* z = layer_norm1 of `layer` applied to x [tokens, D]; mean and sigma
 * (sqrt(var + eps)) per token when non-NULL. z may alias x. */
void avq_vision_layer_ln1 (const AvqVisionTower *tower, int layer,
                           const float *x, float *z, float *mean, float *sigma);

/* x <- x + Attn(z); x <- x + FC2(act(FC1(LN2(x)))). z is the layer_norm1
 * output (or the cloud's reconstruction of it); it is not modified and must
 * not alias x. */
void avq_vision_layer_from_ln1 (const AvqVisionTower *tower, int layer,
                                float *x, const float *z,
                                AvqVisionScratch *scratch);

/* Runs layers [first, last) on x in place. */
void avq_vision_run_layers (const AvqVisionTower *tower, int first, int last,
                            float *x, AvqVisionScratch *scratch);

/* The selected features from hidden_states[layers_run] [tokens, D]:
 * drops CLS unless the config keeps it. Writes feature_tokens * D floats. */
int avq_vision_feature_tokens (const AvqVisionTower *tower);
void avq_vision_select (const AvqVisionTower *tower, const float *hidden,
                        float *features);

/* multi_modal_projector: linear_2(act(linear_1(f))). */
typedef struct {
  int in_dim;     /* vision hidden */
  int out_dim;    /* text hidden */
  AvqActivation act;
  float *w1, *b1; /* [out, in], [out] or NULL */
  float *w2, *b2; /* [out, out], [out] or NULL */
} AvqProjector;

AvqProjector *avq_projector_new (const AvqModel *model, GError **error);
/* Checks the projector tensors without converting them. */
gboolean avq_projector_check (const AvqModel *model, GError **error);
void avq_projector_free (AvqProjector *projector);
/* features [n, in_dim] -> out [n, out_dim]; `tmp` holds n * out_dim floats. */
void avq_projector_run (const AvqProjector *projector, const float *features,
                        int n, float *out, float *tmp);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqVisionTower, avq_vision_tower_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqVisionScratch, avq_vision_scratch_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqProjector, avq_projector_free)

G_END_DECLS
