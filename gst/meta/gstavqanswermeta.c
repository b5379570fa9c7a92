#include "gstavqanswermeta.h"

GType
gst_avq_answer_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[] = { NULL };  /* survives any transform: not tied to pixels */
  if (g_once_init_enter (&type)) {
    GType t = gst_meta_api_type_register ("GstAvqAnswerMetaAPI", tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
answer_meta_init (GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  GstAvqAnswerMeta *m = (GstAvqAnswerMeta *) meta;
  (void) params;
  (void) buffer;
  m->question = NULL;
  m->answer = NULL;
  m->frame_pts = GST_CLOCK_TIME_NONE;
  m->n_tokens = 0;
  m->vision_ms = m->prefill_ms = m->decode_ms = 0;
  return TRUE;
}

static void
answer_meta_free (GstMeta *meta, GstBuffer *buffer)
{
  GstAvqAnswerMeta *m = (GstAvqAnswerMeta *) meta;
  (void) buffer;
  g_free (m->question);
  g_free (m->answer);
}

static gboolean
answer_meta_transform (GstBuffer *dest, GstMeta *meta, GstBuffer *buffer,
                       GQuark type, gpointer data)
{
  GstAvqAnswerMeta *m = (GstAvqAnswerMeta *) meta;
  (void) buffer;
  (void) type;
  (void) data;
  /* An answer belongs to the whole buffer: copy it on every transform. */
  return gst_buffer_add_avq_answer_meta (dest, m->question, m->answer, m->frame_pts,
                                         m->n_tokens, m->vision_ms, m->prefill_ms,
                                         m->decode_ms) != NULL;
}

const GstMetaInfo *
gst_avq_answer_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;
  if (g_once_init_enter ((GstMetaInfo **) &info)) {
    const GstMetaInfo *i = gst_meta_register (GST_AVQ_ANSWER_META_API_TYPE,
        "GstAvqAnswerMeta", sizeof (GstAvqAnswerMeta),
        answer_meta_init, answer_meta_free, answer_meta_transform);
    g_once_init_leave ((GstMetaInfo **) &info, (GstMetaInfo *) i);
  }
  return info;
}

GstAvqAnswerMeta *
gst_buffer_add_avq_answer_meta (GstBuffer *buffer, const gchar *question,
                                const gchar *answer, GstClockTime frame_pts,
                                guint n_tokens, gdouble vision_ms,
                                gdouble prefill_ms, gdouble decode_ms)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  GstAvqAnswerMeta *m = (GstAvqAnswerMeta *) gst_buffer_add_meta (buffer,
      GST_AVQ_ANSWER_META_INFO, NULL);
  if (m == NULL)
    return NULL;
  m->question = g_strdup (question);
  m->answer = g_strdup (answer);
  m->frame_pts = frame_pts;
  m->n_tokens = n_tokens;
  m->vision_ms = vision_ms;
  m->prefill_ms = prefill_ms;
  m->decode_ms = decode_ms;
  return m;
}
