/* A shared, batching front of one AvqAnswerer (avq-answer-pool.h). */
#include "avq-answer-pool.h"
#include "avq-error.h"

typedef struct {
  const AvqFrame *frame;
  const char *question;
  const AvqAskOptions *options;
  AvqAnswer *answer;
  GError *error;
  gboolean done;
} Request;

struct _AvqAnswerPool {
  gint ref;
  GMutex lock;
  GCond cond;
  AvqAnswerer *answerer;
  guint max_batch;
  char *key;
  GQueue pending;          /* Request *, oldest first; under lock */
  gboolean running;        /* a caller is running a batch; under lock */
  gboolean paused;
  guint64 batches, questions;
  guint largest;
};

AvqAnswerPool *
avq_answer_pool_new (const AvqAnswererOptions *options, guint max_batch,
                     GError **error)
{
  g_return_val_if_fail (options != NULL, NULL);
  if (max_batch < 1) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "answer pool: max batch must be at least 1");
    return NULL;
  }
  AvqAnswerer *answerer = avq_answerer_new (options, error);
  if (answerer == NULL)
    return NULL;
  AvqAnswerPool *pool = g_new0 (AvqAnswerPool, 1);
  pool->ref = 1;
  g_mutex_init (&pool->lock);
  g_cond_init (&pool->cond);
  g_queue_init (&pool->pending);
  pool->answerer = answerer;
  pool->max_batch = max_batch;
  pool->key = g_strdup_printf ("%s|%s|%s", options->model_dir,
                               options->avq_path ? options->avq_path : "",
                               avq_device_to_string (options->device));
  return pool;
}

AvqAnswerPool *
avq_answer_pool_ref (AvqAnswerPool *pool)
{
  g_atomic_int_inc (&pool->ref);
  return pool;
}

void
avq_answer_pool_unref (AvqAnswerPool *pool)
{
  if (pool == NULL || !g_atomic_int_dec_and_test (&pool->ref))
    return;
  /* No caller can be inside ask_frame: each holds a reference. */
  avq_answerer_free (pool->answerer);
  g_mutex_clear (&pool->lock);
  g_cond_clear (&pool->cond);
  g_free (pool->key);
  g_free (pool);
}

const AvqEngine *
avq_answer_pool_get_engine (AvqAnswerPool *pool)
{
  return avq_answerer_get_engine (pool->answerer);
}

const char *
avq_answer_pool_key (AvqAnswerPool *pool)
{
  return pool->key;
}

void
avq_answer_pool_stats (AvqAnswerPool *pool, guint64 *batches, guint64 *questions,
                       guint *largest_batch)
{
  g_mutex_lock (&pool->lock);
  if (batches)
    *batches = pool->batches;
  if (questions)
    *questions = pool->questions;
  if (largest_batch)
    *largest_batch = pool->largest;
  g_mutex_unlock (&pool->lock);
}

void
avq_answer_pool_pause (AvqAnswerPool *pool)
{
  g_mutex_lock (&pool->lock);
  pool->paused = TRUE;
  g_mutex_unlock (&pool->lock);
}

void
avq_answer_pool_resume (AvqAnswerPool *pool)
{
  g_mutex_lock (&pool->lock);
  pool->paused = FALSE;
  g_cond_broadcast (&pool->cond);
  g_mutex_unlock (&pool->lock);
}

guint
avq_answer_pool_pending (AvqAnswerPool *pool)
{
  g_mutex_lock (&pool->lock);
  guint n = pool->pending.length;
  g_mutex_unlock (&pool->lock);
  return n;
}

static gboolean
same_options (const AvqAskOptions *a, const AvqAskOptions *b)
{
  return a->max_new_tokens == b->max_new_tokens && a->temperature == b->temperature &&
         a->top_p == b->top_p && a->top_k == b->top_k && a->seed == b->seed &&
         g_strcmp0 (a->system_prompt, b->system_prompt) == 0;
}

/* Under lock: removes from `pending` the oldest request and up to
 * max_batch - 1 later ones that can share its batch. */
static GPtrArray *
take_batch (AvqAnswerPool *pool)
{
  GPtrArray *batch = g_ptr_array_new ();
  Request *first = g_queue_pop_head (&pool->pending);
  g_ptr_array_add (batch, first);
  for (GList *l = pool->pending.head; l != NULL && batch->len < pool->max_batch;) {
    GList *next = l->next;
    Request *r = l->data;
    if (same_options (r->options, first->options)) {
      g_ptr_array_add (batch, r);
      g_queue_delete_link (&pool->pending, l);
    }
    l = next;
  }
  return batch;
}

/* Runs `batch` without the lock: the answerer is used by one caller at a
 * time (pool->running). */
static void
run_batch (AvqAnswerPool *pool, GPtrArray *batch)
{
  const guint n = batch->len;
  g_autofree const AvqFrame **frames = g_new (const AvqFrame *, n);
  g_autofree const char **questions = g_new (const char *, n);
  g_autofree AvqAnswer **answers = g_new0 (AvqAnswer *, n);
  for (guint i = 0; i < n; i++) {
    Request *r = g_ptr_array_index (batch, i);
    frames[i] = r->frame;
    questions[i] = r->question;
  }
  const AvqAskOptions *options = ((Request *) g_ptr_array_index (batch, 0))->options;
  g_autoptr (GError) error = NULL;
  gboolean ok;
  if (n == 1) {
    /* The single-question path keeps its own (non-batched) decoder state. */
    answers[0] = avq_answerer_ask_frame (pool->answerer, frames[0], questions[0],
                                         options, &error);
    ok = answers[0] != NULL;
  } else {
    ok = avq_answerer_ask_frames (pool->answerer, (const AvqFrame *const *) frames,
                                  (const char *const *) questions, n, options,
                                  answers, &error);
  }
  for (guint i = 0; i < n; i++) {
    Request *r = g_ptr_array_index (batch, i);
    if (ok)
      r->answer = answers[i];
    else
      r->error = g_error_copy (error);
  }
}

AvqAnswer *
avq_answer_pool_ask_frame (AvqAnswerPool *pool, const AvqFrame *frame,
                           const char *question, const AvqAskOptions *options,
                           GError **error)
{
  AvqAskOptions defaults;
  if (options == NULL) {
    avq_ask_options_init (&defaults);
    options = &defaults;
  }
  Request request = { .frame = frame, .question = question, .options = options };
  g_mutex_lock (&pool->lock);
  g_queue_push_tail (&pool->pending, &request);
  while (!request.done) {
    if (pool->running || pool->paused) {
      g_cond_wait (&pool->cond, &pool->lock);
      continue;
    }
    /* Idle: this caller runs the next batch, which holds the oldest
     * question (perhaps not its own: it loops until its own is done). */
    pool->running = TRUE;
    g_autoptr (GPtrArray) batch = take_batch (pool);
    g_mutex_unlock (&pool->lock);
    run_batch (pool, batch);
    g_mutex_lock (&pool->lock);
    for (guint i = 0; i < batch->len; i++)
      ((Request *) g_ptr_array_index (batch, i))->done = TRUE;
    pool->batches++;
    pool->questions += batch->len;
    pool->largest = MAX (pool->largest, batch->len);
    pool->running = FALSE;
    g_cond_broadcast (&pool->cond);
  }
  g_mutex_unlock (&pool->lock);
  if (request.error != NULL) {
    g_propagate_error (error, request.error);
    return NULL;
  }
  return request.answer;
}
