/* The X-AVQ RTP payload header (docs/rtp-payload-format.md), shared by the
 * payloader and the depayloader. All fields are in network byte order.
 *
 *  0               1               2               3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-------+-------+-----------------------------------------------+
 * |   V   |   R   |                 frame length                  |
 * +-------+-------+-----------------------------------------------+
 * |  frame count  |                fragment offset                |
 * +---------------+-----------------------------------------------+
 */
#pragma once

#include <glib.h>

#define GST_AVQ_PAYLOAD_HEADER_SIZE 8
#define GST_AVQ_PAYLOAD_VERSION 1
/* 24-bit length and offset fields. */
#define GST_AVQ_PAYLOAD_MAX_FRAME ((1u << 24) - 1)

typedef struct {
  guint version;       /* 4 bits */
  guint reserved;      /* 4 bits, 0 */
  guint32 frame_length;
  guint frame_count;   /* 8 bits, +1 mod 256 per frame */
  guint32 offset;
} GstAvqPayloadHeader;

static inline void
gst_avq_payload_header_write (guint8 *p, const GstAvqPayloadHeader *h)
{
  p[0] = (guint8) ((h->version << 4) | (h->reserved & 0xf));
  p[1] = (guint8) (h->frame_length >> 16);
  p[2] = (guint8) (h->frame_length >> 8);
  p[3] = (guint8) h->frame_length;
  p[4] = (guint8) h->frame_count;
  p[5] = (guint8) (h->offset >> 16);
  p[6] = (guint8) (h->offset >> 8);
  p[7] = (guint8) h->offset;
}

/* The caller has checked that `p` holds GST_AVQ_PAYLOAD_HEADER_SIZE bytes. */
static inline void
gst_avq_payload_header_read (const guint8 *p, GstAvqPayloadHeader *h)
{
  h->version = p[0] >> 4;
  h->reserved = p[0] & 0xf;
  h->frame_length = ((guint32) p[1] << 16) | ((guint32) p[2] << 8) | p[3];
  h->frame_count = p[4];
  h->offset = ((guint32) p[5] << 16) | ((guint32) p[6] << 8) | p[7];
}
