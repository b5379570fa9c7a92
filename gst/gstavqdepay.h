/* avqdepay: X-AVQ RTP packets back into AVQ frames (application/x-avq). */
#pragma once

#include <gst/gst.h>
#include <gst/rtp/gstrtpbasedepayload.h>

#include "gstavqstream.h"

G_BEGIN_DECLS

#define GST_TYPE_AVQ_DEPAY (gst_avq_depay_get_type ())
G_DECLARE_FINAL_TYPE (GstAvqDepay, gst_avq_depay, GST, AVQ_DEPAY,
    GstRTPBaseDepayload)

typedef struct
{
  guint64 frames_out;
  guint64 frames_dropped;     /* incomplete: a fragment never arrived */
  guint64 frames_invalid;     /* complete but rejected by the frame parser */
  guint64 packets_received;
  guint64 packets_invalid;    /* bad payload header or inconsistent data */
  guint64 packets_late;       /* for a dropped frame or an older one */
  guint64 duplicates;         /* every byte already received */
  guint64 packets_lost;       /* GstRTPPacketLost events */
  guint64 bytes_received;     /* payload bytes after the X-AVQ header */
  guint64 bytes_out;
  guint64 key_unit_requests;
} GstAvqDepayStats;

struct _GstAvqDepay
{
  GstRTPBaseDepayload parent;

  GstAvqStreamParams info;
  gsize frame_size;           /* exact size of every frame of the stream */

  /* The frame being reassembled. */
  gboolean active;
  guint frame_count;
  guint32 rtptime;
  GstClockTime pts;
  gboolean corrupt;           /* overlapping fragments disagreed */
  gsize received;             /* bytes placed so far */
  guint8 *data;               /* frame_size bytes */
  guint8 *have;               /* one bit a byte of `data` */

  /* The last frame finished (pushed, dropped or rejected), to tell late and
   * duplicate packets from the start of a new frame. */
  gboolean have_last;
  gboolean last_complete;     /* it was complete (pushed or rejected) */
  guint last_count;
  guint32 last_rtptime;

  gboolean have_ssrc;
  guint32 ssrc;

  gboolean discont;           /* a frame was lost since the last output */
  gboolean key_unit_pending;  /* a request went upstream, no frame since */

  GstAvqDepayStats stats;     /* under the object lock */
};

G_END_DECLS
