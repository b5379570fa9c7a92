/* avqpay: payloads AVQ frames (AVQ-SPEC section 6) as X-AVQ RTP packets,
 * docs/rtp-payload-format.md. One frame is split into as many packets as
 * the MTU requires; the marker bit is set on the last one and every packet
 * carries the frame's RTP timestamp.
 *
 * Example:
 *   ... ! application/x-avq,... ! avqpay ! udpsink host=... port=5000
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstavqpay.h"
#include "gstavqelements.h"
#include "gstavqpayload.h"

#include <gst/rtp/gstrtpbuffer.h>

GST_DEBUG_CATEGORY_STATIC (avqpay_debug);
#define GST_CAT_DEFAULT avqpay_debug

enum
{
  PROP_0,
  PROP_STATS,
};

static GstStaticPadTemplate gst_avq_pay_sink_template =
GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS ("application/x-avq, "
        "version = (int) 1, "
        "tokens = (int) [ 1, 65535 ], "
        "index-bits = (int) [ 1, 16 ], "
        "side-bits = (int) [ 0, 16 ], "
        "layer = (int) [ 0, 255 ]")
    );

static GstStaticPadTemplate gst_avq_pay_src_template =
GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS ("application/x-rtp, "
        "media = (string) \"application\", "
        "payload = (int) " GST_RTP_PAYLOAD_DYNAMIC_STRING ", "
        "clock-rate = (int) 90000, "
        "encoding-name = (string) \"X-AVQ\"")
    );

static gboolean gst_avq_pay_setcaps (GstRTPBasePayload * payload,
    GstCaps * caps);
static GstFlowReturn gst_avq_pay_handle_buffer (GstRTPBasePayload * payload,
    GstBuffer * buffer);
static GstStateChangeReturn gst_avq_pay_change_state (GstElement * element,
    GstStateChange transition);
static void gst_avq_pay_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);

#define gst_avq_pay_parent_class parent_class
G_DEFINE_TYPE (GstAvqPay, gst_avq_pay, GST_TYPE_RTP_BASE_PAYLOAD);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (avqpay, "avqpay", GST_RANK_NONE,
    GST_TYPE_AVQ_PAY, avq_element_init (plugin));

static void
gst_avq_pay_class_init (GstAvqPayClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstRTPBasePayloadClass *payload_class = GST_RTP_BASE_PAYLOAD_CLASS (klass);

  gobject_class->get_property = gst_avq_pay_get_property;

  /* The base class already has a "stats" property (seqnum, timestamp, ...).
   * Ours replaces it with a superset: the base fields plus this element's
   * counters, so no information is lost. */
  g_object_class_install_property (gobject_class, PROP_STATS,
      g_param_spec_boxed ("stats", "Statistics",
          "RTP statistics of the base payloader (seqnum, timestamp, ...) "
          "plus frames-in, frames-invalid (dropped because they did not "
          "match the caps) and packets-out",
          GST_TYPE_STRUCTURE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  element_class->change_state = gst_avq_pay_change_state;

  gst_element_class_add_static_pad_template (element_class,
      &gst_avq_pay_sink_template);
  gst_element_class_add_static_pad_template (element_class,
      &gst_avq_pay_src_template);
  gst_element_class_set_static_metadata (element_class,
      "RTP AVQ payloader", "Codec/Payloader/Network/RTP",
      "Payloads AlignedVQ feature frames (application/x-avq) as X-AVQ RTP "
      "packets, fragmented to the MTU",
      "gst-avq developers");

  payload_class->set_caps = gst_avq_pay_setcaps;
  payload_class->handle_buffer = gst_avq_pay_handle_buffer;

  GST_DEBUG_CATEGORY_INIT (avqpay_debug, "avqpay", 0, "AVQ RTP payloader");
}

static void
gst_avq_pay_init (GstAvqPay * self)
{
  (void) self;
}

static void
gst_avq_pay_reset (GstAvqPay * self)
{
  GST_OBJECT_LOCK (self);
  self->have_info = FALSE;
  self->frame_count = 0;
  self->frames_in = 0;
  self->frames_invalid = 0;
  self->packets_out = 0;
  GST_OBJECT_UNLOCK (self);
}

static gboolean
gst_avq_pay_setcaps (GstRTPBasePayload * payload, GstCaps * caps)
{
  GstAvqPay *self = GST_AVQ_PAY (payload);
  GstAvqStreamParams info;
  GError *err = NULL;

  if (!gst_avq_stream_params_from_caps (&info, caps, &err)) {
    GST_WARNING_OBJECT (self, "refusing caps %" GST_PTR_FORMAT ": %s", caps,
        err->message);
    g_error_free (err);
    return FALSE;
  }

  gst_rtp_base_payload_set_options (payload, "application", TRUE, "X-AVQ",
      90000);
  if (!gst_avq_stream_params_set_rtp_outcaps (&info, payload))
    return FALSE;

  self->info = info;
  self->have_info = TRUE;
  return TRUE;
}

static GstFlowReturn
gst_avq_pay_handle_buffer (GstRTPBasePayload * payload, GstBuffer * buffer)
{
  GstAvqPay *self = GST_AVQ_PAY (payload);
  GstMapInfo map;
  AvqFrameHeader fh;
  GError *err = NULL;
  gsize frame_size, offset, max_payload;
  guint mtu;
  GstBufferList *list;
  GstClockTime pts;
  guint8 count;

  if (!self->have_info) {
    gst_buffer_unref (buffer);
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
        ("no caps before the first frame"));
    return GST_FLOW_NOT_NEGOTIATED;
  }

  if (!gst_buffer_map (buffer, &map, GST_MAP_READ)) {
    gst_buffer_unref (buffer);
    GST_ELEMENT_ERROR (self, RESOURCE, READ, (NULL), ("cannot map buffer"));
    return GST_FLOW_ERROR;
  }
  frame_size = map.size;
  /* Only whole frames of this stream go out: a receiver checks the same
   * things and would drop the frame anyway after paying for its packets. */
  if (!avq_frame_peek_header (map.data, map.size, &fh, &err)
      || !gst_avq_stream_params_matches (&self->info, &fh, &err)) {
    gst_buffer_unmap (buffer, &map);
    goto invalid;
  }
  gst_buffer_unmap (buffer, &map);
  if (fh.frame_size != frame_size) {
    g_set_error (&err, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
        "buffer of %" G_GSIZE_FORMAT " bytes holds a frame of %"
        G_GSIZE_FORMAT, frame_size, fh.frame_size);
    goto invalid;
  }

  mtu = GST_RTP_BASE_PAYLOAD_MTU (payload);
  max_payload = gst_rtp_buffer_calc_payload_len (mtu, 0, 0);
  if (max_payload <= GST_AVQ_PAYLOAD_HEADER_SIZE) {
    gst_buffer_unref (buffer);
    GST_ELEMENT_ERROR (self, STREAM, ENCODE, (NULL),
        ("MTU %u leaves no room for data after the headers", mtu));
    return GST_FLOW_ERROR;
  }
  max_payload -= GST_AVQ_PAYLOAD_HEADER_SIZE;

  pts = GST_BUFFER_PTS (buffer);
  count = self->frame_count++;
  list = gst_buffer_list_new_sized ((frame_size + max_payload - 1) /
      max_payload);

  for (offset = 0; offset < frame_size;) {
    gsize len = MIN (max_payload, frame_size - offset);
    GstBuffer *outbuf, *data;
    GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;
    GstAvqPayloadHeader h = {
      .version = GST_AVQ_PAYLOAD_VERSION,
      .frame_length = (guint32) frame_size,
      .frame_count = count,
      .offset = (guint32) offset,
    };

    outbuf = gst_rtp_base_payload_allocate_output_buffer (payload,
        GST_AVQ_PAYLOAD_HEADER_SIZE, 0, 0);
    gst_rtp_buffer_map (outbuf, GST_MAP_WRITE, &rtp);
    gst_avq_payload_header_write (gst_rtp_buffer_get_payload (&rtp), &h);
    gst_rtp_buffer_set_marker (&rtp, offset + len == frame_size);
    gst_rtp_buffer_unmap (&rtp);

    /* The frame bytes are shared with the input, not copied. */
    data = gst_buffer_copy_region (buffer, GST_BUFFER_COPY_MEMORY, offset,
        len);
    outbuf = gst_buffer_append (outbuf, data);
    GST_BUFFER_PTS (outbuf) = pts;
    gst_buffer_list_add (list, outbuf);
    offset += len;
  }

  GST_LOG_OBJECT (self, "frame %u of %" G_GSIZE_FORMAT " bytes in %u packets",
      count, frame_size, gst_buffer_list_length (list));
  GST_OBJECT_LOCK (self);
  self->frames_in++;
  self->packets_out += gst_buffer_list_length (list);
  GST_OBJECT_UNLOCK (self);

  gst_buffer_unref (buffer);
  return gst_rtp_base_payload_push_list (payload, list);

invalid:
  GST_OBJECT_LOCK (self);
  self->frames_in++;
  self->frames_invalid++;
  GST_OBJECT_UNLOCK (self);
  GST_ELEMENT_WARNING (self, STREAM, FORMAT, (NULL),
      ("dropping a frame that does not fit the caps: %s", err->message));
  g_error_free (err);
  gst_buffer_unref (buffer);
  return GST_FLOW_OK;
}

static GstStructure *
gst_avq_pay_create_stats (GstAvqPay * self)
{
  GObjectClass *parent = G_OBJECT_CLASS (parent_class);
  GParamSpec *base_pspec = g_object_class_find_property (parent, "stats");
  GstStructure *s = NULL;

  /* Start from the base class's own statistics, read through its pspec. */
  if (base_pspec != NULL && base_pspec->owner_type != GST_TYPE_AVQ_PAY) {
    GValue v = G_VALUE_INIT;

    g_value_init (&v, GST_TYPE_STRUCTURE);
    parent->get_property (G_OBJECT (self), base_pspec->param_id, &v,
        base_pspec);
    s = g_value_dup_boxed (&v);
    g_value_unset (&v);
  }
  if (s == NULL)
    s = gst_structure_new_empty ("application/x-avq-payload-stats");

  GST_OBJECT_LOCK (self);
  gst_structure_set (s,
      "frames-in", G_TYPE_UINT64, self->frames_in,
      "frames-invalid", G_TYPE_UINT64, self->frames_invalid,
      "packets-out", G_TYPE_UINT64, self->packets_out, NULL);
  GST_OBJECT_UNLOCK (self);
  return s;
}

static void
gst_avq_pay_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstAvqPay *self = GST_AVQ_PAY (object);

  switch (prop_id) {
    case PROP_STATS:
      g_value_take_boxed (value, gst_avq_pay_create_stats (self));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static GstStateChangeReturn
gst_avq_pay_change_state (GstElement * element, GstStateChange transition)
{
  GstAvqPay *self = GST_AVQ_PAY (element);

  if (transition == GST_STATE_CHANGE_READY_TO_PAUSED)
    gst_avq_pay_reset (self);

  return GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
}
