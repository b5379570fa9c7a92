/* avqanswer: the cloud end of an AVQ stream. Frames pass through unchanged;
 * questions about them (the `question` property every `interval` frames, or
 * one-off questions through the `ask` action signal) are answered by the
 * LLaVA model on a worker thread, and each answer is
 *  - attached as a GstAvqAnswerMeta to the first frame pushed after it is
 *    ready (with wait-for-answer=true: to the asked frame itself),
 *  - posted on the bus as an element message named "avq-answer",
 *  - emitted as the "answer" signal.
 *
 * The worker holds one waiting question: a newer one replaces it (the
 * latest frame wins, counted in `stats`), so a live pipeline never waits
 * for the model. At EOS the answer in flight is finished and delivered
 * before EOS goes on. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include "gstavqanswer.h"
#include "gstavqstream.h"
#include "gstavqelements.h"
#include "gstavqanswermeta.h"
#include "avq-answerer.h"
#include "avq-error.h"
#include "gstavqpool.h"
#include "gstavqdevice.h"
#include <string.h>

GST_DEBUG_CATEGORY_STATIC (gst_avq_answer_debug);
#define GST_CAT_DEFAULT gst_avq_answer_debug

enum {
  PROP_0,
  PROP_MODEL,
  PROP_AVQ,
  PROP_QUESTION,
  PROP_INTERVAL,
  PROP_MAX_NEW_TOKENS,
  PROP_SYSTEM_PROMPT,
  PROP_WAIT_FOR_ANSWER,
  PROP_THREADS,
  PROP_STATS,
  PROP_DEVICE,
  PROP_POOL,
  PROP_MAX_BATCH,
  PROP_TEMPERATURE,
  PROP_TOP_P,
  PROP_TOP_K,
  PROP_SEED,
};

enum {
  SIGNAL_ASK,
  SIGNAL_ANSWER,
  N_SIGNALS,
};
static guint signals[N_SIGNALS];

#define DEFAULT_INTERVAL 1
#define DEFAULT_MAX_NEW_TOKENS 64
#define DEFAULT_WAIT_FOR_ANSWER FALSE
#define DEFAULT_THREADS 0
#define DEFAULT_MAX_BATCH 8
#define DEFAULT_TEMPERATURE 0.0f
#define DEFAULT_TOP_P 1.0f
#define DEFAULT_TOP_K 0
#define DEFAULT_SEED 0

typedef struct {
  GstBuffer *frame;     /* the asked frame (its PTS names it) */
  char *question;
} Job;

typedef struct {
  char *question;
  char *answer;
  GstClockTime pts;
  guint n_tokens;
  double vision_ms, prefill_ms, decode_ms;
} Answer;

struct _GstAvqAnswer {
  GstElement parent;
  GstPad *sinkpad, *srcpad;

  /* properties, under the object lock */
  char *model_dir, *avq_path, *question, *system_prompt;
  guint interval, max_new_tokens;
  gfloat temperature, top_p;
  guint top_k, seed;
  gboolean wait_for_answer;
  gint threads;
  AvqDevice device;
  char *pool_name;
  guint max_batch;
  GQueue oneoff_questions;          /* char*, from the ask signal */
  guint64 frames_in, questions, answers, replaced, failed;
  GstClockTime answer_time;         /* the last answer's model time */

  /* the model: a pool of its own, or one shared with the other avqanswer
   * elements naming the same `pool` (thread-safe, batching) */
  AvqAnswerPool *pool;
  char *acquired_pool_name;         /* the name `pool` was acquired under */
  GstAvqStreamParams stream;

  /* worker mailbox, under `lock` */
  GMutex lock;
  GCond cond;
  GThread *worker;
  Job *pending;
  gboolean busy, stopping;
  GQueue ready;                     /* Answer*, waiting for a frame to ride on */
};

#define gst_avq_answer_parent_class parent_class
G_DEFINE_TYPE (GstAvqAnswer, gst_avq_answer, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (avqanswer, "avqanswer", GST_RANK_NONE,
    GST_TYPE_AVQ_ANSWER, avq_element_init (plugin));

#define AVQ_CAPS "application/x-avq, version = (int) 1, " \
  "tokens = (int) [ 1, 65535 ], index-bits = (int) [ 1, 16 ], " \
  "side-bits = (int) [ 0, 16 ]"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (AVQ_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (AVQ_CAPS));

static void
job_free (Job *job)
{
  if (job == NULL)
    return;
  gst_buffer_unref (job->frame);
  g_free (job->question);
  g_free (job);
}

static void
answer_free (Answer *a)
{
  g_free (a->question);
  g_free (a->answer);
  g_free (a);
}

static Answer *
answer_copy (const Answer *a)
{
  Answer *c = g_new (Answer, 1);
  *c = *a;
  c->question = g_strdup (a->question);
  c->answer = g_strdup (a->answer);
  return c;
}

static void
count (GstAvqAnswer *self, guint64 *counter)
{
  GST_OBJECT_LOCK (self);
  (*counter)++;
  GST_OBJECT_UNLOCK (self);
}

/* Runs the model on one job; NULL after posting an element warning. */
static Answer *
answer_job (GstAvqAnswer *self, Job *job)
{
  g_autoptr (GError) error = NULL;
  AvqAskOptions options;
  avq_ask_options_init (&options);
  g_autofree char *system_prompt = NULL;
  GST_OBJECT_LOCK (self);
  options.max_new_tokens = self->max_new_tokens;
  options.temperature = self->temperature;
  options.top_p = self->top_p;
  options.top_k = (int) self->top_k;
  options.seed = self->seed;
  system_prompt = g_strdup (self->system_prompt);
  GST_OBJECT_UNLOCK (self);
  options.system_prompt = system_prompt;

  GstMapInfo map;
  if (!gst_buffer_map (job->frame, &map, GST_MAP_READ))
    return NULL;
  g_autoptr (AvqFrame) frame = avq_frame_parse (map.data, map.size, &error);
  gst_buffer_unmap (job->frame, &map);

  g_autoptr (AvqAnswer) result = NULL;
  if (frame != NULL) {
    result = avq_answer_pool_ask_frame (self->pool, frame, job->question, &options, &error);
  }
  if (result == NULL) {
    count (self, &self->failed);
    GST_ELEMENT_WARNING (self, STREAM, DECODE, ("Could not answer a question about a frame."),
                         ("%s", error->message));
    return NULL;
  }
  Answer *a = g_new0 (Answer, 1);
  a->question = g_strdup (job->question);
  a->answer = g_steal_pointer (&result->text);
  a->pts = GST_BUFFER_PTS (job->frame);
  a->n_tokens = result->ids->len;
  a->vision_ms = result->vision_ms;
  a->prefill_ms = result->prefill_ms;
  a->decode_ms = result->decode_ms;
  count (self, &self->answers);
  GstClockTime took = (GstClockTime) ((a->vision_ms + a->prefill_ms + a->decode_ms) * GST_MSECOND);
  GST_OBJECT_LOCK (self);
  GstClockTime old = self->answer_time;
  gboolean announce_latency = self->wait_for_answer &&
      (took > old + old / 4 || took + old / 4 < old);
  self->answer_time = took;
  GST_OBJECT_UNLOCK (self);
  if (announce_latency)
    gst_element_post_message (GST_ELEMENT (self), gst_message_new_latency (GST_OBJECT (self)));
  GST_INFO_OBJECT (self, "answer for %" GST_TIME_FORMAT ": %s", GST_TIME_ARGS (a->pts), a->answer);
  return a;
}

static void
announce (GstAvqAnswer *self, const Answer *a)
{
  GstStructure *s = gst_structure_new ("avq-answer",
      "question", G_TYPE_STRING, a->question,
      "answer", G_TYPE_STRING, a->answer,
      "pts", G_TYPE_UINT64, (guint64) a->pts,
      "tokens", G_TYPE_UINT, a->n_tokens,
      "vision-ms", G_TYPE_DOUBLE, a->vision_ms,
      "prefill-ms", G_TYPE_DOUBLE, a->prefill_ms,
      "decode-ms", G_TYPE_DOUBLE, a->decode_ms, NULL);
  gst_element_post_message (GST_ELEMENT (self), gst_message_new_element (GST_OBJECT (self), s));
  g_signal_emit (self, signals[SIGNAL_ANSWER], 0, a->question, a->answer, (guint64) a->pts);
}

static void
attach (GstBuffer *buffer, const Answer *a)
{
  gst_buffer_add_avq_answer_meta (buffer, a->question, a->answer, a->pts, a->n_tokens,
                                  a->vision_ms, a->prefill_ms, a->decode_ms);
}

static gpointer
worker_main (gpointer data)
{
  GstAvqAnswer *self = data;
  g_mutex_lock (&self->lock);
  for (;;) {
    while (self->pending == NULL && !self->stopping)
      g_cond_wait (&self->cond, &self->lock);
    if (self->stopping)
      break;
    Job *job = self->pending;
    self->pending = NULL;
    self->busy = TRUE;
    g_mutex_unlock (&self->lock);

    Answer *a = answer_job (self, job);
    job_free (job);
    if (a != NULL) {
      /* Queued for the next frame before it is announced: a frame pushed
       * in reaction to the signal or the message carries the answer. */
      g_mutex_lock (&self->lock);
      g_queue_push_tail (&self->ready, answer_copy (a));
      g_mutex_unlock (&self->lock);
      announce (self, a);
      answer_free (a);
    }

    g_mutex_lock (&self->lock);
    self->busy = FALSE;
    g_cond_broadcast (&self->cond);
  }
  g_mutex_unlock (&self->lock);
  return NULL;
}

/* Waits until no question is waiting or being answered. */
static void
drain (GstAvqAnswer *self)
{
  g_mutex_lock (&self->lock);
  while ((self->pending != NULL || self->busy) && !self->stopping)
    g_cond_wait (&self->cond, &self->lock);
  g_mutex_unlock (&self->lock);
}

/* The question to ask about frame number `n`, or NULL. */
static char *
question_for_frame (GstAvqAnswer *self, guint64 n)
{
  char *q = NULL;
  GST_OBJECT_LOCK (self);
  q = g_queue_pop_head (&self->oneoff_questions);
  if (q == NULL && self->question != NULL && *self->question && n % self->interval == 0)
    q = g_strdup (self->question);
  if (q != NULL)
    self->questions++;
  GST_OBJECT_UNLOCK (self);
  return q;
}

static gboolean
frame_is_valid (GstAvqAnswer *self, GstBuffer *buffer)
{
  GstMapInfo map;
  g_autoptr (GError) error = NULL;
  if (!gst_buffer_map (buffer, &map, GST_MAP_READ))
    return FALSE;
  AvqFrameHeader header;
  gboolean ok = avq_frame_peek_header (map.data, map.size, &header, &error) &&
                gst_avq_stream_params_matches (&self->stream, &header, &error) &&
                map.size == gst_avq_stream_params_frame_size (&self->stream);
  gst_buffer_unmap (buffer, &map);
  if (!ok)
    GST_ELEMENT_ERROR (self, STREAM, DECODE, ("Invalid AVQ frame."),
                       ("%s", error ? error->message : "frame size does not match the caps"));
  return ok;
}

static GstFlowReturn
gst_avq_answer_chain (GstPad *pad, GstObject *parent, GstBuffer *buffer)
{
  GstAvqAnswer *self = GST_AVQ_ANSWER (parent);
  (void) pad;

  if (!frame_is_valid (self, buffer)) {
    gst_buffer_unref (buffer);
    return GST_FLOW_ERROR;
  }
  guint64 n;
  gboolean wait;
  GST_OBJECT_LOCK (self);
  n = self->frames_in++;
  wait = self->wait_for_answer;
  GST_OBJECT_UNLOCK (self);

  g_autofree char *question = question_for_frame (self, n);
  buffer = gst_buffer_make_writable (buffer);
  if (question != NULL) {
    Job job = { buffer, question };
    if (wait) {
      Answer *a = answer_job (self, &job);
      if (a != NULL) {
        attach (buffer, a);
        announce (self, a);
        answer_free (a);
      }
    } else {
      Job *queued = g_new0 (Job, 1);
      queued->frame = gst_buffer_ref (buffer);
      queued->question = g_steal_pointer (&question);
      g_mutex_lock (&self->lock);
      if (self->pending != NULL) {
        job_free (self->pending);
        count (self, &self->replaced);
      }
      self->pending = queued;
      g_cond_broadcast (&self->cond);
      g_mutex_unlock (&self->lock);
    }
  }

  g_mutex_lock (&self->lock);
  while (!g_queue_is_empty (&self->ready)) {
    Answer *a = g_queue_pop_head (&self->ready);
    /* The asked frame may still be referenced by the worker's job: metas
     * go on a writable buffer. */
    buffer = gst_buffer_make_writable (buffer);
    attach (buffer, a);
    answer_free (a);
  }
  g_mutex_unlock (&self->lock);
  return gst_pad_push (self->srcpad, buffer);
}

static gboolean
check_caps (GstAvqAnswer *self, GstCaps *caps)
{
  g_autoptr (GError) error = NULL;
  if (!gst_avq_stream_params_from_caps (&self->stream, caps, &error)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, ("Invalid AVQ caps."), ("%s", error->message));
    return FALSE;
  }
  const AvqEngine *engine = avq_answer_pool_get_engine (self->pool);
  char want[17], got[17];
  avq_codebook_id_to_hex (avq_engine_codebook_id (engine), want);
  avq_codebook_id_to_hex (self->stream.codebook_id, got);
  if (strcmp (want, got) != 0) {
    GST_ELEMENT_ERROR (self, STREAM, WRONG_TYPE, ("The stream was encoded with another codebook."),
                       ("caps codebook %s, loaded AVQ file %s has %s", got, self->avq_path, want));
    return FALSE;
  }
  if (self->stream.tokens != avq_engine_tokens (engine) ||
      self->stream.index_bits != avq_engine_index_bits (engine) ||
      self->stream.side_bits != avq_engine_side_bits (engine)) {
    GST_ELEMENT_ERROR (self, STREAM, WRONG_TYPE, ("The stream does not match the AVQ file."),
                       ("caps: %u tokens, %u index bits, %u side bits; AVQ file: %u, %u, %u",
                        self->stream.tokens, self->stream.index_bits, self->stream.side_bits,
                        avq_engine_tokens (engine), avq_engine_index_bits (engine),
                        avq_engine_side_bits (engine)));
    return FALSE;
  }
  return TRUE;
}

static gboolean
gst_avq_answer_sink_event (GstPad *pad, GstObject *parent, GstEvent *event)
{
  GstAvqAnswer *self = GST_AVQ_ANSWER (parent);
  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_CAPS: {
      GstCaps *caps;
      gst_event_parse_caps (event, &caps);
      if (!check_caps (self, caps)) {
        gst_event_unref (event);
        return FALSE;
      }
      break;
    }
    case GST_EVENT_FLUSH_START:
      g_mutex_lock (&self->lock);
      g_clear_pointer (&self->pending, job_free);
      g_mutex_unlock (&self->lock);
      break;
    case GST_EVENT_FLUSH_STOP:
      /* Answers about frames before the flush must not ride on frames after
       * it (they were posted on the bus and signalled already). */
      g_mutex_lock (&self->lock);
      g_queue_clear_full (&self->ready, (GDestroyNotify) answer_free);
      g_mutex_unlock (&self->lock);
      break;
    case GST_EVENT_EOS:
      /* Deliver the answer in flight (message + signal) before EOS. */
      drain (self);
      break;
    default:
      break;
  }
  return gst_pad_event_default (pad, parent, event);
}

/* With wait-for-answer a frame leaves only after its answer: that is
 * latency the pipeline must know about. In the background mode frames pass
 * straight through. */
static gboolean
gst_avq_answer_src_query (GstPad *pad, GstObject *parent, GstQuery *query)
{
  GstAvqAnswer *self = GST_AVQ_ANSWER (parent);
  if (GST_QUERY_TYPE (query) != GST_QUERY_LATENCY)
    return gst_pad_query_default (pad, parent, query);
  if (!gst_pad_peer_query (self->sinkpad, query))
    return FALSE;
  gboolean live;
  GstClockTime min, max, ours = 0;
  gst_query_parse_latency (query, &live, &min, &max);
  GST_OBJECT_LOCK (self);
  if (self->wait_for_answer)
    ours = self->answer_time;
  GST_OBJECT_UNLOCK (self);
  min += ours;
  if (GST_CLOCK_TIME_IS_VALID (max))
    max += ours;
  gst_query_set_latency (query, live, min, max);
  return TRUE;
}

static gboolean
load (GstAvqAnswer *self)
{
  g_autofree char *model_dir = NULL, *avq_path = NULL;
  gint threads;
  AvqDevice device;
  guint max_batch;
  GST_OBJECT_LOCK (self);
  model_dir = g_strdup (self->model_dir);
  avq_path = g_strdup (self->avq_path);
  threads = self->threads;
  device = self->device;
  max_batch = self->max_batch;
  g_free (self->acquired_pool_name);
  self->acquired_pool_name = g_strdup (self->pool_name);
  GST_OBJECT_UNLOCK (self);
  if (model_dir == NULL || avq_path == NULL) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("No model or AVQ file set."),
                       ("set 'model' (LLaVA model directory) and 'avq' (the codebook the stream was encoded with)"));
    return FALSE;
  }
  g_autoptr (GError) error = NULL;
  AvqAnswererOptions options = { .model_dir = model_dir, .avq_path = avq_path, .threads = threads, .device = device };
  AvqAnswerPool *pool = gst_avq_pool_acquire (self->acquired_pool_name, &options, max_batch,
                                              &error);
  /* Under the object lock for `stats`, which reads the pool's counters. */
  GST_OBJECT_LOCK (self);
  self->pool = pool;
  GST_OBJECT_UNLOCK (self);
  if (self->pool == NULL) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ, ("Could not load the model."), ("%s", error->message));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "vision half on %s%s%s",
                   avq_engine_device_description (avq_answer_pool_get_engine (self->pool)),
                   self->acquired_pool_name ? ", shared pool " : "",
                   self->acquired_pool_name ? self->acquired_pool_name : "");
  self->stopping = FALSE;
  self->worker = g_thread_new ("avqanswer", worker_main, self);
  return TRUE;
}

static void
unload (GstAvqAnswer *self)
{
  g_mutex_lock (&self->lock);
  self->stopping = TRUE;
  g_clear_pointer (&self->pending, job_free);
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
  if (self->worker)
    g_thread_join (g_steal_pointer (&self->worker));
  g_queue_clear_full (&self->ready, (GDestroyNotify) answer_free);
  GST_OBJECT_LOCK (self);
  AvqAnswerPool *pool = g_steal_pointer (&self->pool);
  GST_OBJECT_UNLOCK (self);
  if (pool != NULL)
    gst_avq_pool_release (self->acquired_pool_name, pool);
}

static GstStateChangeReturn
gst_avq_answer_change_state (GstElement *element, GstStateChange transition)
{
  GstAvqAnswer *self = GST_AVQ_ANSWER (element);
  if (transition == GST_STATE_CHANGE_READY_TO_PAUSED) {
    GST_OBJECT_LOCK (self);
    self->frames_in = self->questions = self->answers = self->replaced = self->failed = 0;
    self->answer_time = 0;
    GST_OBJECT_UNLOCK (self);
    if (!load (self))
      return GST_STATE_CHANGE_FAILURE;
  }
  GstStateChangeReturn ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY)
    unload (self);
  return ret;
}

static gboolean
gst_avq_answer_ask (GstAvqAnswer *self, const gchar *question)
{
  if (question == NULL || !g_utf8_validate (question, -1, NULL) || *question == '\0')
    return FALSE;
  GST_OBJECT_LOCK (self);
  g_queue_push_tail (&self->oneoff_questions, g_strdup (question));
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

static void
gst_avq_answer_set_property (GObject *object, guint prop_id, const GValue *value,
                             GParamSpec *pspec)
{
  GstAvqAnswer *self = GST_AVQ_ANSWER (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL: g_free (self->model_dir); self->model_dir = g_value_dup_string (value); break;
    case PROP_AVQ: g_free (self->avq_path); self->avq_path = g_value_dup_string (value); break;
    case PROP_QUESTION: g_free (self->question); self->question = g_value_dup_string (value); break;
    case PROP_SYSTEM_PROMPT: g_free (self->system_prompt); self->system_prompt = g_value_dup_string (value); break;
    case PROP_INTERVAL: self->interval = g_value_get_uint (value); break;
    case PROP_MAX_NEW_TOKENS: self->max_new_tokens = g_value_get_uint (value); break;
    case PROP_WAIT_FOR_ANSWER: self->wait_for_answer = g_value_get_boolean (value); break;
    case PROP_THREADS: self->threads = g_value_get_int (value); break;
    case PROP_DEVICE: self->device = g_value_get_enum (value); break;
    case PROP_POOL: g_free (self->pool_name); self->pool_name = g_value_dup_string (value); break;
    case PROP_MAX_BATCH: self->max_batch = g_value_get_uint (value); break;
    case PROP_TEMPERATURE: self->temperature = g_value_get_float (value); break;
    case PROP_TOP_P: self->top_p = g_value_get_float (value); break;
    case PROP_TOP_K: self->top_k = g_value_get_uint (value); break;
    case PROP_SEED: self->seed = g_value_get_uint (value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_avq_answer_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GstAvqAnswer *self = GST_AVQ_ANSWER (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL: g_value_set_string (value, self->model_dir); break;
    case PROP_AVQ: g_value_set_string (value, self->avq_path); break;
    case PROP_QUESTION: g_value_set_string (value, self->question); break;
    case PROP_SYSTEM_PROMPT: g_value_set_string (value, self->system_prompt); break;
    case PROP_INTERVAL: g_value_set_uint (value, self->interval); break;
    case PROP_MAX_NEW_TOKENS: g_value_set_uint (value, self->max_new_tokens); break;
    case PROP_WAIT_FOR_ANSWER: g_value_set_boolean (value, self->wait_for_answer); break;
    case PROP_THREADS: g_value_set_int (value, self->threads); break;
    case PROP_DEVICE: g_value_set_enum (value, self->device); break;
    case PROP_POOL: g_value_set_string (value, self->pool_name); break;
    case PROP_MAX_BATCH: g_value_set_uint (value, self->max_batch); break;
    case PROP_TEMPERATURE: g_value_set_float (value, self->temperature); break;
    case PROP_TOP_P: g_value_set_float (value, self->top_p); break;
    case PROP_TOP_K: g_value_set_uint (value, self->top_k); break;
    case PROP_SEED: g_value_set_uint (value, self->seed); break;
    case PROP_STATS: {
      guint64 batches = 0, batched = 0;
      guint largest = 0;
      if (self->pool != NULL)
        avq_answer_pool_stats (self->pool, &batches, &batched, &largest);
      g_value_take_boxed (value, gst_structure_new ("application/x-avq-answer-stats",
          "frames-in", G_TYPE_UINT64, self->frames_in,
          "questions", G_TYPE_UINT64, self->questions,
          "answers", G_TYPE_UINT64, self->answers,
          "replaced", G_TYPE_UINT64, self->replaced,
          "failed", G_TYPE_UINT64, self->failed,
          "pool-batches", G_TYPE_UINT64, batches,
          "pool-questions", G_TYPE_UINT64, batched,
          "pool-largest-batch", G_TYPE_UINT, largest, NULL));
      break;
    }
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_avq_answer_finalize (GObject *object)
{
  GstAvqAnswer *self = GST_AVQ_ANSWER (object);
  unload (self);
  g_free (self->model_dir);
  g_free (self->pool_name);
  g_free (self->acquired_pool_name);
  g_free (self->avq_path);
  g_free (self->question);
  g_free (self->system_prompt);
  g_queue_clear_full (&self->oneoff_questions, g_free);
  g_mutex_clear (&self->lock);
  g_cond_clear (&self->cond);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_avq_answer_class_init (GstAvqAnswerClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS;

  gobject_class->set_property = gst_avq_answer_set_property;
  gobject_class->get_property = gst_avq_answer_get_property;
  gobject_class->finalize = gst_avq_answer_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model directory",
          "LLaVA-1.5 model directory in the Hugging Face layout (config.json, "
          "safetensors weights, tokenizer.json)", NULL, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_AVQ,
      g_param_spec_string ("avq", "AVQ file",
          "AVQ codebook file the stream was encoded with (its codebook id must match the caps)",
          NULL, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_QUESTION,
      g_param_spec_string ("question", "Question",
          "Question asked about every interval-th frame, used verbatim in the "
          "prompt (NULL or empty: only questions from the ask signal)",
          NULL, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_INTERVAL,
      g_param_spec_uint ("interval", "Interval",
          "Ask the question about every Nth frame (while the model is busy the "
          "latest such frame waits and older ones are skipped)",
          1, G_MAXUINT, DEFAULT_INTERVAL, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_MAX_NEW_TOKENS,
      g_param_spec_uint ("max-new-tokens", "Maximum new tokens",
          "Most tokens generated for one answer (generation also stops at EOS)",
          1, 4096, DEFAULT_MAX_NEW_TOKENS, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_TEMPERATURE,
      g_param_spec_float ("temperature", "Temperature",
          "Sampling temperature: 0 answers greedily (the most likely token at each step), "
          "a larger value samples each token from softmax(logits / temperature), "
          "so that answers vary more the higher it is",
          0.0f, 100.0f, DEFAULT_TEMPERATURE, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_TOP_P,
      g_param_spec_float ("top-p", "Top p",
          "Nucleus sampling threshold: each token is sampled from the smallest set of most "
          "likely tokens whose probability reaches top-p (1: from all of them; used only "
          "when temperature is above 0)",
          1e-6f, 1.0f, DEFAULT_TOP_P, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_TOP_K,
      g_param_spec_uint ("top-k", "Top k",
          "Sample each token among the top-k most likely only, before top-p applies "
          "(0: no limit; HF transformers' generate uses 50 unless told otherwise; "
          "used only when temperature is above 0)",
          0, 1000000, DEFAULT_TOP_K, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint ("seed", "Seed",
          "Random seed for sampling (used only when temperature is above 0): the same frame, "
          "question and seed give the same answer. Elements sharing a pool batch together "
          "only questions with equal temperature, top-p, top-k, seed, max-new-tokens and "
          "system-prompt; a batched question samples as it would alone",
          0, G_MAXUINT, DEFAULT_SEED, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_SYSTEM_PROMPT,
      g_param_spec_string ("system-prompt", "System prompt",
          "Optional text put before \"USER: <image>\\n...\" in the prompt",
          NULL, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_WAIT_FOR_ANSWER,
      g_param_spec_boolean ("wait-for-answer", "Wait for answer",
          "Hold each asked frame until its answer is attached to it (for files "
          "and tests); FALSE answers in the background and never stalls a live stream",
          DEFAULT_WAIT_FOR_ANSWER, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "Compute threads for the model (0: automatic)", 0, 1024, DEFAULT_THREADS,
          rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_DEVICE,
      g_param_spec_enum ("device", "Device",
          "Where the model runs (vision half and language model): auto (CUDA when available, else the CPU), "
          "cpu, or cuda (fails to start when CUDA is unavailable)",
          GST_TYPE_AVQ_DEVICE, AVQ_DEVICE_AUTO, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_POOL,
      g_param_spec_string ("pool", "Pool",
          "Name of a model shared by every avqanswer of this process that names the same pool: the weights are "
          "loaded once and questions from all of them are answered together in batches (all need the same model, "
          "avq and device). NULL: a model of this element's own",
          NULL, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_MAX_BATCH,
      g_param_spec_uint ("max-batch", "Max batch",
          "Most questions a shared pool answers in one batch (taken from the element that loads the pool)",
          1, 64, DEFAULT_MAX_BATCH, rw | GST_PARAM_MUTABLE_READY));
  gst_type_mark_as_plugin_api (GST_TYPE_AVQ_DEVICE, 0);
  g_object_class_install_property (gobject_class, PROP_STATS,
      g_param_spec_boxed ("stats", "Statistics",
          "Counters: frames-in, questions, answers, replaced (questions superseded "
          "by a newer frame while the model was busy), failed; and of the model's pool "
          "(shared with other elements when 'pool' is set): pool-batches, "
          "pool-questions, pool-largest-batch",
          GST_TYPE_STRUCTURE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  /**
   * GstAvqAnswer::ask:
   * @question: the question about the next frame
   *
   * Action signal: asks a one-off question about the next frame. Returns
   * FALSE for an empty or non-UTF-8 question.
   */
  signals[SIGNAL_ASK] = g_signal_new_class_handler ("ask", G_TYPE_FROM_CLASS (klass),
      G_SIGNAL_RUN_LAST | G_SIGNAL_ACTION, G_CALLBACK (gst_avq_answer_ask),
      NULL, NULL, NULL, G_TYPE_BOOLEAN, 1, G_TYPE_STRING);
  /**
   * GstAvqAnswer::answer:
   * @question: the question
   * @answer: the answer text
   * @pts: PTS of the frame it is about
   *
   * Emitted from the answering thread when an answer is ready.
   */
  signals[SIGNAL_ANSWER] = g_signal_new ("answer", G_TYPE_FROM_CLASS (klass),
      G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL, G_TYPE_NONE, 3,
      G_TYPE_STRING, G_TYPE_STRING, G_TYPE_UINT64);

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "AVQ question answering", "Filter/Analyzer/Video",
      "Answers questions about an AVQ stream with LLaVA-1.5 (rest of the CLIP "
      "tower, projector, LLaMA) and attaches the answers as GstAvqAnswerMeta "
      "and avq-answer bus messages",
      "gst-avq developers");
  element_class->change_state = GST_DEBUG_FUNCPTR (gst_avq_answer_change_state);
  GST_DEBUG_CATEGORY_INIT (gst_avq_answer_debug, "avqanswer", 0, "AVQ question answering");
}

static void
gst_avq_answer_init (GstAvqAnswer *self)
{
  self->sinkpad = gst_pad_new_from_static_template (&sink_template, "sink");
  gst_pad_set_chain_function (self->sinkpad, GST_DEBUG_FUNCPTR (gst_avq_answer_chain));
  gst_pad_set_event_function (self->sinkpad, GST_DEBUG_FUNCPTR (gst_avq_answer_sink_event));
  GST_PAD_SET_PROXY_CAPS (self->sinkpad);
  gst_element_add_pad (GST_ELEMENT (self), self->sinkpad);
  self->srcpad = gst_pad_new_from_static_template (&src_template, "src");
  GST_PAD_SET_PROXY_CAPS (self->srcpad);
  gst_pad_set_query_function (self->srcpad, GST_DEBUG_FUNCPTR (gst_avq_answer_src_query));
  gst_element_add_pad (GST_ELEMENT (self), self->srcpad);

  self->interval = DEFAULT_INTERVAL;
  self->max_new_tokens = DEFAULT_MAX_NEW_TOKENS;
  self->wait_for_answer = DEFAULT_WAIT_FOR_ANSWER;
  self->threads = DEFAULT_THREADS;
  self->max_batch = DEFAULT_MAX_BATCH;
  self->temperature = DEFAULT_TEMPERATURE;
  self->top_p = DEFAULT_TOP_P;
  self->top_k = DEFAULT_TOP_K;
  self->seed = DEFAULT_SEED;
  g_queue_init (&self->oneoff_questions);
  g_queue_init (&self->ready);
  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
}
