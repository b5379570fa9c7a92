/* avqanswer on the tiny fixture model: the chelsea frame made by the engine
 * (L0-derive) is answered with the reference's greedy tokens for "What is
 * the cat doing?"; the answer arrives as GstAvqAnswerMeta, an "avq-answer"
 * bus message and the "answer" signal; one-off questions through "ask";
 * background answering (wait-for-answer=false) and EOS; the interval
 * property; the sampling properties (temperature, top-p, top-k, seed); caps that
 * do not match the AVQ file, damaged frames and loading failures. Every
 * wait is bounded. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/app/gstappsrc.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#include "avq-common.h"
#include "avq-engine.h"
#include "avq-image.h"
#include "avq-tokenizer.h"
#include "gstavqanswermeta.h"

#define MODEL_DIR AVQ_TEST_DATA_DIR "/tiny-llava"
#define AVQ_L0 MODEL_DIR "/avq-L0-derive.safetensors"
#define AVQ_L1 MODEL_DIR "/avq-L1-side8.safetensors"
#define QUESTION "What is the cat doing?"
#define N_TOKENS 8
#define WAIT_US (30 * G_TIME_SPAN_SECOND)

/* ---- fixture data ---- */

typedef struct
{
  GBytes *frame;                /* chelsea.png through the engine */
  gchar *caps;                  /* application/x-avq caps of the stream */
  gchar *codebook;              /* hex */
} Stream;

static Stream *
stream_new (const gchar * avq)
{
  AvqEngineOptions options = { .model_dir = MODEL_DIR, .avq_path = avq };
  GError *error = NULL;
  AvqEngine *engine = avq_engine_new (&options, &error);
  AvqImage *image;
  AvqFrame *frame;
  Stream *s = g_new0 (Stream, 1);
  char hex[17];
  guint8 *data;
  gsize len;

  fail_unless (engine != NULL, "%s", error ? error->message : "?");
  image = avq_image_load (MODEL_DIR "/images/chelsea.png", &error);
  fail_unless (image != NULL, "%s", error ? error->message : "?");
  frame = avq_engine_encode_image (engine, image, AVQ_PREPROCESS_CROP,
      &error);
  fail_unless (frame != NULL, "%s", error ? error->message : "?");
  data = avq_frame_serialize (frame, &len);
  s->frame = g_bytes_new_take (data, len);
  avq_codebook_id_to_hex (avq_engine_codebook_id (engine), hex);
  s->codebook = g_strdup (hex);
  s->caps = g_strdup_printf ("application/x-avq, version=(int)1, "
      "tokens=(int)%u, index-bits=(int)%u, side-bits=(int)%u, "
      "codebook=(string)%s, layer=(int)%d, framerate=(fraction)25/1",
      avq_engine_tokens (engine), avq_engine_index_bits (engine),
      avq_engine_side_bits (engine), hex, avq_engine_split_layer (engine));
  avq_frame_free (frame);
  avq_image_free (image);
  avq_engine_free (engine);
  return s;
}

static void
stream_free (Stream * s)
{
  g_bytes_unref (s->frame);
  g_free (s->caps);
  g_free (s->codebook);
  g_free (s);
}

static GstBuffer *
frame_buffer (const Stream * s, GstClockTime pts)
{
  GstBuffer *buf = gst_buffer_new_memdup (g_bytes_get_data (s->frame, NULL),
      g_bytes_get_size (s->frame));

  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = FRAME_DURATION;
  return buf;
}

/* The reference's greedy answer for the chelsea image through the
 * L0-derive split, as text (special tokens skipped). */
static gchar *
expected_answer (void)
{
  static const gint32 brief_ids[N_TOKENS] =
      { 825, 113, 28632, 12405, 825, 30280, 22965, 825 };
  JsonParser *parser = json_parser_new ();
  GError *error = NULL;
  JsonArray *greedy;
  AvqTokenizer *tok;
  gint32 ids[N_TOKENS];
  gchar *text;

  fail_unless (json_parser_load_from_file (parser,
          MODEL_DIR "/reference.json", &error), "%s",
      error ? error->message : "?");
  greedy = json_object_get_array_member (json_node_get_object
      (json_parser_get_root (parser)), "llm.avq.L0-derive.greedy");
  fail_unless (greedy != NULL);
  fail_unless_equals_int (json_array_get_length (greedy), N_TOKENS);
  for (guint i = 0; i < N_TOKENS; i++) {
    ids[i] = (gint32) json_object_get_int_member
        (json_array_get_object_element (greedy, i), "id");
    fail_unless_equals_int (ids[i], brief_ids[i]);
  }
  g_object_unref (parser);

  tok = avq_tokenizer_load (MODEL_DIR, &error);
  fail_unless (tok != NULL, "%s", error ? error->message : "?");
  text = avq_tokenizer_decode (tok, ids, N_TOKENS, TRUE);
  avq_tokenizer_free (tok);
  fail_unless (text != NULL && *text != '\0');
  return text;
}

/* ---- the element ---- */

typedef struct
{
  GMutex lock;
  GCond cond;
  guint count;
  gchar *question, *answer;
  guint64 pts;
  GThread *thread;
} Recorder;

static void
on_answer (GstElement * element, const gchar * question, const gchar * answer,
    guint64 pts, Recorder * r)
{
  (void) element;
  g_mutex_lock (&r->lock);
  r->count++;
  g_free (r->question);
  g_free (r->answer);
  r->question = g_strdup (question);
  r->answer = g_strdup (answer);
  r->pts = pts;
  r->thread = g_thread_self ();
  g_cond_broadcast (&r->cond);
  g_mutex_unlock (&r->lock);
}

static void
recorder_init (Recorder * r, GstElement * element)
{
  memset (r, 0, sizeof *r);
  g_mutex_init (&r->lock);
  g_cond_init (&r->cond);
  g_signal_connect (element, "answer", G_CALLBACK (on_answer), r);
}

static void
recorder_clear (Recorder * r)
{
  g_free (r->question);
  g_free (r->answer);
  g_mutex_clear (&r->lock);
  g_cond_clear (&r->cond);
}

static guint
recorder_count (Recorder * r)
{
  guint n;
  g_mutex_lock (&r->lock);
  n = r->count;
  g_mutex_unlock (&r->lock);
  return n;
}

static gboolean
recorder_wait (Recorder * r, guint n)
{
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  gboolean ok = TRUE;

  g_mutex_lock (&r->lock);
  while (r->count < n && ok)
    ok = g_cond_wait_until (&r->cond, &r->lock, deadline);
  ok = r->count >= n;
  g_mutex_unlock (&r->lock);
  return ok;
}

/* A configured avqanswer in a harness, with a bus of its own. `question`
 * NULL leaves the property unset. */
static GstHarness *
answer_harness (const Stream * s, const gchar * question, guint interval,
    gboolean wait, GstBus ** bus, Recorder * rec)
{
  GstElement *e = gst_element_factory_make ("avqanswer", NULL);
  GstHarness *h;

  fail_unless (e != NULL);
  g_object_set (e, "model", MODEL_DIR, "avq", AVQ_L0,
      "max-new-tokens", N_TOKENS, "interval", interval,
      "wait-for-answer", wait, NULL);
  if (question)
    g_object_set (e, "question", question, NULL);
  *bus = gst_bus_new ();
  gst_element_set_bus (e, *bus);
  if (rec)
    recorder_init (rec, e);
  h = gst_harness_new_with_element (e, "sink", "src");
  gst_object_unref (e);
  gst_harness_set_src_caps_str (h, s->caps);
  return h;
}

/* Messages on the bus hold the element and the element holds the bus:
 * flush them before letting go of both. */
static void
answer_teardown (GstHarness * h, GstBus * bus)
{
  gst_bus_set_flushing (bus, TRUE);
  gst_harness_teardown (h);
  gst_object_unref (bus);
}

static void
check_meta (GstBuffer * buf, const gchar * question, const gchar * answer,
    GstClockTime frame_pts)
{
  GstAvqAnswerMeta *m = gst_buffer_get_avq_answer_meta (buf);

  fail_unless (m != NULL, "no answer meta on the buffer at %" GST_TIME_FORMAT,
      GST_TIME_ARGS (GST_BUFFER_PTS (buf)));
  fail_unless_equals_string (m->question, question);
  fail_unless_equals_string (m->answer, answer);
  fail_unless_equals_uint64 (m->frame_pts, frame_pts);
  fail_unless_equals_int (m->n_tokens, N_TOKENS);
  fail_unless (isfinite (m->vision_ms) && m->vision_ms >= 0);
  fail_unless (isfinite (m->prefill_ms) && m->prefill_ms >= 0);
  fail_unless (isfinite (m->decode_ms) && m->decode_ms >= 0);
}

/* The next avq-answer element message, waiting at most `timeout`. */
static GstMessage *
pop_answer_message (GstBus * bus, GstClockTime timeout)
{
  for (;;) {
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, timeout,
        GST_MESSAGE_ELEMENT);
    if (msg == NULL)
      return NULL;
    if (gst_message_has_name (msg, "avq-answer"))
      return msg;
    gst_message_unref (msg);
  }
}

static void
check_answer_message (GstMessage * msg, const gchar * question,
    const gchar * answer, GstClockTime pts)
{
  const GstStructure *st;
  guint64 v;
  guint tokens;

  fail_unless (msg != NULL, "no avq-answer message");
  st = gst_message_get_structure (msg);
  fail_unless_equals_string (gst_structure_get_string (st, "question"),
      question);
  fail_unless_equals_string (gst_structure_get_string (st, "answer"), answer);
  fail_unless (gst_structure_get_uint64 (st, "pts", &v));
  fail_unless_equals_uint64 (v, pts);
  fail_unless (gst_structure_get_uint (st, "tokens", &tokens));
  fail_unless_equals_int (tokens, N_TOKENS);
}

/* ---- tests ---- */

/* wait-for-answer=true: the asked frame itself carries the answer, which
 * is the reference's; the bus message and the signal say the same. */
GST_START_TEST (test_answer_meta)
{
  Stream *s = stream_new (AVQ_L0);
  g_autofree gchar *expected = expected_answer ();
  GstBus *bus;
  Recorder rec;
  GstHarness *h = answer_harness (s, QUESTION, 1, TRUE, &bus, &rec);
  GstMessage *msg;

  for (guint i = 0; i < 2; i++) {
    GstClockTime pts = GST_SECOND + i * FRAME_DURATION;
    GstBuffer *out;

    fail_unless_equals_int (gst_harness_push (h, frame_buffer (s, pts)),
        GST_FLOW_OK);
    out = gst_harness_pull (h);
    fail_unless (out != NULL);
    /* the frame itself passes unchanged */
    fail_unless_equals_uint64 (GST_BUFFER_PTS (out), pts);
    fail_unless_equals_int (gst_buffer_get_size (out),
        g_bytes_get_size (s->frame));
    fail_unless (gst_buffer_memcmp (out, 0, g_bytes_get_data (s->frame,
                NULL), g_bytes_get_size (s->frame)) == 0);
    check_meta (out, QUESTION, expected, pts);
    gst_buffer_unref (out);

    msg = pop_answer_message (bus, 0);
    check_answer_message (msg, QUESTION, expected, pts);
    fail_unless (GST_MESSAGE_SRC (msg) == GST_OBJECT (h->element));
    gst_message_unref (msg);

    fail_unless_equals_int (recorder_count (&rec), i + 1);
    fail_unless_equals_string (rec.question, QUESTION);
    fail_unless_equals_string (rec.answer, expected);
    fail_unless_equals_uint64 (rec.pts, pts);
  }
  fail_unless_equals_uint64 (stats_get (h->element, "frames-in"), 2);
  fail_unless_equals_uint64 (stats_get (h->element, "questions"), 2);
  fail_unless_equals_uint64 (stats_get (h->element, "answers"), 2);
  fail_unless_equals_uint64 (stats_get (h->element, "failed"), 0);

  /* Holding frames for their answers is latency: the query reports it. */
  {
    GstClockTime upstream = 5 * GST_MSECOND;
    gst_harness_set_upstream_latency (h, upstream);
    fail_unless (gst_harness_query_latency (h) > upstream);
  }

  answer_teardown (h, bus);
  recorder_clear (&rec);
  stream_free (s);
}

GST_END_TEST;

/* Without a question property nothing is asked; the "ask" action signal
 * asks one question about the next frame only. */
GST_START_TEST (test_ask_signal)
{
  Stream *s = stream_new (AVQ_L0);
  g_autofree gchar *expected = expected_answer ();
  GstBus *bus;
  Recorder rec;
  GstHarness *h = answer_harness (s, NULL, 1, TRUE, &bus, &rec);
  GstBuffer *out;
  gboolean ok = FALSE;
  GstMessage *msg;

  fail_unless_equals_int (gst_harness_push (h, frame_buffer (s, 0)),
      GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless (gst_buffer_get_avq_answer_meta (out) == NULL);
  gst_buffer_unref (out);

  g_signal_emit_by_name (h->element, "ask", QUESTION, &ok);
  fail_unless (ok);
  fail_unless_equals_int (gst_harness_push (h, frame_buffer (s,
              FRAME_DURATION)), GST_FLOW_OK);
  out = gst_harness_pull (h);
  check_meta (out, QUESTION, expected, FRAME_DURATION);
  gst_buffer_unref (out);
  msg = pop_answer_message (bus, 0);
  check_answer_message (msg, QUESTION, expected, FRAME_DURATION);
  gst_message_unref (msg);

  fail_unless_equals_int (gst_harness_push (h, frame_buffer (s,
              2 * FRAME_DURATION)), GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless (gst_buffer_get_avq_answer_meta (out) == NULL);
  gst_buffer_unref (out);
  fail_unless_equals_int (recorder_count (&rec), 1);

  /* empty and non-UTF-8 questions are refused */
  ok = TRUE;
  g_signal_emit_by_name (h->element, "ask", "", &ok);
  fail_if (ok);
  ok = TRUE;
  g_signal_emit_by_name (h->element, "ask", "caf\xff", &ok);
  fail_if (ok);
  fail_unless_equals_uint64 (stats_get (h->element, "questions"), 1);

  answer_teardown (h, bus);
  recorder_clear (&rec);
  stream_free (s);
}

GST_END_TEST;

/* interval=2 with wait-for-answer=true on 4 frames: frames 0 and 2. */
GST_START_TEST (test_interval)
{
  Stream *s = stream_new (AVQ_L0);
  g_autofree gchar *expected = expected_answer ();
  GstBus *bus;
  GstHarness *h = answer_harness (s, QUESTION, 2, TRUE, &bus, NULL);

  for (guint i = 0; i < 4; i++) {
    GstBuffer *out;

    fail_unless_equals_int (gst_harness_push (h, frame_buffer (s,
                i * FRAME_DURATION)), GST_FLOW_OK);
    out = gst_harness_pull (h);
    if (i % 2 == 0)
      check_meta (out, QUESTION, expected, i * FRAME_DURATION);
    else
      fail_unless (gst_buffer_get_avq_answer_meta (out) == NULL,
          "frame %u has an answer", i);
    gst_buffer_unref (out);
  }
  fail_unless_equals_uint64 (stats_get (h->element, "questions"), 2);
  fail_unless_equals_uint64 (stats_get (h->element, "answers"), 2);
  answer_teardown (h, bus);
  stream_free (s);
}

GST_END_TEST;

/* wait-for-answer=false: the asked frame goes on at once; the answer comes
 * from the worker thread (signal, message) and rides on the next frame. */
GST_START_TEST (test_background_answer)
{
  Stream *s = stream_new (AVQ_L0);
  g_autofree gchar *expected = expected_answer ();
  GstBus *bus;
  Recorder rec;
  GstHarness *h = answer_harness (s, QUESTION, 2, FALSE, &bus, &rec);
  GstBuffer *first, *second;
  GstAvqAnswerMeta *m0, *m1;
  GstMessage *msg;

  fail_unless_equals_int (gst_harness_push (h, frame_buffer (s, 0)),
      GST_FLOW_OK);
  first = gst_harness_pull (h);
  fail_unless (recorder_wait (&rec, 1), "no answer signal");
  fail_unless (rec.thread != g_thread_self (),
      "the answer did not come from the worker");
  fail_unless_equals_string (rec.answer, expected);
  fail_unless_equals_uint64 (rec.pts, 0);
  msg = pop_answer_message (bus, 10 * GST_SECOND);
  check_answer_message (msg, QUESTION, expected, 0);
  gst_message_unref (msg);

  /* frame 1 is not asked (interval 2) and carries frame 0's answer */
  fail_unless_equals_int (gst_harness_push (h, frame_buffer (s,
              FRAME_DURATION)), GST_FLOW_OK);
  second = gst_harness_pull (h);
  m0 = gst_buffer_get_avq_answer_meta (first);
  m1 = gst_buffer_get_avq_answer_meta (second);
  /* Frame 0 leaves as soon as its question is queued; its answer can ride
   * on it only if the whole model run finished before the chain function
   * looked for ready answers, microseconds later. Allowed, but then the
   * answer must not be attached twice. */
  if (m0 == NULL) {
    check_meta (second, QUESTION, expected, 0);
  } else {
    GST_WARNING ("the answer was ready before the asked frame left");
    check_meta (first, QUESTION, expected, 0);
    fail_unless (m1 == NULL, "the answer was attached twice");
  }
  fail_unless_equals_uint64 (stats_get (h->element, "questions"), 1);
  fail_unless_equals_uint64 (stats_get (h->element, "answers"), 1);
  gst_buffer_unref (first);
  gst_buffer_unref (second);

  answer_teardown (h, bus);
  recorder_clear (&rec);
  stream_free (s);
}

GST_END_TEST;

typedef struct
{
  Recorder *rec;
  gint answers_at_eos;
} EosCheck;

static GstPadProbeReturn
eos_probe (GstPad * pad, GstPadProbeInfo * info, gpointer data)
{
  EosCheck *c = data;
  (void) pad;

  if (GST_EVENT_TYPE (GST_PAD_PROBE_INFO_EVENT (info)) == GST_EVENT_EOS)
    c->answers_at_eos = (gint) recorder_count (c->rec);
  return GST_PAD_PROBE_OK;
}

/* wait-for-answer=false: EOS right after the asked frame waits for the
 * answer in flight; its message and signal come before EOS leaves. */
GST_START_TEST (test_eos_delivers_answer)
{
  Stream *s = stream_new (AVQ_L0);
  g_autofree gchar *expected = expected_answer ();
  GstBus *bus;
  Recorder rec;
  GstHarness *h = answer_harness (s, QUESTION, 1, FALSE, &bus, &rec);
  GstPad *srcpad = gst_element_get_static_pad (h->element, "src");
  EosCheck check = { &rec, -1 };
  GstMessage *msg;
  GstEvent *ev;
  gboolean saw_eos = FALSE;

  gst_pad_add_probe (srcpad, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, eos_probe,
      &check, NULL);
  fail_unless_equals_int (gst_harness_push (h, frame_buffer (s,
              3 * GST_SECOND)), GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  /* by the time EOS has gone through, the answer is out */
  fail_unless_equals_int (check.answers_at_eos, 1);
  msg = pop_answer_message (bus, 0);
  check_answer_message (msg, QUESTION, expected, 3 * GST_SECOND);
  gst_message_unref (msg);
  fail_unless_equals_string (rec.answer, expected);
  /* and EOS reached the harness */
  while ((ev = gst_harness_try_pull_event (h)) != NULL) {
    saw_eos |= GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
  }
  fail_unless (saw_eos, "no EOS downstream");

  gst_object_unref (srcpad);
  answer_teardown (h, bus);
  recorder_clear (&rec);
  stream_free (s);
}

GST_END_TEST;

/* Unasked frames are not parsed beyond their header: a frame with valid
 * header but damaged payload that is asked about fails to be answered
 * with a warning (stats: failed), and the stream goes on. */
GST_START_TEST (test_damaged_payload)
{
  Stream *s = stream_new (AVQ_L0);
  GstBus *bus;
  GstHarness *h = answer_harness (s, QUESTION, 1, TRUE, &bus, NULL);
  GstBuffer *buf = frame_buffer (s, 0), *out;
  GstMapInfo map;
  GstMessage *msg;

  /* 577 x 12 bits leave 4 padding bits in the last byte: set them */
  fail_unless (gst_buffer_map (buf, &map, GST_MAP_WRITE));
  map.data[map.size - 1] |= 0xf0;
  gst_buffer_unmap (buf, &map);
  fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless (gst_buffer_get_avq_answer_meta (out) == NULL);
  gst_buffer_unref (out);
  msg = gst_bus_timed_pop_filtered (bus, 0, GST_MESSAGE_WARNING);
  fail_unless (msg != NULL, "no warning");
  gst_message_unref (msg);
  fail_unless_equals_uint64 (stats_get (h->element, "failed"), 1);

  /* a good frame after it is answered */
  fail_unless_equals_int (gst_harness_push (h, frame_buffer (s,
              FRAME_DURATION)), GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless (gst_buffer_get_avq_answer_meta (out) != NULL);
  gst_buffer_unref (out);

  answer_teardown (h, bus);
  stream_free (s);
}

GST_END_TEST;

/* A frame whose header or size is wrong is a stream error: the push fails
 * and an ERROR message names the problem. No crash. */
GST_START_TEST (test_corrupt_frames)
{
  Stream *s = stream_new (AVQ_L0);
  const gsize size = g_bytes_get_size (s->frame);

  for (guint kind = 0; kind < 5; kind++) {
    GstBus *bus;
    GstHarness *h = answer_harness (s, QUESTION, 1, TRUE, &bus, NULL);
    GstBuffer *buf;
    GstMapInfo map;
    GstMessage *msg;
    GError *err = NULL;
    gchar *debug = NULL;

    switch (kind) {
      case 0:                  /* unknown version */
        buf = frame_buffer (s, 0);
        fail_unless (gst_buffer_map (buf, &map, GST_MAP_WRITE));
        map.data[0] = 9;
        gst_buffer_unmap (buf, &map);
        break;
      case 1:                  /* too short for a header */
        buf = gst_buffer_new_memdup (g_bytes_get_data (s->frame, NULL), 5);
        break;
      case 2:                  /* truncated frame */
        buf = gst_buffer_new_memdup (g_bytes_get_data (s->frame, NULL),
            size / 2);
        break;
      case 3:                  /* another codebook in the header */
        buf = frame_buffer (s, 0);
        fail_unless (gst_buffer_map (buf, &map, GST_MAP_WRITE));
        map.data[8] ^= 0xff;
        gst_buffer_unmap (buf, &map);
        break;
      default:                 /* random bytes */
      {
        GRand *rand = g_rand_new_with_seed (kind);
        buf = gst_buffer_new_allocate (NULL, size, NULL);
        fail_unless (gst_buffer_map (buf, &map, GST_MAP_WRITE));
        for (gsize i = 0; i < size; i++)
          map.data[i] = (guint8) g_rand_int (rand);
        gst_buffer_unmap (buf, &map);
        g_rand_free (rand);
        break;
      }
    }
    fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_ERROR);
    fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
    msg = gst_bus_timed_pop_filtered (bus, 0, GST_MESSAGE_ERROR);
    fail_unless (msg != NULL, "case %u: no error message", kind);
    gst_message_parse_error (msg, &err, &debug);
    fail_unless (err->domain == GST_STREAM_ERROR);
    GST_INFO ("case %u: %s (%s)", kind, err->message, debug);
    g_error_free (err);
    g_free (debug);
    gst_message_unref (msg);
    answer_teardown (h, bus);
  }
  stream_free (s);
}

GST_END_TEST;

/* ---- caps and loading, in real pipelines ---- */

/* appsrc with `caps` ! avqanswer ! fakesink, one frame pushed: the first
 * ERROR message must come from avqanswer and contain `needle`. */
static void
check_caps_error (const gchar * caps, GstBuffer * frame, const gchar * needle)
{
  g_autofree gchar *desc = g_strdup_printf ("appsrc name=src format=time "
      "caps=\"%s\" ! avqanswer name=answer model=\"%s\" avq=\"%s\" "
      "question=\"%s\" max-new-tokens=%d wait-for-answer=true ! "
      "fakesink sync=false", caps, MODEL_DIR, AVQ_L0, QUESTION, N_TOKENS);
  GError *error = NULL;
  GstElement *pipeline = gst_parse_launch (desc, &error);
  GstElement *src, *answer;
  GstBus *bus;
  GstMessage *msg;
  GError *err = NULL;
  gchar *debug = NULL, *all;

  fail_unless (pipeline != NULL && error == NULL, "%s",
      error ? error->message : "?");
  src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  answer = gst_bin_get_by_name (GST_BIN (pipeline), "answer");
  bus = gst_element_get_bus (pipeline);
  fail_unless (gst_element_set_state (pipeline, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE);
  fail_unless_equals_int (gst_app_src_push_buffer (GST_APP_SRC (src), frame),
      GST_FLOW_OK);
  msg = gst_bus_timed_pop_filtered (bus, 30 * GST_SECOND, GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "no error for caps %s", caps);
  fail_unless (GST_MESSAGE_SRC (msg) == GST_OBJECT (answer),
      "first error from %s", GST_MESSAGE_SRC_NAME (msg));
  gst_message_parse_error (msg, &err, &debug);
  all = g_strdup_printf ("%s | %s", err->message, debug ? debug : "");
  GST_INFO ("caps error: %s", all);
  fail_unless (strstr (all, needle) != NULL, "'%s' does not mention '%s'",
      all, needle);
  g_free (all);
  g_error_free (err);
  g_free (debug);
  gst_message_unref (msg);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (answer);
  gst_object_unref (src);
  gst_object_unref (pipeline);
}

GST_START_TEST (test_caps_mismatch)
{
  Stream *s = stream_new (AVQ_L0);
  Stream *side = stream_new (AVQ_L1);
  gchar *caps;

  /* the stream of another AVQ file (other codebook, side bits, layer) */
  check_caps_error (side->caps, frame_buffer (side, 0), "codebook");
  /* a codebook nobody has */
  caps = g_strdup_printf ("application/x-avq, version=(int)1, "
      "tokens=(int)577, index-bits=(int)12, side-bits=(int)0, "
      "codebook=(string)" TEST_CODEBOOK ", layer=(int)0");
  check_caps_error (caps, frame_buffer (s, 0), "codebook");
  g_free (caps);
  /* the right codebook with the wrong token count or bit widths */
  caps = g_strdup_printf ("application/x-avq, version=(int)1, "
      "tokens=(int)576, index-bits=(int)12, side-bits=(int)0, "
      "codebook=(string)%s, layer=(int)0", s->codebook);
  check_caps_error (caps, frame_buffer (s, 0), "576");
  g_free (caps);
  caps = g_strdup_printf ("application/x-avq, version=(int)1, "
      "tokens=(int)577, index-bits=(int)11, side-bits=(int)0, "
      "codebook=(string)%s, layer=(int)0", s->codebook);
  check_caps_error (caps, frame_buffer (s, 0), "11");
  g_free (caps);
  caps = g_strdup_printf ("application/x-avq, version=(int)1, "
      "tokens=(int)577, index-bits=(int)12, side-bits=(int)8, "
      "codebook=(string)%s, layer=(int)0", s->codebook);
  check_caps_error (caps, frame_buffer (s, 0), "side");
  g_free (caps);
  /* a required field missing */
  caps = g_strdup_printf ("application/x-avq, version=(int)1, "
      "tokens=(int)577, index-bits=(int)12, side-bits=(int)0, layer=(int)0");
  check_caps_error (caps, frame_buffer (s, 0), "codebook");
  g_free (caps);
  stream_free (side);
  stream_free (s);
}

GST_END_TEST;

static void
check_load_error (const gchar * model, const gchar * avq,
    const gchar * needle)
{
  GString *desc = g_string_new ("appsrc ! avqanswer name=answer");
  GstElement *pipeline, *answer;
  GstBus *bus;
  GstMessage *msg;
  GError *err = NULL;
  gchar *debug = NULL, *all;

  if (model)
    g_string_append_printf (desc, " model=\"%s\"", model);
  if (avq)
    g_string_append_printf (desc, " avq=\"%s\"", avq);
  g_string_append (desc, " question=\"" QUESTION "\" ! fakesink");
  pipeline = gst_parse_launch (desc->str, NULL);
  fail_unless (pipeline != NULL);
  answer = gst_bin_get_by_name (GST_BIN (pipeline), "answer");
  bus = gst_element_get_bus (pipeline);
  fail_unless_equals_int (gst_element_set_state (pipeline, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  msg = gst_bus_timed_pop_filtered (bus, 0, GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "no error message for %s", desc->str);
  fail_unless (GST_MESSAGE_SRC (msg) == GST_OBJECT (answer));
  gst_message_parse_error (msg, &err, &debug);
  fail_unless (err->domain == GST_RESOURCE_ERROR);
  all = g_strdup_printf ("%s | %s", err->message, debug ? debug : "");
  fail_unless (strstr (all, needle) != NULL, "'%s' does not name '%s'", all,
      needle);
  g_free (all);
  g_error_free (err);
  g_free (debug);
  gst_message_unref (msg);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (answer);
  gst_object_unref (pipeline);
  g_string_free (desc, TRUE);
}

GST_START_TEST (test_load_errors)
{
  g_autofree gchar *tmp = g_dir_make_tmp ("avqanswer-XXXXXX", NULL);
  g_autofree gchar *no_model = g_build_filename (tmp, "no-such-model", NULL);
  g_autofree gchar *no_avq = g_build_filename (tmp, "no-such.avq", NULL);

  fail_unless (tmp != NULL);
  check_load_error (no_model, AVQ_L0, no_model);
  check_load_error (MODEL_DIR, no_avq, no_avq);
  check_load_error (NULL, AVQ_L0, "model");
  check_load_error (MODEL_DIR, NULL, "avq");
  g_rmdir (tmp);
}

GST_END_TEST;

/* Two elements naming the same pool share one model: frames pushed into
 * both at once are answered (in one batch when they meet), each with the
 * reference's answer; an element naming the pool with another AVQ file
 * fails to start, naming the pool. */
typedef struct
{
  GstHarness *h;
  const Stream *s;
  GstClockTime pts;
  GstBuffer *out;
} Pusher;

static gpointer
push_and_pull (gpointer data)
{
  Pusher *p = data;
  if (gst_harness_push (p->h, frame_buffer (p->s, p->pts)) == GST_FLOW_OK)
    p->out = gst_harness_pull (p->h);
  return NULL;
}

GST_START_TEST (test_shared_pool)
{
  Stream *s = stream_new (AVQ_L0);
  g_autofree gchar *expected = expected_answer ();
  GstBus *bus[2];
  GstHarness *h[2];
  gchar *pool = NULL;
  guint max_batch = 0;

  for (guint i = 0; i < 2; i++) {
    GstElement *e = gst_element_factory_make ("avqanswer", NULL);
    fail_unless (e != NULL);
    g_object_set (e, "model", MODEL_DIR, "avq", AVQ_L0, "max-new-tokens",
        N_TOKENS, "wait-for-answer", TRUE, "question", QUESTION, "pool",
        "test-cams", "max-batch", 4, NULL);
    bus[i] = gst_bus_new ();
    gst_element_set_bus (e, bus[i]);
    h[i] = gst_harness_new_with_element (e, "sink", "src");
    gst_object_unref (e);
    gst_harness_set_src_caps_str (h[i], s->caps);
  }
  g_object_get (h[0]->element, "pool", &pool, "max-batch", &max_batch, NULL);
  fail_unless_equals_string (pool, "test-cams");
  fail_unless_equals_int (max_batch, 4);
  g_free (pool);

  for (guint round = 0; round < 2; round++) {
    Pusher p[2];
    GThread *t[2];
    for (guint i = 0; i < 2; i++) {
      p[i] = (Pusher) { h[i], s, GST_SECOND * (round + 1) + i, NULL };
      t[i] = g_thread_new ("pusher", push_and_pull, &p[i]);
    }
    for (guint i = 0; i < 2; i++) {
      g_thread_join (t[i]);
      fail_unless (p[i].out != NULL, "element %u gave no frame", i);
      check_meta (p[i].out, QUESTION, expected, p[i].pts);
      gst_buffer_unref (p[i].out);
    }
  }

  /* The pool is taken: another AVQ file under its name is refused. */
  {
    GstElement *pipeline = gst_parse_launch ("appsrc ! avqanswer name=answer "
        "model=\"" MODEL_DIR "\" avq=\"" AVQ_L1 "\" pool=test-cams "
        "! fakesink", NULL);
    GstBus *pbus = gst_element_get_bus (pipeline);
    GstMessage *msg;
    GError *err = NULL;
    gchar *debug = NULL;

    fail_unless_equals_int (gst_element_set_state (pipeline,
            GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
    msg = gst_bus_timed_pop_filtered (pbus, 0, GST_MESSAGE_ERROR);
    fail_unless (msg != NULL);
    gst_message_parse_error (msg, &err, &debug);
    fail_unless (debug != NULL && strstr (debug, "answer pool 'test-cams'"),
        "%s", debug ? debug : "(no debug)");
    g_error_free (err);
    g_free (debug);
    gst_message_unref (msg);
    gst_element_set_state (pipeline, GST_STATE_NULL);
    gst_object_unref (pbus);
    gst_object_unref (pipeline);
  }

  /* Both elements report the one pool's counters: 4 questions, in 2 to 4
   * batches depending on how the pushes met. */
  for (guint i = 0; i < 2; i++) {
    GstStructure *st = NULL;
    guint64 batches = 0, questions = 0;
    guint largest = 0;
    g_object_get (h[i]->element, "stats", &st, NULL);
    fail_unless (gst_structure_get_uint64 (st, "pool-batches", &batches));
    fail_unless (gst_structure_get_uint64 (st, "pool-questions", &questions));
    fail_unless (gst_structure_get_uint (st, "pool-largest-batch", &largest));
    fail_unless_equals_uint64 (questions, 4);
    fail_unless (batches >= 2 && batches <= 4, "%" G_GUINT64_FORMAT " batches", batches);
    fail_unless (largest >= 1 && largest <= 2);
    gst_structure_free (st);
  }

  for (guint i = 0; i < 2; i++)
    answer_teardown (h[i], bus[i]);

  /* Released by both: the name is free for another model now. */
  {
    GstElement *e = gst_element_factory_make ("avqanswer", NULL);
    GstBus *b = gst_bus_new ();
    g_object_set (e, "model", MODEL_DIR, "avq", AVQ_L1, "pool", "test-cams",
        NULL);
    gst_element_set_bus (e, b);
    fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
        GST_STATE_CHANGE_SUCCESS);
    gst_element_set_state (e, GST_STATE_NULL);
    gst_bus_set_flushing (b, TRUE);
    gst_object_unref (b);
    gst_object_unref (e);
  }
  stream_free (s);
}

GST_END_TEST;

/* ---- sampling: temperature, top-p, seed ---- */

#define SAMPLE_TOKENS 6
#define SAMPLE_FRAMES 2

typedef struct
{
  gchar *answer[SAMPLE_FRAMES + 1];
  guint tokens[SAMPLE_FRAMES + 1];
} Answers;

static void
answers_clear (Answers * a)
{
  for (guint i = 0; i < G_N_ELEMENTS (a->answer); i++)
    g_free (a->answer[i]);
  memset (a, 0, sizeof *a);
}

/* Pushes the frame at `pts` and returns its answer (meta, checked against
 * the bus message), with its token count. */
static gchar *
push_for_answer (GstHarness * h, GstBus * bus, const Stream * s,
    GstClockTime pts, guint * tokens)
{
  GstBuffer *out;
  GstAvqAnswerMeta *m;
  GstMessage *msg;
  const GstStructure *st;
  guint msg_tokens = 0;
  gchar *answer;

  fail_unless_equals_int (gst_harness_push (h, frame_buffer (s, pts)),
      GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  m = gst_buffer_get_avq_answer_meta (out);
  fail_unless (m != NULL, "no answer meta at %" GST_TIME_FORMAT,
      GST_TIME_ARGS (pts));
  fail_unless_equals_string (m->question, QUESTION);
  fail_unless_equals_uint64 (m->frame_pts, pts);
  fail_unless (m->n_tokens >= 1 && m->n_tokens <= SAMPLE_TOKENS,
      "%u tokens", m->n_tokens);
  answer = g_strdup (m->answer);
  *tokens = m->n_tokens;
  gst_buffer_unref (out);

  msg = pop_answer_message (bus, 0);
  fail_unless (msg != NULL, "no avq-answer message");
  st = gst_message_get_structure (msg);
  fail_unless_equals_string (gst_structure_get_string (st, "answer"), answer);
  fail_unless (gst_structure_get_uint (st, "tokens", &msg_tokens));
  fail_unless_equals_int (msg_tokens, *tokens);
  gst_message_unref (msg);
  /* no warning (a failed answer) or error on the way */
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING | GST_MESSAGE_ERROR);
  fail_unless (msg == NULL, "unexpected %s message",
      msg ? GST_MESSAGE_TYPE_NAME (msg) : "");
  return answer;
}

/* The answers to SAMPLE_FRAMES frames from a fresh element (wait-for-answer,
 * SAMPLE_TOKENS tokens). `set` FALSE leaves the sampling properties at
 * their defaults. */
static void
run_answers (const Stream * s, gboolean set, gfloat temperature,
    gfloat top_p, guint seed, Answers * out)
{
  GstBus *bus;
  GstHarness *h = answer_harness (s, QUESTION, 1, TRUE, &bus, NULL);

  g_object_set (h->element, "max-new-tokens", SAMPLE_TOKENS, NULL);
  if (set)
    g_object_set (h->element, "temperature", temperature, "top-p", top_p,
        "seed", seed, NULL);
  memset (out, 0, sizeof *out);
  for (guint i = 0; i < SAMPLE_FRAMES; i++)
    out->answer[i] = push_for_answer (h, bus, s, i * FRAME_DURATION,
        &out->tokens[i]);
  fail_unless_equals_uint64 (stats_get (h->element, "failed"), 0);
  answer_teardown (h, bus);
}

static void
check_float_spec (GObjectClass * klass, const gchar * name, gfloat def,
    gfloat min, gfloat max)
{
  GParamSpec *spec = g_object_class_find_property (klass, name);
  GParamSpecFloat *f;

  fail_unless (spec != NULL, "no property %s", name);
  fail_unless (G_IS_PARAM_SPEC_FLOAT (spec), "%s is not a float", name);
  f = G_PARAM_SPEC_FLOAT (spec);
  fail_unless (f->default_value == def, "%s default %g", name,
      f->default_value);
  fail_unless (f->minimum == min, "%s minimum %g", name, f->minimum);
  fail_unless (f->maximum == max, "%s maximum %g", name, f->maximum);
  fail_unless ((spec->flags & G_PARAM_READWRITE) == G_PARAM_READWRITE);
  fail_unless (spec->flags & GST_PARAM_MUTABLE_PLAYING,
      "%s not mutable while PLAYING", name);
}

GST_START_TEST (test_sampling)
{
  Stream *s = stream_new (AVQ_L0);
  GstElement *e = gst_element_factory_make ("avqanswer", NULL);
  GObjectClass *klass;
  GParamSpec *spec;
  gfloat temperature = -1, top_p = -1;
  guint seed = 1;
  Answers def, greedy, sampled[2];

  /* (1) defaults, ranges, round trips */
  fail_unless (e != NULL);
  klass = G_OBJECT_GET_CLASS (e);
  check_float_spec (klass, "temperature", 0.0f, 0.0f, 100.0f);
  /* top-p 0 would be an empty nucleus: the range excludes it */
  check_float_spec (klass, "top-p", 1.0f, 1e-6f, 1.0f);
  spec = g_object_class_find_property (klass, "seed");
  fail_unless (spec != NULL && G_IS_PARAM_SPEC_UINT (spec));
  fail_unless_equals_int (G_PARAM_SPEC_UINT (spec)->default_value, 0);
  fail_unless_equals_int (G_PARAM_SPEC_UINT (spec)->minimum, 0);
  fail_unless (G_PARAM_SPEC_UINT (spec)->maximum == G_MAXUINT);
  fail_unless (spec->flags & GST_PARAM_MUTABLE_PLAYING);
  spec = g_object_class_find_property (klass, "top-k");
  fail_unless (spec != NULL && G_IS_PARAM_SPEC_UINT (spec));
  fail_unless_equals_int (G_PARAM_SPEC_UINT (spec)->default_value, 0);
  fail_unless_equals_int (G_PARAM_SPEC_UINT (spec)->minimum, 0);
  fail_unless (spec->flags & GST_PARAM_MUTABLE_PLAYING);
  /* all four are in the element's property list (what gst-inspect
   * shows), each with a blurb */
  {
    static const gchar *names[] = { "temperature", "top-p", "top-k", "seed" };
    guint n_specs = 0, found = 0;
    GParamSpec **specs = g_object_class_list_properties (klass, &n_specs);

    for (guint i = 0; i < n_specs; i++)
      for (guint j = 0; j < G_N_ELEMENTS (names); j++)
        if (strcmp (g_param_spec_get_name (specs[i]), names[j]) == 0) {
          const gchar *blurb = g_param_spec_get_blurb (specs[i]);
          fail_unless (blurb != NULL && strlen (blurb) > 20, "%s", names[j]);
          found++;
        }
    g_free (specs);
    fail_unless_equals_int (found, G_N_ELEMENTS (names));
  }

  g_object_get (e, "temperature", &temperature, "top-p", &top_p, "seed",
      &seed, NULL);
  fail_unless (temperature == 0.0f && top_p == 1.0f && seed == 0);
  g_object_set (e, "temperature", 0.75f, "top-p", 0.5f, "seed", 4000000000u,
      NULL);
  g_object_get (e, "temperature", &temperature, "top-p", &top_p, "seed",
      &seed, NULL);
  fail_unless (temperature == 0.75f && top_p == 0.5f && seed == 4000000000u,
      "%g %g %u", temperature, top_p, seed);
  g_object_set (e, "temperature", 100.0f, "top-p", 1e-6f, NULL);
  g_object_get (e, "temperature", &temperature, "top-p", &top_p, NULL);
  fail_unless (temperature == 100.0f && top_p == 1e-6f);
  {
    guint top_k = 1;

    g_object_get (e, "top-k", &top_k, NULL);
    fail_unless_equals_int (top_k, 0);
    g_object_set (e, "top-k", 50, NULL);
    g_object_get (e, "top-k", &top_k, NULL);
    fail_unless_equals_int (top_k, 50);
  }
  gst_object_unref (e);

  /* (2) the default element answers greedily: temperature 0 set
   * explicitly (with a top-p and seed that greedy ignores) gives the same
   * answers */
  run_answers (s, FALSE, 0, 0, 0, &def);
  run_answers (s, TRUE, 0.0f, 0.9f, 7, &greedy);
  for (guint i = 0; i < SAMPLE_FRAMES; i++) {
    GST_INFO ("frame %u greedy: '%s' (%u tokens)", i, def.answer[i],
        def.tokens[i]);
    fail_unless_equals_string (greedy.answer[i], def.answer[i]);
    fail_unless_equals_int (greedy.tokens[i], def.tokens[i]);
    /* the same frame and question: the same greedy answer */
    fail_unless_equals_string (def.answer[i], def.answer[0]);
  }

  /* Sampling with a fixed seed is reproducible: two runs, equal answers;
   * within a run every question samples from the same seed (batches of
   * one), so the same frame gets the same answer. */
  for (guint r = 0; r < 2; r++)
    run_answers (s, TRUE, 1.0f, 0.9f, 7, &sampled[r]);
  for (guint i = 0; i < SAMPLE_FRAMES; i++) {
    GST_INFO ("frame %u sampled (T 1, top-p 0.9, seed 7): '%s' (%u tokens)",
        i, sampled[0].answer[i], sampled[0].tokens[i]);
    fail_unless_equals_string (sampled[1].answer[i], sampled[0].answer[i]);
    fail_unless_equals_int (sampled[1].tokens[i], sampled[0].tokens[i]);
    fail_unless_equals_string (sampled[0].answer[i], sampled[0].answer[0]);
  }
  /* On the fixture these settings do change the answer (observed:
   * greedy 'whatnLabilor whatή', sampled 'break своего magyarrelativeÐ
   * developers'). Sampling is not bound to differ from greedy in general;
   * this holds for these fixed values, and with a fixed seed the outcome
   * is deterministic (same seed, same tokens), so it cannot flake. A
   * change of the engine's random numbers may need other values here. */
  fail_if (g_strcmp0 (sampled[0].answer[0], def.answer[0]) == 0,
      "temperature 1 sampled the greedy answer '%s'", def.answer[0]);

  /* (3) the settings change while PLAYING and apply from the next
   * question: sampled, then greedy again, then another seed and
   * temperature */
  {
    GstBus *bus;
    GstHarness *h = answer_harness (s, QUESTION, 1, TRUE, &bus, NULL);
    gchar *answer;
    guint tokens;
    GstState state;

    g_object_set (h->element, "max-new-tokens", SAMPLE_TOKENS,
        "temperature", 1.0f, "top-p", 0.9f, "seed", 7, NULL);
    answer = push_for_answer (h, bus, s, 0, &tokens);
    fail_unless_equals_string (answer, sampled[0].answer[0]);
    g_free (answer);
    fail_unless_equals_int (gst_element_get_state (h->element, &state, NULL,
            0), GST_STATE_CHANGE_SUCCESS);
    fail_unless_equals_int (state, GST_STATE_PLAYING);

    g_object_set (h->element, "temperature", 0.0f, NULL);
    g_object_get (h->element, "temperature", &temperature, NULL);
    fail_unless (temperature == 0.0f);
    answer = push_for_answer (h, bus, s, FRAME_DURATION, &tokens);
    fail_unless_equals_string (answer, def.answer[0]);
    g_free (answer);

    /* sampling among the single most likely token is greedy */
    g_object_set (h->element, "temperature", 1.0f, "top-k", 1, NULL);
    answer = push_for_answer (h, bus, s, FRAME_DURATION + FRAME_DURATION / 2,
        &tokens);
    fail_unless_equals_string (answer, def.answer[0]);
    g_free (answer);
    g_object_set (h->element, "top-k", 0, NULL);

    g_object_set (h->element, "temperature", 2.5f, "top-p", 0.5f, "seed",
        8, NULL);
    g_object_get (h->element, "temperature", &temperature, "top-p", &top_p,
        "seed", &seed, NULL);
    fail_unless (temperature == 2.5f && top_p == 0.5f && seed == 8);
    answer = push_for_answer (h, bus, s, 2 * FRAME_DURATION, &tokens);
    GST_INFO ("sampled (T 2.5, top-p 0.5, seed 8): '%s' (%u tokens)", answer,
        tokens);
    g_free (answer);
    fail_unless_equals_uint64 (stats_get (h->element, "answers"), 4);
    fail_unless_equals_uint64 (stats_get (h->element, "failed"), 0);
    answer_teardown (h, bus);
  }

  answers_clear (&def);
  answers_clear (&greedy);
  answers_clear (&sampled[0]);
  answers_clear (&sampled[1]);
  stream_free (s);
}

GST_END_TEST;

static Suite *
avqanswer_suite (void)
{
  Suite *s = suite_create ("avqanswer");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_set_timeout (tc, 120);
  tcase_add_test (tc, test_answer_meta);
  tcase_add_test (tc, test_ask_signal);
  tcase_add_test (tc, test_interval);
  tcase_add_test (tc, test_background_answer);
  tcase_add_test (tc, test_eos_delivers_answer);
  tcase_add_test (tc, test_damaged_payload);
  tcase_add_test (tc, test_corrupt_frames);
  tcase_add_test (tc, test_caps_mismatch);
  tcase_add_test (tc, test_load_errors);
  tcase_add_test (tc, test_shared_pool);
  tcase_add_test (tc, test_sampling);
  return s;
}

GST_CHECK_MAIN (avqanswer);
