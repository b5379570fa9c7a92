/* End to end over real UDP on 127.0.0.1: videotestsrc -> avqencode -> tee
 * (a copy of every AVQ frame sent) -> avqpay -> udpsink, and udpsrc ->
 * rtpjitterbuffer -> avqdepay (-> avqanswer) -> appsink. Every frame sent
 * arrives bit for bit, in order, with its timing; with avqanswer at the
 * receiving end each frame carries the answer the engine gives for the
 * frame that was sent. The receiver's caps are written by hand from the
 * AVQ file, as an SDP file would give them. Every wait is bounded. */
#include <gst/check/gstcheck.h>
#include <gst/app/gstappsink.h>
#include <string.h>

#include "avq-common.h"
#include "avq-answerer.h"
#include "avq-engine.h"
#include "gstavqanswermeta.h"

#define MODEL_DIR AVQ_TEST_DATA_DIR "/tiny-llava"
#define QUESTION "What is the cat doing?"
#define N_TOKENS 8
#define PULL_TIMEOUT (10 * GST_SECOND)

typedef struct
{
  const gchar *avq;             /* file name in MODEL_DIR */
  guint mtu;
  guint n_frames;
  const gchar *pattern;         /* videotestsrc pattern */
  gboolean answer;              /* avqanswer at the receiving end */
} Case;

static gchar *
rtp_caps_for (const AvqEngine * engine)
{
  char hex[17];

  avq_codebook_id_to_hex (avq_engine_codebook_id (engine), hex);
  return g_strdup_printf ("application/x-rtp, media=(string)application, "
      "clock-rate=(int)90000, encoding-name=(string)X-AVQ, payload=(int)96, "
      "version=(string)1, tokens=(string)%u, index-bits=(string)%u, "
      "side-bits=(string)%u, codebook=(string)%s, layer=(string)%d",
      avq_engine_tokens (engine), avq_engine_index_bits (engine),
      avq_engine_side_bits (engine), hex, avq_engine_split_layer (engine));
}

/* Every sample an appsink has until EOS (or `timeout` without one). */
static GPtrArray *
pull_all (GstElement * sink, guint max, GstClockTime timeout)
{
  GPtrArray *out = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_sample_unref);

  while (out->len < max) {
    GstSample *s = gst_app_sink_try_pull_sample (GST_APP_SINK (sink),
        timeout);
    if (s == NULL)
      break;
    g_ptr_array_add (out, s);
  }
  return out;
}

static GstBuffer *
sample_buffer (GPtrArray * samples, guint i)
{
  return gst_sample_get_buffer (g_ptr_array_index (samples, i));
}

static gchar *
bus_error (GstElement * pipeline)
{
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  gchar *str = NULL;

  if (msg) {
    GError *err = NULL;
    gchar *debug = NULL;
    gst_message_parse_error (msg, &err, &debug);
    str = g_strdup_printf ("%s: %s | %s", GST_MESSAGE_SRC_NAME (msg),
        err->message, debug ? debug : "");
    g_error_free (err);
    g_free (debug);
    gst_message_unref (msg);
  }
  gst_object_unref (bus);
  return str;
}

static void
run_case (const Case * c)
{
  g_autofree gchar *avq = g_build_filename (MODEL_DIR, c->avq, NULL);
  AvqEngineOptions eopt = { .model_dir = MODEL_DIR, .avq_path = avq };
  GError *error = NULL;
  AvqEngine *engine = avq_engine_new (&eopt, &error);
  g_autofree gchar *rtp_caps = NULL;
  g_autofree gchar *rx_desc = NULL, *tx_desc = NULL, *answer_part = NULL;
  GstElement *rx, *tx, *udpsrc, *rx_sink, *tx_sink, *depay, *enc;
  GPtrArray *sent, *received;
  gint port = 0;

  fail_unless (engine != NULL, "%s", error ? error->message : "?");
  rtp_caps = rtp_caps_for (engine);

  /* Receiver first, on port 0: the kernel picks a free port, which udpsrc
   * reports once bound. A large socket buffer keeps a burst on a loaded
   * machine. */
  answer_part = c->answer ? g_strdup_printf ("avqanswer name=answer "
      "model=\"%s\" avq=\"%s\" question=\"%s\" max-new-tokens=%d "
      "wait-for-answer=true ! ", MODEL_DIR, avq, QUESTION, N_TOKENS)
      : g_strdup ("");
  rx_desc = g_strdup_printf ("udpsrc name=src port=0 address=127.0.0.1 "
      "buffer-size=4194304 caps=\"%s\" ! rtpjitterbuffer latency=200 "
      "mode=none ! avqdepay name=depay ! %sappsink name=sink sync=false",
      rtp_caps, answer_part);
  rx = gst_parse_launch (rx_desc, &error);
  fail_unless (rx != NULL && error == NULL, "%s: %s", rx_desc,
      error ? error->message : "?");
  udpsrc = gst_bin_get_by_name (GST_BIN (rx), "src");
  rx_sink = gst_bin_get_by_name (GST_BIN (rx), "sink");
  depay = gst_bin_get_by_name (GST_BIN (rx), "depay");
  fail_unless (gst_element_set_state (rx, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE, "receiver does not start");
  g_object_get (udpsrc, "port", &port, NULL);
  fail_unless (port > 0, "udpsrc did not report its port");

  /* Sender: the encoder is not live, so every frame is encoded; identity
   * paces the packets (5 ms) so that bursts stay well inside the socket
   * buffer. */
  tx_desc = g_strdup_printf ("videotestsrc num-buffers=%u pattern=%s ! "
      "video/x-raw,width=336,height=336,framerate=25/1 ! avqencode name=enc "
      "model=\"%s\" avq=\"%s\" ! tee name=t ! queue ! appsink name=sent "
      "sync=false  t. ! queue ! identity sleep-time=5000 ! avqpay mtu=%u "
      "pt=96 ! udpsink host=127.0.0.1 port=%d sync=false async=false",
      c->n_frames, c->pattern, MODEL_DIR, avq, c->mtu, port);
  tx = gst_parse_launch (tx_desc, &error);
  fail_unless (tx != NULL && error == NULL, "%s: %s", tx_desc,
      error ? error->message : "?");
  tx_sink = gst_bin_get_by_name (GST_BIN (tx), "sent");
  enc = gst_bin_get_by_name (GST_BIN (tx), "enc");
  fail_unless (gst_element_set_state (tx, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE, "sender does not start");

  sent = pull_all (tx_sink, c->n_frames, PULL_TIMEOUT);
  fail_unless_equals_int (sent->len, c->n_frames);
  {
    GstBus *bus = gst_element_get_bus (tx);
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, PULL_TIMEOUT,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    fail_unless (msg != NULL && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS,
        "sender did not finish: %s", bus_error (tx));
    gst_message_unref (msg);
    gst_object_unref (bus);
  }
  fail_unless_equals_uint64 (stats_get (enc, "frames-encoded"), c->n_frames);

  /* udpsrc never ends: take frames until all have come or none for a
   * while (the jitterbuffer holds each for its latency) */
  received = pull_all (rx_sink, c->n_frames, PULL_TIMEOUT);
  {
    gchar *err = bus_error (rx);
    fail_if (err != NULL, "receiver error: %s", err);
  }
  GST_INFO ("%s mtu %u: %u of %u frames", c->avq, c->mtu, received->len,
      sent->len);
  fail_unless_equals_int (received->len, sent->len);
  fail_unless_equals_uint64 (stats_get (depay, "frames-out"), c->n_frames);
  fail_unless_equals_uint64 (stats_get (depay, "frames-dropped"), 0);
  fail_unless_equals_uint64 (stats_get (depay, "packets-invalid"), 0);

  {
    AvqAnswerer *answerer = NULL;
    GstClockTime pts0_sent = GST_BUFFER_PTS (sample_buffer (sent, 0));
    GstClockTime pts0_recv = GST_BUFFER_PTS (sample_buffer (received, 0));

    if (c->answer) {
      AvqAnswererOptions aopt = { .model_dir = MODEL_DIR, .avq_path = avq };
      answerer = avq_answerer_new (&aopt, &error);
      fail_unless (answerer != NULL, "%s", error ? error->message : "?");
    }
    fail_unless (GST_CLOCK_TIME_IS_VALID (pts0_recv));
    for (guint i = 0; i < sent->len; i++) {
      GstBuffer *s = sample_buffer (sent, i), *r = sample_buffer (received, i);

      fail_unless_equals_uint64 (GST_BUFFER_PTS (s), i * FRAME_DURATION);
      fail_unless (buffers_equal (s, r), "frame %u differs", i);
      /* The receiver's clock starts at the first frame's arrival; the
       * timing between frames is the sender's, from the RTP timestamps. */
      fail_unless_equals_uint64 (GST_BUFFER_PTS (r) - pts0_recv,
          GST_BUFFER_PTS (s) - pts0_sent);
      if (answerer) {
        GstAvqAnswerMeta *m = gst_buffer_get_avq_answer_meta (r);
        AvqAskOptions options;
        AvqAnswer *expected;
        AvqFrame *frame;
        GstMapInfo map;

        fail_unless (m != NULL, "frame %u has no answer", i);
        fail_unless_equals_string (m->question, QUESTION);
        fail_unless_equals_uint64 (m->frame_pts, GST_BUFFER_PTS (r));
        /* the engine's answer for the frame that was sent */
        avq_ask_options_init (&options);
        options.max_new_tokens = N_TOKENS;
        fail_unless (gst_buffer_map (s, &map, GST_MAP_READ));
        frame = avq_frame_parse (map.data, map.size, &error);
        gst_buffer_unmap (s, &map);
        fail_unless (frame != NULL, "%s", error ? error->message : "?");
        expected = avq_answerer_ask_frame (answerer, frame, QUESTION,
            &options, &error);
        fail_unless (expected != NULL, "%s", error ? error->message : "?");
        fail_unless_equals_string (m->answer, expected->text);
        fail_unless_equals_int (m->n_tokens, expected->ids->len);
        avq_answer_free (expected);
        avq_frame_free (frame);
      }
    }
    if (answerer)
      avq_answerer_free (answerer);
  }

  gst_element_set_state (tx, GST_STATE_NULL);
  gst_element_set_state (rx, GST_STATE_NULL);
  g_ptr_array_unref (sent);
  g_ptr_array_unref (received);
  gst_object_unref (enc);
  gst_object_unref (tx_sink);
  gst_object_unref (depay);
  gst_object_unref (rx_sink);
  gst_object_unref (udpsrc);
  gst_object_unref (tx);
  gst_object_unref (rx);
  avq_engine_free (engine);
}

/* One packet a frame. */
GST_START_TEST (test_udp_l0)
{
  const Case c = { "avq-L0-derive.safetensors", 1400, 12, "ball", FALSE };
  run_case (&c);
}

GST_END_TEST;

/* Side information, several fragments a frame. */
GST_START_TEST (test_udp_l1_side_fragmented)
{
  const Case c = { "avq-L1-side8.safetensors", 400, 12, "smpte", FALSE };
  run_case (&c);
}

GST_END_TEST;

/* The whole system: answers at the receiving end. */
GST_START_TEST (test_udp_answer)
{
  const Case c = { "avq-L0-derive.safetensors", 600, 6, "ball", TRUE };
  run_case (&c);
}

GST_END_TEST;

static Suite *
avqpipeline_suite (void)
{
  Suite *s = suite_create ("avqpipeline");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_set_timeout (tc, 120);
  tcase_add_test (tc, test_udp_l0);
  tcase_add_test (tc, test_udp_l1_side_fragmented);
  tcase_add_test (tc, test_udp_answer);
  return s;
}

GST_CHECK_MAIN (avqpipeline);
