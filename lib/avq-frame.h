/* The AVQ frame: one quantised video frame as it crosses the wire
 * (AVQ-SPEC section 6). Little-endian, 16-byte header, packed indices,
 * optional side information. */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

#define AVQ_FRAME_VERSION 1
#define AVQ_FRAME_HEADER_SIZE 16
#define AVQ_FRAME_FLAG_KEYFRAME 0x01
#define AVQ_FRAME_FLAG_SIDE_INFO 0x02
#define AVQ_FRAME_KNOWN_FLAGS (AVQ_FRAME_FLAG_KEYFRAME | AVQ_FRAME_FLAG_SIDE_INFO)
#define AVQ_CODEBOOK_ID_SIZE 8

typedef struct {
  guint8 version;
  guint8 flags;
  guint16 tokens;
  guint8 index_bits;     /* 1..16 */
  guint8 side_bits;      /* 0 (no side info) or 1..16 */
  guint8 codebook_id[AVQ_CODEBOOK_ID_SIZE];
  guint16 *indices;      /* [tokens] */
  float side_range[4];   /* mu_lo, mu_hi, logsigma_lo, logsigma_hi */
  guint16 *side_codes;   /* [2 * tokens] interleaved (mu, logsigma) per token, or NULL */
} AvqFrame;

/* A keyframe with zeroed indices (and side codes when side_bits > 0). */
AvqFrame *avq_frame_new (guint tokens, guint index_bits, guint side_bits,
                         const guint8 codebook_id[AVQ_CODEBOOK_ID_SIZE]);
void avq_frame_free (AvqFrame *frame);
AvqFrame *avq_frame_copy (const AvqFrame *frame);
gboolean avq_frame_equal (const AvqFrame *a, const AvqFrame *b);

/* Bytes the serialised frame takes. */
gsize avq_frame_serialized_size (guint tokens, guint index_bits, guint side_bits);

/* Serialise; returns a newly allocated buffer of avq_frame_serialized_size()
 * bytes. */
guint8 *avq_frame_serialize (const AvqFrame *frame, gsize *length);
GBytes *avq_frame_to_bytes (const AvqFrame *frame);

/* Strict parse of exactly one frame occupying all `length` bytes. Rejects
 * (AVQ_ERROR_UNSUPPORTED) versions and flags this reader does not know and a
 * v1 frame without the keyframe flag (v1 defines no other kind), and
 * (AVQ_ERROR_FORMAT) anything malformed: short or trailing bytes, the
 * side-info flag disagreeing with side_bits, index_bits outside 1..16,
 * side_bits above 16, non-zero reserved field, zero tokens, padding bits that
 * are not zero, and side ranges that are not finite or run backwards
 * (lo > hi). An encoder following section 6 never writes any of these, so a
 * frame that has them was damaged or forged. */
AvqFrame *avq_frame_parse (const guint8 *data, gsize length, GError **error);

/* Reads the header at `data` and reports the size of the whole frame, for
 * splitting a concatenated stream of frames. Fails on a bad header or when
 * `length` is shorter than the header. */
gboolean avq_frame_peek_size (const guint8 *data, gsize length,
                              gsize *frame_size, GError **error);

/* The header fields alone, with the size of the whole frame they describe. */
typedef struct {
  guint8 version;
  guint8 flags;
  guint16 tokens;
  guint8 index_bits;
  guint8 side_bits;
  guint8 codebook_id[AVQ_CODEBOOK_ID_SIZE];
  gsize frame_size;
} AvqFrameHeader;

/* Validates and decodes the 16-byte header at `data` (the same checks as
 * avq_frame_parse applies to the header) without touching the payload, so
 * that a receiver can vet a frame's size and parameters before buffering it.
 * Fails when `length` is shorter than the header. */
gboolean avq_frame_peek_header (const guint8 *data, gsize length,
                                AvqFrameHeader *header, GError **error);

/* Bit packing, LSB first: value 0 in the lowest bits of byte 0. `out` must
 * hold (n * bits + 7) / 8 bytes; values are masked to `bits`. */
void avq_bits_pack (const guint16 *values, gsize n, guint bits, guint8 *out);
void avq_bits_unpack (const guint8 *in, gsize n, guint bits, guint16 *values);

/* 16 lowercase hex digits (+ NUL) of a codebook id. */
void avq_codebook_id_to_hex (const guint8 id[AVQ_CODEBOOK_ID_SIZE], char hex[17]);
gboolean avq_codebook_id_from_hex (const char *hex, guint8 id[AVQ_CODEBOOK_ID_SIZE]);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqFrame, avq_frame_free)

G_END_DECLS
