/* avqencode against the engine on the tiny fixture model: output frames are
 * the engine's frames bit for bit (PNG files through pngdec, every accepted
 * raw format through videotestsrc), caps, timestamps, the interval
 * property, latency, loading errors, and the live mailbox (dropping frames
 * on a live source, never hanging, delivering everything not dropped at
 * EOS). Every wait is bounded. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <string.h>

#include "avq-common.h"
#include "avq-engine.h"
#include "avq-image.h"

#define MODEL_DIR AVQ_TEST_DATA_DIR "/tiny-llava"
#define PULL_TIMEOUT (20 * GST_SECOND)
#define BUS_TIMEOUT (30 * GST_SECOND)

static const gchar *const avq_names[] = {
  "avq-L0-derive.safetensors", "avq-L1-side8.safetensors",
};

static const gchar *const image_names[] = { "astronaut", "chelsea", "coffee" };

/* ---- helpers ---- */

static gchar *
avq_path (const gchar * name)
{
  return g_build_filename (MODEL_DIR, name, NULL);
}

static AvqEngine *
load_engine (const gchar * avq_name)
{
  g_autofree gchar *path = avq_path (avq_name);
  GError *error = NULL;
  AvqEngineOptions options = { .model_dir = MODEL_DIR, .avq_path = path };
  AvqEngine *engine = avq_engine_new (&options, &error);

  fail_unless (engine != NULL, "engine: %s", error ? error->message : "?");
  return engine;
}

/* The engine's serialised frame for an image. */
static GBytes *
engine_encode (AvqEngine * engine, const AvqImage * image)
{
  GError *error = NULL;
  AvqFrame *frame = avq_engine_encode_image (engine, image,
      AVQ_PREPROCESS_CROP, &error);
  guint8 *data;
  gsize len;

  fail_unless (frame != NULL, "encode: %s", error ? error->message : "?");
  data = avq_frame_serialize (frame, &len);
  avq_frame_free (frame);
  return g_bytes_new_take (data, len);
}

static gboolean
buffer_equals_bytes (GstBuffer * buf, GBytes * bytes)
{
  gsize len;
  const guint8 *data = g_bytes_get_data (bytes, &len);

  return gst_buffer_get_size (buf) == len
      && gst_buffer_memcmp (buf, 0, data, len) == 0;
}

/* The ERROR message on the bus as "text | debug", or NULL. */
static gchar *
pop_error (GstElement * pipeline, GstClockTime timeout, GstObject ** src)
{
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, timeout,
      GST_MESSAGE_ERROR);
  GError *err = NULL;
  gchar *debug = NULL, *str;

  gst_object_unref (bus);
  if (msg == NULL)
    return NULL;
  gst_message_parse_error (msg, &err, &debug);
  str = g_strdup_printf ("%s | %s", err->message, debug ? debug : "");
  if (src != NULL)
    *src = gst_object_ref (GST_MESSAGE_SRC (msg));
  g_error_free (err);
  g_free (debug);
  gst_message_unref (msg);
  return str;
}

typedef struct
{
  GstElement *pipeline;
  GstElement *enc;              /* the element named "enc" */
  GPtrArray *samples;           /* GstSample from the appsink named "sink" */
} Run;

/* Runs a pipeline to EOS and keeps what its appsink received. The caller
 * reads the element's stats, then frees the run (which stops it). */
static Run *
run_pipeline (const gchar * desc)
{
  Run *r = g_new0 (Run, 1);
  GError *error = NULL;
  GstElement *sink;

  r->pipeline = gst_parse_launch (desc, &error);
  fail_unless (r->pipeline != NULL && error == NULL, "%s: %s", desc,
      error ? error->message : "?");
  sink = gst_bin_get_by_name (GST_BIN (r->pipeline), "sink");
  fail_unless (sink != NULL);
  r->enc = gst_bin_get_by_name (GST_BIN (r->pipeline), "enc");
  r->samples = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_sample_unref);
  fail_unless (gst_element_set_state (r->pipeline, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE, "%s does not start", desc);
  for (;;) {
    GstSample *s = gst_app_sink_try_pull_sample (GST_APP_SINK (sink),
        PULL_TIMEOUT);
    if (s == NULL)
      break;
    g_ptr_array_add (r->samples, s);
  }
  if (!gst_app_sink_is_eos (GST_APP_SINK (sink))) {
    gchar *err = pop_error (r->pipeline, 0, NULL);
    fail ("%s: no EOS (error: %s)", desc, err ? err : "none");
  }
  gst_object_unref (sink);
  return r;
}

static void
run_free (Run * r)
{
  gst_element_set_state (r->pipeline, GST_STATE_NULL);
  if (r->enc)
    gst_object_unref (r->enc);
  gst_object_unref (r->pipeline);
  g_ptr_array_unref (r->samples);
  g_free (r);
}

static GstBuffer *
sample_buffer (Run * r, guint i)
{
  return gst_sample_get_buffer (g_ptr_array_index (r->samples, i));
}

static gchar *
encoder_desc (const gchar * avq_name, const gchar * extra)
{
  g_autofree gchar *path = avq_path (avq_name);
  return g_strdup_printf ("avqencode name=enc model=\"%s\" avq=\"%s\" %s",
      MODEL_DIR, path, extra ? extra : "");
}

/* The caps of an AVQ stream of this engine. */
static void
check_avq_caps (GstCaps * caps, AvqEngine * engine, gint fps_n, gint fps_d)
{
  const GstStructure *s;
  gint v, n, d;
  char hex[17];

  fail_unless (caps != NULL && gst_caps_is_fixed (caps));
  s = gst_caps_get_structure (caps, 0);
  fail_unless (gst_structure_has_name (s, "application/x-avq"));
  fail_unless (gst_structure_get_int (s, "version", &v));
  fail_unless_equals_int (v, 1);
  fail_unless (gst_structure_get_int (s, "tokens", &v));
  fail_unless_equals_int (v, avq_engine_tokens (engine));
  fail_unless_equals_int (v, 577);
  fail_unless (gst_structure_get_int (s, "index-bits", &v));
  fail_unless_equals_int (v, avq_engine_index_bits (engine));
  fail_unless (gst_structure_get_int (s, "side-bits", &v));
  fail_unless_equals_int (v, avq_engine_side_bits (engine));
  fail_unless (gst_structure_get_int (s, "layer", &v));
  fail_unless_equals_int (v, avq_engine_split_layer (engine));
  avq_codebook_id_to_hex (avq_engine_codebook_id (engine), hex);
  fail_unless_equals_string (gst_structure_get_string (s, "codebook"), hex);
  fail_unless (gst_structure_get_fraction (s, "framerate", &n, &d));
  fail_unless (n == fps_n && d == fps_d, "framerate %d/%d, expected %d/%d",
      n, d, fps_n, fps_d);
}

static const char *
pixel_format_name (AvqPixelFormat f)
{
  switch (f) {
    case AVQ_PIXEL_RGB: return "RGB";
    case AVQ_PIXEL_RGBA: return "RGBA";
    case AVQ_PIXEL_RGBX: return "RGBx";
    case AVQ_PIXEL_BGR: return "BGR";
    case AVQ_PIXEL_BGRA: return "BGRA";
    case AVQ_PIXEL_BGRX: return "BGRx";
  }
  return NULL;
}

/* A raw video buffer as an AvqImage: packed RGB formats as they are, the
 * others through GStreamer's default converter to RGB. */
static AvqImage *
image_from_sample (GstSample * sample)
{
  GstVideoInfo info;
  GstVideoFrame frame;
  GError *error = NULL;
  AvqImage *image = NULL;
  const gchar *fmt;
  int pf;

  fail_unless (gst_video_info_from_caps (&info, gst_sample_get_caps (sample)));
  fail_unless (gst_video_frame_map (&frame, &info,
          gst_sample_get_buffer (sample), GST_MAP_READ));
  fmt = gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&info));
  for (pf = AVQ_PIXEL_RGB; pf <= AVQ_PIXEL_BGRX; pf++) {
    if (strcmp (fmt, pixel_format_name (pf)) == 0) {
      image = avq_image_from_packed (GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
          GST_VIDEO_FRAME_WIDTH (&frame), GST_VIDEO_FRAME_HEIGHT (&frame),
          GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0), pf, &error);
      break;
    }
  }
  if (image == NULL && error == NULL) {
    GstVideoInfo rgb_info;
    GstVideoFrame rgb;
    GstBuffer *buf;
    GstVideoConverter *conv;

    gst_video_info_set_format (&rgb_info, GST_VIDEO_FORMAT_RGB,
        GST_VIDEO_INFO_WIDTH (&info), GST_VIDEO_INFO_HEIGHT (&info));
    GST_VIDEO_INFO_FPS_N (&rgb_info) = GST_VIDEO_INFO_FPS_N (&info);
    GST_VIDEO_INFO_FPS_D (&rgb_info) = GST_VIDEO_INFO_FPS_D (&info);
    conv = gst_video_converter_new (&info, &rgb_info, NULL);
    fail_unless (conv != NULL);
    buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&rgb_info),
        NULL);
    fail_unless (gst_video_frame_map (&rgb, &rgb_info, buf, GST_MAP_WRITE));
    gst_video_converter_frame (conv, &frame, &rgb);
    image = avq_image_from_packed (GST_VIDEO_FRAME_PLANE_DATA (&rgb, 0),
        GST_VIDEO_FRAME_WIDTH (&rgb), GST_VIDEO_FRAME_HEIGHT (&rgb),
        GST_VIDEO_FRAME_PLANE_STRIDE (&rgb, 0), AVQ_PIXEL_RGB, &error);
    gst_video_frame_unmap (&rgb);
    gst_buffer_unref (buf);
    gst_video_converter_free (conv);
  }
  gst_video_frame_unmap (&frame);
  fail_unless (image != NULL, "image: %s", error ? error->message : "?");
  return image;
}

/* A solid-ish RGB test picture of w x h in a buffer with the default
 * (4-aligned) stride. */
static GstBuffer *
make_rgb_buffer (const GstVideoInfo * info, guint seed, GstClockTime pts,
    GstClockTime duration)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (info),
      NULL);
  GstMapInfo map;
  GRand *rand = g_rand_new_with_seed (seed);

  fail_unless (gst_buffer_map (buf, &map, GST_MAP_WRITE));
  for (gsize i = 0; i < map.size; i++)
    map.data[i] = (guint8) g_rand_int_range (rand, 0, 256);
  gst_buffer_unmap (buf, &map);
  g_rand_free (rand);
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = duration;
  return buf;
}

/* ---- tests ---- */

/* PNG -> pngdec -> videoconvert -> avqencode: the engine's frame for the
 * same PNG file, for every fixture image and both AVQ files. */
GST_START_TEST (test_png_bit_exact)
{
  for (guint a = 0; a < G_N_ELEMENTS (avq_names); a++) {
    AvqEngine *engine = load_engine (avq_names[a]);

    for (guint i = 0; i < G_N_ELEMENTS (image_names); i++) {
      g_autofree gchar *png = g_strdup_printf ("%s/images/%s.png", MODEL_DIR,
          image_names[i]);
      g_autofree gchar *enc = encoder_desc (avq_names[a], NULL);
      g_autofree gchar *desc = g_strdup_printf ("filesrc location=\"%s\" ! "
          "pngdec ! videoconvert ! video/x-raw,format=RGB ! %s ! "
          "appsink name=sink sync=false", png, enc);
      GError *error = NULL;
      AvqImage *image = avq_image_load (png, &error);
      GBytes *expected;
      GstMapInfo map;
      AvqFrame *parsed;
      Run *r;

      fail_unless (image != NULL, "%s", error ? error->message : "?");
      expected = engine_encode (engine, image);
      avq_image_free (image);

      r = run_pipeline (desc);
      fail_unless_equals_int (r->samples->len, 1);
      fail_unless (buffer_equals_bytes (sample_buffer (r, 0), expected),
          "%s with %s differs from the engine", image_names[i], avq_names[a]);
      /* a well-formed frame of this AVQ file */
      fail_unless (gst_buffer_map (sample_buffer (r, 0), &map, GST_MAP_READ));
      parsed = avq_frame_parse (map.data, map.size, &error);
      fail_unless (parsed != NULL, "%s", error ? error->message : "?");
      fail_unless_equals_int (parsed->tokens, 577);
      fail_unless_equals_int (parsed->side_bits,
          avq_engine_side_bits (engine));
      fail_unless (memcmp (parsed->codebook_id,
              avq_engine_codebook_id (engine), AVQ_CODEBOOK_ID_SIZE) == 0);
      avq_frame_free (parsed);
      gst_buffer_unmap (sample_buffer (r, 0), &map);
      /* a still image: framerate 0/1 */
      check_avq_caps (gst_sample_get_caps (g_ptr_array_index (r->samples, 0)),
          engine, 0, 1);
      fail_unless_equals_uint64 (stats_get (r->enc, "frames-in"), 1);
      fail_unless_equals_uint64 (stats_get (r->enc, "frames-encoded"), 1);
      run_free (r);
      g_bytes_unref (expected);
    }
    avq_engine_free (engine);
  }
}

GST_END_TEST;

/* Every raw format the sink template lists, at an even and an odd size:
 * each frame is the engine's frame of the same picture (packed RGB read as
 * it is, YUV through the default converter), and the packed RGB formats of
 * one picture give identical frames. */
GST_START_TEST (test_input_formats)
{
  static const gchar *const formats[] = {
    "RGB", "RGBA", "RGBx", "BGR", "BGRA", "BGRx", "I420", "NV12",
  };
  static const gint sizes[][2] = { {320, 240}, {333, 250} };
  AvqEngine *engine = load_engine (avq_names[0]);

  for (guint s = 0; s < G_N_ELEMENTS (sizes); s++) {
    GBytes *rgb_frames[2] = { NULL, NULL };

    for (guint f = 0; f < G_N_ELEMENTS (formats); f++) {
      g_autofree gchar *src = g_strdup_printf ("videotestsrc num-buffers=2 "
          "pattern=ball ! video/x-raw,format=%s,width=%d,height=%d,"
          "framerate=25/1", formats[f], sizes[s][0], sizes[s][1]);
      g_autofree gchar *enc = encoder_desc (avq_names[0], NULL);
      g_autofree gchar *raw_desc = g_strdup_printf ("%s ! appsink name=sink "
          "sync=false", src);
      g_autofree gchar *enc_desc = g_strdup_printf ("%s ! %s ! appsink "
          "name=sink sync=false", src, enc);
      gboolean packed_rgb = f < 6;
      Run *raw = run_pipeline (raw_desc);
      Run *r = run_pipeline (enc_desc);

      fail_unless_equals_int (raw->samples->len, 2);
      fail_unless_equals_int (r->samples->len, 2);
      check_avq_caps (gst_sample_get_caps (g_ptr_array_index (r->samples, 0)),
          engine, 25, 1);
      for (guint k = 0; k < 2; k++) {
        AvqImage *image = image_from_sample (g_ptr_array_index (raw->samples,
                k));
        GBytes *expected = engine_encode (engine, image);
        GstBuffer *out = sample_buffer (r, k);

        avq_image_free (image);
        fail_unless (buffer_equals_bytes (out, expected),
            "%s %dx%d frame %u differs from the engine", formats[f],
            sizes[s][0], sizes[s][1], k);
        fail_unless_equals_uint64 (GST_BUFFER_PTS (out),
            GST_BUFFER_PTS (sample_buffer (raw, k)));
        if (f == 0)
          rgb_frames[k] = g_bytes_ref (expected);
        else if (packed_rgb)
          fail_unless (buffer_equals_bytes (out, rgb_frames[k]),
              "%s %dx%d frame %u differs from RGB", formats[f], sizes[s][0],
              sizes[s][1], k);
        g_bytes_unref (expected);
      }
      run_free (raw);
      run_free (r);
    }
    g_bytes_unref (rgb_frames[0]);
    g_bytes_unref (rgb_frames[1]);
  }
  avq_engine_free (engine);
}

GST_END_TEST;

/* A padded stride announced with GstVideoMeta is honoured. */
GST_START_TEST (test_video_meta_stride)
{
  g_autofree gchar *desc = encoder_desc (avq_names[0], NULL);
  GstHarness *h = gst_harness_new_parse (desc);
  const gint w = 333, hgt = 250, stride = 1024;
  GstVideoInfo info;
  GstBuffer *tight, *padded, *out_tight, *out_padded;
  GstMapInfo mt, mp;
  gsize offset[GST_VIDEO_MAX_PLANES] = { 0 };
  gint strides[GST_VIDEO_MAX_PLANES] = { stride };

  gst_harness_set_live (h, FALSE);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, w, hgt);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=333,"
      "height=250,framerate=25/1");
  tight = make_rgb_buffer (&info, 7, 0, FRAME_DURATION);
  padded = gst_buffer_new_allocate (NULL, (gsize) stride * hgt, NULL);
  fail_unless (gst_buffer_map (tight, &mt, GST_MAP_READ));
  fail_unless (gst_buffer_map (padded, &mp, GST_MAP_WRITE));
  memset (mp.data, 0xa5, mp.size);
  for (gint y = 0; y < hgt; y++)
    memcpy (mp.data + (gsize) y * stride,
        mt.data + (gsize) y * GST_VIDEO_INFO_PLANE_STRIDE (&info, 0), w * 3);
  gst_buffer_unmap (padded, &mp);
  gst_buffer_unmap (tight, &mt);
  gst_buffer_add_video_meta_full (padded, GST_VIDEO_FRAME_FLAG_NONE,
      GST_VIDEO_FORMAT_RGB, w, hgt, 1, offset, strides);
  GST_BUFFER_PTS (padded) = FRAME_DURATION;

  fail_unless_equals_int (gst_harness_push (h, tight), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, padded), GST_FLOW_OK);
  out_tight = gst_harness_pull (h);
  out_padded = gst_harness_pull (h);
  fail_unless (out_tight != NULL && out_padded != NULL);
  fail_unless (buffers_equal (out_tight, out_padded));
  gst_buffer_unref (out_tight);
  gst_buffer_unref (out_padded);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* PTS, DTS and duration of each input frame are those of its AVQ frame;
 * the output framerate is the input's. Non-live upstream: frames pushed
 * back to back are all encoded, in order. */
GST_START_TEST (test_timestamps)
{
  g_autofree gchar *desc = encoder_desc (avq_names[1], NULL);
  GstHarness *h = gst_harness_new_parse (desc);
  AvqEngine *engine = load_engine (avq_names[1]);
  const GstClockTime dur = GST_SECOND / 30;
  GstVideoInfo info;
  GstBuffer *in[4];
  GstCaps *caps;

  gst_harness_set_live (h, FALSE);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 64, 48);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,"
      "height=48,framerate=30/1");
  for (guint i = 0; i < G_N_ELEMENTS (in); i++) {
    in[i] = make_rgb_buffer (&info, i, GST_SECOND + i * dur + 17, dur - i);
    GST_BUFFER_DTS (in[i]) = GST_SECOND + i * dur;
    GST_BUFFER_OFFSET (in[i]) = i;
    fail_unless_equals_int (gst_harness_push (h, gst_buffer_ref (in[i])),
        GST_FLOW_OK);
  }
  for (guint i = 0; i < G_N_ELEMENTS (in); i++) {
    GstBuffer *out = gst_harness_pull (h);
    GstMapInfo map;
    AvqImage *image;
    GBytes *expected;

    fail_unless (out != NULL);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (out), GST_BUFFER_PTS (in[i]));
    fail_unless_equals_uint64 (GST_BUFFER_DTS (out), GST_BUFFER_DTS (in[i]));
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (out),
        GST_BUFFER_DURATION (in[i]));
    fail_unless (gst_buffer_map (in[i], &map, GST_MAP_READ));
    image = avq_image_from_packed (map.data, 64, 48,
        GST_VIDEO_INFO_PLANE_STRIDE (&info, 0), AVQ_PIXEL_RGB, NULL);
    gst_buffer_unmap (in[i], &map);
    expected = engine_encode (engine, image);
    fail_unless (buffer_equals_bytes (out, expected), "frame %u", i);
    avq_image_free (image);
    g_bytes_unref (expected);
    gst_buffer_unref (out);
    gst_buffer_unref (in[i]);
  }
  caps = gst_pad_get_current_caps (h->sinkpad);
  check_avq_caps (caps, engine, 30, 1);
  gst_caps_unref (caps);
  {
    GstElement *enc = gst_bin_get_by_name (GST_BIN (h->element), "enc");
    fail_unless_equals_uint64 (stats_get (enc, "frames-dropped"), 0);
    fail_unless_equals_uint64 (stats_get (enc, "frames-encoded"), 4);
    gst_object_unref (enc);
  }
  avq_engine_free (engine);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* interval=3 on 9 frames: frames 0, 3 and 6 are encoded, six skipped, the
 * output framerate is a third of the input's and durations three times. */
GST_START_TEST (test_interval)
{
  g_autofree gchar *enc = encoder_desc (avq_names[0], "interval=3");
  g_autofree gchar *desc = g_strdup_printf ("videotestsrc num-buffers=9 "
      "pattern=ball ! video/x-raw,format=RGB,width=64,height=48,"
      "framerate=30/1 ! %s ! appsink name=sink sync=false", enc);
  AvqEngine *engine = load_engine (avq_names[0]);
  Run *r = run_pipeline (desc);

  fail_unless_equals_int (r->samples->len, 3);
  for (guint i = 0; i < 3; i++) {
    fail_unless_equals_uint64 (GST_BUFFER_PTS (sample_buffer (r, i)),
        gst_util_uint64_scale (3 * i, GST_SECOND, 30));
    /* Each AVQ frame stands for the three video frames up to the next. */
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (sample_buffer (r, i)),
        3 * gst_util_uint64_scale (1, GST_SECOND, 30));
  }
  check_avq_caps (gst_sample_get_caps (g_ptr_array_index (r->samples, 0)),
      engine, 10, 1);
  fail_unless_equals_uint64 (stats_get (r->enc, "frames-in"), 9);
  fail_unless_equals_uint64 (stats_get (r->enc, "frames-encoded"), 3);
  fail_unless_equals_uint64 (stats_get (r->enc, "frames-skipped"), 6);
  fail_unless_equals_uint64 (stats_get (r->enc, "frames-dropped"), 0);
  run_free (r);
  avq_engine_free (engine);
}

GST_END_TEST;

/* The LATENCY query adds the encoder's own (positive) latency to
 * upstream's. */
GST_START_TEST (test_latency_query)
{
  g_autofree gchar *desc = encoder_desc (avq_names[0], NULL);
  GstHarness *h = gst_harness_new_parse (desc);
  const GstClockTime upstream = 10 * GST_MSECOND;
  GstClockTime latency;
  GstQuery *query;
  gboolean live;
  GstClockTime min, max;
  guint64 encode_time;

  gst_harness_set_upstream_latency (h, upstream);
  latency = gst_harness_query_latency (h);
  {
    GstElement *enc = gst_bin_get_by_name (GST_BIN (h->element), "enc");
    encode_time = stats_get (enc, "encode-time");
    gst_object_unref (enc);
  }
  fail_unless (encode_time > 0);
  fail_unless (latency > upstream, "latency %" GST_TIME_FORMAT,
      GST_TIME_ARGS (latency));
  fail_unless_equals_uint64 (latency, upstream + encode_time);

  /* live-ness and an unbounded maximum come through */
  query = gst_query_new_latency ();
  fail_unless (gst_pad_peer_query (h->sinkpad, query));
  gst_query_parse_latency (query, &live, &min, &max);
  fail_unless (live);
  fail_unless_equals_uint64 (min, upstream + encode_time);
  fail_if (GST_CLOCK_TIME_IS_VALID (max));
  gst_query_unref (query);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* Loading failures make READY -> PAUSED fail with an element error whose
 * debug string names the file. */
static void
check_load_error (const gchar * model, const gchar * avq,
    const gchar * must_name)
{
  GString *desc = g_string_new ("videotestsrc num-buffers=1 ! avqencode "
      "name=enc");
  GstElement *pipeline, *enc;
  GstObject *src = NULL;
  gchar *err;

  if (model)
    g_string_append_printf (desc, " model=\"%s\"", model);
  if (avq)
    g_string_append_printf (desc, " avq=\"%s\"", avq);
  g_string_append (desc, " ! fakesink");
  pipeline = gst_parse_launch (desc->str, NULL);
  fail_unless (pipeline != NULL);
  enc = gst_bin_get_by_name (GST_BIN (pipeline), "enc");
  fail_unless_equals_int (gst_element_set_state (pipeline, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  err = pop_error (pipeline, 0, &src);
  fail_unless (err != NULL, "no error message for %s", desc->str);
  fail_unless (src == GST_OBJECT (enc), "error from %s",
      GST_OBJECT_NAME (src));
  fail_unless (strstr (err, must_name) != NULL, "'%s' does not name '%s'",
      err, must_name);
  g_free (err);
  gst_object_unref (src);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (enc);
  gst_object_unref (pipeline);
  g_string_free (desc, TRUE);
}

GST_START_TEST (test_load_errors)
{
  g_autofree gchar *tmp = g_dir_make_tmp ("avqencode-XXXXXX", NULL);
  g_autofree gchar *no_model = g_build_filename (tmp, "no-such-model", NULL);
  g_autofree gchar *no_avq = g_build_filename (tmp, "no-such.avq", NULL);
  g_autofree gchar *garbage = g_build_filename (tmp, "garbage.avq", NULL);
  g_autofree gchar *truncated = g_build_filename (tmp, "truncated.avq",
      NULL);
  g_autofree gchar *good = avq_path (avq_names[0]);
  gchar *contents;
  gsize len;
  guint8 junk[1000];

  fail_unless (tmp != NULL);
  for (guint i = 0; i < sizeof junk; i++)
    junk[i] = (guint8) (i * 151 + 7);
  fail_unless (g_file_set_contents (garbage, (const gchar *) junk,
          sizeof junk, NULL));
  fail_unless (g_file_get_contents (good, &contents, &len, NULL));
  fail_unless (g_file_set_contents (truncated, contents, len / 2, NULL));
  g_free (contents);

  check_load_error (no_model, good, no_model);
  check_load_error (MODEL_DIR, no_avq, no_avq);
  check_load_error (MODEL_DIR, garbage, garbage);
  check_load_error (MODEL_DIR, truncated, truncated);
  check_load_error (NULL, good, "model");
  check_load_error (MODEL_DIR, NULL, "avq");

  g_unlink (garbage);
  g_unlink (truncated);
  g_rmdir (tmp);
}

GST_END_TEST;

/* ---- live sources ---- */

typedef struct
{
  GMutex lock;
  GCond cond;
  guint hold_at, seen;          /* hold the hold_at-th frame (from 0) */
  gboolean blocked, released;
} Gate;

/* Holds an encoded frame in the encoder's streaming task until the test
 * releases it: frames arriving meanwhile wait in the mailbox. */
static GstPadProbeReturn
gate_probe (GstPad * pad, GstPadProbeInfo * info, gpointer data)
{
  Gate *g = data;
  gint64 deadline = g_get_monotonic_time () + 30 * G_TIME_SPAN_SECOND;
  (void) pad;
  (void) info;

  if (g->seen++ < g->hold_at)
    return GST_PAD_PROBE_OK;
  g_mutex_lock (&g->lock);
  g->blocked = TRUE;
  g_cond_broadcast (&g->cond);
  while (!g->released)
    if (!g_cond_wait_until (&g->cond, &g->lock, deadline))
      break;
  g_mutex_unlock (&g->lock);
  return GST_PAD_PROBE_REMOVE;
}

/* Polls a stats counter until it reaches `value`, for at most 30 s. */
static gboolean
wait_stats (GstElement * enc, const gchar * field, guint64 value)
{
  gint64 deadline = g_get_monotonic_time () + 30 * G_TIME_SPAN_SECOND;

  while (stats_get (enc, field) < value) {
    if (g_get_monotonic_time () > deadline)
      return FALSE;
    g_usleep (1000);
  }
  return TRUE;
}

static GstMessage *
wait_eos (GstElement * pipeline)
{
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, BUS_TIMEOUT,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  gst_object_unref (bus);
  return msg;
}

/* A live appsrc delivers 50 frames back to back while the encoder is held
 * on its first frame: the waiting frame is replaced each time (dropped),
 * the newest is encoded once the encoder is free, EOS delivers it, and the
 * counters add up. */
static void
run_live (gboolean hold_encoder, guint n)
{
  g_autofree gchar *enc = encoder_desc (avq_names[0], NULL);
  g_autofree gchar *desc = g_strdup_printf ("appsrc name=src is-live=true "
      "format=time caps=video/x-raw,format=RGB,width=64,height=48,"
      "framerate=25/1 ! %s ! appsink name=sink sync=false", enc);
  GstElement *pipeline = gst_parse_launch (desc, NULL);
  GstElement *src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "sink");
  GstElement *encoder = gst_bin_get_by_name (GST_BIN (pipeline), "enc");
  GstPad *srcpad = gst_element_get_static_pad (encoder, "src");
  GstVideoInfo info;
  GstMessage *msg;
  GstSample *sample;
  GstClockTime last_pts = GST_CLOCK_TIME_NONE;
  guint out = 0;
  guint64 in, encoded, dropped, skipped;
  Gate gate;

  g_mutex_init (&gate.lock);
  g_cond_init (&gate.cond);
  gate.blocked = gate.released = FALSE;
  gate.hold_at = gate.seen = 0;
  if (hold_encoder)
    gst_pad_add_probe (srcpad, GST_PAD_PROBE_TYPE_BUFFER, gate_probe, &gate,
        NULL);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 64, 48);
  fail_unless (gst_element_set_state (pipeline, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE);

  for (guint i = 0; i < n; i++) {
    fail_unless_equals_int (gst_app_src_push_buffer (GST_APP_SRC (src),
            make_rgb_buffer (&info, i, i * FRAME_DURATION, FRAME_DURATION)),
        GST_FLOW_OK);
    if (hold_encoder && i == 0) {
      /* the encoder is busy with frame 0 (held while pushing it) */
      gint64 deadline = g_get_monotonic_time () + 30 * G_TIME_SPAN_SECOND;
      g_mutex_lock (&gate.lock);
      while (!gate.blocked)
        if (!g_cond_wait_until (&gate.cond, &gate.lock, deadline))
          break;
      fail_unless (gate.blocked, "the first frame never came out");
      g_mutex_unlock (&gate.lock);
    }
  }
  if (hold_encoder) {
    /* every frame has reached the encoder while it is still busy */
    fail_unless (wait_stats (encoder, "frames-in", n));
    g_mutex_lock (&gate.lock);
    gate.released = TRUE;
    g_cond_broadcast (&gate.cond);
    g_mutex_unlock (&gate.lock);
  }
  fail_unless_equals_int (gst_app_src_end_of_stream (GST_APP_SRC (src)),
      GST_FLOW_OK);

  /* appsink holds EOS back until its samples are taken */
  while ((sample = gst_app_sink_try_pull_sample (GST_APP_SINK (sink),
              PULL_TIMEOUT))) {
    GstClockTime pts = GST_BUFFER_PTS (gst_sample_get_buffer (sample));
    if (GST_CLOCK_TIME_IS_VALID (last_pts))
      fail_unless (pts > last_pts, "frames out of order");
    last_pts = pts;
    out++;
    gst_sample_unref (sample);
  }
  fail_unless (gst_app_sink_is_eos (GST_APP_SINK (sink)), "no EOS: hang");
  msg = wait_eos (pipeline);
  fail_unless (msg != NULL, "no EOS message");
  fail_unless_equals_int (GST_MESSAGE_TYPE (msg), GST_MESSAGE_EOS);
  gst_message_unref (msg);
  in = stats_get (encoder, "frames-in");
  encoded = stats_get (encoder, "frames-encoded");
  dropped = stats_get (encoder, "frames-dropped");
  skipped = stats_get (encoder, "frames-skipped");
  GST_INFO ("live: %u frames in, %" G_GUINT64_FORMAT " encoded, %"
      G_GUINT64_FORMAT " dropped", n, encoded, dropped);
  fail_unless_equals_uint64 (in, n);
  fail_unless_equals_uint64 (encoded + dropped + skipped, in);
  fail_unless_equals_uint64 (skipped, 0);
  fail_unless_equals_uint64 (out, encoded);
  /* the newest frame is never replaced: it is encoded before EOS */
  fail_unless_equals_uint64 (last_pts, (n - 1) * FRAME_DURATION);
  if (hold_encoder) {
    /* frame 0 (held) and the newest one; every frame in between was
     * replaced while waiting */
    fail_unless_equals_uint64 (encoded, 2);
    fail_unless_equals_uint64 (dropped, n - 2);
  }

  gst_element_set_state (pipeline, GST_STATE_NULL);
  g_mutex_clear (&gate.lock);
  g_cond_clear (&gate.cond);
  gst_object_unref (srcpad);
  gst_object_unref (encoder);
  gst_object_unref (src);
  gst_object_unref (sink);
  gst_object_unref (pipeline);
}

GST_START_TEST (test_live_drop)
{
  run_live (TRUE, 50);
}

GST_END_TEST;

/* The same without holding the encoder: how many are dropped depends on
 * the machine, but the counters add up and nothing hangs. */
GST_START_TEST (test_live_free_running)
{
  run_live (FALSE, 50);
}

GST_END_TEST;

/* Downstream returning EOS (identity eos-after=2: on the second frame)
 * while another frame waits in the mailbox: the task pauses for good, and
 * the EOS event upstream then sends must not wait for that frame. The
 * second frame is held until the third is waiting, so this is
 * deterministic. */
GST_START_TEST (test_downstream_eos)
{
  g_autofree gchar *enc = encoder_desc (avq_names[0], NULL);
  g_autofree gchar *desc = g_strdup_printf ("appsrc name=src format=time "
      "caps=video/x-raw,format=RGB,width=64,height=48,framerate=25/1 ! %s ! "
      "identity eos-after=2 ! fakesink sync=false", enc);
  GstElement *pipeline = gst_parse_launch (desc, NULL);
  GstElement *src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  GstElement *encoder = gst_bin_get_by_name (GST_BIN (pipeline), "enc");
  GstPad *srcpad = gst_element_get_static_pad (encoder, "src");
  GstVideoInfo info;
  GstMessage *msg;
  Gate gate = { .hold_at = 1 };

  g_mutex_init (&gate.lock);
  g_cond_init (&gate.cond);
  gst_pad_add_probe (srcpad, GST_PAD_PROBE_TYPE_BUFFER, gate_probe, &gate,
      NULL);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 64, 48);
  fail_unless (gst_element_set_state (pipeline, GST_STATE_PLAYING)
      != GST_STATE_CHANGE_FAILURE);
  for (guint i = 0; i < 5; i++)
    fail_unless_equals_int (gst_app_src_push_buffer (GST_APP_SRC (src),
            make_rgb_buffer (&info, i, i * FRAME_DURATION, FRAME_DURATION)),
        GST_FLOW_OK);
  fail_unless_equals_int (gst_app_src_end_of_stream (GST_APP_SRC (src)),
      GST_FLOW_OK);
  /* frame 1 is held on its way out, frame 2 waits in the mailbox (the
   * chain function has taken frame 3) */
  fail_unless (wait_stats (encoder, "frames-in", 4), "frames-in %"
      G_GUINT64_FORMAT ", encoded %" G_GUINT64_FORMAT ", probe saw %u",
      stats_get (encoder, "frames-in"), stats_get (encoder, "frames-encoded"),
      gate.seen);
  g_mutex_lock (&gate.lock);
  {
    gint64 deadline = g_get_monotonic_time () + 30 * G_TIME_SPAN_SECOND;
    while (!gate.blocked)
      if (!g_cond_wait_until (&gate.cond, &gate.lock, deadline))
        break;
  }
  fail_unless (gate.blocked);
  gate.released = TRUE;
  g_cond_broadcast (&gate.cond);
  g_mutex_unlock (&gate.lock);

  msg = wait_eos (pipeline);
  fail_unless (msg != NULL, "EOS did not arrive: hang");
  fail_unless_equals_int (GST_MESSAGE_TYPE (msg), GST_MESSAGE_EOS);
  gst_message_unref (msg);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  g_mutex_clear (&gate.lock);
  g_cond_clear (&gate.cond);
  gst_object_unref (srcpad);
  gst_object_unref (encoder);
  gst_object_unref (src);
  gst_object_unref (pipeline);
}

GST_END_TEST;

/* Flushing seeks restart the encoding task. */
GST_START_TEST (test_flush_restart)
{
  g_autofree gchar *desc = encoder_desc (avq_names[0], NULL);
  GstHarness *h = gst_harness_new_parse (desc);
  GstVideoInfo info;
  GstBuffer *out;

  gst_harness_set_live (h, FALSE);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 64, 48);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,"
      "height=48,framerate=25/1");
  fail_unless_equals_int (gst_harness_push (h, make_rgb_buffer (&info, 1, 0,
              FRAME_DURATION)), GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  gst_buffer_unref (out);
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));
  {
    GstSegment segment;
    gst_segment_init (&segment, GST_FORMAT_TIME);
    fail_unless (gst_harness_push_event (h, gst_event_new_segment (&segment)));
  }
  fail_unless_equals_int (gst_harness_push (h, make_rgb_buffer (&info, 2,
              FRAME_DURATION, FRAME_DURATION)), GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), FRAME_DURATION);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}

GST_END_TEST;

static Suite *
avqencode_suite (void)
{
  Suite *s = suite_create ("avqencode");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_set_timeout (tc, 120);
  tcase_add_test (tc, test_png_bit_exact);
  tcase_add_test (tc, test_input_formats);
  tcase_add_test (tc, test_video_meta_stride);
  tcase_add_test (tc, test_timestamps);
  tcase_add_test (tc, test_interval);
  tcase_add_test (tc, test_latency_query);
  tcase_add_test (tc, test_load_errors);
  tcase_add_test (tc, test_live_drop);
  tcase_add_test (tc, test_live_free_running);
  tcase_add_test (tc, test_downstream_eos);
  tcase_add_test (tc, test_flush_restart);
  return s;
}

GST_CHECK_MAIN (avqencode);
