/* avqpay: AVQ frames (application/x-avq) into X-AVQ RTP packets. */
#pragma once

#include <gst/gst.h>
#include <gst/rtp/gstrtpbasepayload.h>

#include "gstavqstream.h"

G_BEGIN_DECLS

#define GST_TYPE_AVQ_PAY (gst_avq_pay_get_type ())
G_DECLARE_FINAL_TYPE (GstAvqPay, gst_avq_pay, GST, AVQ_PAY, GstRTPBasePayload)

struct _GstAvqPay
{
  GstRTPBasePayload parent;

  GstAvqStreamParams info;
  gboolean have_info;
  guint8 frame_count;

  /* statistics, under the object lock */
  guint64 frames_in;
  guint64 frames_invalid;
  guint64 packets_out;
};

G_END_DECLS
