/* LLaVA model configuration (config.json of llava-hf, sparse or full) and
 * image preprocessing configuration (preprocessor_config.json). Missing keys
 * take the transformers defaults (AVQ-SPEC section 2). */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  AVQ_ACT_QUICK_GELU,
  AVQ_ACT_GELU,        /* exact erf form */
  AVQ_ACT_GELU_TANH,
  AVQ_ACT_SILU,
  AVQ_ACT_RELU,
} AvqActivation;

typedef struct {
  int hidden_size;          /* 1024 */
  int intermediate_size;    /* 4096 */
  int num_layers;           /* 24 */
  int num_heads;            /* 16 */
  int num_channels;         /* 3 */
  int image_size;           /* 336 */
  int patch_size;           /* 14 */
  float layer_norm_eps;     /* 1e-5 */
  AvqActivation hidden_act; /* quick_gelu */
} AvqVisionConfig;

typedef struct {
  int vocab_size;           /* 32000 default; llava-1.5-7b-hf: 32064 */
  int hidden_size;          /* 4096 */
  int intermediate_size;    /* 11008 */
  int num_layers;           /* 32 */
  int num_heads;            /* 32 */
  int num_kv_heads;         /* = num_heads unless given */
  int head_dim;             /* hidden / heads unless given */
  int max_position_embeddings; /* 2048 default */
  float rms_norm_eps;       /* 1e-6 default */
  float rope_theta;         /* 10000 (top level or rope_parameters) */
  AvqActivation hidden_act; /* silu */
  int bos_token_id;         /* 1 */
  int eos_token_id;         /* 2 */
  gboolean tie_word_embeddings;
} AvqTextConfig;

typedef struct {
  AvqVisionConfig vision;
  AvqTextConfig text;
  int image_token_index;        /* 32000 */
  int image_seq_length;         /* 576 */
  int vision_feature_layer;     /* -2 (negative: from the end of hidden_states) */
  gboolean select_cls;          /* strategy "full" keeps CLS; "default" drops it */
  AvqActivation projector_act;  /* gelu */
  gboolean projector_bias;      /* true */
  int pad_token_id;
} AvqLlavaConfig;

/* Loads config.json. The GError names the file and the offending key. */
gboolean avq_llava_config_load (const char *path, AvqLlavaConfig *config,
                                GError **error);
/* Same from a JSON string (tests, fuzzing); `display_name` is used in errors. */
gboolean avq_llava_config_parse (const char *json, gssize length,
                                 const char *display_name,
                                 AvqLlavaConfig *config, GError **error);

/* Number of vision layers LLaVA runs (hidden_states index of the selected
 * feature layer): 23 for ViT-L with vision_feature_layer -2. */
int avq_llava_config_vision_layers_run (const AvqLlavaConfig *config);

typedef struct {
  int shortest_edge;       /* 336 */
  int crop_height, crop_width; /* 336 */
  gboolean do_resize, do_center_crop, do_rescale, do_normalize, do_convert_rgb;
  float rescale_factor;    /* 1/255 */
  float image_mean[3];
  float image_std[3];
} AvqPreprocessConfig;

/* CLIP defaults for a given image size. */
void avq_preprocess_config_init (AvqPreprocessConfig *pp, int image_size);
/* Loads preprocessor_config.json over the defaults. */
gboolean avq_preprocess_config_load (const char *path, AvqPreprocessConfig *pp,
                                     GError **error);

const char *avq_activation_name (AvqActivation act);

G_END_DECLS
