#include "avq-model.h"
#include "avq-error.h"

#include <string.h>

/* Classic hub prefix -> transformers-5 prefix (AVQ-SPEC section 2). The
 * lm_head entry is a whole name, not a prefix. */
static const struct {
  const char *classic;
  const char *v5;
  gboolean whole;
} aliases[] = {
  { "vision_tower.vision_model.", "model.vision_tower.", FALSE },
  { "multi_modal_projector.", "model.multi_modal_projector.", FALSE },
  { "language_model.model.", "model.language_model.", FALSE },
  { "language_model.lm_head.weight", "lm_head.weight", TRUE },
};

static char *
rename_prefix (const char *name, gboolean to_v5)
{
  for (guint i = 0; i < G_N_ELEMENTS (aliases); i++) {
    const char *from = to_v5 ? aliases[i].classic : aliases[i].v5;
    const char *to = to_v5 ? aliases[i].v5 : aliases[i].classic;
    if (aliases[i].whole) {
      if (strcmp (name, from) == 0)
        return g_strdup (to);
    } else if (g_str_has_prefix (name, from)) {
      return g_strconcat (to, name + strlen (from), NULL);
    }
  }
  return NULL;
}

char *
avq_model_alias_name (const char *name)
{
  g_return_val_if_fail (name != NULL, NULL);
  return rename_prefix (name, TRUE);
}

static const AvqTensor *
find_either (const AvqSafetensors *st, const char *name)
{
  const AvqTensor *t = avq_safetensors_find (st, name);
  if (t != NULL)
    return t;
  /* Callers use classic names, but accept a v5 name the same way so code
   * that learned names from a v5 file also works on hub files. */
  g_autofree char *alias = rename_prefix (name, TRUE);
  if (alias == NULL)
    alias = rename_prefix (name, FALSE);
  return alias ? avq_safetensors_find (st, alias) : NULL;
}

const AvqTensor *
avq_model_find (const AvqModel *model, const char *name)
{
  g_return_val_if_fail (model != NULL && name != NULL, NULL);
  const AvqTensor *t = find_either (model->weights, name);
  if (t != NULL)
    return t;
  /* With tied embeddings transformers saves no lm_head; the output
   * projection is the embedding matrix. */
  if (model->config.text.tie_word_embeddings
      && (strcmp (name, "language_model.lm_head.weight") == 0
          || strcmp (name, "lm_head.weight") == 0))
    return find_either (model->weights, "language_model.model.embed_tokens.weight");
  return NULL;
}

const AvqTensor *
avq_model_require (const AvqModel *model, int ndim, const gint64 *shape,
                   GError **error, const char *name_format, ...)
{
  g_return_val_if_fail (model != NULL && name_format != NULL, NULL);
  va_list ap;
  va_start (ap, name_format);
  g_autofree char *name = g_strdup_vprintf (name_format, ap);
  va_end (ap);

  const AvqTensor *t = avq_model_find (model, name);
  if (t == NULL) {
    g_autofree char *alias = avq_model_alias_name (name);
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
                 "%s: tensor %s%s%s%s not found", avq_safetensors_path (model->weights),
                 name, alias ? " (or " : "", alias ? alias : "", alias ? ")" : "");
    return NULL;
  }
  if (!avq_tensor_check_float (t, ndim, shape, error))
    return NULL;
  return t;
}

AvqModel *
avq_model_open (const char *dir, GError **error)
{
  g_return_val_if_fail (dir != NULL, NULL);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: not a model directory", dir);
    return NULL;
  }
  g_autoptr (AvqModel) model = g_new0 (AvqModel, 1);
  model->dir = g_strdup (dir);

  g_autofree char *config_path = g_build_filename (dir, "config.json", NULL);
  if (!g_file_test (config_path, G_FILE_TEST_EXISTS)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING, "%s: missing", config_path);
    return NULL;
  }
  if (!avq_llava_config_load (config_path, &model->config, error))
    return NULL;

  avq_preprocess_config_init (&model->preprocess, model->config.vision.image_size);
  g_autofree char *pp_path = g_build_filename (dir, "preprocessor_config.json", NULL);
  if (g_file_test (pp_path, G_FILE_TEST_EXISTS)
      && !avq_preprocess_config_load (pp_path, &model->preprocess, error))
    return NULL;

  model->weights = avq_safetensors_open (dir, error);
  if (model->weights == NULL)
    return NULL;
  return g_steal_pointer (&model);
}

void
avq_model_free (AvqModel *model)
{
  if (model == NULL)
    return;
  avq_safetensors_free (model->weights);
  g_free (model->dir);
  g_free (model);
}
