/* avq-run: gst-launch-1.0 for AVQ pipelines, with what the main job and the
 * pipeline scripts need on top:
 *
 *  - every "avq-answer" bus message of avqanswer printed as one line,
 *  - optionally the GstAvqAnswerMeta attached to buffers reaching an
 *    element (--meta NAME), read through the public gstavqmeta-1.0 library,
 *  - stop conditions for live pipelines (a udpsrc never ends on its own):
 *    a frame count at avqdepay, an idle time, an overall timeout, or
 *    SIGINT/SIGTERM; each sends EOS, so avqanswer finishes the answer in
 *    flight before the pipeline stops,
 *  - at the end the "stats" structure of every element that has one (and
 *    udpsink's bytes-served), one line per element, for scripts to read.
 *
 * Usage: avq-run [OPTION...] PIPELINE-DESCRIPTION
 * (see --help). Output lines on stdout:
 *   port NAME N                      bound port of each udpsrc
 *   ready                            models loaded, sockets bound
 *   playing                          (live pipelines: at the first buffer)
 *   answer NAME pts=H:MM:SS.NNN tokens=N vision-ms=... prefill-ms=...
 *          decode-ms=... question="..." answer="..."   (NAME: the avqanswer)
 *   meta NAME pts=... frame-pts=... question="..." answer="..."
 *   stats NAME key=value ...         at the end, with --stats
 *   eos
 * Diagnostics go to stderr. Exit status: 0 after EOS, 1 on an error or a
 * timeout, 2 on bad usage. */
#include <gst/gst.h>
#include <glib-unix.h>
#include <stdio.h>
#include <string.h>

#include "gstavqanswermeta.h"

typedef struct {
  GstElement *pipeline;
  GMainLoop *loop;
  int status;
  gboolean eos_sent;
  guint64 frames_wanted;
  gint64 idle_us;
  gdouble timeout_s;
  gboolean print_stats;
  char *meta_element;

  /* counted from streaming threads (atomics), read by on_tick */
  gint frames_seen;          /* buffers out of avqdepay */
  gint packets_seen;         /* buffers out of the sources */
  gint packets_at_tick;
  gint64 last_change_us;     /* when packets_seen last moved */
} App;

/* Answers come from a model: keep UTF-8, escape control bytes and quotes so
 * one answer is one line. */
static char *
one_line (const char *s)
{
  GString *out = g_string_new (NULL);
  if (s == NULL)
    return g_string_free (out, FALSE);
  for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
    if (*p == '"' || *p == '\\')
      g_string_append_printf (out, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      g_string_append_printf (out, "\\x%02x", *p);
    else
      g_string_append_c (out, (char) *p);
  }
  return g_string_free (out, FALSE);
}

static void
print_time (GString *s, const char *key, guint64 t)
{
  if (GST_CLOCK_TIME_IS_VALID (t))
    g_string_append_printf (s, "%s=%" GST_TIME_FORMAT, key, GST_TIME_ARGS (t));
  else
    g_string_append_printf (s, "%s=none", key);
}

static void
send_eos (App *app, const char *why)
{
  if (app->eos_sent)
    return;
  app->eos_sent = TRUE;
  g_printerr ("avq-run: %s, sending EOS\n", why);
  gst_element_send_event (app->pipeline, gst_event_new_eos ());
}

static gboolean
on_signal (gpointer data)
{
  App *app = data;
  if (app->eos_sent) {
    g_printerr ("avq-run: interrupted again, stopping now\n");
    app->status = 1;
    g_main_loop_quit (app->loop);
    return G_SOURCE_CONTINUE;
  }
  send_eos (app, "interrupted");
  return G_SOURCE_CONTINUE;
}

static gboolean
on_timeout (gpointer data)
{
  App *app = data;
  if (!app->eos_sent) {
    send_eos (app, "timeout");
    /* Give EOS ten seconds to get through (an answer may be in flight). */
    g_timeout_add_seconds (10, on_timeout, app);
    return G_SOURCE_REMOVE;
  }
  g_printerr ("avq-run: EOS did not arrive in time\n");
  app->status = 1;
  g_main_loop_quit (app->loop);
  return G_SOURCE_REMOVE;
}

/* Polls the conditions set from streaming threads. */
static gboolean
on_tick (gpointer data)
{
  App *app = data;
  if (app->eos_sent)
    return G_SOURCE_REMOVE;
  if (app->frames_wanted > 0 && (guint64) g_atomic_int_get (&app->frames_seen) >= app->frames_wanted) {
    send_eos (app, "all frames received");
    return G_SOURCE_REMOVE;
  }
  gint packets = g_atomic_int_get (&app->packets_seen);
  gint64 now = g_get_monotonic_time ();
  if (packets != app->packets_at_tick) {
    app->packets_at_tick = packets;
    app->last_change_us = now;
  }
  if (app->idle_us > 0 && packets > 0 && now - app->last_change_us > app->idle_us) {
    send_eos (app, "no packets any more");
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
}

static GstPadProbeReturn
count_frame (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  App *app = data;
  (void) pad;
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER)
    g_atomic_int_inc (&app->frames_seen);
  return GST_PAD_PROBE_OK;
}

static GstPadProbeReturn
note_packet (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  App *app = data;
  (void) pad;
  (void) info;
  g_atomic_int_inc (&app->packets_seen);
  return GST_PAD_PROBE_OK;
}

static GstPadProbeReturn
print_meta (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  (void) data;
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);
  gpointer state = NULL;
  GstMeta *meta;
  while ((meta = gst_buffer_iterate_meta_filtered (buffer, &state, GST_AVQ_ANSWER_META_API_TYPE))) {
    GstAvqAnswerMeta *m = (GstAvqAnswerMeta *) meta;
    g_autofree char *q = one_line (m->question), *a = one_line (m->answer);
    g_autofree char *owner = gst_object_get_name (GST_OBJECT (GST_PAD_PARENT (pad)));
    GString *s = g_string_new ("meta ");
    g_string_append (s, owner);
    g_string_append_c (s, ' ');
    print_time (s, "pts", GST_BUFFER_PTS (buffer));
    g_string_append_c (s, ' ');
    print_time (s, "frame-pts", m->frame_pts);
    g_string_append_printf (s, " tokens=%u question=\"%s\" answer=\"%s\"", m->n_tokens, q, a);
    printf ("%s\n", s->str);
    fflush (stdout);
    g_string_free (s, TRUE);
  }
  return GST_PAD_PROBE_OK;
}

static void
print_stats_of (GstElement *element)
{
  GObjectClass *klass = G_OBJECT_GET_CLASS (element);
  GParamSpec *stats = g_object_class_find_property (klass, "stats");
  GParamSpec *served = g_object_class_find_property (klass, "bytes-served");
  if (stats == NULL && served == NULL)
    return;
  GString *line = g_string_new ("stats ");
  g_string_append (line, GST_ELEMENT_NAME (element));
  if (stats != NULL && G_PARAM_SPEC_VALUE_TYPE (stats) == GST_TYPE_STRUCTURE) {
    GstStructure *s = NULL;
    g_object_get (element, "stats", &s, NULL);
    for (int i = 0; s != NULL && i < gst_structure_n_fields (s); i++) {
      const char *name = gst_structure_nth_field_name (s, i);
      const GValue *v = gst_structure_get_value (s, name);
      g_autofree char *str = G_VALUE_HOLDS_STRING (v) ? g_value_dup_string (v)
                                                       : gst_value_serialize (v);
      g_autofree char *safe = one_line (str);
      g_string_append_printf (line, " %s=%s", name, safe);
    }
    if (s != NULL)
      gst_structure_free (s);
  }
  if (served != NULL) {
    guint64 bytes = 0;
    g_object_get (element, "bytes-served", &bytes, NULL);
    g_string_append_printf (line, " bytes-served=%" G_GUINT64_FORMAT, bytes);
  }
  printf ("%s\n", line->str);
  g_string_free (line, TRUE);
}

static void
print_all_stats (App *app)
{
  GstIterator *it = gst_bin_iterate_recurse (GST_BIN (app->pipeline));
  GValue item = G_VALUE_INIT;
  GPtrArray *elements = g_ptr_array_new_with_free_func (gst_object_unref);
  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    g_ptr_array_add (elements, g_value_dup_object (&item));
    g_value_reset (&item);
  }
  g_value_unset (&item);
  gst_iterator_free (it);
  /* The iterator goes from the last element added; print in pipeline order. */
  for (guint i = elements->len; i > 0; i--)
    print_stats_of (g_ptr_array_index (elements, i - 1));
  g_ptr_array_unref (elements);
  fflush (stdout);
}

static void
print_ports (App *app)
{
  GstIterator *it = gst_bin_iterate_recurse (GST_BIN (app->pipeline));
  GValue item = G_VALUE_INIT;
  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *e = g_value_get_object (&item);
    GstElementFactory *f = gst_element_get_factory (e);
    if (f != NULL && g_str_equal (GST_OBJECT_NAME (f), "udpsrc")) {
      gint port = 0;
      g_object_get (e, "port", &port, NULL);
      printf ("port %s %d\n", GST_ELEMENT_NAME (e), port);
    }
    g_value_reset (&item);
  }
  g_value_unset (&item);
  gst_iterator_free (it);
  fflush (stdout);
}

static gboolean
on_message (GstBus *bus, GstMessage *msg, gpointer data)
{
  App *app = data;
  (void) bus;
  switch (GST_MESSAGE_TYPE (msg)) {
    case GST_MESSAGE_ELEMENT: {
      const GstStructure *s = gst_message_get_structure (msg);
      if (s != NULL && gst_structure_has_name (s, "avq-answer")) {
        guint64 pts = GST_CLOCK_TIME_NONE;
        guint tokens = 0;
        gdouble vision = 0, prefill = 0, decode = 0;
        gst_structure_get_uint64 (s, "pts", &pts);
        gst_structure_get_uint (s, "tokens", &tokens);
        gst_structure_get_double (s, "vision-ms", &vision);
        gst_structure_get_double (s, "prefill-ms", &prefill);
        gst_structure_get_double (s, "decode-ms", &decode);
        g_autofree char *q = one_line (gst_structure_get_string (s, "question"));
        g_autofree char *a = one_line (gst_structure_get_string (s, "answer"));
        GString *line = g_string_new ("answer ");
        g_string_append (line, GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)));
        g_string_append_c (line, ' ');
        print_time (line, "pts", pts);
        g_string_append_printf (line, " tokens=%u vision-ms=%.1f prefill-ms=%.1f decode-ms=%.1f "
                                "question=\"%s\" answer=\"%s\"", tokens, vision, prefill, decode, q, a);
        printf ("%s\n", line->str);
        fflush (stdout);
        g_string_free (line, TRUE);
      }
      break;
    }
    case GST_MESSAGE_STATE_CHANGED:
      if (GST_MESSAGE_SRC (msg) == GST_OBJECT (app->pipeline)) {
        GstState old, new_state;
        gst_message_parse_state_changed (msg, &old, &new_state, NULL);
        if (new_state == GST_STATE_PLAYING && old != GST_STATE_PLAYING) {
          printf ("playing\n");
          fflush (stdout);
        }
      }
      break;
    case GST_MESSAGE_LATENCY:
      gst_bin_recalculate_latency (GST_BIN (app->pipeline));
      break;
    case GST_MESSAGE_WARNING: {
      g_autoptr (GError) err = NULL;
      g_autofree char *dbg = NULL;
      gst_message_parse_warning (msg, &err, &dbg);
      g_printerr ("avq-run: warning from %s: %s%s%s\n", GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)),
                  err->message, dbg ? "\n  " : "", dbg ? dbg : "");
      break;
    }
    case GST_MESSAGE_ERROR: {
      g_autoptr (GError) err = NULL;
      g_autofree char *dbg = NULL;
      gst_message_parse_error (msg, &err, &dbg);
      g_printerr ("avq-run: error from %s: %s%s%s\n", GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)),
                  err->message, dbg ? "\n  " : "", dbg ? dbg : "");
      app->status = 1;
      g_main_loop_quit (app->loop);
      break;
    }
    case GST_MESSAGE_EOS:
      if (app->print_stats)
        print_all_stats (app);
      printf ("eos\n");
      fflush (stdout);
      g_main_loop_quit (app->loop);
      break;
    default:
      break;
  }
  return G_SOURCE_CONTINUE;
}

/* Probes: frames out of every avqdepay, packets out of every source. */
static gboolean
install_probes (App *app)
{
  gboolean have_depay = FALSE;
  GstIterator *it = gst_bin_iterate_recurse (GST_BIN (app->pipeline));
  GValue item = G_VALUE_INIT;
  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *e = g_value_get_object (&item);
    GstElementFactory *f = gst_element_get_factory (e);
    const char *factory = f ? GST_OBJECT_NAME (f) : "";
    if (g_str_equal (factory, "avqdepay")) {
      GstPad *src = gst_element_get_static_pad (e, "src");
      gst_pad_add_probe (src, GST_PAD_PROBE_TYPE_BUFFER, count_frame, app, NULL);
      gst_object_unref (src);
      have_depay = TRUE;
    }
    if (GST_OBJECT_FLAG_IS_SET (e, GST_ELEMENT_FLAG_SOURCE)) {
      GstPad *src = gst_element_get_static_pad (e, "src");
      if (src != NULL) {
        gst_pad_add_probe (src, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST,
                           note_packet, app, NULL);
        gst_object_unref (src);
      }
    }
    if (app->meta_element && g_str_equal (GST_ELEMENT_NAME (e), app->meta_element)) {
      GstPad *sink = gst_element_get_static_pad (e, "sink");
      if (sink == NULL) {
        g_printerr ("avq-run: element '%s' has no sink pad for --meta\n", app->meta_element);
      } else {
        gst_pad_add_probe (sink, GST_PAD_PROBE_TYPE_BUFFER, print_meta, app, NULL);
        gst_object_unref (sink);
      }
    }
    g_value_reset (&item);
  }
  g_value_unset (&item);
  gst_iterator_free (it);
  if (app->frames_wanted > 0 && !have_depay) {
    g_printerr ("avq-run: --frames needs an avqdepay in the pipeline\n");
    return FALSE;
  }
  return TRUE;
}

int
main (int argc, char **argv)
{
  App app = { 0 };
  gint64 frames = 0;
  gdouble idle = 0;
  g_autofree char *meta = NULL;
  gboolean stats = FALSE;
  GOptionEntry entries[] = {
    { "frames", 'n', 0, G_OPTION_ARG_INT64, &frames,
      "Send EOS once avqdepay has output N frames", "N" },
    { "idle", 'i', 0, G_OPTION_ARG_DOUBLE, &idle,
      "Send EOS when no packet arrived for S seconds (after the first)", "S" },
    { "timeout", 't', 0, G_OPTION_ARG_DOUBLE, &app.timeout_s,
      "Send EOS after S seconds in any case; fail if EOS takes 10 s more", "S" },
    { "stats", 's', 0, G_OPTION_ARG_NONE, &stats,
      "At EOS, print the stats of every element that has them", NULL },
    { "meta", 'm', 0, G_OPTION_ARG_STRING, &meta,
      "Print the GstAvqAnswerMeta of buffers entering element NAME", "NAME" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("PIPELINE-DESCRIPTION");
  g_option_context_set_summary (ctx,
      "Runs a GStreamer pipeline like gst-launch-1.0, prints avqanswer's answers\n"
      "one a line, stops live pipelines on a frame count, idle time or timeout,\n"
      "and prints element statistics at the end.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("avq-run: %s\n", error->message);
    return 2;
  }
  if (argc < 2) {
    g_printerr ("avq-run: no pipeline given (see --help)\n");
    return 2;
  }
  if (frames < 0 || idle < 0 || app.timeout_s < 0) {
    g_printerr ("avq-run: --frames, --idle and --timeout take non-negative values\n");
    return 2;
  }
  app.frames_wanted = (guint64) frames;
  app.idle_us = (gint64) (idle * G_USEC_PER_SEC);
  app.print_stats = stats;
  app.meta_element = meta;

  app.pipeline = gst_parse_launchv ((const gchar **) argv + 1, &error);
  if (app.pipeline == NULL || error != NULL) {
    g_printerr ("avq-run: bad pipeline: %s\n", error ? error->message : "unknown error");
    return 2;
  }
  if (!GST_IS_PIPELINE (app.pipeline)) {
    GstElement *p = gst_pipeline_new (NULL);
    gst_bin_add (GST_BIN (p), app.pipeline);
    app.pipeline = p;
  }
  if (!install_probes (&app))
    return 2;

  app.loop = g_main_loop_new (NULL, FALSE);
  GstBus *bus = gst_element_get_bus (app.pipeline);
  gst_bus_add_watch (bus, on_message, &app);
  gst_object_unref (bus);
  g_unix_signal_add (SIGINT, on_signal, &app);
  g_unix_signal_add (SIGTERM, on_signal, &app);
  if (app.timeout_s > 0)
    g_timeout_add ((guint) (app.timeout_s * 1000), on_timeout, &app);
  if (app.frames_wanted > 0 || app.idle_us > 0)
    g_timeout_add (50, on_tick, &app);

  if (gst_element_set_state (app.pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    /* The element's error message is on the bus: show it. */
    GstMessage *msg = gst_bus_timed_pop_filtered (GST_ELEMENT_BUS (app.pipeline), 0, GST_MESSAGE_ERROR);
    if (msg != NULL) {
      on_message (NULL, msg, &app);
      gst_message_unref (msg);
    } else {
      g_printerr ("avq-run: the pipeline did not start\n");
    }
    app.status = 1;
  } else {
    /* Elements load models and bind sockets in READY -> PAUSED, inside
     * set_state: from here on a receiver is ready for packets (a live
     * pipeline only reports PLAYING once its first buffer arrives). */
    print_ports (&app);
    printf ("ready\n");
    fflush (stdout);
    g_main_loop_run (app.loop);
  }
  gst_element_set_state (app.pipeline, GST_STATE_NULL);
  gst_object_unref (app.pipeline);
  g_main_loop_unref (app.loop);
  return app.status;
}
