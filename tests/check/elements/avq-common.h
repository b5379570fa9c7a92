/* Helpers shared by the avq element tests: random AVQ frames as buffers. */
#pragma once

#include <gst/gst.h>
#include <string.h>
#include "avq-frame.h"

#define TEST_CODEBOOK "0123456789abcdef"
/* 25 fps: a whole number of nanoseconds and of 90 kHz ticks (3600). */
#define FRAME_DURATION (GST_SECOND / 25)

static const guint8 test_codebook_id[AVQ_CODEBOOK_ID_SIZE] =
    { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef };

static inline gchar *
avq_caps_string (guint tokens, guint index_bits, guint side_bits)
{
  return g_strdup_printf ("application/x-avq, version=(int)1, tokens=(int)%u,"
      " index-bits=(int)%u, side-bits=(int)%u, codebook=(string)"
      TEST_CODEBOOK ", layer=(int)%u, framerate=(fraction)25/1",
      tokens, index_bits, side_bits, side_bits > 0 ? 1u : 0u);
}

/* A frame made with the frame API from random indices (and side info). */
static inline GstBuffer *
make_frame (GRand * rand, guint tokens, guint index_bits, guint side_bits,
    GstClockTime pts)
{
  AvqFrame *f = avq_frame_new (tokens, index_bits, side_bits,
      test_codebook_id);
  GstBuffer *buf;
  guint8 *data;
  gsize len;

  for (guint i = 0; i < tokens; i++)
    f->indices[i] = g_rand_int_range (rand, 0, 1 << index_bits);
  if (side_bits > 0) {
    for (guint i = 0; i < 2 * tokens; i++)
      f->side_codes[i] = g_rand_int_range (rand, 0, 1 << side_bits);
    f->side_range[0] = (float) g_rand_double_range (rand, -2, 0);
    f->side_range[1] = (float) g_rand_double_range (rand, 0, 2);
    f->side_range[2] = (float) g_rand_double_range (rand, -3, 0);
    f->side_range[3] = (float) g_rand_double_range (rand, 0, 1);
  }
  data = avq_frame_serialize (f, &len);
  avq_frame_free (f);
  buf = gst_buffer_new_wrapped (data, len);
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = FRAME_DURATION;
  return buf;
}

static inline gboolean
buffers_equal (GstBuffer * a, GstBuffer * b)
{
  GstMapInfo ma, mb;
  gboolean eq;

  if (!gst_buffer_map (a, &ma, GST_MAP_READ))
    return FALSE;
  if (!gst_buffer_map (b, &mb, GST_MAP_READ)) {
    gst_buffer_unmap (a, &ma);
    return FALSE;
  }
  eq = ma.size == mb.size && memcmp (ma.data, mb.data, ma.size) == 0;
  gst_buffer_unmap (a, &ma);
  gst_buffer_unmap (b, &mb);
  return eq;
}

static inline guint64
stats_get (GstElement * element, const gchar * field)
{
  GstStructure *s = NULL;
  guint64 v = G_MAXUINT64;

  g_object_get (element, "stats", &s, NULL);
  if (s == NULL || !gst_structure_get_uint64 (s, field, &v))
    g_error ("no %s in stats", field);
  gst_structure_free (s);
  return v;
}
