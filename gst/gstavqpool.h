/* Answer pools shared by avqanswer elements of one process: the elements
 * that name the same pool share one loaded model (AvqAnswerPool), so that
 * a cloud receiving many cameras holds the weights once and answers their
 * questions in batches. */
#pragma once
#include <glib.h>
#include "avq-answer-pool.h"

G_BEGIN_DECLS

/* The pool called `name`, loaded with `options` and `max_batch` by its
 * first user; later users must ask for the same model, AVQ file and
 * device (an error names both otherwise). name NULL or empty: a private
 * pool of batch 1 nobody else can find. Release each acquired pool once. */
AvqAnswerPool *gst_avq_pool_acquire (const char *name,
                                     const AvqAnswererOptions *options,
                                     guint max_batch, GError **error);
void gst_avq_pool_release (const char *name, AvqAnswerPool *pool);

G_END_DECLS
