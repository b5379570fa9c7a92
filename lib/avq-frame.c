/* AVQ frame (de)serialisation, AVQ-SPEC section 6.
 *
 * Frames arrive from the network, so the parser trusts nothing: every size is
 * computed from validated header fields in 64-bit arithmetic before a single
 * payload byte is read, and anything an honest encoder would never write is
 * rejected rather than interpreted. */
#include "avq-frame.h"
#include "avq-error.h"

#include <math.h>
#include <string.h>

#define SIDE_RANGE_BYTES (4 * sizeof (guint32))

static gboolean
bits_valid (guint bits)
{
  return bits >= 1 && bits <= 16;
}

static gsize
packed_bytes (gsize n, guint bits)
{
  /* n <= 2 * 65535 and bits <= 16 in every caller: no overflow. */
  return (n * bits + 7) / 8;
}

gsize
avq_frame_serialized_size (guint tokens, guint index_bits, guint side_bits)
{
  gsize size;

  if (tokens == 0 || tokens > G_MAXUINT16 || !bits_valid (index_bits)
      || side_bits > 16)
    return 0;

  size = AVQ_FRAME_HEADER_SIZE + packed_bytes (tokens, index_bits);
  if (side_bits > 0)
    size += SIDE_RANGE_BYTES + packed_bytes (2 * (gsize) tokens, side_bits);
  return size;
}

/* ---- bit packing ---- */

/* A 32-bit accumulator is enough: fewer than 8 bits are pending before each
 * value is added, plus at most 16 bits of the value. */
void
avq_bits_pack (const guint16 *values, gsize n, guint bits, guint8 *out)
{
  guint32 acc = 0, mask;
  guint pending = 0;
  gsize o = 0;

  g_return_if_fail (bits_valid (bits));
  g_return_if_fail (n == 0 || (values != NULL && out != NULL));

  mask = (1u << bits) - 1;
  for (gsize i = 0; i < n; i++) {
    acc |= ((guint32) values[i] & mask) << pending;
    pending += bits;
    while (pending >= 8) {
      out[o++] = acc & 0xff;
      acc >>= 8;
      pending -= 8;
    }
  }
  if (pending > 0)
    out[o] = acc & 0xff;  /* the remaining high bits are the zero padding */
}

/* Returns the padding bits left over in the last byte (0 for a clean
 * stream), so the parser can refuse frames that smuggle data there. */
static guint32
bits_unpack_padding (const guint8 *in, gsize n, guint bits, guint16 *values)
{
  guint32 acc = 0, mask = (1u << bits) - 1;
  guint pending = 0;
  gsize i = 0;

  for (gsize k = 0; k < n; k++) {
    while (pending < bits) {
      acc |= (guint32) in[i++] << pending;
      pending += 8;
    }
    values[k] = acc & mask;
    acc >>= bits;
    pending -= bits;
  }
  return acc;
}

void
avq_bits_unpack (const guint8 *in, gsize n, guint bits, guint16 *values)
{
  g_return_if_fail (bits_valid (bits));
  g_return_if_fail (n == 0 || (in != NULL && values != NULL));

  bits_unpack_padding (in, n, bits, values);
}

/* ---- codebook id ---- */

void
avq_codebook_id_to_hex (const guint8 id[AVQ_CODEBOOK_ID_SIZE], char hex[17])
{
  static const char digits[] = "0123456789abcdef";

  for (guint i = 0; i < AVQ_CODEBOOK_ID_SIZE; i++) {
    hex[2 * i] = digits[id[i] >> 4];
    hex[2 * i + 1] = digits[id[i] & 0xf];
  }
  hex[16] = '\0';
}

gboolean
avq_codebook_id_from_hex (const char *hex, guint8 id[AVQ_CODEBOOK_ID_SIZE])
{
  guint8 tmp[AVQ_CODEBOOK_ID_SIZE];

  if (hex == NULL)
    return FALSE;
  /* Exactly 16 digits: a shorter or longer string is a different id, not a
   * prefix of this one. Either case is accepted, as in SDP. */
  for (guint i = 0; i < 16; i++) {
    int v = g_ascii_xdigit_value (hex[i]);
    if (v < 0)
      return FALSE;
    if (i % 2 == 0)
      tmp[i / 2] = (guint8) (v << 4);
    else
      tmp[i / 2] |= (guint8) v;
  }
  if (hex[16] != '\0')
    return FALSE;
  memcpy (id, tmp, sizeof tmp);
  return TRUE;
}

/* ---- frame objects ---- */

AvqFrame *
avq_frame_new (guint tokens, guint index_bits, guint side_bits,
               const guint8 codebook_id[AVQ_CODEBOOK_ID_SIZE])
{
  AvqFrame *frame;

  g_return_val_if_fail (tokens >= 1 && tokens <= G_MAXUINT16, NULL);
  g_return_val_if_fail (bits_valid (index_bits), NULL);
  g_return_val_if_fail (side_bits <= 16, NULL);

  frame = g_new0 (AvqFrame, 1);
  frame->version = AVQ_FRAME_VERSION;
  frame->flags = AVQ_FRAME_FLAG_KEYFRAME;
  if (side_bits > 0)
    frame->flags |= AVQ_FRAME_FLAG_SIDE_INFO;
  frame->tokens = tokens;
  frame->index_bits = index_bits;
  frame->side_bits = side_bits;
  if (codebook_id != NULL)
    memcpy (frame->codebook_id, codebook_id, AVQ_CODEBOOK_ID_SIZE);
  frame->indices = g_new0 (guint16, tokens);
  if (side_bits > 0)
    frame->side_codes = g_new0 (guint16, 2 * (gsize) tokens);
  return frame;
}

void
avq_frame_free (AvqFrame *frame)
{
  if (frame == NULL)
    return;
  g_free (frame->indices);
  g_free (frame->side_codes);
  g_free (frame);
}

AvqFrame *
avq_frame_copy (const AvqFrame *frame)
{
  AvqFrame *copy;

  g_return_val_if_fail (frame != NULL, NULL);

  copy = g_memdup2 (frame, sizeof *frame);
  copy->indices = g_memdup2 (frame->indices, frame->tokens * sizeof (guint16));
  copy->side_codes = frame->side_codes != NULL ?
      g_memdup2 (frame->side_codes, 2 * (gsize) frame->tokens * sizeof (guint16)) :
      NULL;
  return copy;
}

gboolean
avq_frame_equal (const AvqFrame *a, const AvqFrame *b)
{
  if (a == b)
    return TRUE;
  if (a == NULL || b == NULL)
    return FALSE;
  if (a->version != b->version || a->flags != b->flags
      || a->tokens != b->tokens || a->index_bits != b->index_bits
      || a->side_bits != b->side_bits
      || memcmp (a->codebook_id, b->codebook_id, AVQ_CODEBOOK_ID_SIZE) != 0)
    return FALSE;
  if (memcmp (a->indices, b->indices, a->tokens * sizeof (guint16)) != 0)
    return FALSE;
  if ((a->side_codes == NULL) != (b->side_codes == NULL))
    return FALSE;
  if (a->side_codes != NULL) {
    /* Bitwise, not ==: equality here means "same bytes on the wire". */
    if (memcmp (a->side_range, b->side_range, sizeof a->side_range) != 0)
      return FALSE;
    if (memcmp (a->side_codes, b->side_codes,
                2 * (gsize) a->tokens * sizeof (guint16)) != 0)
      return FALSE;
  }
  return TRUE;
}

/* ---- serialise ---- */

guint8 *
avq_frame_serialize (const AvqFrame *frame, gsize *length)
{
  gsize size, off;
  guint8 *out;
  guint16 v16;

  g_return_val_if_fail (frame != NULL, NULL);
  g_return_val_if_fail (frame->version == AVQ_FRAME_VERSION, NULL);
  g_return_val_if_fail ((frame->flags & ~AVQ_FRAME_KNOWN_FLAGS) == 0, NULL);
  /* Refuse to write what our own parser would reject. */
  g_return_val_if_fail (((frame->flags & AVQ_FRAME_FLAG_SIDE_INFO) != 0)
                        == (frame->side_bits > 0), NULL);
  g_return_val_if_fail (frame->indices != NULL, NULL);
  g_return_val_if_fail (frame->side_bits == 0 || frame->side_codes != NULL, NULL);

  size = avq_frame_serialized_size (frame->tokens, frame->index_bits,
                                    frame->side_bits);
  g_return_val_if_fail (size > 0, NULL);

  out = g_malloc0 (size);
  out[0] = frame->version;
  out[1] = frame->flags;
  v16 = GUINT16_TO_LE (frame->tokens);
  memcpy (out + 2, &v16, 2);
  out[4] = frame->index_bits;
  out[5] = frame->side_bits;
  /* bytes 6..7: reserved, zero */
  memcpy (out + 8, frame->codebook_id, AVQ_CODEBOOK_ID_SIZE);
  off = AVQ_FRAME_HEADER_SIZE;

  avq_bits_pack (frame->indices, frame->tokens, frame->index_bits, out + off);
  off += packed_bytes (frame->tokens, frame->index_bits);

  if (frame->side_bits > 0) {
    for (guint i = 0; i < 4; i++) {
      guint32 u;
      memcpy (&u, &frame->side_range[i], 4);
      u = GUINT32_TO_LE (u);
      memcpy (out + off, &u, 4);
      off += 4;
    }
    avq_bits_pack (frame->side_codes, 2 * (gsize) frame->tokens,
                   frame->side_bits, out + off);
    off += packed_bytes (2 * (gsize) frame->tokens, frame->side_bits);
  }
  g_assert (off == size);

  if (length != NULL)
    *length = size;
  return out;
}

GBytes *
avq_frame_to_bytes (const AvqFrame *frame)
{
  gsize len = 0;
  guint8 *data = avq_frame_serialize (frame, &len);

  if (data == NULL)
    return NULL;
  return g_bytes_new_take (data, len);
}

/* ---- parse ---- */

gboolean
avq_frame_peek_header (const guint8 *data, gsize length,
                       AvqFrameHeader *header, GError **error)
{
  AvqFrameHeader h;
  guint16 v16;
  gboolean side_flag;

  g_return_val_if_fail (header != NULL, FALSE);

  if (data == NULL || length < AVQ_FRAME_HEADER_SIZE) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "AVQ frame: %" G_GSIZE_FORMAT " bytes, shorter than the "
                 "%d-byte header", length, AVQ_FRAME_HEADER_SIZE);
    return FALSE;
  }

  memset (&h, 0, sizeof h);
  h.version = data[0];
  h.flags = data[1];
  memcpy (&v16, data + 2, 2);
  h.tokens = GUINT16_FROM_LE (v16);
  h.index_bits = data[4];
  h.side_bits = data[5];
  memcpy (&v16, data + 6, 2);
  memcpy (h.codebook_id, data + 8, AVQ_CODEBOOK_ID_SIZE);

  if (h.version != AVQ_FRAME_VERSION) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "AVQ frame: version %u, this reader knows only %d",
                 h.version, AVQ_FRAME_VERSION);
    return FALSE;
  }
  if ((h.flags & ~AVQ_FRAME_KNOWN_FLAGS) != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "AVQ frame: unknown flag bits 0x%02x", h.flags);
    return FALSE;
  }
  /* v1 has only keyframes; a v1 frame without the bit would be a kind of
   * frame that version does not define, and guessing is not allowed. */
  if ((h.flags & AVQ_FRAME_FLAG_KEYFRAME) == 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "AVQ frame: non-keyframe, which version 1 does not define");
    return FALSE;
  }
  if (v16 != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "AVQ frame: reserved field is 0x%04x, not 0",
                 GUINT16_FROM_LE (v16));
    return FALSE;
  }
  if (h.tokens == 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "AVQ frame: zero tokens");
    return FALSE;
  }
  if (!bits_valid (h.index_bits)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "AVQ frame: index_bits %u outside 1..16", h.index_bits);
    return FALSE;
  }
  if (h.side_bits > 16) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "AVQ frame: side_bits %u above 16", h.side_bits);
    return FALSE;
  }
  side_flag = (h.flags & AVQ_FRAME_FLAG_SIDE_INFO) != 0;
  if (side_flag != (h.side_bits > 0)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "AVQ frame: side-info flag %s but side_bits is %u",
                 side_flag ? "set" : "clear", h.side_bits);
    return FALSE;
  }

  h.frame_size = avq_frame_serialized_size (h.tokens, h.index_bits,
                                            h.side_bits);
  *header = h;
  return TRUE;
}

gboolean
avq_frame_peek_size (const guint8 *data, gsize length, gsize *frame_size,
                     GError **error)
{
  AvqFrameHeader h;

  if (!avq_frame_peek_header (data, length, &h, error))
    return FALSE;
  if (frame_size != NULL)
    *frame_size = h.frame_size;
  return TRUE;
}

AvqFrame *
avq_frame_parse (const guint8 *data, gsize length, GError **error)
{
  AvqFrameHeader h;
  g_autoptr (AvqFrame) frame = NULL;
  gsize off, nbytes;

  if (!avq_frame_peek_header (data, length, &h, error))
    return NULL;
  if (length != h.frame_size) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "AVQ frame: %" G_GSIZE_FORMAT " bytes, the header describes "
                 "%" G_GSIZE_FORMAT " (%s)", length, h.frame_size,
                 length < h.frame_size ? "truncated" : "trailing bytes");
    return NULL;
  }

  frame = avq_frame_new (h.tokens, h.index_bits, h.side_bits, h.codebook_id);
  frame->flags = h.flags;
  off = AVQ_FRAME_HEADER_SIZE;

  nbytes = packed_bytes (h.tokens, h.index_bits);
  if (bits_unpack_padding (data + off, h.tokens, h.index_bits,
                           frame->indices) != 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "AVQ frame: non-zero padding bits after the indices");
    return NULL;
  }
  off += nbytes;

  if (h.side_bits > 0) {
    for (guint i = 0; i < 4; i++) {
      guint32 u;
      memcpy (&u, data + off, 4);
      u = GUINT32_FROM_LE (u);
      memcpy (&frame->side_range[i], &u, 4);
      off += 4;
      if (!isfinite (frame->side_range[i])) {
        g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                     "AVQ frame: side range value %u is not finite", i);
        return NULL;
      }
    }
    /* lo/hi are a min and a max over the frame's tokens. */
    if (frame->side_range[0] > frame->side_range[1]
        || frame->side_range[2] > frame->side_range[3]) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "AVQ frame: side range runs backwards (lo > hi)");
      return NULL;
    }
    nbytes = packed_bytes (2 * (gsize) h.tokens, h.side_bits);
    if (bits_unpack_padding (data + off, 2 * (gsize) h.tokens, h.side_bits,
                             frame->side_codes) != 0) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "AVQ frame: non-zero padding bits after the side codes");
      return NULL;
    }
    off += nbytes;
  }
  g_assert (off == length);

  return g_steal_pointer (&frame);
}
