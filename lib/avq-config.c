#include "avq-config.h"
#include "avq-error.h"

#include <math.h>
#include <string.h>
#include <json-glib/json-glib.h>

/* Upper bounds far above any real LLaVA but low enough that products of
 * sizes computed later (hidden x intermediate, vocab x hidden, tokens x
 * hidden) cannot overflow 64-bit sizes. */
#define MAX_WIDTH (1 << 17)
#define MAX_VOCAB (1 << 22)
#define MAX_LAYERS 1024
#define MAX_IMAGE (1 << 14)
#define MAX_POSITIONS (1 << 24)

/* Reads typed values out of one JSON object, naming `file: prefix.key` in
 * errors. Missing keys and JSON null take the default, as transformers does
 * for keys a config leaves out. */
typedef struct {
  const char *file;
  const char *prefix;   /* "" or "text_config." */
  JsonObject *obj;      /* NULL: the whole section is absent */
} Reader;

static JsonNode *
reader_get (const Reader *r, const char *key)
{
  if (r->obj == NULL)
    return NULL;
  JsonNode *n = json_object_get_member (r->obj, key);
  if (n != NULL && JSON_NODE_HOLDS_NULL (n))
    return NULL;
  return n;
}

static gboolean
bad_key (const Reader *r, const char *key, GError **error, AvqErrorCode code,
         const char *fmt, ...) G_GNUC_PRINTF (5, 6);

static gboolean
bad_key (const Reader *r, const char *key, GError **error, AvqErrorCode code,
         const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (error, AVQ_ERROR, code, "%s: %s%s: %s", r->file, r->prefix, key,
               msg);
  return FALSE;
}

static gboolean
node_is_int (JsonNode *n)
{
  return JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_INT64;
}

static gboolean
node_is_number (JsonNode *n)
{
  if (!JSON_NODE_HOLDS_VALUE (n))
    return FALSE;
  GType t = json_node_get_value_type (n);
  return t == G_TYPE_INT64 || t == G_TYPE_DOUBLE;
}

static double
node_get_number (JsonNode *n)
{
  return json_node_get_value_type (n) == G_TYPE_INT64
      ? (double) json_node_get_int (n) : json_node_get_double (n);
}

static gboolean
read_int (const Reader *r, const char *key, int def, int min, int max, int *out,
          GError **error)
{
  JsonNode *n = reader_get (r, key);
  if (n == NULL) {
    *out = def;
    return TRUE;
  }
  if (!node_is_int (n))
    return bad_key (r, key, error, AVQ_ERROR_FORMAT, "expected an integer");
  gint64 v = json_node_get_int (n);
  if (v < min || v > max)
    return bad_key (r, key, error, AVQ_ERROR_FORMAT,
                    "%" G_GINT64_FORMAT " is outside [%d, %d]", v, min, max);
  *out = (int) v;
  return TRUE;
}

/* Positive finite number; `max` bounds it from above. */
static gboolean
read_positive_float (const Reader *r, const char *key, float def, double max,
                     float *out, GError **error)
{
  JsonNode *n = reader_get (r, key);
  if (n == NULL) {
    *out = def;
    return TRUE;
  }
  if (!node_is_number (n))
    return bad_key (r, key, error, AVQ_ERROR_FORMAT, "expected a number");
  double v = node_get_number (n);
  /* A value that underflows float to 0 is as unusable as 0 itself. */
  if (!(v > 0 && v <= max) || (float) v <= 0.0f)
    return bad_key (r, key, error, AVQ_ERROR_FORMAT,
                    "%g is not a positive number up to %g", v, max);
  *out = (float) v;
  return TRUE;
}

static gboolean
read_bool (const Reader *r, const char *key, gboolean def, gboolean *out,
           GError **error)
{
  JsonNode *n = reader_get (r, key);
  if (n == NULL) {
    *out = def;
    return TRUE;
  }
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
    return bad_key (r, key, error, AVQ_ERROR_FORMAT, "expected true or false");
  *out = json_node_get_boolean (n);
  return TRUE;
}

/* NULL when absent; sets an error (and returns NULL) on a non-string. */
static const char *
read_string (const Reader *r, const char *key, gboolean *ok, GError **error)
{
  JsonNode *n = reader_get (r, key);
  *ok = TRUE;
  if (n == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING) {
    *ok = bad_key (r, key, error, AVQ_ERROR_FORMAT, "expected a string");
    return NULL;
  }
  return json_node_get_string (n);
}

static const struct {
  const char *name;
  AvqActivation act;
} act_names[] = {
  /* canonical names first: avq_activation_name returns the first match */
  { "quick_gelu", AVQ_ACT_QUICK_GELU },
  { "gelu", AVQ_ACT_GELU },
  { "gelu_pytorch_tanh", AVQ_ACT_GELU_TANH },
  { "silu", AVQ_ACT_SILU },
  { "relu", AVQ_ACT_RELU },
  /* transformers' ACT2FN aliases with the same maths */
  { "gelu_new", AVQ_ACT_GELU_TANH },
  { "gelu_fast", AVQ_ACT_GELU_TANH },
  { "swish", AVQ_ACT_SILU },
};

const char *
avq_activation_name (AvqActivation act)
{
  for (guint i = 0; i < G_N_ELEMENTS (act_names); i++)
    if (act_names[i].act == act)
      return act_names[i].name;
  return "invalid";
}

static gboolean
read_act (const Reader *r, const char *key, AvqActivation def,
          AvqActivation *out, GError **error)
{
  gboolean ok;
  const char *s = read_string (r, key, &ok, error);
  if (!ok)
    return FALSE;
  if (s == NULL) {
    *out = def;
    return TRUE;
  }
  for (guint i = 0; i < G_N_ELEMENTS (act_names); i++) {
    if (strcmp (act_names[i].name, s) == 0) {
      *out = act_names[i].act;
      return TRUE;
    }
  }
  return bad_key (r, key, error, AVQ_ERROR_UNSUPPORTED,
                  "unsupported activation \"%s\"", s);
}

/* A sub-object (vision_config, ...) or NULL when absent/null. */
static gboolean
read_object (const Reader *r, const char *key, JsonObject **out, GError **error)
{
  JsonNode *n = reader_get (r, key);
  *out = NULL;
  if (n == NULL)
    return TRUE;
  if (!JSON_NODE_HOLDS_OBJECT (n))
    return bad_key (r, key, error, AVQ_ERROR_FORMAT, "expected an object");
  *out = json_node_get_object (n);
  return TRUE;
}

/* json-glib keeps the last of duplicate keys silently; in a config that
 * would let two readers of the same file disagree. The object-member signal
 * fires after each member is stored: a member that leaves the object
 * smaller than the count seen so far was a duplicate. */
typedef struct {
  GHashTable *counts;
  char *dup;
} DupCheck;

static void
count_member (JsonParser *parser, JsonObject *object, char *name, gpointer data)
{
  (void) parser;
  DupCheck *dc = data;
  guint c = GPOINTER_TO_UINT (g_hash_table_lookup (dc->counts, object)) + 1;
  g_hash_table_insert (dc->counts, object, GUINT_TO_POINTER (c));
  if (c > json_object_get_size (object) && dc->dup == NULL)
    dc->dup = g_strdup (name);
}

/* Parses a JSON document whose root must be an object; returns a new
 * reference to the root node. */
static JsonNode *
parse_root_object (const char *json, gssize length, const char *file,
                   GError **error)
{
  gsize len = length < 0 ? strlen (json) : (gsize) length;
  if (memchr (json, '\0', len) != NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: contains a NUL byte", file);
    return NULL;
  }
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GHashTable) counts = g_hash_table_new (NULL, NULL);
  g_autoptr (GError) local = NULL;
  DupCheck dc = { counts, NULL };
  g_signal_connect (parser, "object-member", G_CALLBACK (count_member), &dc);
  gboolean ok = json_parser_load_from_data (parser, json, (gssize) len, &local);
  g_autofree char *dup = dc.dup;
  if (!ok) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: invalid JSON: %s",
                 file, local->message);
    return NULL;
  }
  if (dup != NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: duplicate key \"%s\"", file, dup);
    return NULL;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: empty JSON document",
                 file);
    return NULL;
  }
  if (!JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: top level is not a JSON object", file);
    return NULL;
  }
  return json_node_copy (root);
}

static gboolean
parse_vision (const Reader *r, AvqVisionConfig *v, GError **error)
{
  if (!read_int (r, "hidden_size", 1024, 1, MAX_WIDTH, &v->hidden_size, error)
      || !read_int (r, "intermediate_size", 4096, 1, MAX_WIDTH,
                    &v->intermediate_size, error)
      || !read_int (r, "num_hidden_layers", 24, 1, MAX_LAYERS, &v->num_layers, error)
      || !read_int (r, "num_attention_heads", 16, 1, MAX_WIDTH, &v->num_heads, error)
      || !read_int (r, "num_channels", 3, 1, 3, &v->num_channels, error)
      || !read_int (r, "image_size", 336, 1, MAX_IMAGE, &v->image_size, error)
      || !read_int (r, "patch_size", 14, 1, MAX_IMAGE, &v->patch_size, error)
      || !read_positive_float (r, "layer_norm_eps", 1e-5f, 1.0, &v->layer_norm_eps,
                               error)
      || !read_act (r, "hidden_act", AVQ_ACT_QUICK_GELU, &v->hidden_act, error))
    return FALSE;
  if (v->hidden_size % v->num_heads != 0)
    return bad_key (r, "num_attention_heads", error, AVQ_ERROR_FORMAT,
                    "%d does not divide hidden_size %d", v->num_heads,
                    v->hidden_size);
  /* The patch convolution has stride = kernel = patch_size; a remainder
   * would silently drop pixels, which no released CLIP does. */
  if (v->image_size % v->patch_size != 0)
    return bad_key (r, "patch_size", error, AVQ_ERROR_UNSUPPORTED,
                    "%d does not divide image_size %d", v->patch_size,
                    v->image_size);
  return TRUE;
}

static gboolean
read_rope (const Reader *r, AvqTextConfig *t, GError **error)
{
  JsonObject *params = NULL;
  if (!read_object (r, "rope_parameters", &params, error))
    return FALSE;
  /* transformers 5 moves rope_theta into rope_parameters; 4.x keeps it at
   * the top of text_config, with scaling variants in rope_scaling. */
  if (params != NULL) {
    g_autofree char *prefix = g_strconcat (r->prefix, "rope_parameters.", NULL);
    Reader pr = { r->file, prefix, params };
    gboolean ok;
    const char *type = read_string (&pr, "rope_type", &ok, error);
    if (!ok)
      return FALSE;
    if (type != NULL && strcmp (type, "default") != 0)
      return bad_key (&pr, "rope_type", error, AVQ_ERROR_UNSUPPORTED,
                      "rope type \"%s\" is not supported (only \"default\")", type);
    if (reader_get (&pr, "rope_theta") != NULL)
      return read_positive_float (&pr, "rope_theta", 10000.0f, 1e12,
                                  &t->rope_theta, error);
  }
  JsonNode *scaling = reader_get (r, "rope_scaling");
  if (scaling != NULL) {
    if (!JSON_NODE_HOLDS_OBJECT (scaling))
      return bad_key (r, "rope_scaling", error, AVQ_ERROR_FORMAT,
                      "expected an object or null");
    g_autofree char *prefix = g_strconcat (r->prefix, "rope_scaling.", NULL);
    Reader sr = { r->file, prefix, json_node_get_object (scaling) };
    gboolean ok;
    const char *type = read_string (&sr, "rope_type", &ok, error);
    if (ok && type == NULL)
      type = read_string (&sr, "type", &ok, error);
    if (!ok)
      return FALSE;
    if (type == NULL || strcmp (type, "default") != 0)
      return bad_key (r, "rope_scaling", error, AVQ_ERROR_UNSUPPORTED,
                      "rope scaling \"%s\" is not supported",
                      type ? type : "(untyped)");
  }
  return read_positive_float (r, "rope_theta", 10000.0f, 1e12, &t->rope_theta,
                              error);
}

/* eos_token_id may be a list in newer configs; generation stops on any of
 * them, but our config keeps one: the first. */
static gboolean
read_token_id (const Reader *r, const char *key, int def, int *out, GError **error)
{
  JsonNode *n = reader_get (r, key);
  if (n != NULL && JSON_NODE_HOLDS_ARRAY (n)) {
    JsonArray *a = json_node_get_array (n);
    if (json_array_get_length (a) == 0 || !node_is_int (json_array_get_element (a, 0)))
      return bad_key (r, key, error, AVQ_ERROR_FORMAT,
                      "expected an integer or a non-empty list of integers");
    gint64 v = json_array_get_int_element (a, 0);
    if (v < 0 || v >= MAX_VOCAB)
      return bad_key (r, key, error, AVQ_ERROR_FORMAT, "%" G_GINT64_FORMAT
                      " is not a token id", v);
    *out = (int) v;
    return TRUE;
  }
  return read_int (r, key, def, 0, MAX_VOCAB - 1, out, error);
}

static gboolean
parse_text (const Reader *r, const Reader *top, AvqTextConfig *t, GError **error)
{
  int top_vocab;
  gboolean top_tie;
  /* Old llava configs repeat vocab_size and tie_word_embeddings at the top;
   * text_config wins when both are there. */
  if (!read_int (top, "vocab_size", 32000, 1, MAX_VOCAB, &top_vocab, error)
      || !read_bool (top, "tie_word_embeddings", FALSE, &top_tie, error))
    return FALSE;
  if (!read_int (r, "vocab_size", top_vocab, 1, MAX_VOCAB, &t->vocab_size, error)
      || !read_int (r, "hidden_size", 4096, 1, MAX_WIDTH, &t->hidden_size, error)
      || !read_int (r, "intermediate_size", 11008, 1, MAX_WIDTH,
                    &t->intermediate_size, error)
      || !read_int (r, "num_hidden_layers", 32, 1, MAX_LAYERS, &t->num_layers, error)
      || !read_int (r, "num_attention_heads", 32, 1, MAX_WIDTH, &t->num_heads, error)
      || !read_int (r, "num_key_value_heads", t->num_heads, 1, MAX_WIDTH,
                    &t->num_kv_heads, error)
      || !read_int (r, "max_position_embeddings", 2048, 1, MAX_POSITIONS,
                    &t->max_position_embeddings, error)
      || !read_positive_float (r, "rms_norm_eps", 1e-6f, 1.0, &t->rms_norm_eps, error)
      || !read_rope (r, t, error)
      || !read_act (r, "hidden_act", AVQ_ACT_SILU, &t->hidden_act, error)
      || !read_token_id (r, "bos_token_id", 1, &t->bos_token_id, error)
      || !read_token_id (r, "eos_token_id", 2, &t->eos_token_id, error)
      || !read_bool (r, "tie_word_embeddings", top_tie, &t->tie_word_embeddings,
                     error))
    return FALSE;

  gboolean head_dim_given = reader_get (r, "head_dim") != NULL;
  if (!head_dim_given && t->hidden_size % t->num_heads != 0)
    return bad_key (r, "num_attention_heads", error, AVQ_ERROR_FORMAT,
                    "%d does not divide hidden_size %d", t->num_heads,
                    t->hidden_size);
  if (!read_int (r, "head_dim", t->hidden_size / t->num_heads, 1, MAX_WIDTH,
                 &t->head_dim, error))
    return FALSE;
  if ((gint64) t->head_dim * t->num_heads > MAX_WIDTH)
    return bad_key (r, "head_dim", error, AVQ_ERROR_FORMAT,
                    "%d x %d heads is too wide", t->head_dim, t->num_heads);
  /* rotate-half RoPE pairs element i with i + head_dim/2 */
  if (t->head_dim % 2 != 0)
    return bad_key (r, "head_dim", error, AVQ_ERROR_FORMAT,
                    "%d is odd; rotary embeddings need an even head size",
                    t->head_dim);
  if (t->num_kv_heads > t->num_heads || t->num_heads % t->num_kv_heads != 0)
    return bad_key (r, "num_key_value_heads", error, AVQ_ERROR_FORMAT,
                    "%d must be a divisor of num_attention_heads %d", t->num_kv_heads,
                    t->num_heads);
  if (t->bos_token_id >= t->vocab_size)
    return bad_key (r, "bos_token_id", error, AVQ_ERROR_FORMAT,
                    "%d is outside the vocabulary of %d", t->bos_token_id,
                    t->vocab_size);
  if (t->eos_token_id >= t->vocab_size)
    return bad_key (r, "eos_token_id", error, AVQ_ERROR_FORMAT,
                    "%d is outside the vocabulary of %d", t->eos_token_id,
                    t->vocab_size);
  return TRUE;
}

static gboolean
parse_config (JsonObject *root, const char *file, AvqLlavaConfig *c, GError **error)
{
  Reader top = { file, "", root };
  JsonObject *vobj, *tobj;
  if (!read_object (&top, "vision_config", &vobj, error)
      || !read_object (&top, "text_config", &tobj, error))
    return FALSE;
  Reader vr = { file, "vision_config.", vobj };
  Reader tr = { file, "text_config.", tobj };
  if (!parse_vision (&vr, &c->vision, error) || !parse_text (&tr, &top, &c->text, error))
    return FALSE;

  /* hidden_states has num_layers + 1 entries (embeddings first). */
  JsonNode *fl = reader_get (&top, "vision_feature_layer");
  if (fl != NULL && JSON_NODE_HOLDS_ARRAY (fl))
    return bad_key (&top, "vision_feature_layer", error, AVQ_ERROR_UNSUPPORTED,
                    "a list of feature layers (concatenated features) is not "
                    "supported; give one integer");
  int nl = c->vision.num_layers;
  if (!read_int (&top, "vision_feature_layer", -2, -(nl + 1), nl,
                 &c->vision_feature_layer, error))
    return FALSE;

  gboolean ok;
  const char *strategy = read_string (&top, "vision_feature_select_strategy", &ok,
                                      error);
  if (!ok)
    return FALSE;
  if (strategy == NULL || strcmp (strategy, "default") == 0)
    c->select_cls = FALSE;
  else if (strcmp (strategy, "full") == 0)
    c->select_cls = TRUE;
  else
    return bad_key (&top, "vision_feature_select_strategy", error,
                    AVQ_ERROR_UNSUPPORTED, "\"%s\" is neither \"default\" nor "
                    "\"full\"", strategy);

  if (!read_act (&top, "projector_hidden_act", AVQ_ACT_GELU, &c->projector_act, error)
      || !read_bool (&top, "multimodal_projector_bias", TRUE, &c->projector_bias,
                     error))
    return FALSE;

  /* image_token_index is the 4.x name, image_token_id the newer one. The
   * id may lie past the text vocabulary (the default 32000 against Llama's
   * 32000): image positions are filled from the vision tower, never looked
   * up in the embedding table. */
  const char *tok_key = reader_get (&top, "image_token_index") == NULL
      && reader_get (&top, "image_token_id") != NULL
      ? "image_token_id" : "image_token_index";
  if (!read_int (&top, tok_key, 32000, 0, MAX_VOCAB - 1, &c->image_token_index,
                 error))
    return FALSE;

  int side = c->vision.image_size / c->vision.patch_size;
  int tokens = side * side + (c->select_cls ? 1 : 0);
  if (!read_int (&top, "image_seq_length", tokens, 1, MAX_POSITIONS,
                 &c->image_seq_length, error))
    return FALSE;
  if (c->image_seq_length != tokens)
    return bad_key (&top, "image_seq_length", error, AVQ_ERROR_MISMATCH,
                    "%d, but the vision tower yields %d image tokens",
                    c->image_seq_length, tokens);

  /* LlavaConfig's own pad_token_id wins over text_config's */
  const Reader *pr = reader_get (&top, "pad_token_id") != NULL ? &top : &tr;
  if (!read_int (pr, "pad_token_id", -1, -1, MAX_VOCAB - 1, &c->pad_token_id, error))
    return FALSE;
  return TRUE;
}

gboolean
avq_llava_config_parse (const char *json, gssize length, const char *display_name,
                        AvqLlavaConfig *config, GError **error)
{
  g_return_val_if_fail (json != NULL || length == 0, FALSE);
  g_return_val_if_fail (config != NULL, FALSE);
  const char *file = display_name ? display_name : "config.json";
  JsonNode *root = parse_root_object (json ? json : "", length, file, error);
  if (root == NULL)
    return FALSE;
  AvqLlavaConfig c;
  memset (&c, 0, sizeof c);
  gboolean ok = parse_config (json_node_get_object (root), file, &c, error);
  json_node_unref (root);
  if (ok)
    *config = c;
  return ok;
}

gboolean
avq_llava_config_load (const char *path, AvqLlavaConfig *config, GError **error)
{
  g_return_val_if_fail (path != NULL && config != NULL, FALSE);
  g_autofree char *text = NULL;
  gsize len = 0;
  g_autoptr (GError) local = NULL;
  if (!g_file_get_contents (path, &text, &len, &local)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: cannot read: %s", path,
                 local->message);
    return FALSE;
  }
  return avq_llava_config_parse (text, (gssize) len, path, config, error);
}

int
avq_llava_config_vision_layers_run (const AvqLlavaConfig *config)
{
  g_return_val_if_fail (config != NULL, 0);
  int l = config->vision_feature_layer;
  return l >= 0 ? l : config->vision.num_layers + 1 + l;
}

/* ---- preprocessor_config.json ------------------------------------------- */

void
avq_preprocess_config_init (AvqPreprocessConfig *pp, int image_size)
{
  g_return_if_fail (pp != NULL);
  static const float mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
  static const float std[3] = { 0.26862954f, 0.26130258f, 0.27577711f };
  memset (pp, 0, sizeof *pp);
  pp->shortest_edge = image_size;
  pp->crop_height = image_size;
  pp->crop_width = image_size;
  pp->do_resize = TRUE;
  pp->do_center_crop = TRUE;
  pp->do_rescale = TRUE;
  pp->do_normalize = TRUE;
  pp->do_convert_rgb = TRUE;
  pp->rescale_factor = 1.0f / 255.0f;
  memcpy (pp->image_mean, mean, sizeof mean);
  memcpy (pp->image_std, std, sizeof std);
}

/* image_mean / image_std: three numbers, or one used for all channels. */
static gboolean
read_triple (const Reader *r, const char *key, gboolean nonzero, float out[3],
             GError **error)
{
  JsonNode *n = reader_get (r, key);
  if (n == NULL)
    return TRUE;
  double v[3];
  if (node_is_number (n)) {
    v[0] = v[1] = v[2] = node_get_number (n);
  } else if (JSON_NODE_HOLDS_ARRAY (n)
             && json_array_get_length (json_node_get_array (n)) == 3) {
    JsonArray *a = json_node_get_array (n);
    for (guint i = 0; i < 3; i++) {
      JsonNode *e = json_array_get_element (a, i);
      if (!node_is_number (e))
        return bad_key (r, key, error, AVQ_ERROR_FORMAT,
                        "element %u is not a number", i);
      v[i] = node_get_number (e);
    }
  } else {
    return bad_key (r, key, error, AVQ_ERROR_FORMAT,
                    "expected a number or a list of 3 numbers");
  }
  for (int i = 0; i < 3; i++) {
    if (!isfinite (v[i]) || fabs (v[i]) > 1e6 || (nonzero && !(fabs (v[i]) > 1e-12)))
      return bad_key (r, key, error, AVQ_ERROR_FORMAT, "value %g is out of range",
                      v[i]);
    out[i] = (float) v[i];
  }
  return TRUE;
}

static gboolean
parse_preprocess (JsonObject *root, const char *file, AvqPreprocessConfig *pp,
                  GError **error)
{
  Reader r = { file, "", root };

  JsonNode *size = reader_get (&r, "size");
  if (size != NULL) {
    if (node_is_int (size)) {
      if (!read_int (&r, "size", 0, 1, MAX_IMAGE, &pp->shortest_edge, error))
        return FALSE;
    } else if (JSON_NODE_HOLDS_OBJECT (size)) {
      Reader sr = { file, "size.", json_node_get_object (size) };
      if (reader_get (&sr, "shortest_edge") == NULL)
        return bad_key (&r, "size", error, AVQ_ERROR_UNSUPPORTED,
                        "only {\"shortest_edge\": N} resizing is supported");
      if (!read_int (&sr, "shortest_edge", 0, 1, MAX_IMAGE, &pp->shortest_edge,
                     error))
        return FALSE;
    } else {
      return bad_key (&r, "size", error, AVQ_ERROR_FORMAT,
                      "expected an integer or an object");
    }
  }

  JsonNode *crop = reader_get (&r, "crop_size");
  if (crop != NULL) {
    if (node_is_int (crop)) {
      if (!read_int (&r, "crop_size", 0, 1, MAX_IMAGE, &pp->crop_height, error))
        return FALSE;
      pp->crop_width = pp->crop_height;
    } else if (JSON_NODE_HOLDS_OBJECT (crop)) {
      Reader cr = { file, "crop_size.", json_node_get_object (crop) };
      if (reader_get (&cr, "height") == NULL)
        return bad_key (&cr, "height", error, AVQ_ERROR_MISSING, "missing");
      if (reader_get (&cr, "width") == NULL)
        return bad_key (&cr, "width", error, AVQ_ERROR_MISSING, "missing");
      if (!read_int (&cr, "height", 0, 1, MAX_IMAGE, &pp->crop_height, error)
          || !read_int (&cr, "width", 0, 1, MAX_IMAGE, &pp->crop_width, error))
        return FALSE;
    } else {
      return bad_key (&r, "crop_size", error, AVQ_ERROR_FORMAT,
                      "expected an integer or an object");
    }
  }

  /* Only bicubic (PIL code 3) is what CLIP was trained with and what the
   * preprocessing implements; another filter would change every pixel. */
  int resample;
  if (!read_int (&r, "resample", 3, 0, 5, &resample, error))
    return FALSE;
  if (resample != 3)
    return bad_key (&r, "resample", error, AVQ_ERROR_UNSUPPORTED,
                    "filter %d is not supported (only 3, bicubic)", resample);

  if (!read_bool (&r, "do_resize", pp->do_resize, &pp->do_resize, error)
      || !read_bool (&r, "do_center_crop", pp->do_center_crop, &pp->do_center_crop,
                     error)
      || !read_bool (&r, "do_rescale", pp->do_rescale, &pp->do_rescale, error)
      || !read_bool (&r, "do_normalize", pp->do_normalize, &pp->do_normalize, error)
      || !read_bool (&r, "do_convert_rgb", pp->do_convert_rgb, &pp->do_convert_rgb,
                     error)
      || !read_positive_float (&r, "rescale_factor", pp->rescale_factor, 1.0,
                               &pp->rescale_factor, error)
      || !read_triple (&r, "image_mean", FALSE, pp->image_mean, error)
      || !read_triple (&r, "image_std", TRUE, pp->image_std, error))
    return FALSE;
  return TRUE;
}

gboolean
avq_preprocess_config_load (const char *path, AvqPreprocessConfig *pp,
                            GError **error)
{
  g_return_val_if_fail (path != NULL && pp != NULL, FALSE);
  g_autofree char *text = NULL;
  gsize len = 0;
  g_autoptr (GError) local = NULL;
  if (!g_file_get_contents (path, &text, &len, &local)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: cannot read: %s", path,
                 local->message);
    return FALSE;
  }
  JsonNode *root = parse_root_object (text, (gssize) len, path, error);
  if (root == NULL)
    return FALSE;
  AvqPreprocessConfig tmp = *pp;
  gboolean ok = parse_preprocess (json_node_get_object (root), path, &tmp, error);
  json_node_unref (root);
  if (ok)
    *pp = tmp;
  return ok;
}
