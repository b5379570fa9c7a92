/* avqdepay: reassembles X-AVQ RTP packets (docs/rtp-payload-format.md) into
 * AVQ frames.
 *
 * Fragments are placed by their byte offset, so the frame is complete when
 * every byte has arrived, whatever order the packets came in. A frame that
 * never completes is dropped and counted, never pushed half-filled: the
 * cloud side cannot use a frame with missing indices. Every complete frame
 * is run through the strict frame parser and checked against the caps
 * before it leaves.
 *
 * Example:
 *   udpsrc caps="application/x-rtp,..." ! rtpjitterbuffer ! avqdepay ! ...
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstavqdepay.h"
#include "gstavqelements.h"
#include "gstavqpayload.h"

#include <gst/rtp/gstrtpbuffer.h>
#include <gst/video/video-event.h>
#include <string.h>

GST_DEBUG_CATEGORY_STATIC (avqdepay_debug);
#define GST_CAT_DEFAULT avqdepay_debug

/* How many frames back a packet may belong to and still be recognised as
 * late rather than as the start of a new frame (frame counts are 8 bits).
 * Beyond it the sender is assumed to have restarted its count. */
#define LATE_WINDOW 16

enum
{
  PROP_0,
  PROP_STATS,
};

static GstStaticPadTemplate gst_avq_depay_sink_template =
GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS ("application/x-rtp, "
        "media = (string) \"application\", "
        "clock-rate = (int) 90000, "
        "encoding-name = (string) \"X-AVQ\"")
    );

static GstStaticPadTemplate gst_avq_depay_src_template =
GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS ("application/x-avq, "
        "version = (int) 1, "
        "tokens = (int) [ 1, 65535 ], "
        "index-bits = (int) [ 1, 16 ], "
        "side-bits = (int) [ 0, 16 ], "
        "layer = (int) [ 0, 255 ], "
        "framerate = (fraction) [ 0/1, MAX ]")
    );

static gboolean gst_avq_depay_setcaps (GstRTPBaseDepayload * depayload,
    GstCaps * caps);
static GstBuffer *gst_avq_depay_process (GstRTPBaseDepayload * depayload,
    GstRTPBuffer * rtp);
static gboolean gst_avq_depay_handle_event (GstRTPBaseDepayload * depayload,
    GstEvent * event);
static gboolean gst_avq_depay_packet_lost (GstRTPBaseDepayload * depayload,
    GstEvent * event);
static GstStateChangeReturn gst_avq_depay_change_state (GstElement * element,
    GstStateChange transition);
static void gst_avq_depay_finalize (GObject * object);
static void gst_avq_depay_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);

#define gst_avq_depay_parent_class parent_class
G_DEFINE_TYPE (GstAvqDepay, gst_avq_depay, GST_TYPE_RTP_BASE_DEPAYLOAD);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (avqdepay, "avqdepay", GST_RANK_SECONDARY,
    GST_TYPE_AVQ_DEPAY, avq_element_init (plugin));

static void
gst_avq_depay_class_init (GstAvqDepayClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstRTPBaseDepayloadClass *depayload_class =
      GST_RTP_BASE_DEPAYLOAD_CLASS (klass);

  gobject_class->finalize = gst_avq_depay_finalize;
  gobject_class->get_property = gst_avq_depay_get_property;

  /* The base class already has a "stats" property (seqnum, timestamp, ...).
   * Ours replaces it with a superset: the base fields plus the reassembly
   * counters, so no information is lost. */
  g_object_class_install_property (gobject_class, PROP_STATS,
      g_param_spec_boxed ("stats", "Statistics",
          "RTP statistics of the base depayloader (seqnum, timestamp, ...) "
          "plus reassembly counters (guint64): frames-out, frames-dropped "
          "(incomplete), frames-invalid (complete but malformed or not "
          "matching the caps), packets-received, packets-invalid, "
          "packets-late (for a frame already dropped, or older than the current "
          "one), duplicates, packets-lost (GstRTPPacketLost events), "
          "bytes-received, bytes-out, key-unit-requests",
          GST_TYPE_STRUCTURE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  element_class->change_state = gst_avq_depay_change_state;

  gst_element_class_add_static_pad_template (element_class,
      &gst_avq_depay_sink_template);
  gst_element_class_add_static_pad_template (element_class,
      &gst_avq_depay_src_template);
  gst_element_class_set_static_metadata (element_class,
      "RTP AVQ depayloader", "Codec/Depayloader/Network/RTP",
      "Reassembles AlignedVQ feature frames (application/x-avq) from X-AVQ "
      "RTP packets, dropping frames that lost a fragment",
      "gst-avq developers");

  depayload_class->set_caps = gst_avq_depay_setcaps;
  depayload_class->process_rtp_packet = gst_avq_depay_process;
  depayload_class->handle_event = gst_avq_depay_handle_event;
  depayload_class->packet_lost = gst_avq_depay_packet_lost;

  GST_DEBUG_CATEGORY_INIT (avqdepay_debug, "avqdepay", 0,
      "AVQ RTP depayloader");
}

static void
gst_avq_depay_init (GstAvqDepay * self)
{
  (void) self;
}

static void
gst_avq_depay_free_buffers (GstAvqDepay * self)
{
  g_clear_pointer (&self->data, g_free);
  g_clear_pointer (&self->have, g_free);
  self->frame_size = 0;
  self->active = FALSE;
}

static void
gst_avq_depay_finalize (GObject * object)
{
  gst_avq_depay_free_buffers (GST_AVQ_DEPAY (object));
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

/* Forget the frame in progress and the stream's history, without counting
 * anything lost: used on flush and on a new sender. */
static void
gst_avq_depay_reset_assembly (GstAvqDepay * self)
{
  self->active = FALSE;
  self->have_last = FALSE;
  self->corrupt = FALSE;
  self->received = 0;
}

static void
gst_avq_depay_request_key_unit (GstAvqDepay * self)
{
  GstEvent *event;

  /* One request per loss episode: the encoder has nothing better to send
   * until the next frame anyway. v1 frames are all keyframes, so this only
   * matters once delta frames exist. */
  if (self->key_unit_pending)
    return;
  self->key_unit_pending = TRUE;
  GST_OBJECT_LOCK (self);
  self->stats.key_unit_requests++;
  GST_OBJECT_UNLOCK (self);
  event = gst_video_event_new_upstream_force_key_unit (GST_CLOCK_TIME_NONE,
      TRUE, 0);
  gst_pad_push_event (GST_RTP_BASE_DEPAYLOAD_SINKPAD (self), event);
}

static void
gst_avq_depay_remember_last (GstAvqDepay * self, gboolean complete)
{
  self->have_last = TRUE;
  self->last_complete = complete;
  self->last_count = self->frame_count;
  self->last_rtptime = self->rtptime;
  self->active = FALSE;
}

/* The frame in progress will never complete. */
static void
gst_avq_depay_abandon (GstAvqDepay * self, const char *why)
{
  if (!self->active)
    return;
  GST_DEBUG_OBJECT (self, "dropping frame %u (rtptime %u), %" G_GSIZE_FORMAT
      " of %" G_GSIZE_FORMAT " bytes: %s", self->frame_count, self->rtptime,
      self->received, self->frame_size, why);
  GST_OBJECT_LOCK (self);
  self->stats.frames_dropped++;
  GST_OBJECT_UNLOCK (self);
  gst_avq_depay_remember_last (self, FALSE);
  self->discont = TRUE;
  gst_avq_depay_request_key_unit (self);
}

static void
gst_avq_depay_start (GstAvqDepay * self, guint count, guint32 rtptime,
    GstClockTime pts)
{
  self->active = TRUE;
  self->frame_count = count;
  self->rtptime = rtptime;
  self->pts = pts;
  self->corrupt = FALSE;
  self->received = 0;
  memset (self->have, 0, (self->frame_size + 7) / 8);
}

static gboolean
gst_avq_depay_setcaps (GstRTPBaseDepayload * depayload, GstCaps * caps)
{
  GstAvqDepay *self = GST_AVQ_DEPAY (depayload);
  GstAvqStreamParams info;
  GError *err = NULL;
  GstCaps *srccaps;
  gsize size;
  gboolean res;

  if (!gst_avq_stream_params_from_rtp_caps (&info, caps, &err)) {
    GST_ELEMENT_WARNING (self, CORE, NEGOTIATION, (NULL),
        ("refusing caps %" GST_PTR_FORMAT ": %s", caps, err->message));
    g_error_free (err);
    return FALSE;
  }
  size = gst_avq_stream_params_frame_size (&info);
  if (size == 0 || size > GST_AVQ_PAYLOAD_MAX_FRAME) {
    GST_ELEMENT_WARNING (self, CORE, NEGOTIATION, (NULL),
        ("frames of %" G_GSIZE_FORMAT " bytes cannot be carried", size));
    return FALSE;
  }

  /* The template fixes the clock rate; the base class uses it for
   * timestamps and its stats. */
  depayload->clock_rate = 90000;
  srccaps = gst_avq_stream_params_to_caps (&info);
  res = gst_pad_set_caps (GST_RTP_BASE_DEPAYLOAD_SRCPAD (depayload), srccaps);
  gst_caps_unref (srccaps);
  if (!res)
    return FALSE;

  gst_avq_depay_abandon (self, "caps changed");
  if (size != self->frame_size) {
    gst_avq_depay_free_buffers (self);
    /* Memory is bounded by the caps: every frame of the stream has exactly
     * this size and packets claiming another are refused. */
    self->data = g_malloc (size);
    self->have = g_malloc0 ((size + 7) / 8);
    self->frame_size = size;
  }
  self->info = info;
  gst_avq_depay_reset_assembly (self);
  return TRUE;
}

/* Validates a complete frame and wraps it for output, or returns NULL. */
static GstBuffer *
gst_avq_depay_finish (GstAvqDepay * self)
{
  AvqFrameHeader fh;
  AvqFrame *frame;
  GError *err = NULL;
  GstBuffer *outbuf;

  gst_avq_depay_remember_last (self, TRUE);

  if (self->corrupt) {
    g_set_error (&err, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE,
        "overlapping fragments disagree");
    goto invalid;
  }
  if (!avq_frame_peek_header (self->data, self->frame_size, &fh, &err)
      || !gst_avq_stream_params_matches (&self->info, &fh, &err))
    goto invalid;
  /* The full strict parse (padding, side ranges, exact size) is cheap next
   * to what the receiver does with a frame, and keeps malformed frames out
   * of every element downstream. */
  frame = avq_frame_parse (self->data, self->frame_size, &err);
  if (frame == NULL)
    goto invalid;
  avq_frame_free (frame);

  outbuf = gst_buffer_new_memdup (self->data, self->frame_size);
  GST_BUFFER_PTS (outbuf) = self->pts;
  if (self->discont) {
    GST_BUFFER_FLAG_SET (outbuf, GST_BUFFER_FLAG_DISCONT);
    self->discont = FALSE;
  }
  self->key_unit_pending = FALSE;
  GST_OBJECT_LOCK (self);
  self->stats.frames_out++;
  self->stats.bytes_out += self->frame_size;
  GST_OBJECT_UNLOCK (self);
  GST_LOG_OBJECT (self, "frame %u complete, %" G_GSIZE_FORMAT " bytes",
      self->frame_count, self->frame_size);
  return outbuf;

invalid:
  GST_WARNING_OBJECT (self, "rejecting reassembled frame %u: %s",
      self->frame_count, err->message);
  g_error_free (err);
  GST_OBJECT_LOCK (self);
  self->stats.frames_invalid++;
  GST_OBJECT_UNLOCK (self);
  self->discont = TRUE;
  gst_avq_depay_request_key_unit (self);
  return NULL;
}

typedef enum
{
  PACKET_SAME,                  /* belongs to the frame in progress */
  PACKET_NEW,                   /* starts a newer frame */
  PACKET_REPEAT,                /* belongs to the frame just finished */
  PACKET_LATE,                  /* belongs to an older frame */
} PacketKind;

static PacketKind
gst_avq_depay_classify (GstAvqDepay * self, guint count, guint32 rtptime)
{
  guint ref_count;
  guint32 ref_rtptime;
  gint d;

  if (self->active) {
    ref_count = self->frame_count;
    ref_rtptime = self->rtptime;
  } else if (self->have_last) {
    ref_count = self->last_count;
    ref_rtptime = self->last_rtptime;
  } else {
    return PACKET_NEW;
  }

  if (count == ref_count && rtptime == ref_rtptime)
    return self->active ? PACKET_SAME : PACKET_REPEAT;
  /* Serial-number arithmetic on the 8-bit count. */
  d = (gint8) (guint8) (count - ref_count);
  if (d < 0 && d >= -LATE_WINDOW)
    return PACKET_LATE;
  return PACKET_NEW;
}

static GstBuffer *
gst_avq_depay_process (GstRTPBaseDepayload * depayload, GstRTPBuffer * rtp)
{
  GstAvqDepay *self = GST_AVQ_DEPAY (depayload);
  GstAvqPayloadHeader h;
  const guint8 *payload, *p;
  guint payload_len = 0, len;
  guint32 ssrc;
  gsize fresh = 0;
  gboolean mismatch = FALSE, marker;
  const char *bad = NULL;

  GST_OBJECT_LOCK (self);
  self->stats.packets_received++;
  GST_OBJECT_UNLOCK (self);

  ssrc = gst_rtp_buffer_get_ssrc (rtp);
  if (self->have_ssrc && ssrc != self->ssrc) {
    /* A new sender starts its frame count anew; nothing it sends relates to
     * the old sender's frames. */
    gst_avq_depay_abandon (self, "new SSRC");
    gst_avq_depay_reset_assembly (self);
  }
  self->have_ssrc = TRUE;
  self->ssrc = ssrc;

  if (G_UNLIKELY (self->data == NULL)) {
    /* The base class only calls us once caps were accepted; stay safe if
     * that ever changes. */
    bad = "no stream parameters yet";
    goto invalid;
  }
  payload_len = gst_rtp_buffer_get_payload_len (rtp);
  payload = gst_rtp_buffer_get_payload (rtp);
  if (payload == NULL || payload_len <= GST_AVQ_PAYLOAD_HEADER_SIZE) {
    bad = "payload shorter than the X-AVQ header plus one byte";
    goto invalid;
  }
  gst_avq_payload_header_read (payload, &h);
  p = payload + GST_AVQ_PAYLOAD_HEADER_SIZE;
  len = payload_len - GST_AVQ_PAYLOAD_HEADER_SIZE;
  marker = gst_rtp_buffer_get_marker (rtp);

  if (h.version != GST_AVQ_PAYLOAD_VERSION || h.reserved != 0) {
    bad = "unknown payload header version or reserved bits";
    goto invalid;
  }
  if (h.frame_length != self->frame_size) {
    bad = "frame length differs from the one the caps imply";
    goto invalid;
  }
  if (h.offset >= h.frame_length || len > h.frame_length - h.offset) {
    bad = "fragment outside its frame";
    goto invalid;
  }
  if (marker != (h.offset + len == h.frame_length)) {
    bad = "marker bit not on exactly the last fragment";
    goto invalid;
  }

  switch (gst_avq_depay_classify (self, h.frame_count,
          gst_rtp_buffer_get_timestamp (rtp))) {
    case PACKET_REPEAT:
      /* A duplicate of the packet that completed the frame, or the tail of
       * a frame abandoned after a loss event. */
      GST_LOG_OBJECT (self, "packet for just finished frame %u",
          h.frame_count);
      GST_OBJECT_LOCK (self);
      if (self->last_complete)
        self->stats.duplicates++;
      else
        self->stats.packets_late++;
      GST_OBJECT_UNLOCK (self);
      return NULL;
    case PACKET_LATE:
      GST_LOG_OBJECT (self, "late packet for older frame %u", h.frame_count);
      GST_OBJECT_LOCK (self);
      self->stats.packets_late++;
      GST_OBJECT_UNLOCK (self);
      return NULL;
    case PACKET_NEW:
      gst_avq_depay_abandon (self, "a newer frame started");
      gst_avq_depay_start (self, h.frame_count,
          gst_rtp_buffer_get_timestamp (rtp), GST_BUFFER_PTS (rtp->buffer));
      break;
    case PACKET_SAME:
      break;
  }

  /* Place the fragment byte by byte against the have-bitmap, so overlaps,
   * duplicates and reordering need no special cases. */
  for (gsize i = 0; i < len; i++) {
    gsize pos = h.offset + i;
    guint8 bit = 1u << (pos & 7);

    if (self->have[pos >> 3] & bit) {
      if (self->data[pos] != p[i])
        mismatch = TRUE;
    } else {
      self->data[pos] = p[i];
      self->have[pos >> 3] |= bit;
      fresh++;
    }
  }
  self->received += fresh;

  GST_OBJECT_LOCK (self);
  self->stats.bytes_received += len;
  if (mismatch)
    self->stats.packets_invalid++;
  else if (fresh == 0)
    self->stats.duplicates++;
  GST_OBJECT_UNLOCK (self);
  if (mismatch) {
    GST_WARNING_OBJECT (self, "fragment at %u of frame %u contradicts data "
        "already received", h.offset, h.frame_count);
    self->corrupt = TRUE;
  }

  if (self->received == self->frame_size)
    return gst_avq_depay_finish (self);
  return NULL;

invalid:
  GST_DEBUG_OBJECT (self, "invalid packet (%u payload bytes): %s",
      payload_len, bad);
  GST_OBJECT_LOCK (self);
  self->stats.packets_invalid++;
  GST_OBJECT_UNLOCK (self);
  return NULL;
}

static gboolean
gst_avq_depay_packet_lost (GstRTPBaseDepayload * depayload, GstEvent * event)
{
  GstAvqDepay *self = GST_AVQ_DEPAY (depayload);

  GST_OBJECT_LOCK (self);
  self->stats.packets_lost++;
  GST_OBJECT_UNLOCK (self);
  /* Packets come in seqnum order after a jitterbuffer, so a loss while a
   * frame is open means that frame lost its next fragment. */
  gst_avq_depay_abandon (self, "packet lost");
  self->discont = TRUE;
  gst_avq_depay_request_key_unit (self);

  /* The default pushes a GAP event so that time keeps moving downstream. */
  return GST_RTP_BASE_DEPAYLOAD_CLASS (parent_class)->packet_lost (depayload,
      event);
}

static gboolean
gst_avq_depay_handle_event (GstRTPBaseDepayload * depayload, GstEvent * event)
{
  GstAvqDepay *self = GST_AVQ_DEPAY (depayload);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_STOP:
      gst_avq_depay_reset_assembly (self);
      self->have_ssrc = FALSE;
      self->discont = TRUE;
      self->key_unit_pending = FALSE;
      break;
    case GST_EVENT_EOS:
      gst_avq_depay_abandon (self, "end of stream");
      break;
    default:
      break;
  }
  return GST_RTP_BASE_DEPAYLOAD_CLASS (parent_class)->handle_event (depayload,
      event);
}

static GstStructure *
gst_avq_depay_create_stats (GstAvqDepay * self)
{
  GObjectClass *parent = G_OBJECT_CLASS (parent_class);
  GParamSpec *base_pspec = g_object_class_find_property (parent, "stats");
  GstStructure *s = NULL;
  GstAvqDepayStats st;

  /* Start from the base class's own statistics, read through its pspec. */
  if (base_pspec != NULL && base_pspec->owner_type != GST_TYPE_AVQ_DEPAY) {
    GValue v = G_VALUE_INIT;

    g_value_init (&v, GST_TYPE_STRUCTURE);
    parent->get_property (G_OBJECT (self), base_pspec->param_id, &v,
        base_pspec);
    s = g_value_dup_boxed (&v);
    g_value_unset (&v);
  }
  if (s == NULL)
    s = gst_structure_new_empty ("application/x-avq-depayload-stats");

  GST_OBJECT_LOCK (self);
  st = self->stats;
  GST_OBJECT_UNLOCK (self);

  gst_structure_set (s,
      "frames-out", G_TYPE_UINT64, st.frames_out,
      "frames-dropped", G_TYPE_UINT64, st.frames_dropped,
      "frames-invalid", G_TYPE_UINT64, st.frames_invalid,
      "packets-received", G_TYPE_UINT64, st.packets_received,
      "packets-invalid", G_TYPE_UINT64, st.packets_invalid,
      "packets-late", G_TYPE_UINT64, st.packets_late,
      "duplicates", G_TYPE_UINT64, st.duplicates,
      "packets-lost", G_TYPE_UINT64, st.packets_lost,
      "bytes-received", G_TYPE_UINT64, st.bytes_received,
      "bytes-out", G_TYPE_UINT64, st.bytes_out,
      "key-unit-requests", G_TYPE_UINT64, st.key_unit_requests, NULL);
  return s;
}

static void
gst_avq_depay_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstAvqDepay *self = GST_AVQ_DEPAY (object);

  switch (prop_id) {
    case PROP_STATS:
      g_value_take_boxed (value, gst_avq_depay_create_stats (self));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static GstStateChangeReturn
gst_avq_depay_change_state (GstElement * element, GstStateChange transition)
{
  GstAvqDepay *self = GST_AVQ_DEPAY (element);
  GstStateChangeReturn ret;

  if (transition == GST_STATE_CHANGE_READY_TO_PAUSED) {
    gst_avq_depay_reset_assembly (self);
    self->have_ssrc = FALSE;
    self->discont = FALSE;
    self->key_unit_pending = FALSE;
    GST_OBJECT_LOCK (self);
    memset (&self->stats, 0, sizeof self->stats);
    GST_OBJECT_UNLOCK (self);
  }

  ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);

  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY) {
    gst_avq_depay_free_buffers (self);
    gst_avq_depay_reset_assembly (self);
  }
  return ret;
}
