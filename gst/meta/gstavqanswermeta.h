/* GstAvqAnswerMeta: an answer of the LLaVA model attached to a buffer of an
 * AVQ stream by the avqanswer element.
 *
 * Applications link gstavqmeta-1.0 (pkg-config gstavqmeta-1.0) and read it
 * with gst_buffer_get_avq_answer_meta(). */
#pragma once
#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_AVQ_ANSWER_META_API_TYPE (gst_avq_answer_meta_api_get_type ())
#define GST_AVQ_ANSWER_META_INFO (gst_avq_answer_meta_get_info ())

typedef struct {
  GstMeta meta;

  gchar *question;        /* the question as asked (UTF-8) */
  gchar *answer;          /* the generated answer text (UTF-8) */
  GstClockTime frame_pts; /* PTS of the frame the question was asked about */
  guint n_tokens;         /* generated tokens, EOS excluded */
  gdouble vision_ms;      /* AVQ frame -> image features */
  gdouble prefill_ms;     /* prompt + image through the LLM */
  gdouble decode_ms;      /* generating the answer tokens */
} GstAvqAnswerMeta;

GType gst_avq_answer_meta_api_get_type (void);
const GstMetaInfo *gst_avq_answer_meta_get_info (void);

/* Copies the strings. */
GstAvqAnswerMeta *gst_buffer_add_avq_answer_meta (GstBuffer *buffer,
                                                  const gchar *question,
                                                  const gchar *answer,
                                                  GstClockTime frame_pts,
                                                  guint n_tokens,
                                                  gdouble vision_ms,
                                                  gdouble prefill_ms,
                                                  gdouble decode_ms);

#define gst_buffer_get_avq_answer_meta(b) \
  ((GstAvqAnswerMeta *) gst_buffer_get_meta ((b), GST_AVQ_ANSWER_META_API_TYPE))

G_END_DECLS
