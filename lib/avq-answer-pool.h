/* One answerer shared by several streams (the cloud side of many cameras):
 * any thread may ask, and questions that arrive while a batch runs are
 * answered together in the next one (avq_answerer_ask_frames), which on a
 * GPU costs little more than a single answer. There is no scheduler thread:
 * a caller that finds the pool idle runs the batch for everyone waiting,
 * then hands over to the next waiter.
 *
 * Only questions with the same AvqAskOptions (generation settings and
 * system prompt) share a batch; others wait for the next. Greedy answers
 * are exactly what the answerer gives each question alone. */
#pragma once
#include <glib.h>
#include "avq-answerer.h"

G_BEGIN_DECLS

typedef struct _AvqAnswerPool AvqAnswerPool;

/* Loads the answerer (see avq_answerer_new); at most `max_batch` (>= 1)
 * questions per batch. */
AvqAnswerPool *avq_answer_pool_new (const AvqAnswererOptions *options,
                                    guint max_batch, GError **error);
AvqAnswerPool *avq_answer_pool_ref (AvqAnswerPool *pool);
void avq_answer_pool_unref (AvqAnswerPool *pool);

/* Thread-safe; blocks until this question is answered (or failed: the
 * GError is the batch's). */
AvqAnswer *avq_answer_pool_ask_frame (AvqAnswerPool *pool, const AvqFrame *frame,
                                      const char *question,
                                      const AvqAskOptions *options,
                                      GError **error);

/* While paused, questions queue and no batch starts (a batch already
 * running finishes); resume lets the queued ones go, in batches. For
 * draining a server, and for tests that need a batch of known size. */
void avq_answer_pool_pause (AvqAnswerPool *pool);
void avq_answer_pool_resume (AvqAnswerPool *pool);
/* Questions waiting for a batch. */
guint avq_answer_pool_pending (AvqAnswerPool *pool);

/* The model's geometry and AVQ properties, for checking streams: only the
 * engine's read-only getters may be called on it (the pool runs it on
 * other threads). */
const AvqEngine *avq_answer_pool_get_engine (AvqAnswerPool *pool);
/* "<model_dir>|<avq_path>|<device>": pools are shared by this key. */
const char *avq_answer_pool_key (AvqAnswerPool *pool);
/* Statistics: batches run, questions answered, the largest batch. */
void avq_answer_pool_stats (AvqAnswerPool *pool, guint64 *batches,
                            guint64 *questions, guint *largest_batch);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqAnswerPool, avq_answer_pool_unref)

G_END_DECLS
