/* Parsing and writing AVQ stream parameters in caps. Caps reach us from
 * SDP files and remote peers, so every field is range-checked here and a
 * bad one fails negotiation instead of reaching the frame code. */
#include "gstavqstream.h"

#include <gst/rtp/gstrtpbasepayload.h>
#include <math.h>
#include <string.h>

#include "avq-error.h"

#define GST_CAT_DEFAULT gst_avq_debug

static gboolean
get_int_field (const GstStructure *s, const char *name, guint min, guint max,
    guint *out, GError **error)
{
  gint v;

  if (!gst_structure_get_int (s, name, &v)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
        "caps field '%s' (int) is missing", name);
    return FALSE;
  }
  if (v < 0 || (guint) v < min || (guint) v > max) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
        "caps field '%s' = %d outside %u..%u", name, v, min, max);
    return FALSE;
  }
  *out = (guint) v;
  return TRUE;
}

/* Decimal digits only: no sign, no space, no hex, no trailing junk. */
static gboolean
get_string_uint_field (const GstStructure *s, const char *name, guint min,
    guint max, guint *out, GError **error)
{
  const gchar *str = gst_structure_get_string (s, name);
  guint64 v;

  if (str == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
        "caps field '%s' (string) is missing", name);
    return FALSE;
  }
  if (!g_ascii_isdigit (str[0])
      || !g_ascii_string_to_unsigned (str, 10, min, max, &v, NULL)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
        "caps field '%s' = \"%s\" is not a number in %u..%u", name, str, min,
        max);
    return FALSE;
  }
  *out = (guint) v;
  return TRUE;
}

static gboolean
get_codebook_field (const GstStructure *s, guint8 id[AVQ_CODEBOOK_ID_SIZE],
    GError **error)
{
  const gchar *str = gst_structure_get_string (s, "codebook");

  if (str == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
        "caps field 'codebook' (string) is missing");
    return FALSE;
  }
  if (!avq_codebook_id_from_hex (str, id)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
        "caps field 'codebook' = \"%s\" is not 16 hex digits", str);
    return FALSE;
  }
  return TRUE;
}

gboolean
gst_avq_stream_params_from_caps (GstAvqStreamParams *info, const GstCaps *caps,
    GError **error)
{
  const GstStructure *s;
  GstAvqStreamParams in = { 0, };
  guint version;

  g_return_val_if_fail (info != NULL && caps != NULL, FALSE);

  if (gst_caps_get_size (caps) != 1 || !gst_caps_is_fixed (caps)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
        "caps are not fixed");
    return FALSE;
  }
  s = gst_caps_get_structure (caps, 0);
  if (!gst_structure_has_name (s, "application/x-avq")) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
        "caps are %s, not application/x-avq", gst_structure_get_name (s));
    return FALSE;
  }
  if (!get_int_field (s, "version", AVQ_FRAME_VERSION, AVQ_FRAME_VERSION,
          &version, error)
      || !get_int_field (s, "tokens", 1, G_MAXUINT16, &in.tokens, error)
      || !get_int_field (s, "index-bits", 1, 16, &in.index_bits, error)
      || !get_int_field (s, "side-bits", 0, 16, &in.side_bits, error)
      || !get_int_field (s, "layer", 0, GST_AVQ_MAX_LAYER, &in.layer, error)
      || !get_codebook_field (s, in.codebook_id, error))
    return FALSE;

  in.fps_n = 0;
  in.fps_d = 1;
  if (gst_structure_has_field (s, "framerate")) {
    if (!gst_structure_get_fraction (s, "framerate", &in.fps_n, &in.fps_d)
        || in.fps_n < 0 || in.fps_d <= 0) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
          "caps field 'framerate' is not a non-negative fraction");
      return FALSE;
    }
  }
  *info = in;
  return TRUE;
}

gboolean
gst_avq_stream_params_from_rtp_caps (GstAvqStreamParams *info,
    const GstCaps *caps, GError **error)
{
  const GstStructure *s;
  GstAvqStreamParams in = { 0, };
  const gchar *str;
  guint version;

  g_return_val_if_fail (info != NULL && caps != NULL, FALSE);

  if (gst_caps_get_size (caps) != 1) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
        "caps are empty or not fixed");
    return FALSE;
  }
  s = gst_caps_get_structure (caps, 0);
  str = gst_structure_get_string (s, "encoding-name");
  if (str == NULL || g_ascii_strcasecmp (str, "X-AVQ") != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
        "encoding-name is not X-AVQ");
    return FALSE;
  }
  if (!get_string_uint_field (s, "version", AVQ_FRAME_VERSION,
          AVQ_FRAME_VERSION, &version, error)
      || !get_string_uint_field (s, "tokens", 1, G_MAXUINT16, &in.tokens, error)
      || !get_string_uint_field (s, "index-bits", 1, 16, &in.index_bits, error)
      || !get_string_uint_field (s, "side-bits", 0, 16, &in.side_bits, error)
      || !get_string_uint_field (s, "layer", 0, GST_AVQ_MAX_LAYER, &in.layer,
          error)
      || !get_codebook_field (s, in.codebook_id, error))
    return FALSE;

  /* a-framerate is optional and informative (SDP a=framerate). */
  in.fps_n = 0;
  in.fps_d = 1;
  str = gst_structure_get_string (s, "a-framerate");
  if (str != NULL) {
    gchar *end = NULL;
    gdouble fps = g_ascii_strtod (str, &end);

    if (end == str || *end != '\0' || !isfinite (fps) || fps < 0
        || fps > 10000) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
          "caps field 'a-framerate' = \"%s\" is not a frame rate", str);
      return FALSE;
    }
    gst_util_double_to_fraction (fps, &in.fps_n, &in.fps_d);
  }
  *info = in;
  return TRUE;
}

GstCaps *
gst_avq_stream_params_to_caps (const GstAvqStreamParams *info)
{
  char hex[17];

  avq_codebook_id_to_hex (info->codebook_id, hex);
  return gst_caps_new_simple ("application/x-avq",
      "version", G_TYPE_INT, AVQ_FRAME_VERSION,
      "tokens", G_TYPE_INT, (gint) info->tokens,
      "index-bits", G_TYPE_INT, (gint) info->index_bits,
      "side-bits", G_TYPE_INT, (gint) info->side_bits,
      "codebook", G_TYPE_STRING, hex,
      "layer", G_TYPE_INT, (gint) info->layer,
      "framerate", GST_TYPE_FRACTION, info->fps_n, info->fps_d, NULL);
}

gboolean
gst_avq_stream_params_set_rtp_outcaps (const GstAvqStreamParams *info,
    gpointer rtp_base_payload)
{
  GstRTPBasePayload *payload = GST_RTP_BASE_PAYLOAD (rtp_base_payload);
  char hex[17];
  gchar *version, *tokens, *index_bits, *side_bits, *layer;
  gboolean ret;

  avq_codebook_id_to_hex (info->codebook_id, hex);
  version = g_strdup_printf ("%d", AVQ_FRAME_VERSION);
  tokens = g_strdup_printf ("%u", info->tokens);
  index_bits = g_strdup_printf ("%u", info->index_bits);
  side_bits = g_strdup_printf ("%u", info->side_bits);
  layer = g_strdup_printf ("%u", info->layer);

  if (info->fps_n > 0) {
    gdouble fps;
    gchar buf[G_ASCII_DTOSTR_BUF_SIZE];

    gst_util_fraction_to_double (info->fps_n, info->fps_d, &fps);
    g_ascii_formatd (buf, sizeof buf, "%.6g", fps);
    ret = gst_rtp_base_payload_set_outcaps (payload,
        "version", G_TYPE_STRING, version,
        "tokens", G_TYPE_STRING, tokens,
        "index-bits", G_TYPE_STRING, index_bits,
        "side-bits", G_TYPE_STRING, side_bits,
        "codebook", G_TYPE_STRING, hex,
        "layer", G_TYPE_STRING, layer,
        "a-framerate", G_TYPE_STRING, buf, NULL);
  } else {
    ret = gst_rtp_base_payload_set_outcaps (payload,
        "version", G_TYPE_STRING, version,
        "tokens", G_TYPE_STRING, tokens,
        "index-bits", G_TYPE_STRING, index_bits,
        "side-bits", G_TYPE_STRING, side_bits,
        "codebook", G_TYPE_STRING, hex,
        "layer", G_TYPE_STRING, layer, NULL);
  }

  g_free (version);
  g_free (tokens);
  g_free (index_bits);
  g_free (side_bits);
  g_free (layer);
  return ret;
}

gsize
gst_avq_stream_params_frame_size (const GstAvqStreamParams *info)
{
  return avq_frame_serialized_size (info->tokens, info->index_bits,
      info->side_bits);
}

gboolean
gst_avq_stream_params_matches (const GstAvqStreamParams *info,
    const AvqFrameHeader *h, GError **error)
{
  if (h->tokens != info->tokens || h->index_bits != info->index_bits
      || h->side_bits != info->side_bits) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
        "frame has %u tokens x %u bits (side %u), the caps say %u x %u "
        "(side %u)", h->tokens, h->index_bits, h->side_bits, info->tokens,
        info->index_bits, info->side_bits);
    return FALSE;
  }
  if (memcmp (h->codebook_id, info->codebook_id, AVQ_CODEBOOK_ID_SIZE) != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
        "frame's codebook id differs from the caps'");
    return FALSE;
  }
  return TRUE;
}
