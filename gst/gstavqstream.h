/* Stream parameters of an AVQ stream as carried in caps: typed fields on
 * application/x-avq (AVQ-SPEC section 6) and SDP-style string fields on
 * application/x-rtp (docs/rtp-payload-format.md). Shared by avqpay and
 * avqdepay so that both ends agree on what a valid parameter is. */
#pragma once

#include <gst/gst.h>
#include "avq-frame.h"

G_BEGIN_DECLS

GST_DEBUG_CATEGORY_EXTERN (gst_avq_debug);

/* Bounds on the layer field: CLIP ViT-L has 24 layers; leave room for other
 * towers without accepting nonsense. */
#define GST_AVQ_MAX_LAYER 255

typedef struct {
  guint tokens;        /* 1..65535 */
  guint index_bits;    /* 1..16 */
  guint side_bits;     /* 0..16 */
  guint layer;         /* 0..GST_AVQ_MAX_LAYER */
  guint8 codebook_id[AVQ_CODEBOOK_ID_SIZE];
  gint fps_n, fps_d;   /* 0/1 when unknown */
} GstAvqStreamParams;

/* From application/x-avq caps; on failure `error` says which field. */
gboolean gst_avq_stream_params_from_caps (GstAvqStreamParams *info,
    const GstCaps *caps, GError **error);
/* From application/x-rtp caps with the X-AVQ string fields. */
gboolean gst_avq_stream_params_from_rtp_caps (GstAvqStreamParams *info,
    const GstCaps *caps, GError **error);

GstCaps *gst_avq_stream_params_to_caps (const GstAvqStreamParams *info);
/* Sets the SDP-style string fields on the payloader's output caps. */
gboolean gst_avq_stream_params_set_rtp_outcaps (const GstAvqStreamParams *info,
    gpointer rtp_base_payload);

/* The exact serialised size of every frame of this stream. */
gsize gst_avq_stream_params_frame_size (const GstAvqStreamParams *info);
/* Whether a frame header belongs to this stream. */
gboolean gst_avq_stream_params_matches (const GstAvqStreamParams *info,
    const AvqFrameHeader *header, GError **error);

G_END_DECLS
