/* avqanswer: answers questions about an AVQ stream with LLaVA and attaches
 * the answers to the stream (GstAvqAnswerMeta, bus messages, a signal). */
#pragma once
#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_AVQ_ANSWER (gst_avq_answer_get_type ())
G_DECLARE_FINAL_TYPE (GstAvqAnswer, gst_avq_answer, GST, AVQ_ANSWER, GstElement)

GST_ELEMENT_REGISTER_DECLARE (avqanswer);

G_END_DECLS
