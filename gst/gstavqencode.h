/* avqencode: video frames -> AVQ frames (the edge half of AlignedVQ). */
#pragma once
#include <gst/gst.h>
#include <gst/video/video.h>
#include "avq-engine.h"

G_BEGIN_DECLS

#define GST_TYPE_AVQ_ENCODE (gst_avq_encode_get_type ())
G_DECLARE_FINAL_TYPE (GstAvqEncode, gst_avq_encode, GST, AVQ_ENCODE, GstElement)

#define GST_TYPE_AVQ_PREPROCESS (gst_avq_preprocess_get_type ())
GType gst_avq_preprocess_get_type (void);

GST_ELEMENT_REGISTER_DECLARE (avqencode);

G_END_DECLS
