/* A LLaVA model directory as downloaded from the hub: config, optional
 * preprocessor config, and the (possibly sharded) weights. Tensor names are
 * given in the classic hub layout (`vision_tower.vision_model.…`,
 * `multi_modal_projector.…`, `language_model.model.…`,
 * `language_model.lm_head.weight`); files saved by transformers 5 with the
 * `model.vision_tower.…` layout are found under the same names. */
#pragma once
#include <glib.h>
#include "avq-config.h"
#include "avq-safetensors.h"

G_BEGIN_DECLS

typedef struct {
  char *dir;
  AvqLlavaConfig config;
  AvqPreprocessConfig preprocess;
  AvqSafetensors *weights;
} AvqModel;

AvqModel *avq_model_open (const char *dir, GError **error);
void avq_model_free (AvqModel *model);

/* Looks a tensor up under its classic hub name or its transformers-5 alias;
 * NULL if neither exists. */
const AvqTensor *avq_model_find (const AvqModel *model, const char *name);

/* Finds the tensor and checks its shape (-1 = any) and float dtype; the
 * GError names the tensor and the file. printf-style name. */
const AvqTensor *avq_model_require (const AvqModel *model, int ndim,
                                    const gint64 *shape, GError **error,
                                    const char *name_format, ...) G_GNUC_PRINTF (5, 6);

/* The transformers-5 alias of a classic hub name (newly allocated), or NULL
 * when the name has none. */
char *avq_model_alias_name (const char *name);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqModel, avq_model_free)

G_END_DECLS
