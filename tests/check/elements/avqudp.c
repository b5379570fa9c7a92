/* Real pipelines with timing: avqpay ! udpsink -> udpsrc ! rtpjitterbuffer
 * ! avqdepay over UDP on 127.0.0.1, and a live rtpjitterbuffer repairing
 * reordering and reporting loss to avqdepay. The UDP receiver's caps are
 * written by hand, as from an SDP file, so the string fields are exercised
 * the way a deployment uses them. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>

#include "avq-common.h"

#define N_FRAMES 60
#define PULL_TIMEOUT (5 * GST_SECOND)

static void
run_udp (guint mtu, guint side_bits, guint seed)
{
  GRand *rand = g_rand_new_with_seed (seed);
  gchar *avq_caps = avq_caps_string (577, 12, side_bits);
  gchar *desc;
  GstElement *rx, *tx, *udpsrc, *appsrc, *appsink, *depay;
  GstBuffer *sent[N_FRAMES];
  guint8 got[N_FRAMES] = { 0 };
  guint received = 0;
  gint port = 0;

  /* Receiver first, on port 0: the kernel picks a free port, which udpsrc
   * reports back once the socket is bound (READY -> PAUSED). */
  desc = g_strdup_printf ("udpsrc name=src port=0 address=127.0.0.1 "
      "caps=\"application/x-rtp, media=(string)application, "
      "clock-rate=(int)90000, encoding-name=(string)X-AVQ, payload=(int)96, "
      "version=(string)1, tokens=(string)577, index-bits=(string)12, "
      "side-bits=(string)%u, codebook=(string)" TEST_CODEBOOK ", "
      "layer=(string)%u\" ! rtpjitterbuffer latency=200 ! avqdepay name=depay "
      "! appsink name=sink sync=false max-buffers=0", side_bits,
      side_bits ? 1 : 0);
  rx = gst_parse_launch (desc, NULL);
  fail_unless (rx != NULL);
  g_free (desc);
  udpsrc = gst_bin_get_by_name (GST_BIN (rx), "src");
  appsink = gst_bin_get_by_name (GST_BIN (rx), "sink");
  depay = gst_bin_get_by_name (GST_BIN (rx), "depay");
  fail_unless (gst_element_set_state (rx, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE);
  g_object_get (udpsrc, "port", &port, NULL);
  fail_unless (port > 0, "udpsrc did not report its port");

  desc = g_strdup_printf ("appsrc name=src format=time caps=\"%s\" ! "
      "avqpay mtu=%u pt=96 ! udpsink host=127.0.0.1 port=%d sync=false "
      "async=false", avq_caps, mtu, port);
  tx = gst_parse_launch (desc, NULL);
  fail_unless (tx != NULL);
  g_free (desc);
  appsrc = gst_bin_get_by_name (GST_BIN (tx), "src");
  fail_unless (gst_element_set_state (tx, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE);

  for (guint i = 0; i < N_FRAMES; i++) {
    sent[i] = make_frame (rand, 577, 12, side_bits, i * FRAME_DURATION);
    fail_unless_equals_int (gst_app_src_push_buffer (GST_APP_SRC (appsrc),
            gst_buffer_ref (sent[i])), GST_FLOW_OK);
    /* A gentle pace (still 8x real time) keeps bursts well inside the
     * receive socket buffer on a loaded machine. */
    g_usleep (5000);
  }
  gst_app_src_end_of_stream (GST_APP_SRC (appsrc));

  /* Loopback does not lose packets in practice; should the kernel ever
   * drop one, the frame is missing, but nothing else may differ. */
  while (received < N_FRAMES) {
    GstSample *sample = gst_app_sink_try_pull_sample (GST_APP_SINK (appsink),
        PULL_TIMEOUT);
    GstBuffer *buf;
    guint match = N_FRAMES;

    if (sample == NULL)
      break;
    buf = gst_sample_get_buffer (sample);
    for (guint i = 0; i < N_FRAMES; i++) {
      if (!got[i] && buffers_equal (buf, sent[i])) {
        match = i;
        break;
      }
    }
    fail_unless (match < N_FRAMES, "received a frame that was never sent");
    got[match] = 1;
    received++;
    gst_sample_unref (sample);
  }
  {
    GstStructure *st = NULL;
    gchar *str;

    g_object_get (depay, "stats", &st, NULL);
    str = gst_structure_to_string (st);
    g_print ("udp mtu %u side %u: %u of %u frames; %s\n", mtu, side_bits,
        received, N_FRAMES, str);
    g_free (str);
    gst_structure_free (st);
  }
  fail_unless_equals_int (received, N_FRAMES);
  /* and in order */
  for (guint i = 0; i < N_FRAMES; i++)
    fail_unless (got[i]);
  fail_unless_equals_uint64 (stats_get (depay, "frames-out"), N_FRAMES);
  fail_unless_equals_uint64 (stats_get (depay, "frames-dropped"), 0);
  fail_unless_equals_uint64 (stats_get (depay, "packets-invalid"), 0);

  gst_element_set_state (tx, GST_STATE_NULL);
  gst_element_set_state (rx, GST_STATE_NULL);
  for (guint i = 0; i < N_FRAMES; i++)
    gst_buffer_unref (sent[i]);
  gst_object_unref (udpsrc);
  gst_object_unref (appsink);
  gst_object_unref (appsrc);
  gst_object_unref (depay);
  gst_object_unref (tx);
  gst_object_unref (rx);
  g_free (avq_caps);
  g_rand_free (rand);
}

GST_START_TEST (test_udp_loopback)
{
  run_udp (1400, 0, 1);
}

GST_END_TEST;

GST_START_TEST (test_udp_loopback_fragmented)
{
  run_udp (300, 8, 2);
}

GST_END_TEST;

/* Packets arrive live, some swapped within a frame and some missing: the
 * jitterbuffer restores the order and reports each gap as a
 * GstRTPPacketLost event, avqdepay drops exactly the frames that lost a
 * packet. */
GST_START_TEST (test_jitterbuffer_reorder_loss)
{
  const guint n = 25;
  GRand *rand = g_rand_new_with_seed (3);
  GstHarness *pay = gst_harness_new ("avqpay");
  gchar *avq_caps = avq_caps_string (577, 12, 0);
  GstElement *rx, *appsrc, *appsink, *depay;
  GPtrArray *frames = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  GstCaps *rtp_caps;
  guint8 *got = g_new0 (guint8, n);
  guint expected = 0, received = 0, lossy = 0;

  g_object_set (pay->element, "mtu", 200, NULL);
  gst_harness_set_src_caps_str (pay, avq_caps);

  rx = gst_parse_launch ("appsrc name=src is-live=true do-timestamp=true "
      "format=time ! rtpjitterbuffer latency=150 do-lost=true ! "
      "avqdepay name=depay ! appsink name=sink sync=false", NULL);
  fail_unless (rx != NULL);
  appsrc = gst_bin_get_by_name (GST_BIN (rx), "src");
  appsink = gst_bin_get_by_name (GST_BIN (rx), "sink");
  depay = gst_bin_get_by_name (GST_BIN (rx), "depay");

  for (guint f = 0; f < n; f++) {
    GstBuffer *frame = make_frame (rand, 577, 12, 0, f * FRAME_DURATION);
    GstBuffer *pk[8];
    guint np;

    g_ptr_array_add (frames, gst_buffer_ref (frame));
    fail_unless_equals_int (gst_harness_push (pay, frame), GST_FLOW_OK);
    np = gst_harness_buffers_in_queue (pay);
    fail_unless_equals_int (np, 5);
    for (guint k = 0; k < np; k++)
      pk[k] = gst_harness_pull (pay);

    if (f == 0) {
      rtp_caps = gst_pad_get_current_caps (pay->sinkpad);
      g_object_set (appsrc, "caps", rtp_caps, NULL);
      gst_caps_unref (rtp_caps);
      fail_unless (gst_element_set_state (rx, GST_STATE_PLAYING)
          != GST_STATE_CHANGE_FAILURE);
    }
    /* every third frame reordered, every fifth (from the fourth) loses its
     * middle packet; never the first frames, so the jitterbuffer knows the
     * stream before the first gap */
    if (f % 3 == 1) {
      GstBuffer *t = pk[1];
      pk[1] = pk[3];
      pk[3] = t;
    }
    for (guint k = 0; k < np; k++) {
      if (f % 5 == 3 && k == 2) {
        gst_buffer_unref (pk[k]);
        continue;
      }
      /* the jitterbuffer takes arrival times from do-timestamp */
      GST_BUFFER_PTS (pk[k]) = GST_CLOCK_TIME_NONE;
      GST_BUFFER_DTS (pk[k]) = GST_CLOCK_TIME_NONE;
      fail_unless_equals_int (gst_app_src_push_buffer (GST_APP_SRC (appsrc),
              pk[k]), GST_FLOW_OK);
    }
    if (f % 5 == 3)
      lossy++;
    else
      expected++;
    g_usleep (FRAME_DURATION / 1000);
  }

  while (received < expected) {
    GstSample *sample = gst_app_sink_try_pull_sample (GST_APP_SINK (appsink),
        PULL_TIMEOUT);
    GstBuffer *buf;
    guint match = n;

    if (sample == NULL)
      break;
    buf = gst_sample_get_buffer (sample);
    for (guint i = 0; i < n; i++) {
      if (buffers_equal (buf, g_ptr_array_index (frames, i))) {
        match = i;
        break;
      }
    }
    fail_unless (match < n, "received a frame that was never sent");
    fail_if (got[match], "frame %u twice", match);
    fail_if (match % 5 == 3, "frame %u lost a packet yet came out", match);
    got[match] = 1;
    received++;
    gst_sample_unref (sample);
  }
  fail_unless_equals_int (received, expected);
  fail_unless_equals_uint64 (stats_get (depay, "frames-out"), expected);
  fail_unless_equals_uint64 (stats_get (depay, "frames-dropped"), lossy);
  fail_unless (stats_get (depay, "packets-lost") >= lossy);
  fail_unless_equals_uint64 (stats_get (depay, "packets-invalid"), 0);

  gst_element_set_state (rx, GST_STATE_NULL);
  gst_object_unref (appsrc);
  gst_object_unref (appsink);
  gst_object_unref (depay);
  gst_object_unref (rx);
  gst_harness_teardown (pay);
  g_ptr_array_unref (frames);
  g_free (got);
  g_free (avq_caps);
  g_rand_free (rand);
}

GST_END_TEST;

static Suite *
avqudp_suite (void)
{
  Suite *s = suite_create ("avqudp");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, test_udp_loopback);
  tcase_add_test (tc, test_udp_loopback_fragmented);
  tcase_add_test (tc, test_jitterbuffer_reorder_loss);
  return s;
}

GST_CHECK_MAIN (avqudp);
