/* avqencode: runs the edge half of AlignedVQ on raw video and emits one AVQ
 * frame per encoded video frame.
 *
 * Encoding runs on a task of the source pad behind a one-buffer mailbox:
 *  - upstream not live (files, tests): the chain function waits for the
 *    slot, so every frame is encoded (back-pressure, no loss);
 *  - upstream live (cameras): a new frame replaces the one still waiting,
 *    so the element never falls behind by more than one frame; replaced
 *    frames are counted in `stats` as dropped. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include "gstavqencode.h"
#include "gstavqstream.h"
#include "gstavqelements.h"
#include "avq-error.h"
#include "gstavqdevice.h"
#include <string.h>

GST_DEBUG_CATEGORY_STATIC (gst_avq_encode_debug);
#define GST_CAT_DEFAULT gst_avq_encode_debug

enum {
  PROP_0,
  PROP_MODEL,
  PROP_AVQ,
  PROP_PREPROCESS,
  PROP_INTERVAL,
  PROP_MAX_RATE,
  PROP_THREADS,
  PROP_STATS,
  PROP_DEVICE,
};

#define DEFAULT_MODEL NULL
#define DEFAULT_AVQ NULL
#define DEFAULT_PREPROCESS AVQ_PREPROCESS_CROP
#define DEFAULT_INTERVAL 1
#define DEFAULT_MAX_RATE 0.0
#define DEFAULT_THREADS 0

struct _GstAvqEncode {
  GstElement parent;
  GstPad *sinkpad, *srcpad;

  /* properties, under the object lock */
  char *model_dir;
  char *avq_path;
  AvqPreprocessMode preprocess;
  guint interval;
  gdouble max_rate;
  gint threads;
  AvqDevice device;

  /* set in READY->PAUSED, used by the streaming threads */
  AvqEngine *engine;
  GstVideoInfo vinfo;
  gboolean have_vinfo;
  GstVideoConverter *converter;   /* planar YUV -> RGB; NULL for packed RGB input */
  GstVideoInfo rgb_info;
  GstBuffer *rgb_buffer;
  gboolean upstream_live;
  gboolean live_known;
  GstClockTime last_encoded_pts;
  GstClockTime encode_time;       /* running estimate of one encode */

  /* counters, under the object lock */
  guint64 frames_in, frames_encoded, frames_dropped, frames_skipped;

  /* the mailbox between chain and the encoding task */
  GMutex lock;
  GCond cond;
  GstBuffer *pending;
  gboolean busy;
  gboolean flushing;
  GstFlowReturn last_flow;
};

#define gst_avq_encode_parent_class parent_class
G_DEFINE_TYPE (GstAvqEncode, gst_avq_encode, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (avqencode, "avqencode", GST_RANK_NONE,
    GST_TYPE_AVQ_ENCODE, avq_element_init (plugin));

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("{ RGB, RGBA, RGBx, BGR, BGRA, BGRx, I420, NV12 }")));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS ("application/x-avq, version = (int) 1, "
        "tokens = (int) [ 1, 65535 ], index-bits = (int) [ 1, 16 ], "
        "side-bits = (int) [ 0, 16 ], "
        "layer = (int) [ 0, 255 ], framerate = (fraction) [ 0/1, MAX ]"));

GType
gst_avq_preprocess_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { AVQ_PREPROCESS_CROP, "Resize the shorter side and center-crop (HF CLIPImageProcessor)", "crop" },
    { AVQ_PREPROCESS_PAD, "Pad to a square with the mean colour, then resize (original LLaVA)", "pad" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstAvqPreprocess", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
pixel_format_from_video (GstVideoFormat format, AvqPixelFormat *out)
{
  switch (format) {
    case GST_VIDEO_FORMAT_RGB: *out = AVQ_PIXEL_RGB; return TRUE;
    case GST_VIDEO_FORMAT_RGBA: *out = AVQ_PIXEL_RGBA; return TRUE;
    case GST_VIDEO_FORMAT_RGBx: *out = AVQ_PIXEL_RGBX; return TRUE;
    case GST_VIDEO_FORMAT_BGR: *out = AVQ_PIXEL_BGR; return TRUE;
    case GST_VIDEO_FORMAT_BGRA: *out = AVQ_PIXEL_BGRA; return TRUE;
    case GST_VIDEO_FORMAT_BGRx: *out = AVQ_PIXEL_BGRX; return TRUE;
    default: return FALSE;
  }
}

/* ---- the mailbox ---- */

static void
mailbox_drain (GstAvqEncode *self)
{
  g_mutex_lock (&self->lock);
  while ((self->pending != NULL || self->busy) && !self->flushing &&
         self->last_flow == GST_FLOW_OK)
    g_cond_wait (&self->cond, &self->lock);
  /* After a flow return that paused the task (downstream EOS, not-linked,
   * error) a waiting frame is never encoded: waiting for it would hold the
   * EOS event back forever. */
  if (self->last_flow != GST_FLOW_OK)
    gst_clear_buffer (&self->pending);
  g_mutex_unlock (&self->lock);
}

static void
mailbox_set_flushing (GstAvqEncode *self, gboolean flushing)
{
  g_mutex_lock (&self->lock);
  self->flushing = flushing;
  if (flushing)
    gst_clear_buffer (&self->pending);
  else
    self->last_flow = GST_FLOW_OK;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
}

/* ---- encoding ---- */

static AvqImage *
image_from_video_frame (GstAvqEncode *self, GstBuffer *buffer, GError **error)
{
  GstVideoFrame frame;
  AvqPixelFormat packed;
  AvqImage *image = NULL;

  if (!gst_video_frame_map (&frame, &self->vinfo, buffer, GST_MAP_READ)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "video buffer of %" G_GSIZE_FORMAT " bytes does not match the caps",
                 gst_buffer_get_size (buffer));
    return NULL;
  }
  if (pixel_format_from_video (GST_VIDEO_FRAME_FORMAT (&frame), &packed)) {
    image = avq_image_from_packed (GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
                                   GST_VIDEO_FRAME_WIDTH (&frame),
                                   GST_VIDEO_FRAME_HEIGHT (&frame),
                                   GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0),
                                   packed, error);
  } else {
    GstVideoFrame rgb;
    if (gst_video_frame_map (&rgb, &self->rgb_info, self->rgb_buffer, GST_MAP_WRITE)) {
      gst_video_converter_frame (self->converter, &frame, &rgb);
      image = avq_image_from_packed (GST_VIDEO_FRAME_PLANE_DATA (&rgb, 0),
                                     GST_VIDEO_FRAME_WIDTH (&rgb),
                                     GST_VIDEO_FRAME_HEIGHT (&rgb),
                                     GST_VIDEO_FRAME_PLANE_STRIDE (&rgb, 0),
                                     AVQ_PIXEL_RGB, error);
      gst_video_frame_unmap (&rgb);
    } else {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "cannot map the conversion buffer");
    }
  }
  gst_video_frame_unmap (&frame);
  return image;
}

static void
update_encode_time (GstAvqEncode *self, GstClockTime took)
{
  GstClockTime old = self->encode_time;
  /* A slow exponential average: one outlier must not re-announce latency. */
  self->encode_time = old == 0 ? took : (old * 7 + took) / 8;
  if (old != 0 && (self->encode_time > old + old / 4 || self->encode_time + old / 4 < old))
    gst_element_post_message (GST_ELEMENT (self),
                              gst_message_new_latency (GST_OBJECT (self)));
}

static GstFlowReturn
encode_and_push (GstAvqEncode *self, GstBuffer *input)
{
  g_autoptr (GError) error = NULL;
  gint64 start = g_get_monotonic_time ();
  AvqPreprocessMode mode;

  GST_OBJECT_LOCK (self);
  mode = self->preprocess;
  GST_OBJECT_UNLOCK (self);

  g_autoptr (AvqImage) image = image_from_video_frame (self, input, &error);
  g_autoptr (AvqFrame) frame = NULL;
  if (image != NULL)
    frame = avq_engine_encode_image (self->engine, image, mode, &error);
  if (frame == NULL) {
    GST_ELEMENT_ERROR (self, STREAM, ENCODE, ("Could not encode a video frame."),
                       ("%s", error->message));
    return GST_FLOW_ERROR;
  }
  gsize length = 0;
  guint8 *bytes = avq_frame_serialize (frame, &length);
  GstBuffer *out = gst_buffer_new_wrapped (bytes, length);
  gst_buffer_copy_into (out, input, GST_BUFFER_COPY_TIMESTAMPS, 0, -1);
  /* With interval N an AVQ frame stands for N video frames until the next. */
  guint interval;
  GST_OBJECT_LOCK (self);
  interval = self->interval;
  GST_OBJECT_UNLOCK (self);
  if (interval > 1 && GST_BUFFER_DURATION_IS_VALID (out))
    GST_BUFFER_DURATION (out) *= interval;

  update_encode_time (self, (g_get_monotonic_time () - start) * GST_USECOND);
  GST_OBJECT_LOCK (self);
  self->frames_encoded++;
  GST_OBJECT_UNLOCK (self);
  self->last_encoded_pts = GST_BUFFER_PTS (input);
  return gst_pad_push (self->srcpad, out);
}

static void
encode_loop (GstAvqEncode *self)
{
  g_mutex_lock (&self->lock);
  while (self->pending == NULL && !self->flushing)
    g_cond_wait (&self->cond, &self->lock);
  if (self->flushing) {
    g_mutex_unlock (&self->lock);
    gst_pad_pause_task (self->srcpad);
    return;
  }
  GstBuffer *input = self->pending;
  self->pending = NULL;
  self->busy = TRUE;
  /* The slot is free: a non-live chain function waiting for it may hand
   * over the next frame while this one is encoded. */
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);

  GstFlowReturn ret = encode_and_push (self, input);
  gst_buffer_unref (input);

  g_mutex_lock (&self->lock);
  self->busy = FALSE;
  if (!self->flushing)
    self->last_flow = ret;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);

  if (ret != GST_FLOW_OK && ret != GST_FLOW_FLUSHING) {
    GST_DEBUG_OBJECT (self, "pausing after %s", gst_flow_get_name (ret));
    if (ret == GST_FLOW_NOT_LINKED || ret < GST_FLOW_EOS)
      GST_ELEMENT_FLOW_ERROR (self, ret);
    gst_pad_pause_task (self->srcpad);
  }
}

static gboolean
upstream_is_live (GstAvqEncode *self)
{
  if (!self->live_known) {
    GstQuery *query = gst_query_new_latency ();
    gboolean live = FALSE;
    if (gst_pad_peer_query (self->sinkpad, query))
      gst_query_parse_latency (query, &live, NULL, NULL);
    gst_query_unref (query);
    self->upstream_live = live;
    self->live_known = TRUE;
    GST_INFO_OBJECT (self, "upstream is %slive: %s", live ? "" : "not ",
                     live ? "late frames are dropped" : "every frame is encoded");
  }
  return self->upstream_live;
}

/* Frames the interval and max-rate properties leave out. */
static gboolean
should_skip (GstAvqEncode *self, GstBuffer *buffer)
{
  guint interval;
  gdouble max_rate;
  guint64 n;
  GST_OBJECT_LOCK (self);
  interval = self->interval;
  max_rate = self->max_rate;
  n = self->frames_in++;
  GST_OBJECT_UNLOCK (self);

  if (interval > 1 && n % interval != 0)
    return TRUE;
  GstClockTime pts = GST_BUFFER_PTS (buffer);
  if (max_rate > 0 && GST_CLOCK_TIME_IS_VALID (pts) &&
      GST_CLOCK_TIME_IS_VALID (self->last_encoded_pts) && pts > self->last_encoded_pts &&
      (gdouble) (pts - self->last_encoded_pts) < GST_SECOND / max_rate)
    return TRUE;
  return FALSE;
}

static GstFlowReturn
gst_avq_encode_chain (GstPad *pad, GstObject *parent, GstBuffer *buffer)
{
  GstAvqEncode *self = GST_AVQ_ENCODE (parent);
  (void) pad;

  if (!self->have_vinfo) {
    gst_buffer_unref (buffer);
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL), ("buffer before caps"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  if (should_skip (self, buffer)) {
    GST_OBJECT_LOCK (self);
    self->frames_skipped++;
    GST_OBJECT_UNLOCK (self);
    gst_buffer_unref (buffer);
    return GST_FLOW_OK;
  }
  gboolean live = upstream_is_live (self);

  g_mutex_lock (&self->lock);
  if (!live)
    while (self->pending != NULL && !self->flushing && self->last_flow == GST_FLOW_OK)
      g_cond_wait (&self->cond, &self->lock);
  GstFlowReturn ret = self->flushing ? GST_FLOW_FLUSHING : self->last_flow;
  if (ret != GST_FLOW_OK) {
    g_mutex_unlock (&self->lock);
    gst_buffer_unref (buffer);
    return ret;
  }
  if (self->pending != NULL) {
    gst_buffer_unref (self->pending);
    GST_OBJECT_LOCK (self);
    self->frames_dropped++;
    GST_OBJECT_UNLOCK (self);
    GST_DEBUG_OBJECT (self, "encoder busy: replaced a waiting frame");
  }
  self->pending = buffer;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
  return GST_FLOW_OK;
}

static gboolean
set_video_caps (GstAvqEncode *self, GstCaps *caps)
{
  GstVideoInfo info;
  if (!gst_video_info_from_caps (&info, caps))
    return FALSE;

  g_clear_pointer (&self->converter, gst_video_converter_free);
  gst_clear_buffer (&self->rgb_buffer);
  AvqPixelFormat packed;
  if (!pixel_format_from_video (GST_VIDEO_INFO_FORMAT (&info), &packed)) {
    /* The converter changes the format only: same frame rate and interlace
     * mode, or gst_video_converter_new() refuses. */
    gst_video_info_set_interlaced_format (&self->rgb_info, GST_VIDEO_FORMAT_RGB,
                                          GST_VIDEO_INFO_INTERLACE_MODE (&info),
                                          GST_VIDEO_INFO_WIDTH (&info),
                                          GST_VIDEO_INFO_HEIGHT (&info));
    GST_VIDEO_INFO_FPS_N (&self->rgb_info) = GST_VIDEO_INFO_FPS_N (&info);
    GST_VIDEO_INFO_FPS_D (&self->rgb_info) = GST_VIDEO_INFO_FPS_D (&info);
    self->converter = gst_video_converter_new (&info, &self->rgb_info, NULL);
    if (self->converter == NULL)
      return FALSE;
    self->rgb_buffer = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&self->rgb_info), NULL);
  }
  self->vinfo = info;
  self->have_vinfo = TRUE;

  guint interval;
  GST_OBJECT_LOCK (self);
  interval = self->interval;
  GST_OBJECT_UNLOCK (self);
  gint fps_n = GST_VIDEO_INFO_FPS_N (&info), fps_d = GST_VIDEO_INFO_FPS_D (&info);
  if (fps_n > 0 && interval > 1)
    gst_util_fraction_multiply (fps_n, fps_d, 1, interval, &fps_n, &fps_d);
  GstAvqStreamParams params = {
    .tokens = avq_engine_tokens (self->engine),
    .index_bits = avq_engine_index_bits (self->engine),
    .side_bits = avq_engine_side_bits (self->engine),
    .layer = avq_engine_split_layer (self->engine),
    .fps_n = fps_n > 0 ? fps_n : 0,
    .fps_d = fps_n > 0 ? fps_d : 1,
  };
  memcpy (params.codebook_id, avq_engine_codebook_id (self->engine), AVQ_CODEBOOK_ID_SIZE);
  GstCaps *out = gst_avq_stream_params_to_caps (&params);
  gboolean ok = gst_pad_set_caps (self->srcpad, out);
  gst_caps_unref (out);
  return ok;
}

static gboolean
gst_avq_encode_sink_event (GstPad *pad, GstObject *parent, GstEvent *event)
{
  GstAvqEncode *self = GST_AVQ_ENCODE (parent);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_START: {
      mailbox_set_flushing (self, TRUE);
      gboolean ret = gst_pad_push_event (self->srcpad, event);
      gst_pad_pause_task (self->srcpad);
      return ret;
    }
    case GST_EVENT_FLUSH_STOP: {
      mailbox_set_flushing (self, FALSE);
      gboolean ret = gst_pad_push_event (self->srcpad, event);
      gst_pad_start_task (self->srcpad, (GstTaskFunction) encode_loop, self, NULL);
      return ret;
    }
    case GST_EVENT_CAPS: {
      GstCaps *caps;
      mailbox_drain (self);
      gst_event_parse_caps (event, &caps);
      gboolean ok = set_video_caps (self, caps);
      if (!ok)
        GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
                           ("cannot handle caps %" GST_PTR_FORMAT, caps));
      gst_event_unref (event);
      return ok;
    }
    default:
      /* Serialized events stay in order with the frames being encoded. */
      if (GST_EVENT_IS_SERIALIZED (event))
        mailbox_drain (self);
      return gst_pad_event_default (pad, parent, event);
  }
}

static gboolean
gst_avq_encode_src_query (GstPad *pad, GstObject *parent, GstQuery *query)
{
  GstAvqEncode *self = GST_AVQ_ENCODE (parent);

  if (GST_QUERY_TYPE (query) == GST_QUERY_LATENCY) {
    if (!gst_pad_peer_query (self->sinkpad, query))
      return FALSE;
    gboolean live;
    GstClockTime min, max;
    gst_query_parse_latency (query, &live, &min, &max);
    GstClockTime ours = self->encode_time;
    /* A frame may wait for the one being encoded: up to two encode times. */
    min += ours;
    if (GST_CLOCK_TIME_IS_VALID (max))
      max += 2 * ours;
    GST_DEBUG_OBJECT (self, "latency: adding %" GST_TIME_FORMAT, GST_TIME_ARGS (ours));
    gst_query_set_latency (query, live, min, max);
    return TRUE;
  }
  return gst_pad_query_default (pad, parent, query);
}

static gboolean
gst_avq_encode_src_activate_mode (GstPad *pad, GstObject *parent,
                                  GstPadMode mode, gboolean active)
{
  GstAvqEncode *self = GST_AVQ_ENCODE (parent);
  if (mode != GST_PAD_MODE_PUSH)
    return FALSE;
  if (active) {
    mailbox_set_flushing (self, FALSE);
    return gst_pad_start_task (pad, (GstTaskFunction) encode_loop, self, NULL);
  }
  mailbox_set_flushing (self, TRUE);
  return gst_pad_stop_task (pad);
}

/* A first encode at start-up pages the weights in and gives the latency
 * estimate before the first real frame. */
static void
measure_encode_time (GstAvqEncode *self)
{
  g_autoptr (AvqImage) grey = avq_image_new (64, 64);
  memset (grey->rgb, 128, 64 * 64 * 3);
  gint64 start = g_get_monotonic_time ();
  AvqFrame *frame = avq_engine_encode_image (self->engine, grey, AVQ_PREPROCESS_CROP, NULL);
  avq_frame_free (frame);
  self->encode_time = (g_get_monotonic_time () - start) * GST_USECOND;
  GST_INFO_OBJECT (self, "one encode takes %" GST_TIME_FORMAT, GST_TIME_ARGS (self->encode_time));
}

static gboolean
load_engine (GstAvqEncode *self)
{
  g_autofree char *model_dir = NULL, *avq_path = NULL;
  gint threads;
  AvqDevice device;
  GST_OBJECT_LOCK (self);
  model_dir = g_strdup (self->model_dir);
  avq_path = g_strdup (self->avq_path);
  threads = self->threads;
  device = self->device;
  GST_OBJECT_UNLOCK (self);

  if (model_dir == NULL) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("No model directory set."),
                       ("set the 'model' property to a LLaVA model directory"));
    return FALSE;
  }
  if (avq_path == NULL) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("No AVQ file set."),
                       ("set the 'avq' property to an AVQ codebook file"));
    return FALSE;
  }
  g_autoptr (GError) error = NULL;
  AvqEngineOptions options = { .model_dir = model_dir, .avq_path = avq_path, .threads = threads, .device = device };
  self->engine = avq_engine_new (&options, &error);
  if (self->engine == NULL) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ, ("Could not load the model."),
                       ("%s", error->message));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "engine on %s", avq_engine_device_description (self->engine));
  measure_encode_time (self);
  return TRUE;
}

static void
reset_stream (GstAvqEncode *self)
{
  g_clear_pointer (&self->converter, gst_video_converter_free);
  gst_clear_buffer (&self->rgb_buffer);
  self->have_vinfo = FALSE;
  self->live_known = FALSE;
  self->last_encoded_pts = GST_CLOCK_TIME_NONE;
  GST_OBJECT_LOCK (self);
  self->frames_in = self->frames_encoded = self->frames_dropped = self->frames_skipped = 0;
  GST_OBJECT_UNLOCK (self);
}

static GstStateChangeReturn
gst_avq_encode_change_state (GstElement *element, GstStateChange transition)
{
  GstAvqEncode *self = GST_AVQ_ENCODE (element);

  if (transition == GST_STATE_CHANGE_READY_TO_PAUSED) {
    reset_stream (self);
    if (!load_engine (self))
      return GST_STATE_CHANGE_FAILURE;
  }
  GstStateChangeReturn ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY) {
    g_clear_pointer (&self->engine, avq_engine_free);
    reset_stream (self);
  }
  return ret;
}

static GstStructure *
make_stats (GstAvqEncode *self)
{
  GST_OBJECT_LOCK (self);
  GstStructure *s = gst_structure_new ("application/x-avq-encode-stats",
      "frames-in", G_TYPE_UINT64, self->frames_in,
      "frames-encoded", G_TYPE_UINT64, self->frames_encoded,
      "frames-dropped", G_TYPE_UINT64, self->frames_dropped,
      "frames-skipped", G_TYPE_UINT64, self->frames_skipped,
      "encode-time", G_TYPE_UINT64, (guint64) self->encode_time, NULL);
  GST_OBJECT_UNLOCK (self);
  return s;
}

static void
gst_avq_encode_set_property (GObject *object, guint prop_id,
                             const GValue *value, GParamSpec *pspec)
{
  GstAvqEncode *self = GST_AVQ_ENCODE (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model_dir);
      self->model_dir = g_value_dup_string (value);
      break;
    case PROP_AVQ:
      g_free (self->avq_path);
      self->avq_path = g_value_dup_string (value);
      break;
    case PROP_PREPROCESS: self->preprocess = g_value_get_enum (value); break;
    case PROP_INTERVAL: self->interval = g_value_get_uint (value); break;
    case PROP_MAX_RATE: self->max_rate = g_value_get_double (value); break;
    case PROP_THREADS: self->threads = g_value_get_int (value); break;
    case PROP_DEVICE: self->device = g_value_get_enum (value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_avq_encode_get_property (GObject *object, guint prop_id, GValue *value,
                             GParamSpec *pspec)
{
  GstAvqEncode *self = GST_AVQ_ENCODE (object);
  if (prop_id == PROP_STATS) {
    g_value_take_boxed (value, make_stats (self));
    return;
  }
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL: g_value_set_string (value, self->model_dir); break;
    case PROP_AVQ: g_value_set_string (value, self->avq_path); break;
    case PROP_PREPROCESS: g_value_set_enum (value, self->preprocess); break;
    case PROP_INTERVAL: g_value_set_uint (value, self->interval); break;
    case PROP_MAX_RATE: g_value_set_double (value, self->max_rate); break;
    case PROP_THREADS: g_value_set_int (value, self->threads); break;
    case PROP_DEVICE: g_value_set_enum (value, self->device); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_avq_encode_finalize (GObject *object)
{
  GstAvqEncode *self = GST_AVQ_ENCODE (object);
  g_free (self->model_dir);
  g_free (self->avq_path);
  g_clear_pointer (&self->engine, avq_engine_free);
  g_clear_pointer (&self->converter, gst_video_converter_free);
  gst_clear_buffer (&self->rgb_buffer);
  gst_clear_buffer (&self->pending);
  g_mutex_clear (&self->lock);
  g_cond_clear (&self->cond);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_avq_encode_class_init (GstAvqEncodeClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);

  gobject_class->set_property = gst_avq_encode_set_property;
  gobject_class->get_property = gst_avq_encode_get_property;
  gobject_class->finalize = gst_avq_encode_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model directory",
          "LLaVA model directory in the Hugging Face layout (config.json, "
          "safetensors weights); only the vision layers before the split are used",
          DEFAULT_MODEL, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_AVQ,
      g_param_spec_string ("avq", "AVQ file",
          "AVQ codebook file (safetensors: codebook, Dual Linear Projection, split layer)",
          DEFAULT_AVQ, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_PREPROCESS,
      g_param_spec_enum ("preprocess", "Preprocessing",
          "How a frame becomes the 336x336 model input: crop (HF CLIPImageProcessor) "
          "or pad (original LLaVA evaluation)",
          GST_TYPE_AVQ_PREPROCESS, DEFAULT_PREPROCESS,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_INTERVAL,
      g_param_spec_uint ("interval", "Interval",
          "Encode every Nth video frame and skip the others (1: every frame)",
          1, G_MAXUINT, DEFAULT_INTERVAL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_MAX_RATE,
      g_param_spec_double ("max-rate", "Maximum rate",
          "Encode at most this many frames per second of stream time, skipping "
          "the frames in between (0: no limit)",
          0.0, 1000.0, DEFAULT_MAX_RATE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "Compute threads for the encoder (0: automatic)", 0, 1024, DEFAULT_THREADS,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_DEVICE,
      g_param_spec_enum ("device", "Device",
          "Where the vision half runs: auto (CUDA when available, else the CPU), "
          "cpu, or cuda (fails to start when CUDA is unavailable)",
          GST_TYPE_AVQ_DEVICE, AVQ_DEVICE_AUTO,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_STATS,
      g_param_spec_boxed ("stats", "Statistics",
          "Counters: frames-in, frames-encoded, frames-dropped (replaced while the "
          "encoder was busy on a live source), frames-skipped (interval/max-rate), "
          "encode-time (ns, running average)",
          GST_TYPE_STRUCTURE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "AVQ encoder", "Codec/Encoder/Video",
      "Runs the edge half of LLaVA's CLIP vision encoder and vector-quantises "
      "each frame into an AVQ frame of codebook indices (AlignedVQ)",
      "gst-avq developers");
  element_class->change_state = GST_DEBUG_FUNCPTR (gst_avq_encode_change_state);
  gst_type_mark_as_plugin_api (GST_TYPE_AVQ_PREPROCESS, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_AVQ_DEVICE, 0);

  GST_DEBUG_CATEGORY_INIT (gst_avq_encode_debug, "avqencode", 0, "AVQ encoder");
}

static void
gst_avq_encode_init (GstAvqEncode *self)
{
  self->sinkpad = gst_pad_new_from_static_template (&sink_template, "sink");
  gst_pad_set_chain_function (self->sinkpad, GST_DEBUG_FUNCPTR (gst_avq_encode_chain));
  gst_pad_set_event_function (self->sinkpad, GST_DEBUG_FUNCPTR (gst_avq_encode_sink_event));
  gst_element_add_pad (GST_ELEMENT (self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template (&src_template, "src");
  gst_pad_set_query_function (self->srcpad, GST_DEBUG_FUNCPTR (gst_avq_encode_src_query));
  gst_pad_set_activatemode_function (self->srcpad,
      GST_DEBUG_FUNCPTR (gst_avq_encode_src_activate_mode));
  gst_pad_use_fixed_caps (self->srcpad);
  gst_element_add_pad (GST_ELEMENT (self), self->srcpad);

  self->preprocess = DEFAULT_PREPROCESS;
  self->interval = DEFAULT_INTERVAL;
  self->max_rate = DEFAULT_MAX_RATE;
  self->threads = DEFAULT_THREADS;
  self->device = AVQ_DEVICE_AUTO;
  self->last_encoded_pts = GST_CLOCK_TIME_NONE;
  self->last_flow = GST_FLOW_OK;
  self->flushing = TRUE;
  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
}
