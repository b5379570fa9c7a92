/* avqpay / avqdepay with GstHarness: bit-exact round trips at several MTUs,
 * loss, reordering, duplicates, malformed and random packets. Randomness
 * comes from fixed GRand seeds so failures reproduce. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/rtp/gstrtpbuffer.h>
#include <gst/sdp/gstsdpmessage.h>
#include <gst/video/video-event.h>
#include <math.h>

#include "avq-common.h"

#define TOKENS 577
#define INDEX_BITS 12
#define HDR 8                   /* X-AVQ payload header */

static const guint mtus[] = { 100, 200, 576, 1400, 9000 };

/* ---- helpers ---- */

typedef struct
{
  GPtrArray *frames;            /* GstBuffer per frame */
  GPtrArray *packets;           /* GPtrArray of GstBuffer per frame */
  GstCaps *rtp_caps;
} Payloaded;

static void
payloaded_free (Payloaded * p)
{
  g_ptr_array_unref (p->frames);
  g_ptr_array_unref (p->packets);
  gst_caps_unref (p->rtp_caps);
  g_free (p);
}

/* Runs `n` random frames through avqpay alone and keeps every packet. */
static Payloaded *
payload_frames (guint seed, guint n, guint mtu, guint side_bits)
{
  GRand *rand = g_rand_new_with_seed (seed);
  GstHarness *h = gst_harness_new ("avqpay");
  gchar *caps = avq_caps_string (TOKENS, INDEX_BITS, side_bits);
  Payloaded *p = g_new0 (Payloaded, 1);

  p->frames = g_ptr_array_new_with_free_func ((GDestroyNotify) gst_buffer_unref);
  p->packets = g_ptr_array_new_with_free_func ((GDestroyNotify) g_ptr_array_unref);
  g_object_set (h->element, "mtu", mtu, NULL);
  gst_harness_set_src_caps_str (h, caps);
  for (guint i = 0; i < n; i++) {
    GstBuffer *frame = make_frame (rand, TOKENS, INDEX_BITS, side_bits,
        i * FRAME_DURATION);
    GPtrArray *pk = g_ptr_array_new_with_free_func (
        (GDestroyNotify) gst_buffer_unref);
    guint got;

    g_ptr_array_add (p->frames, gst_buffer_ref (frame));
    fail_unless_equals_int (gst_harness_push (h, frame), GST_FLOW_OK);
    got = gst_harness_buffers_in_queue (h);
    for (guint k = 0; k < got; k++)
      g_ptr_array_add (pk, gst_harness_pull (h));
    g_ptr_array_add (p->packets, pk);
  }
  p->rtp_caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (p->rtp_caps != NULL);
  gst_harness_teardown (h);
  g_free (caps);
  g_rand_free (rand);
  return p;
}

static GstHarness *
depay_harness (const Payloaded * p, gint max_reorder)
{
  GstHarness *h = gst_harness_new ("avqdepay");

  if (max_reorder >= 0)
    g_object_set (h->element, "max-reorder", max_reorder, NULL);
  gst_harness_set_src_caps (h, gst_caps_ref (p->rtp_caps));
  return h;
}

static GstBuffer *
packet (const Payloaded * p, guint frame, guint k)
{
  GPtrArray *pk = g_ptr_array_index (p->packets, frame);
  return g_ptr_array_index (pk, k);
}

static guint
n_packets (const Payloaded * p, guint frame)
{
  return ((GPtrArray *) g_ptr_array_index (p->packets, frame))->len;
}

/* Every buffer the harness has: each must equal the input frame with its
 * PTS. Returns how many. */
static guint
check_outputs (GstHarness * h, const Payloaded * p, guint8 * seen)
{
  GstBuffer *out;
  guint n = 0;

  while ((out = gst_harness_try_pull (h)) != NULL) {
    GstClockTime pts = GST_BUFFER_PTS (out);
    guint idx;

    fail_unless (GST_CLOCK_TIME_IS_VALID (pts));
    idx = (guint) (pts / FRAME_DURATION);
    fail_unless (idx < p->frames->len, "PTS %" GST_TIME_FORMAT " unknown",
        GST_TIME_ARGS (pts));
    fail_unless_equals_uint64 (pts, idx * FRAME_DURATION);
    fail_unless (buffers_equal (out, g_ptr_array_index (p->frames, idx)),
        "frame %u differs", idx);
    if (seen != NULL) {
      fail_if (seen[idx], "frame %u came out twice", idx);
      seen[idx] = 1;
    }
    gst_buffer_unref (out);
    n++;
  }
  return n;
}

static GstBuffer *
copy_packet_with (GstBuffer * in, guint payload_off, guint8 value)
{
  GstBuffer *b = gst_buffer_copy_deep (in);
  GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;

  fail_unless (gst_rtp_buffer_map (b, GST_MAP_WRITE, &rtp));
  ((guint8 *) gst_rtp_buffer_get_payload (&rtp))[payload_off] = value;
  gst_rtp_buffer_unmap (&rtp);
  return b;
}

static void
shuffle (GRand * rand, guint * v, guint n)
{
  for (guint i = n; i > 1; i--) {
    guint j = g_rand_int_range (rand, 0, i);
    guint t = v[i - 1];
    v[i - 1] = v[j];
    v[j] = t;
  }
}

/* ---- payloader ---- */

GST_START_TEST (test_pay_packets)
{
  for (guint m = 0; m < G_N_ELEMENTS (mtus); m++) {
    for (guint side = 0; side <= 8; side += 8) {
      guint mtu = mtus[m];
      Payloaded *p = payload_frames (100 + m, 6, mtu, side);
      gsize frame_size = avq_frame_serialized_size (TOKENS, INDEX_BITS, side);
      guint max_data = gst_rtp_buffer_calc_payload_len (mtu, 0, 0) - HDR;
      guint32 ts0 = 0;
      const GstStructure *s = gst_caps_get_structure (p->rtp_caps, 0);
      gint pt;

      /* SDP-style string parameters */
      fail_unless_equals_string (gst_structure_get_string (s, "encoding-name"),
          "X-AVQ");
      fail_unless_equals_string (gst_structure_get_string (s, "media"),
          "application");
      fail_unless (gst_structure_get_int (s, "payload", &pt) && pt >= 96);
      fail_unless_equals_string (gst_structure_get_string (s, "version"), "1");
      fail_unless_equals_string (gst_structure_get_string (s, "tokens"), "577");
      fail_unless_equals_string (gst_structure_get_string (s, "index-bits"),
          "12");
      fail_unless_equals_string (gst_structure_get_string (s, "side-bits"),
          side ? "8" : "0");
      fail_unless_equals_string (gst_structure_get_string (s, "codebook"),
          TEST_CODEBOOK);
      fail_unless_equals_string (gst_structure_get_string (s, "layer"),
          side ? "1" : "0");
      fail_unless_equals_string (gst_structure_get_string (s, "a-framerate"),
          "25");

      for (guint f = 0; f < p->frames->len; f++) {
        guint np = n_packets (p, f);
        GByteArray *joined = g_byte_array_new ();
        GstMapInfo map;

        fail_unless_equals_int (np, (frame_size + max_data - 1) / max_data);
        for (guint k = 0; k < np; k++) {
          GstBuffer *b = packet (p, f, k);
          GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;
          const guint8 *pl;
          guint len;

          fail_unless (gst_buffer_get_size (b) <= mtu);
          fail_unless_equals_uint64 (GST_BUFFER_PTS (b), f * FRAME_DURATION);
          fail_unless (gst_rtp_buffer_map (b, GST_MAP_READ, &rtp));
          pl = gst_rtp_buffer_get_payload (&rtp);
          len = gst_rtp_buffer_get_payload_len (&rtp);
          fail_unless (len > HDR);
          fail_unless_equals_int (pl[0], 0x10);       /* V=1, R=0 */
          fail_unless_equals_int ((pl[1] << 16) | (pl[2] << 8) | pl[3],
              frame_size);
          fail_unless_equals_int (pl[4], f & 0xff);    /* frame count */
          fail_unless_equals_int ((pl[5] << 16) | (pl[6] << 8) | pl[7],
              joined->len);
          fail_unless_equals_int (gst_rtp_buffer_get_marker (&rtp), k == np - 1);
          if (f == 0 && k == 0)
            ts0 = gst_rtp_buffer_get_timestamp (&rtp);
          /* 90 kHz clock, 25 frames a second */
          fail_unless_equals_int (gst_rtp_buffer_get_timestamp (&rtp) - ts0,
              f * 3600);
          if (k + 1 < np)
            fail_unless_equals_int (len - HDR, max_data);
          g_byte_array_append (joined, pl + HDR, len - HDR);
          gst_rtp_buffer_unmap (&rtp);
        }
        gst_buffer_map (g_ptr_array_index (p->frames, f), &map, GST_MAP_READ);
        fail_unless_equals_int (joined->len, map.size);
        fail_unless (memcmp (joined->data, map.data, map.size) == 0);
        gst_buffer_unmap (g_ptr_array_index (p->frames, f), &map);
        g_byte_array_unref (joined);
      }
      payloaded_free (p);
    }
  }
}

GST_END_TEST;

GST_START_TEST (test_pay_rejects_bad_input)
{
  GRand *rand = g_rand_new_with_seed (7);
  GstHarness *h = gst_harness_new ("avqpay");
  gchar *caps = avq_caps_string (TOKENS, INDEX_BITS, 0);
  GstBuffer *good, *other, *cut, *garbage;

  gst_harness_set_src_caps_str (h, caps);
  good = make_frame (rand, TOKENS, INDEX_BITS, 0, 0);
  other = make_frame (rand, TOKENS, 10, 0, 0);   /* other index width */
  cut = gst_buffer_copy_region (good, GST_BUFFER_COPY_ALL, 0, 500);
  garbage = gst_buffer_new_allocate (NULL, 882, NULL);
  gst_buffer_memset (garbage, 0, 0x5a, 882);

  /* Frames that do not fit the caps are dropped with a warning, and the
   * stream continues. */
  fail_unless_equals_int (gst_harness_push (h, other), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, cut), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, garbage), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  fail_unless_equals_int (gst_harness_push (h, good), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 1);
  fail_unless_equals_uint64 (stats_get (h->element, "frames-invalid"), 3);
  fail_unless_equals_uint64 (stats_get (h->element, "frames-in"), 4);
  fail_unless_equals_uint64 (stats_get (h->element, "packets-out"), 1);

  gst_harness_teardown (h);
  g_free (caps);
  g_rand_free (rand);
}

GST_END_TEST;

GST_START_TEST (test_pay_rejects_bad_caps)
{
  const gchar *bad[] = {
    "application/x-avq, version=(int)1, tokens=(int)577, index-bits=(int)12,"
        " side-bits=(int)0, codebook=(string)xyz, layer=(int)0",
    "application/x-avq, version=(int)1, tokens=(int)577, index-bits=(int)12,"
        " side-bits=(int)0, layer=(int)0",
    "application/x-avq, version=(int)1, tokens=(int)577, index-bits=(int)12,"
        " side-bits=(int)0, codebook=(string)" TEST_CODEBOOK,
  };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    GstHarness *h = gst_harness_new ("avqpay");
    GRand *rand = g_rand_new_with_seed (i);

    gst_harness_set_src_caps_str (h, bad[i]);
    fail_if (gst_harness_push (h, make_frame (rand, TOKENS, INDEX_BITS, 0,
                0)) == GST_FLOW_OK, "caps %u accepted", i);
    gst_harness_teardown (h);
    g_rand_free (rand);
  }
}

GST_END_TEST;

/* ---- round trip ---- */

GST_START_TEST (test_roundtrip_mtus)
{
  for (guint m = 0; m < G_N_ELEMENTS (mtus); m++) {
    for (guint side = 0; side <= 8; side += 8) {
      GRand *rand = g_rand_new_with_seed (1000 + m * 16 + side);
      gchar *pipeline = g_strdup_printf ("avqpay mtu=%u ! avqdepay", mtus[m]);
      GstHarness *h = gst_harness_new_parse (pipeline);
      gchar *caps = avq_caps_string (TOKENS, INDEX_BITS, side);
      GstElement *depay;
      const guint n = 30;

      gst_harness_set_src_caps_str (h, caps);
      for (guint i = 0; i < n; i++) {
        GstBuffer *in = make_frame (rand, TOKENS, INDEX_BITS, side,
            i * FRAME_DURATION);
        GstBuffer *out;

        fail_unless_equals_int (gst_harness_push (h, gst_buffer_ref (in)),
            GST_FLOW_OK);
        out = gst_harness_pull (h);
        fail_unless (buffers_equal (in, out), "mtu %u frame %u", mtus[m], i);
        fail_unless_equals_uint64 (GST_BUFFER_PTS (out), GST_BUFFER_PTS (in));
        fail_if (GST_BUFFER_FLAG_IS_SET (out, GST_BUFFER_FLAG_DISCONT)
            && i > 0);
        gst_buffer_unref (in);
        gst_buffer_unref (out);
      }
      {
        /* the caps survive the trip through the string fields */
        GstCaps *got = gst_pad_get_current_caps (h->sinkpad);
        GstCaps *want = gst_caps_from_string (caps);
        fail_unless (gst_caps_is_equal (got, want), "%" GST_PTR_FORMAT, got);
        gst_caps_unref (got);
        gst_caps_unref (want);
      }
      depay = gst_harness_find_element (h, "avqdepay");
      fail_unless_equals_uint64 (stats_get (depay, "frames-out"), n);
      fail_unless_equals_uint64 (stats_get (depay, "frames-dropped"), 0);
      fail_unless_equals_uint64 (stats_get (depay, "frames-invalid"), 0);
      fail_unless_equals_uint64 (stats_get (depay, "packets-invalid"), 0);
      fail_unless_equals_uint64 (stats_get (depay, "bytes-out"),
          n * avq_frame_serialized_size (TOKENS, INDEX_BITS, side));
      gst_object_unref (depay);
      gst_harness_teardown (h);
      g_free (caps);
      g_free (pipeline);
      g_rand_free (rand);
    }
  }
}

GST_END_TEST;

GST_START_TEST (test_roundtrip_min_mtu)
{
  /* The smallest MTU the base class allows leaves 8 data bytes a packet. */
  Payloaded *p = payload_frames (900, 3, 28, 8);
  GstHarness *h = depay_harness (p, -1);
  guint8 seen[3] = { 0 };

  fail_unless_equals_int (n_packets (p, 0), (2052 + 7) / 8);
  for (guint f = 0; f < p->frames->len; f++)
    for (guint k = 0; k < n_packets (p, f); k++)
      gst_harness_push (h, gst_buffer_ref (packet (p, f, k)));
  fail_unless_equals_int (check_outputs (h, p, seen), 3);
  gst_harness_teardown (h);
  payloaded_free (p);
}

GST_END_TEST;

GST_START_TEST (test_roundtrip_shapes)
{
  /* Other stream shapes: tiny frames, wide indices and side codes. */
  const guint shapes[][3] = { {1, 1, 0}, {1, 16, 16}, {3, 5, 1}, {2000, 16, 16},
  {577, 12, 3}, {65535, 1, 0}
  };

  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++) {
    GRand *rand = g_rand_new_with_seed (s);
    GstHarness *h = gst_harness_new_parse ("avqpay mtu=300 ! avqdepay");
    gchar *caps = avq_caps_string (shapes[s][0], shapes[s][1], shapes[s][2]);

    gst_harness_set_src_caps_str (h, caps);
    for (guint i = 0; i < 4; i++) {
      GstBuffer *in = make_frame (rand, shapes[s][0], shapes[s][1],
          shapes[s][2], i * FRAME_DURATION);
      GstBuffer *out;

      fail_unless_equals_int (gst_harness_push (h, gst_buffer_ref (in)),
          GST_FLOW_OK);
      out = gst_harness_pull (h);
      fail_unless (buffers_equal (in, out));
      gst_buffer_unref (in);
      gst_buffer_unref (out);
    }
    gst_harness_teardown (h);
    g_free (caps);
    g_rand_free (rand);
  }
}

GST_END_TEST;

/* ---- loss ---- */

GST_START_TEST (test_loss_identity)
{
  const gdouble probs[] = { 0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8 };

  for (guint i = 0; i < G_N_ELEMENTS (probs); i++) {
    GRand *rand = g_rand_new_with_seed (2000 + i);
    gchar *pipeline = g_strdup_printf ("avqpay mtu=200 ! "
        "identity drop-probability=%g ! avqdepay", probs[i]);
    GstHarness *h = gst_harness_new_parse (pipeline);
    gchar *caps = avq_caps_string (TOKENS, INDEX_BITS, i % 2 ? 8 : 0);
    Payloaded ref = { 0, };
    GstElement *depay;
    guint8 seen[200] = { 0 };
    guint n = 200, out, dropped;

    ref.frames = g_ptr_array_new_with_free_func (
        (GDestroyNotify) gst_buffer_unref);
    gst_harness_set_src_caps_str (h, caps);
    for (guint f = 0; f < n; f++) {
      GstBuffer *in = make_frame (rand, TOKENS, INDEX_BITS, i % 2 ? 8 : 0,
          f * FRAME_DURATION);
      g_ptr_array_add (ref.frames, gst_buffer_ref (in));
      fail_unless_equals_int (gst_harness_push (h, in), GST_FLOW_OK);
    }
    gst_harness_push_event (h, gst_event_new_eos ());
    out = check_outputs (h, &ref, seen);
    depay = gst_harness_find_element (h, "avqdepay");
    dropped = stats_get (depay, "frames-dropped");
    fail_unless_equals_uint64 (stats_get (depay, "frames-out"), out);
    fail_unless_equals_uint64 (stats_get (depay, "frames-invalid"), 0);
    fail_unless_equals_uint64 (stats_get (depay, "packets-invalid"), 0);
    /* a frame whose every packet was lost is never seen, so <= */
    fail_unless (out + dropped <= n);
    if (probs[i] == 0.0) {
      fail_unless_equals_int (out, n);
    } else {
      fail_unless (dropped > 0);
    }
    {
      /* A frame survives when all its packets do. */
      gsize fs = avq_frame_serialized_size (TOKENS, INDEX_BITS, i % 2 ? 8 : 0);
      guint np = (fs + 179) / 180;
      gdouble expect = n * pow (1 - probs[i], np);

      g_print ("loss p=%.2f, %u packets a frame: %u of %u frames out "
          "(expected ~%.0f), %u dropped\n", probs[i], np, out, n, expect,
          dropped);
      fail_unless (out + 5 >= expect * 0.5 && out <= MIN (n, expect * 1.5 + 5));
    }
    gst_object_unref (depay);
    g_ptr_array_unref (ref.frames);
    gst_harness_teardown (h);
    g_free (caps);
    g_free (pipeline);
    g_rand_free (rand);
  }
}

GST_END_TEST;

GST_START_TEST (test_loss_exact)
{
  /* Packets dropped by hand so every counter can be predicted. */
  for (guint seed = 0; seed < 20; seed++) {
    GRand *rand = g_rand_new_with_seed (seed);
    guint mtu = mtus[seed % G_N_ELEMENTS (mtus)];
    Payloaded *p = payload_frames (3000 + seed, 60, mtu, seed % 3 ? 0 : 8);
    GstHarness *h = depay_harness (p, -1);
    gdouble drop = 0.05 * (seed % 6);
    guint complete = 0, seen_frames = 0, pushed = 0, out;
    guint8 *expect_out = g_new0 (guint8, p->frames->len);
    guint8 *seen = g_new0 (guint8, p->frames->len);
    gboolean lost_before = FALSE;

    for (guint f = 0; f < p->frames->len; f++) {
      guint np = n_packets (p, f), sent = 0;

      for (guint k = 0; k < np; k++) {
        if (g_rand_double (rand) < drop)
          continue;
        fail_unless_equals_int (gst_harness_push (h,
                gst_buffer_ref (packet (p, f, k))), GST_FLOW_OK);
        sent++;
      }
      pushed += sent;
      if (sent > 0)
        seen_frames++;
      if (sent == np) {
        GstBuffer *out_buf;

        complete++;
        expect_out[f] = 1;
        /* a complete frame comes out at once, flagged after a loss */
        out_buf = gst_harness_pull (h);
        fail_unless_equals_uint64 (GST_BUFFER_PTS (out_buf), f * FRAME_DURATION);
        fail_unless (buffers_equal (out_buf, g_ptr_array_index (p->frames, f)));
        fail_unless_equals_int (GST_BUFFER_FLAG_IS_SET (out_buf,
                GST_BUFFER_FLAG_DISCONT), lost_before);
        seen[f] = 1;
        gst_buffer_unref (out_buf);
        lost_before = FALSE;
      } else if (pushed > 0) {
        /* Only a gap after something was received is a discontinuity: a
         * stream whose first frames never arrived simply starts later. */
        lost_before = TRUE;
      }
    }
    /* EOS abandons a last partial frame */
    gst_harness_push_event (h, gst_event_new_eos ());
    out = check_outputs (h, p, seen);
    fail_unless_equals_int (out, 0);
    fail_unless_equals_uint64 (stats_get (h->element, "frames-out"), complete);
    fail_unless_equals_uint64 (stats_get (h->element, "frames-dropped"),
        seen_frames - complete);
    fail_unless_equals_uint64 (stats_get (h->element, "packets-received"),
        pushed);
    fail_unless_equals_uint64 (stats_get (h->element, "packets-invalid"), 0);
    for (guint f = 0; f < p->frames->len; f++)
      fail_unless_equals_int (seen[f], expect_out[f]);

    /* A loss asks upstream for a key unit; no loss, no request. */
    {
      guint64 req = stats_get (h->element, "key-unit-requests");
      guint events = 0;
      GstEvent *ev;

      while ((ev = gst_harness_try_pull_upstream_event (h)) != NULL) {
        if (gst_video_event_is_force_key_unit (ev))
          events++;
        gst_event_unref (ev);
      }
      fail_unless_equals_int (events, req);
      fail_unless_equals_int (req > 0, seen_frames > complete);
    }
    g_free (expect_out);
    g_free (seen);
    gst_harness_teardown (h);
    payloaded_free (p);
    g_rand_free (rand);
  }
}

GST_END_TEST;

GST_START_TEST (test_packet_lost_event)
{
  Payloaded *p = payload_frames (42, 3, 200, 0);
  GstHarness *h = depay_harness (p, -1);
  GstBuffer *out;
  GstEvent *ev;
  gboolean gap = FALSE;

  /* frame 0 whole, so that a segment exists downstream */
  for (guint k = 0; k < n_packets (p, 0); k++)
    gst_harness_push (h, gst_buffer_ref (packet (p, 0, k)));
  gst_buffer_unref (gst_harness_pull (h));
  /* half of frame 1, then the jitterbuffer says the next one is lost */
  gst_harness_push (h, gst_buffer_ref (packet (p, 1, 0)));
  gst_harness_push (h, gst_buffer_ref (packet (p, 1, 1)));
  fail_unless (gst_harness_push_event (h,
          gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM,
              gst_structure_new ("GstRTPPacketLost",
                  "seqnum", G_TYPE_UINT, 1000,
                  "timestamp", G_TYPE_UINT64, FRAME_DURATION,
                  "duration", G_TYPE_UINT64, FRAME_DURATION, NULL))));
  fail_unless_equals_uint64 (stats_get (h->element, "frames-dropped"), 1);
  fail_unless_equals_uint64 (stats_get (h->element, "packets-lost"), 1);
  /* the rest of frame 1 is recognised as belonging to the dropped frame */
  for (guint k = 3; k < n_packets (p, 1); k++)
    gst_harness_push (h, gst_buffer_ref (packet (p, 1, k)));
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  fail_unless_equals_uint64 (stats_get (h->element, "frames-dropped"), 1);
  /* frame 2 goes out, DISCONT */
  for (guint k = 0; k < n_packets (p, 2); k++)
    gst_harness_push (h, gst_buffer_ref (packet (p, 2, k)));
  out = gst_harness_pull (h);
  fail_unless (buffers_equal (out, g_ptr_array_index (p->frames, 2)));
  fail_unless (GST_BUFFER_FLAG_IS_SET (out, GST_BUFFER_FLAG_DISCONT));
  gst_buffer_unref (out);
  /* time moved on downstream: the base class sent a GAP */
  while ((ev = gst_harness_try_pull_event (h)) != NULL) {
    if (GST_EVENT_TYPE (ev) == GST_EVENT_GAP)
      gap = TRUE;
    gst_event_unref (ev);
  }
  fail_unless (gap);
  fail_unless_equals_uint64 (stats_get (h->element, "frames-out"), 2);
  gst_harness_teardown (h);
  payloaded_free (p);
}

GST_END_TEST;

/* ---- reordering and duplicates ---- */

GST_START_TEST (test_reorder_within_frame)
{
  /* With max-reorder=0 the base class lets reordered packets through and
   * avqdepay places them by offset: every frame comes out. */
  for (guint seed = 0; seed < 10; seed++) {
    GRand *rand = g_rand_new_with_seed (seed);
    Payloaded *p = payload_frames (4000 + seed, 30, 100 + seed * 20,
        seed % 2 ? 8 : 0);
    GstHarness *h = depay_harness (p, 0);
    guint8 seen[30] = { 0 };

    for (guint f = 0; f < p->frames->len; f++) {
      guint np = n_packets (p, f);
      guint *order = g_new (guint, np);

      for (guint k = 0; k < np; k++)
        order[k] = k;
      shuffle (rand, order, np);
      for (guint k = 0; k < np; k++)
        fail_unless_equals_int (gst_harness_push (h,
                gst_buffer_ref (packet (p, f, order[k]))), GST_FLOW_OK);
      g_free (order);
    }
    fail_unless_equals_int (check_outputs (h, p, seen), p->frames->len);
    fail_unless_equals_uint64 (stats_get (h->element, "frames-dropped"), 0);
    gst_harness_teardown (h);
    payloaded_free (p);
    g_rand_free (rand);
  }
}

GST_END_TEST;

GST_START_TEST (test_reorder_default)
{
  /* With the default max-reorder the base class drops packets older than
   * one already seen: frames that lose one are dropped, never corrupted. */
  GRand *rand = g_rand_new_with_seed (5);
  Payloaded *p = payload_frames (4100, 40, 200, 0);
  GstHarness *h = depay_harness (p, -1);
  guint8 seen[40] = { 0 };
  guint swapped = 0, out;

  for (guint f = 0; f < p->frames->len; f++) {
    guint np = n_packets (p, f);
    gboolean swap = g_rand_boolean (rand);

    for (guint k = 0; k < np; k++) {
      guint kk = k;
      if (swap && k == 1)
        kk = 2;
      else if (swap && k == 2)
        kk = 1;
      gst_harness_push (h, gst_buffer_ref (packet (p, f, kk)));
    }
    swapped += swap;
  }
  gst_harness_push_event (h, gst_event_new_eos ());
  out = check_outputs (h, p, seen);
  fail_unless_equals_int (out, p->frames->len - swapped);
  fail_unless_equals_uint64 (stats_get (h->element, "frames-dropped"), swapped);
  fail_unless_equals_uint64 (stats_get (h->element, "frames-invalid"), 0);
  gst_harness_teardown (h);
  payloaded_free (p);
  g_rand_free (rand);
}

GST_END_TEST;

GST_START_TEST (test_duplicates)
{
  Payloaded *p = payload_frames (5000, 20, 200, 8);
  guint total = 0;

  for (guint f = 0; f < p->frames->len; f++)
    total += n_packets (p, f);

  /* The base class drops same-seqnum duplicates itself by default. */
  {
    GstHarness *h = depay_harness (p, -1);
    guint8 seen[20] = { 0 };

    for (guint f = 0; f < p->frames->len; f++)
      for (guint k = 0; k < n_packets (p, f); k++) {
        gst_harness_push (h, gst_buffer_ref (packet (p, f, k)));
        gst_harness_push (h, gst_buffer_ref (packet (p, f, k)));
      }
    fail_unless_equals_int (check_outputs (h, p, seen), p->frames->len);
    gst_harness_teardown (h);
  }
  /* Let them through: avqdepay counts them and still outputs each frame
   * exactly once. Duplicates of a finished frame's last packet, and a whole
   * repeated frame, are recognised too. */
  {
    GstHarness *h = depay_harness (p, 0);
    guint8 seen[20] = { 0 };

    for (guint f = 0; f < p->frames->len; f++) {
      for (guint k = 0; k < n_packets (p, f); k++) {
        gst_harness_push (h, gst_buffer_ref (packet (p, f, k)));
        gst_harness_push (h, gst_buffer_ref (packet (p, f, k)));
      }
    }
    for (guint k = 0; k < n_packets (p, 3); k++)
      gst_harness_push (h, gst_buffer_ref (packet (p, 3, k)));
    fail_unless_equals_int (check_outputs (h, p, seen), p->frames->len);
    fail_unless_equals_uint64 (stats_get (h->element, "frames-out"),
        p->frames->len);
    fail_unless_equals_uint64 (stats_get (h->element, "duplicates"), total);
    fail_unless_equals_uint64 (stats_get (h->element, "packets-late"),
        n_packets (p, 3));
    fail_unless_equals_uint64 (stats_get (h->element, "frames-dropped"), 0);
    gst_harness_teardown (h);
  }
  payloaded_free (p);
}

GST_END_TEST;

/* ---- hostile input ---- */

GST_START_TEST (test_malformed_packets)
{
  Payloaded *p = payload_frames (6000, 4, 200, 0);
  GstHarness *h = depay_harness (p, 0);
  GstBuffer *first = packet (p, 0, 0), *last;
  guint np = n_packets (p, 0);
  guint invalid = 0;
  guint8 seen[4] = { 0 };

  last = packet (p, 0, np - 1);
  /* header mutations of a real packet: version, reserved, frame length,
   * offset past the end */
  gst_harness_push (h, copy_packet_with (first, 0, 0x20)); invalid++;
  gst_harness_push (h, copy_packet_with (first, 0, 0x11)); invalid++;
  gst_harness_push (h, copy_packet_with (first, 3, 0x71)); invalid++;
  gst_harness_push (h, copy_packet_with (first, 1, 0xff)); invalid++;
  gst_harness_push (h, copy_packet_with (first, 5, 0x10)); invalid++;
  /* the last fragment without its marker, a middle one with it */
  {
    GstBuffer *b = gst_buffer_copy_deep (last);
    GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;
    gst_rtp_buffer_map (b, GST_MAP_WRITE, &rtp);
    gst_rtp_buffer_set_marker (&rtp, FALSE);
    gst_rtp_buffer_unmap (&rtp);
    gst_harness_push (h, b); invalid++;
    b = gst_buffer_copy_deep (first);
    gst_rtp_buffer_map (b, GST_MAP_WRITE, &rtp);
    gst_rtp_buffer_set_marker (&rtp, TRUE);
    gst_rtp_buffer_unmap (&rtp);
    gst_harness_push (h, b); invalid++;
  }
  /* payloads of 0..8 bytes: no room for any data */
  for (guint len = 0; len <= HDR; len++) {
    GstBuffer *b = gst_rtp_buffer_new_allocate (len, 0, 0);
    GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;
    gst_rtp_buffer_map (b, GST_MAP_WRITE, &rtp);
    gst_rtp_buffer_set_payload_type (&rtp, 96);
    if (len > 0)
      memset (gst_rtp_buffer_get_payload (&rtp), 0x10, len);
    gst_rtp_buffer_unmap (&rtp);
    gst_harness_push (h, b); invalid++;
  }
  fail_unless_equals_uint64 (stats_get (h->element, "packets-invalid"),
      invalid);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  /* the real packets still make their frames */
  for (guint f = 0; f < p->frames->len; f++)
    for (guint k = 0; k < n_packets (p, f); k++)
      gst_harness_push (h, gst_buffer_ref (packet (p, f, k)));
  fail_unless_equals_int (check_outputs (h, p, seen), p->frames->len);
  fail_unless_equals_uint64 (stats_get (h->element, "packets-invalid"),
      invalid);

  /* A forged fragment that contradicts received data spoils its frame. */
  {
    Payloaded *q = payload_frames (6001, 2, 200, 0);
    GstHarness *h2 = depay_harness (q, 0);
    GstBuffer *forged = copy_packet_with (packet (q, 0, 0), HDR + 20, 0x00);
    GstBuffer *orig = packet (q, 0, 0);
    GstMapInfo map;
    gboolean differs;

    gst_buffer_map (orig, &map, GST_MAP_READ);
    differs = map.data[12 + HDR + 20] != 0x00;
    gst_buffer_unmap (orig, &map);
    gst_harness_push (h2, gst_buffer_ref (orig));
    gst_harness_push (h2, forged);
    for (guint k = 1; k < n_packets (q, 0); k++)
      gst_harness_push (h2, gst_buffer_ref (packet (q, 0, k)));
    if (differs) {
      fail_unless_equals_int (gst_harness_buffers_in_queue (h2), 0);
      fail_unless_equals_uint64 (stats_get (h2->element, "frames-invalid"), 1);
    }
    for (guint k = 0; k < n_packets (q, 1); k++)
      gst_harness_push (h2, gst_buffer_ref (packet (q, 1, k)));
    check_outputs (h2, q, NULL);
    fail_unless_equals_uint64 (stats_get (h2->element, "frames-out"),
        differs ? 1 : 2);
    gst_harness_teardown (h2);
    payloaded_free (q);
  }
  gst_harness_teardown (h);
  payloaded_free (p);
}

GST_END_TEST;

/* Builds X-AVQ packets for an arbitrary byte string posing as a frame. */
static void
push_raw_frame (GstHarness * h, const guint8 * data, gsize size, guint count,
    guint16 * seq, guint32 ts)
{
  const gsize chunk = 150;

  for (gsize off = 0; off < size; off += chunk) {
    gsize len = MIN (chunk, size - off);
    GstBuffer *b = gst_rtp_buffer_new_allocate (HDR + len, 0, 0);
    GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;
    guint8 *pl;

    gst_rtp_buffer_map (b, GST_MAP_WRITE, &rtp);
    gst_rtp_buffer_set_payload_type (&rtp, 96);
    gst_rtp_buffer_set_seq (&rtp, (*seq)++);
    gst_rtp_buffer_set_timestamp (&rtp, ts);
    gst_rtp_buffer_set_ssrc (&rtp, 0x1234);
    gst_rtp_buffer_set_marker (&rtp, off + len == size);
    pl = gst_rtp_buffer_get_payload (&rtp);
    pl[0] = 0x10;
    pl[1] = size >> 16;
    pl[2] = size >> 8;
    pl[3] = size;
    pl[4] = count;
    pl[5] = off >> 16;
    pl[6] = off >> 8;
    pl[7] = off;
    memcpy (pl + HDR, data + off, len);
    gst_rtp_buffer_unmap (&rtp);
    GST_BUFFER_PTS (b) = ts;
    gst_harness_push (h, b);
  }
}

GST_START_TEST (test_invalid_frames)
{
  /* Complete reassembly of bytes that are not a valid frame of this stream:
   * each is rejected by the frame checks, the good one passes. */
  GRand *rand = g_rand_new_with_seed (9);
  GstHarness *h = gst_harness_new ("avqdepay");
  GstBuffer *good = make_frame (rand, TOKENS, INDEX_BITS, 0, 0);
  GstMapInfo map;
  guint8 *d;
  guint16 seq = 0;
  guint count = 0, bad = 0;
  GstBuffer *out;

  gst_harness_set_src_caps_str (h, "application/x-rtp, media=application, "
      "clock-rate=90000, encoding-name=X-AVQ, payload=96, version=(string)1, "
      "tokens=(string)577, index-bits=(string)12, side-bits=(string)0, "
      "codebook=(string)" TEST_CODEBOOK ", layer=(string)0");
  gst_buffer_map (good, &map, GST_MAP_READ);
  d = g_memdup2 (map.data, map.size);

  d[8] ^= 1;                    /* codebook id */
  push_raw_frame (h, d, map.size, count++, &seq, 1000); bad++;
  d[8] ^= 1;
  d[map.size - 1] |= 0x80;      /* padding bits */
  push_raw_frame (h, d, map.size, count++, &seq, 2000); bad++;
  d[map.size - 1] &= 0x0f;
  d[0] = 2;                     /* version */
  push_raw_frame (h, d, map.size, count++, &seq, 3000); bad++;
  d[0] = 1;
  d[1] = 0;                     /* no keyframe bit */
  push_raw_frame (h, d, map.size, count++, &seq, 4000); bad++;
  d[1] = 1;
  d[4] = 11;                    /* width that does not fit the size */
  push_raw_frame (h, d, map.size, count++, &seq, 5000); bad++;
  d[4] = 12;
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  fail_unless_equals_uint64 (stats_get (h->element, "frames-invalid"), bad);

  push_raw_frame (h, d, map.size, count++, &seq, 6000);
  out = gst_harness_pull (h);
  fail_unless (buffers_equal (out, good));
  fail_unless (GST_BUFFER_FLAG_IS_SET (out, GST_BUFFER_FLAG_DISCONT));
  gst_buffer_unref (out);

  gst_buffer_unmap (good, &map);
  gst_buffer_unref (good);
  g_free (d);
  gst_harness_teardown (h);
  g_rand_free (rand);
}

GST_END_TEST;

GST_START_TEST (test_random_packets)
{
  /* Random bytes, random RTP payloads and real packets mixed, many seeds:
   * no crash, and whatever comes out is one of the real frames. */
  Payloaded *p = payload_frames (7000, 30, 200, 8);

  for (guint seed = 0; seed < 200; seed++) {
    GRand *rand = g_rand_new_with_seed (seed);
    GstHarness *h = depay_harness (p, seed % 2 ? 0 : -1);
    guint f = 0, k = 0;

    for (guint step = 0; step < 300; step++) {
      guint what = g_rand_int_range (rand, 0, 4);
      GstBuffer *b;

      if (what == 0) {
        /* not necessarily RTP at all */
        gsize len = g_rand_int_range (rand, 0, 400);
        guint8 *bytes = g_malloc (len + 1);
        for (gsize i = 0; i < len; i++)
          bytes[i] = g_rand_int_range (rand, 0, 256);
        if (len >= 12 && g_rand_boolean (rand))
          bytes[0] = 0x80;      /* looks like RTP v2 */
        b = gst_buffer_new_wrapped (bytes, len);
      } else if (what == 1) {
        /* valid RTP, payload random but with a plausible X-AVQ header */
        gsize len = g_rand_int_range (rand, 0, 300);
        GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;
        guint8 *pl;

        b = gst_rtp_buffer_new_allocate (len, 0, 0);
        gst_rtp_buffer_map (b, GST_MAP_WRITE, &rtp);
        gst_rtp_buffer_set_payload_type (&rtp, 96);
        gst_rtp_buffer_set_seq (&rtp, g_rand_int_range (rand, 0, 65536));
        gst_rtp_buffer_set_timestamp (&rtp, g_rand_int (rand));
        gst_rtp_buffer_set_marker (&rtp, g_rand_boolean (rand));
        pl = gst_rtp_buffer_get_payload (&rtp);
        for (gsize i = 0; i < len; i++)
          pl[i] = g_rand_int_range (rand, 0, 256);
        if (len >= HDR && g_rand_boolean (rand)) {
          gsize fs = avq_frame_serialized_size (TOKENS, INDEX_BITS, 8);
          pl[0] = 0x10;
          pl[1] = fs >> 16;
          pl[2] = fs >> 8;
          pl[3] = fs;
          pl[5] = 0;
          pl[6] = g_rand_int_range (rand, 0, 8);
        }
        gst_rtp_buffer_unmap (&rtp);
      } else {
        /* the next real packet */
        if (f >= p->frames->len)
          break;
        b = gst_buffer_ref (packet (p, f, k));
        if (++k == n_packets (p, f)) {
          k = 0;
          f++;
        }
      }
      gst_harness_push (h, b);
    }
    gst_harness_push_event (h, gst_event_new_eos ());
    check_outputs (h, p, NULL);
    gst_harness_teardown (h);
    g_rand_free (rand);
  }
  payloaded_free (p);
}

GST_END_TEST;

/* ---- negotiation ---- */

GST_START_TEST (test_depay_bad_caps)
{
  const gchar *base = "application/x-rtp, media=application, "
      "clock-rate=90000, encoding-name=X-AVQ, payload=96";
  const gchar *bad[] = {
    "version=(string)2, tokens=(string)577, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)abc, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)0, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)-5, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)\" 5\", index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)+5, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)0x10, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)65536, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)577, index-bits=(string)0, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)577, index-bits=(string)17, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)577, index-bits=(string)12, side-bits=(string)99999999999999999999, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(string)1, tokens=(string)577, index-bits=(string)12, side-bits=(string)0, codebook=(string)0123, layer=(string)0",
    "version=(string)1, tokens=(string)577, index-bits=(string)12, side-bits=(string)0, codebook=(string)0123456789abcdeZ, layer=(string)0",
    "version=(string)1, tokens=(string)577, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)256",
    "version=(string)1, tokens=(string)577, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK,
    "tokens=(string)577, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0",
    "version=(int)1, tokens=(int)577, index-bits=(int)12, side-bits=(int)0, codebook=(string)" TEST_CODEBOOK ", layer=(int)0",
    "version=(string)1, tokens=(string)577, index-bits=(string)12, side-bits=(string)0, codebook=(string)" TEST_CODEBOOK ", layer=(string)0, a-framerate=(string)fast",
  };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    GstHarness *h = gst_harness_new ("avqdepay");
    gchar *caps = g_strdup_printf ("%s, %s", base, bad[i]);
    GstBuffer *b = gst_rtp_buffer_new_allocate (20, 0, 0);

    /* Element warnings go to the bus; the negotiation fails. */
    gst_harness_set_src_caps_str (h, caps);
    fail_if (gst_harness_push (h, b) == GST_FLOW_OK, "caps %u accepted: %s",
        i, caps);
    fail_unless (gst_pad_get_current_caps (h->sinkpad) == NULL);
    g_free (caps);
    gst_harness_teardown (h);
  }
}

GST_END_TEST;

GST_START_TEST (test_depay_framerate)
{
  GstHarness *h = gst_harness_new ("avqdepay");
  GstCaps *got;
  gint n, d;

  gst_harness_set_src_caps_str (h, "application/x-rtp, media=application, "
      "clock-rate=90000, encoding-name=X-AVQ, payload=96, version=(string)1, "
      "tokens=(string)577, index-bits=(string)12, side-bits=(string)0, "
      "codebook=(string)0123456789ABCDEF, layer=(string)0, "
      "a-framerate=(string)29.97");
  /* caps go downstream at negotiation, before any packet */
  got = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (got != NULL);
  fail_unless (gst_structure_get_fraction (gst_caps_get_structure (got, 0),
          "framerate", &n, &d));
  fail_unless_equals_int (n, 2997);
  fail_unless_equals_int (d, 100);
  fail_unless_equals_string (gst_structure_get_string
      (gst_caps_get_structure (got, 0), "codebook"), TEST_CODEBOOK);
  gst_caps_unref (got);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* ---- SDP ---- */

static const gchar sdp_text[] =
    "v=0\r\n"
    "o=- 0 0 IN IP4 127.0.0.1\r\n"
    "s=AVQ stream\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=application 5000 RTP/AVP 96\r\n"
    "a=rtpmap:96 X-AVQ/90000\r\n"
    "a=fmtp:96 version=1;tokens=577;index-bits=12;side-bits=0;"
    "codebook=0123456789abcdef;layer=0\r\n"
    "a=framerate:25\r\n";

GST_START_TEST (test_sdp)
{
  Payloaded *p = payload_frames (8000, 5, 576, 0);
  GstSDPMedia *media;
  GstSDPMessage *msg;
  GstCaps *caps;
  GstHarness *h;
  guint8 seen[5] = { 0 };
  const gchar *fmtp;

  /* payloader caps -> SDP: the parameters land in a=fmtp */
  gst_sdp_media_new (&media);
  fail_unless_equals_int (gst_sdp_media_set_media_from_caps (p->rtp_caps,
          media), GST_SDP_OK);
  fail_unless_equals_string (gst_sdp_media_get_attribute_val (media, "rtpmap"),
      "96 X-AVQ/90000");
  fmtp = gst_sdp_media_get_attribute_val (media, "fmtp");
  fail_unless (fmtp != NULL);
  fail_unless (strstr (fmtp, "version=1") != NULL, "%s", fmtp);
  fail_unless (strstr (fmtp, "tokens=577") != NULL, "%s", fmtp);
  fail_unless (strstr (fmtp, "index-bits=12") != NULL, "%s", fmtp);
  fail_unless (strstr (fmtp, "side-bits=0") != NULL, "%s", fmtp);
  fail_unless (strstr (fmtp, "codebook=" TEST_CODEBOOK) != NULL, "%s", fmtp);
  fail_unless (strstr (fmtp, "layer=0") != NULL, "%s", fmtp);
  fail_unless_equals_string (gst_sdp_media_get_attribute_val (media,
          "framerate"), "25");
  gst_sdp_media_free (media);

  /* the SDP of docs/rtp-payload-format.md -> caps -> avqdepay */
  gst_sdp_message_new (&msg);
  fail_unless_equals_int (gst_sdp_message_parse_buffer ((const guint8 *)
          sdp_text, strlen (sdp_text), msg), GST_SDP_OK);
  media = (GstSDPMedia *) gst_sdp_message_get_media (msg, 0);
  caps = gst_sdp_media_get_caps_from_media (media, 96);
  fail_unless (caps != NULL);
  gst_sdp_media_attributes_to_caps (media, caps);
  gst_structure_set_name (gst_caps_get_structure (caps, 0), "application/x-rtp");
  h = gst_harness_new ("avqdepay");
  gst_harness_set_src_caps (h, caps);
  for (guint f = 0; f < p->frames->len; f++)
    for (guint k = 0; k < n_packets (p, f); k++)
      gst_harness_push (h, gst_buffer_ref (packet (p, f, k)));
  fail_unless_equals_int (check_outputs (h, p, seen), p->frames->len);
  {
    GstCaps *out = gst_pad_get_current_caps (h->sinkpad);
    gchar *str = avq_caps_string (TOKENS, INDEX_BITS, 0);
    GstCaps *want = gst_caps_from_string (str);
    fail_unless (gst_caps_is_equal (out, want), "%" GST_PTR_FORMAT, out);
    gst_caps_unref (out);
    gst_caps_unref (want);
    g_free (str);
  }
  gst_harness_teardown (h);
  gst_sdp_message_free (msg);
  payloaded_free (p);
}

GST_END_TEST;

static Suite *
avqrtp_suite (void)
{
  Suite *s = suite_create ("avqrtp");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_set_timeout (tc, 120);
  tcase_add_test (tc, test_pay_packets);
  tcase_add_test (tc, test_pay_rejects_bad_input);
  tcase_add_test (tc, test_pay_rejects_bad_caps);
  tcase_add_test (tc, test_roundtrip_mtus);
  tcase_add_test (tc, test_roundtrip_min_mtu);
  tcase_add_test (tc, test_roundtrip_shapes);
  tcase_add_test (tc, test_loss_identity);
  tcase_add_test (tc, test_loss_exact);
  tcase_add_test (tc, test_packet_lost_event);
  tcase_add_test (tc, test_reorder_within_frame);
  tcase_add_test (tc, test_reorder_default);
  tcase_add_test (tc, test_duplicates);
  tcase_add_test (tc, test_malformed_packets);
  tcase_add_test (tc, test_invalid_frames);
  tcase_add_test (tc, test_random_packets);
  tcase_add_test (tc, test_depay_bad_caps);
  tcase_add_test (tc, test_depay_framerate);
  tcase_add_test (tc, test_sdp);
  return s;
}

GST_CHECK_MAIN (avqrtp);
