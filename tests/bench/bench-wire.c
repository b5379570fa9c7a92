/* Wire benchmark: what one video frame costs on the network as an AVQ frame
 * and as a JPEG of the same 336x336 picture, and how fast avqpay + avqdepay
 * run.
 *
 * 1. Sizes. For each source (videotestsrc patterns, the fixture images
 *    centre-cropped to a square and scaled to 336x336) one pipeline feeds the
 *    same frames to three branches:
 *      avqencode ! tee -> (AVQ frame)      -> avqpay mtu=M   (RTP packets)
 *      I420 ! jpegenc quality=90 ! tee -> (JPEG) -> rtpjpegpay mtu=M
 *      I420 ! jpegenc quality=10 ! tee -> (JPEG) -> rtpjpegpay mtu=M
 *    (4:2:0 JPEG, what cameras send and what RTP/JPEG, RFC 2435, carries).
 *    Pad probes count frames, packets and bytes. "wire" adds 8 (UDP) + 20
 *    (IPv4) bytes to every RTP packet. 336x336 is what the model sees: a
 *    larger JPEG would cost more, the AVQ frame stays 882 bytes.
 * 2. Throughput: appsrc ! avqpay mtu=M ! avqdepay ! fakesink on one AVQ
 *    frame repeated N times (buffers queued before the clock starts), the
 *    median of R runs in frames per second; also avqpay alone.
 *
 *   bench-wire [--frames N] [--runs R] [--count C] [--mtu M]
 *              [--model DIR] [--avq FILE]
 *
 * Uses the plugin of this build tree (prepended to GST_PLUGIN_PATH) and the
 * tiny fixture model unless told otherwise: the frame size does not depend on
 * the weights, only on the AVQ file's bit widths. */
#include <gst/gst.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench-report.h"

#ifndef AVQ_TEST_DATA_DIR
#define AVQ_TEST_DATA_DIR "tests/data"
#endif
#ifndef AVQ_BUILD_DIR
#define AVQ_BUILD_DIR "build"
#endif

#define UDP_IPV4_OVERHEAD 28
#define RING 64

typedef struct {
  guint64 buffers;
  guint64 bytes;
} Counter;

static GstPadProbeReturn
count_probe (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  Counter *c = data;
  (void) pad;
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER) {
    c->buffers++;
    c->bytes += gst_buffer_get_size (GST_PAD_PROBE_INFO_BUFFER (info));
  } else if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST) {
    GstBufferList *list = GST_PAD_PROBE_INFO_BUFFER_LIST (info);
    guint n = gst_buffer_list_length (list);
    c->buffers += n;
    for (guint i = 0; i < n; i++)
      c->bytes += gst_buffer_get_size (gst_buffer_list_get (list, i));
  }
  return GST_PAD_PROBE_OK;
}

static void
attach_counter (GstElement *pipeline, const char *name, Counter *c)
{
  GstElement *e = gst_bin_get_by_name (GST_BIN (pipeline), name);
  g_assert (e != NULL);
  GstPad *pad = gst_element_get_static_pad (e, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST,
                     count_probe, c, NULL);
  gst_object_unref (pad);
  gst_object_unref (e);
}

/* Runs a pipeline to EOS; FALSE (after printing why) on an error. */
static gboolean
run_to_eos (GstElement *pipeline, gdouble *seconds)
{
  GstBus *bus = gst_element_get_bus (pipeline);
  gint64 start = g_get_monotonic_time ();
  gboolean ok = gst_element_set_state (pipeline, GST_STATE_PLAYING) != GST_STATE_CHANGE_FAILURE;
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, ok ? 600 * GST_SECOND : 0,
                                                GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  gint64 end = g_get_monotonic_time ();
  if (msg == NULL || GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    ok = FALSE;
    if (msg != NULL) {
      GError *err = NULL;
      gchar *dbg = NULL;
      gst_message_parse_error (msg, &err, &dbg);
      g_printerr ("bench-wire: %s: %s (%s)\n", GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)),
                  err->message, dbg ? dbg : "");
      g_clear_error (&err);
      g_free (dbg);
    } else {
      g_printerr ("bench-wire: the pipeline did not finish\n");
    }
  }
  if (msg != NULL)
    gst_message_unref (msg);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  if (seconds != NULL)
    *seconds = (end - start) / 1e6;
  return ok;
}

typedef struct {
  const char *label;
  char *source;  /* launch description ending in 336x336 raw video */
} Source;

typedef struct {
  Counter avq, avq_rtp, j90, j90_rtp, j10, j10_rtp;
} Sizes;

static gboolean
measure_sizes (const Source *src, const char *model, const char *avq, guint mtu, Sizes *out)
{
  g_autofree char *desc = g_strdup_printf (
      "%s ! tee name=t "
      "t. ! queue ! avqencode model=\"%s\" avq=\"%s\" ! tee name=ta "
      "  ta. ! queue ! fakesink name=avq sync=false "
      "  ta. ! queue ! avqpay mtu=%u ! fakesink name=avq_rtp sync=false "
      "t. ! queue ! videoconvert ! video/x-raw,format=I420 ! jpegenc quality=90 ! tee name=t90 "
      "  t90. ! queue ! fakesink name=j90 sync=false "
      "  t90. ! queue ! rtpjpegpay mtu=%u ! fakesink name=j90_rtp sync=false "
      "t. ! queue ! videoconvert ! video/x-raw,format=I420 ! jpegenc quality=10 ! tee name=t10 "
      "  t10. ! queue ! fakesink name=j10 sync=false "
      "  t10. ! queue ! rtpjpegpay mtu=%u ! fakesink name=j10_rtp sync=false",
      src->source, model, avq, mtu, mtu, mtu);
  GError *err = NULL;
  GstElement *p = gst_parse_launch (desc, &err);
  if (p == NULL || err != NULL) {
    g_printerr ("bench-wire: %s: %s\n", src->label, err ? err->message : "bad pipeline");
    g_clear_error (&err);
    return FALSE;
  }
  memset (out, 0, sizeof *out);
  attach_counter (p, "avq", &out->avq);
  attach_counter (p, "avq_rtp", &out->avq_rtp);
  attach_counter (p, "j90", &out->j90);
  attach_counter (p, "j90_rtp", &out->j90_rtp);
  attach_counter (p, "j10", &out->j10);
  attach_counter (p, "j10_rtp", &out->j10_rtp);
  gboolean ok = run_to_eos (p, NULL);
  gst_object_unref (p);
  return ok && out->avq.buffers > 0 && out->j90.buffers == out->avq.buffers &&
         out->j10.buffers == out->avq.buffers;
}

/* Per frame: payload bytes, and on the wire with RTP (+ UDP/IPv4) headers. */
static void
per_frame (const Counter *frames, const Counter *payload, const Counter *rtp,
           double *bytes, double *wire, double *packets)
{
  double n = (double) frames->buffers;
  *bytes = payload->bytes / n;
  *packets = rtp->buffers / n;
  *wire = (rtp->bytes + (double) UDP_IPV4_OVERHEAD * rtp->buffers) / n;
}

/* One AVQ frame and its caps, from the encoder. */
static GstSample *
capture_frame (const char *model, const char *avq)
{
  g_autofree char *desc = g_strdup_printf (
      "videotestsrc num-buffers=1 ! video/x-raw,width=336,height=336 ! videoconvert ! "
      "avqencode model=\"%s\" avq=\"%s\" ! appsink name=sink", model, avq);
  GstElement *p = gst_parse_launch (desc, NULL);
  GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  gst_element_set_state (p, GST_STATE_PLAYING);
  GstSample *sample = gst_app_sink_try_pull_sample (GST_APP_SINK (sink), 120 * GST_SECOND);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (p);
  return sample;
}

/* Frames per second through DESC ("appsrc name=src ! ..."), counting the
 * buffers entering the element named "count". */
static double
throughput (const char *desc, GstSample *frame, guint count, guint runs, double *spread)
{
  double *fps = g_new (double, runs);
  GstBuffer *proto = gst_sample_get_buffer (frame);
  gsize size = gst_buffer_get_size (proto);
  guint8 *ring = g_malloc (RING * size);
  for (guint i = 0; i < RING; i++)
    gst_buffer_extract (proto, 0, ring + i * size, size);
  for (guint r = 0; r < runs; r++) {
    GstElement *p = gst_parse_launch (desc, NULL);
    GstElement *src = gst_bin_get_by_name (GST_BIN (p), "src");
    Counter out = { 0 };
    attach_counter (p, "count", &out);
    g_object_set (src, "caps", gst_sample_get_caps (frame), "format", GST_FORMAT_TIME,
                  "max-bytes", (guint64) 0, "block", FALSE, NULL);
    /* Queue everything first: the clock measures the elements, not us. */
    for (guint i = 0; i < count; i++) {
      /* Each buffer gets its own GstMemory (one memory shared by thousands
       * of buffers makes every unref search its parent list) over one of
       * RING copies of the frame (so the data stays in cache, as a frame
       * just received would be). */
      GstBuffer *b = gst_buffer_new_wrapped_full (GST_MEMORY_FLAG_READONLY,
          ring + (i % RING) * size, size, 0, size, NULL, NULL);
      GST_BUFFER_PTS (b) = (GstClockTime) i * GST_SECOND / 25;
      GST_BUFFER_DURATION (b) = GST_SECOND / 25;
      gst_app_src_push_buffer (GST_APP_SRC (src), b);
    }
    gst_app_src_end_of_stream (GST_APP_SRC (src));
    double seconds = 0;
    gboolean ok = run_to_eos (p, &seconds);
    gst_object_unref (src);
    gst_object_unref (p);
    if (!ok || out.buffers == 0) {
      g_printerr ("bench-wire: throughput run failed (%" G_GUINT64_FORMAT " buffers out)\n", out.buffers);
      exit (1);
    }
    fps[r] = out.buffers / seconds;
  }
  g_free (ring);
  avq_bench_sort (fps, runs);
  double median = runs % 2 ? fps[runs / 2] : (fps[runs / 2 - 1] + fps[runs / 2]) / 2;
  *spread = fps[runs - 1] - fps[0];
  g_free (fps);
  return median;
}

int
main (int argc, char **argv)
{
  gint frames = 10, runs = 5, count = 50000, mtu = 1400;
  g_autofree char *model = NULL, *avq = NULL;
  GOptionEntry entries[] = {
    { "frames", 'n', 0, G_OPTION_ARG_INT, &frames, "Frames per source for the sizes (10)", "N" },
    { "runs", 'r', 0, G_OPTION_ARG_INT, &runs, "Throughput runs, median reported (5)", "R" },
    { "count", 'c', 0, G_OPTION_ARG_INT, &count, "Frames per throughput run (50000)", "C" },
    { "mtu", 'm', 0, G_OPTION_ARG_INT, &mtu, "avqpay/rtpjpegpay MTU (1400)", "M" },
    { "model", 0, 0, G_OPTION_ARG_FILENAME, &model, "Model directory (tiny fixture)", "DIR" },
    { "avq", 0, 0, G_OPTION_ARG_FILENAME, &avq, "AVQ file (tiny fixture, L0 derive)", "FILE" },
    G_OPTION_ENTRY_NULL
  };
  /* This build tree's plugin first. */
  const char *old = g_getenv ("GST_PLUGIN_PATH");
  g_autofree char *path = old && *old ? g_strdup_printf ("%s/gst:%s", AVQ_BUILD_DIR, old)
                                      : g_strdup (AVQ_BUILD_DIR "/gst");
  g_setenv ("GST_PLUGIN_PATH", path, TRUE);

  g_autoptr (GOptionContext) ctx = g_option_context_new (NULL);
  g_option_context_set_summary (ctx, "Bytes per frame on the wire, AVQ against JPEG, and "
                                "avqpay/avqdepay throughput.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  GError *err = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &err) || frames < 1 || runs < 1 ||
      count < 1 || mtu < 64) {
    g_printerr ("bench-wire: %s\n", err ? err->message : "bad option value");
    return 2;
  }
  if (model == NULL)
    model = g_strdup (AVQ_TEST_DATA_DIR "/tiny-llava");
  if (avq == NULL)
    avq = g_strdup (AVQ_TEST_DATA_DIR "/tiny-llava/avq-L0-derive.safetensors");

  const char *patterns[] = { "smpte", "ball", "snow", "pinwheel", "gradient", "circular" };
  const char *images[] = { "astronaut", "chelsea", "coffee" };
  const char *to336 = "video/x-raw,width=336,height=336,format=RGB";
  GPtrArray *sources = g_ptr_array_new ();
  for (guint i = 0; i < G_N_ELEMENTS (patterns); i++) {
    Source *s = g_new0 (Source, 1);
    s->label = patterns[i];
    s->source = g_strdup_printf ("videotestsrc pattern=%s num-buffers=%d ! %s", patterns[i],
                                 frames, to336);
    g_ptr_array_add (sources, s);
  }
  for (guint i = 0; i < G_N_ELEMENTS (images); i++) {
    Source *s = g_new0 (Source, 1);
    s->label = images[i];
    /* Centre square, then 336x336: the picture the model sees in crop mode. */
    s->source = g_strdup_printf ("filesrc location=\"%s/tiny-llava/images/%s.png\" ! pngdec ! "
                                 "imagefreeze num-buffers=%d ! videoconvert ! "
                                 "aspectratiocrop aspect-ratio=1/1 ! videoscale ! %s",
                                 AVQ_TEST_DATA_DIR, images[i], frames, to336);
    g_ptr_array_add (sources, s);
  }

  printf ("Bytes a frame for 336x336 frames (%d per source), RTP at MTU %d; "
          "wire = RTP packets + %d bytes UDP/IPv4 each. (packets a frame)\n\n",
          frames, mtu, UDP_IPV4_OVERHEAD);
  printf ("| source | AVQ frame | AVQ wire | JPEG q90 | q90 wire | JPEG q10 | q10 wire | q90 / AVQ wire | q10 / AVQ wire |\n");
  printf ("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (guint i = 0; i < sources->len; i++) {
    Source *s = g_ptr_array_index (sources, i);
    Sizes z;
    if (!measure_sizes (s, model, avq, (guint) mtu, &z)) {
      g_printerr ("bench-wire: %s failed\n", s->label);
      return 1;
    }
    double ab, aw, ap, hb, hw, hp, lb, lw, lp;
    per_frame (&z.avq, &z.avq, &z.avq_rtp, &ab, &aw, &ap);
    per_frame (&z.j90, &z.j90, &z.j90_rtp, &hb, &hw, &hp);
    per_frame (&z.j10, &z.j10, &z.j10_rtp, &lb, &lw, &lp);
    printf ("| %s | %.0f | %.0f (%.0f) | %.0f | %.0f (%.1f) | %.0f | %.0f (%.1f) | %.1fx | %.1fx |\n",
            s->label, ab, aw, ap, hb, hw, hp, lb, lw, lp, hw / aw, lw / aw);
    fflush (stdout);
  }

  GstSample *frame = capture_frame (model, avq);
  if (frame == NULL) {
    g_printerr ("bench-wire: could not encode a frame\n");
    return 1;
  }
  printf ("\nThroughput, one %" G_GSIZE_FORMAT "-byte AVQ frame x %d, median of %d runs "
          "(max - min in brackets):\n\n", gst_buffer_get_size (gst_sample_get_buffer (frame)),
          count, runs);
  printf ("| pipeline | MTU | frames/s |\n| --- | ---: | ---: |\n");
  guint mtus[] = { (guint) mtu, 200 };
  for (guint m = 0; m < G_N_ELEMENTS (mtus); m++) {
    double spread;
    g_autofree char *both = g_strdup_printf (
        "appsrc name=src ! avqpay mtu=%u ! avqdepay ! fakesink name=count sync=false", mtus[m]);
    double fps = throughput (both, frame, (guint) count, (guint) runs, &spread);
    printf ("| appsrc ! avqpay ! avqdepay ! fakesink | %u | %.0f (%.0f) |\n", mtus[m], fps, spread);
    fflush (stdout);
    g_autofree char *pay = g_strdup_printf (
        "appsrc name=src ! avqpay name=count mtu=%u ! fakesink sync=false", mtus[m]);
    fps = throughput (pay, frame, (guint) count, (guint) runs, &spread);
    printf ("| appsrc ! avqpay ! fakesink | %u | %.0f (%.0f) |\n", mtus[m], fps, spread);
    fflush (stdout);
  }
  gst_sample_unref (frame);
  return 0;
}
