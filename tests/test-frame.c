/* AVQ frame format (AVQ-SPEC section 6): bit packing, serialisation and the
 * strict parser. Random cases use g_test_rand_*, so a failure is reproduced
 * with the --seed that g_test prints. */
#include <math.h>
#include <string.h>

#include "avq-error.h"
#include "avq-frame.h"

static const guint8 test_id[AVQ_CODEBOOK_ID_SIZE] =
    { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef };

static AvqFrame *
random_frame (guint tokens, guint index_bits, guint side_bits)
{
  AvqFrame *f = avq_frame_new (tokens, index_bits, side_bits, test_id);

  for (guint i = 0; i < tokens; i++)
    f->indices[i] = g_test_rand_int_range (0, 1 << index_bits);
  if (side_bits > 0) {
    for (guint i = 0; i < 2 * tokens; i++)
      f->side_codes[i] = g_test_rand_int_range (0, 1 << side_bits);
    f->side_range[0] = -1.5f;
    f->side_range[1] = 2.25f;
    f->side_range[2] = -0.125f;
    f->side_range[3] = 0.75f;
  }
  return f;
}

static guint8 *
serialize_random (guint tokens, guint index_bits, guint side_bits, gsize *len)
{
  g_autoptr (AvqFrame) f = random_frame (tokens, index_bits, side_bits);
  return avq_frame_serialize (f, len);
}

/* ---- bit packing ---- */

static void
check_pack (const guint16 *values, gsize n, guint bits,
            const guint8 *want, gsize want_len)
{
  guint8 out[64];
  guint16 back[64];

  g_assert_cmpuint (want_len, ==, (n * bits + 7) / 8);
  memset (out, 0xee, sizeof out);
  avq_bits_pack (values, n, bits, out);
  g_assert_cmpmem (out, want_len, want, want_len);
  g_assert_cmpuint (out[want_len], ==, 0xee);  /* nothing written past */
  avq_bits_unpack (want, n, bits, back);
  for (gsize i = 0; i < n; i++)
    g_assert_cmpuint (back[i], ==, values[i] & ((1u << bits) - 1));
}

static void
test_bits_layout (void)
{
  /* Token 0 in the lowest bits of byte 0, each value LSB first. */
  {
    const guint16 v[] = { 1, 0, 1, 1, 0, 0, 0, 0, 1 };
    const guint8 b[] = { 0x0d, 0x01 };
    check_pack (v, G_N_ELEMENTS (v), 1, b, sizeof b);
  }
  {
    const guint16 v[] = { 5, 3, 7 };
    const guint8 b[] = { 0xdd, 0x01 };
    check_pack (v, G_N_ELEMENTS (v), 3, b, sizeof b);
  }
  {
    const guint16 v[] = { 0x1ff, 0x000, 0x155 };
    const guint8 b[] = { 0xff, 0x01, 0x54, 0x05 };
    check_pack (v, G_N_ELEMENTS (v), 9, b, sizeof b);
  }
  {
    const guint16 v[] = { 0xabc, 0x123 };
    const guint8 b[] = { 0xbc, 0x3a, 0x12 };
    check_pack (v, G_N_ELEMENTS (v), 12, b, sizeof b);
  }
  {
    const guint16 v[] = { 0xabc, 0x123, 0xfff };
    const guint8 b[] = { 0xbc, 0x3a, 0x12, 0xff, 0x0f };
    check_pack (v, G_N_ELEMENTS (v), 12, b, sizeof b);
  }
  {
    const guint16 v[] = { 0x1234, 0xabcd };
    const guint8 b[] = { 0x34, 0x12, 0xcd, 0xab };
    check_pack (v, G_N_ELEMENTS (v), 16, b, sizeof b);
  }
  {
    /* 15-bit values straddle three bytes; bits above the width are masked. */
    const guint16 v[] = { 0x7fff, 0x8001 };
    const guint8 b[] = { 0xff, 0xff, 0x00, 0x00 };
    check_pack (v, G_N_ELEMENTS (v), 15, b, sizeof b);
  }
}

static void
test_bits_roundtrip (void)
{
  for (guint bits = 1; bits <= 16; bits++) {
    for (guint iter = 0; iter < 50; iter++) {
      gsize n = iter < 10 ? iter : (gsize) g_test_rand_int_range (1, 2000);
      gsize nb = (n * bits + 7) / 8;
      g_autofree guint16 *v = g_new (guint16, n + 1);
      g_autofree guint16 *back = g_new (guint16, n + 1);
      g_autofree guint8 *buf = g_malloc (nb + 4);

      for (gsize i = 0; i < n; i++)
        v[i] = g_test_rand_int_range (0, 1 << 16);
      memset (buf, 0xa5, nb + 4);
      avq_bits_pack (v, n, bits, buf);
      for (gsize i = nb; i < nb + 4; i++)
        g_assert_cmpuint (buf[i], ==, 0xa5);
      /* padding bits in the last byte are zero */
      if ((n * bits) % 8 != 0)
        g_assert_cmpuint (buf[nb - 1] >> ((n * bits) % 8), ==, 0);
      avq_bits_unpack (buf, n, bits, back);
      for (gsize i = 0; i < n; i++)
        g_assert_cmpuint (back[i], ==, v[i] & ((1u << bits) - 1));
    }
  }
}

/* ---- sizes and serialisation ---- */

static void
test_sizes (void)
{
  g_assert_cmpuint (avq_frame_serialized_size (577, 12, 0), ==, 882);
  /* 16 + 866 indices + 16 range bytes + 577 x 2 x 8 bits */
  g_assert_cmpuint (avq_frame_serialized_size (577, 12, 8), ==,
                    16 + 866 + 16 + 1154);
  g_assert_cmpuint (avq_frame_serialized_size (1, 1, 0), ==, 17);
  g_assert_cmpuint (avq_frame_serialized_size (1, 1, 1), ==, 16 + 1 + 16 + 1);
  g_assert_cmpuint (avq_frame_serialized_size (65535, 16, 16), ==,
                    16 + 131070 + 16 + 262140);
  g_assert_cmpuint (avq_frame_serialized_size (0, 12, 0), ==, 0);
  g_assert_cmpuint (avq_frame_serialized_size (577, 0, 0), ==, 0);
  g_assert_cmpuint (avq_frame_serialized_size (577, 17, 0), ==, 0);
  g_assert_cmpuint (avq_frame_serialized_size (577, 12, 17), ==, 0);
  g_assert_cmpuint (avq_frame_serialized_size (65536, 12, 0), ==, 0);
}

static void
test_header_bytes (void)
{
  g_autoptr (AvqFrame) f = avq_frame_new (577, 12, 0, test_id);
  gsize len = 0;
  g_autofree guint8 *data = NULL;
  const guint8 want[16] = { 1, 0x01, 0x41, 0x02, 12, 0, 0, 0,
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef };

  f->indices[0] = 0xabc;
  f->indices[1] = 0x123;
  f->indices[576] = 0xfff;
  data = avq_frame_serialize (f, &len);
  g_assert_cmpuint (len, ==, 882);
  g_assert_cmpmem (data, 16, want, 16);
  g_assert_cmpuint (data[16], ==, 0xbc);
  g_assert_cmpuint (data[17], ==, 0x3a);
  g_assert_cmpuint (data[18], ==, 0x12);
  /* 577 x 12 bits = 6924 bits: the last value fills bits 6912..6923, the
   * final byte holds its top nibble and four zero padding bits. */
  g_assert_cmpuint (data[880], ==, 0xff);
  g_assert_cmpuint (data[881], ==, 0x0f);
}

static void
test_side_bytes (void)
{
  g_autoptr (AvqFrame) f = avq_frame_new (3, 4, 3, test_id);
  gsize len = 0;
  g_autofree guint8 *data = NULL;
  const guint8 lo[4] = { 0x00, 0x00, 0xc0, 0xbf };  /* -1.5f LE */

  g_assert_cmpuint (f->flags, ==, AVQ_FRAME_FLAG_KEYFRAME | AVQ_FRAME_FLAG_SIDE_INFO);
  f->indices[0] = 1; f->indices[1] = 2; f->indices[2] = 3;
  f->side_range[0] = -1.5f; f->side_range[1] = 1; f->side_range[2] = 0;
  f->side_range[3] = 0;
  /* mu, logsigma per token, interleaved */
  for (guint i = 0; i < 6; i++)
    f->side_codes[i] = i + 1;
  data = avq_frame_serialize (f, &len);
  g_assert_cmpuint (len, ==, 16 + 2 + 16 + 3);
  g_assert_cmpuint (data[1], ==, 0x03);
  g_assert_cmpuint (data[5], ==, 3);
  g_assert_cmpuint (data[16], ==, 0x21);
  g_assert_cmpuint (data[17], ==, 0x03);
  g_assert_cmpmem (data + 18, 4, lo, 4);
  /* codes 1..6 at 3 bits: 001 010 011 100 101 110 */
  g_assert_cmpuint (data[34], ==, (1 | 2 << 3 | (3 & 3) << 6));
  g_assert_cmpuint (data[35], ==, (3 >> 2 | 4 << 1 | 5 << 4 | (6 & 1) << 7));
  g_assert_cmpuint (data[36], ==, 6 >> 1);
}

static void
test_roundtrip (void)
{
  const guint side_choices[] = { 0, 0, 1, 4, 8, 13, 16 };

  for (guint iter = 0; iter < 300; iter++) {
    guint tokens = iter < 20 ? iter + 1 : (guint) g_test_rand_int_range (1, 3000);
    guint ib = 1 + iter % 16;
    guint sb = side_choices[iter % G_N_ELEMENTS (side_choices)];
    g_autoptr (AvqFrame) f = random_frame (tokens, ib, sb);
    g_autoptr (AvqFrame) back = NULL;
    g_autoptr (AvqFrame) copy = NULL;
    g_autoptr (GError) err = NULL;
    g_autoptr (GBytes) bytes = NULL;
    gsize len = 0, peek = 0;
    g_autofree guint8 *data = avq_frame_serialize (f, &len);

    g_assert_nonnull (data);
    g_assert_cmpuint (len, ==, avq_frame_serialized_size (tokens, ib, sb));
    g_assert_true (avq_frame_peek_size (data, len, &peek, &err));
    g_assert_no_error (err);
    g_assert_cmpuint (peek, ==, len);
    back = avq_frame_parse (data, len, &err);
    g_assert_no_error (err);
    g_assert_nonnull (back);
    g_assert_true (avq_frame_equal (f, back));
    g_assert_true ((back->side_codes != NULL) == (sb > 0));
    copy = avq_frame_copy (back);
    g_assert_true (avq_frame_equal (copy, f));
    bytes = avq_frame_to_bytes (copy);
    g_assert_cmpmem (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes),
                     data, len);
    if (sb > 0) {
      copy->side_codes[tokens - 1] ^= 1;
      g_assert_false (avq_frame_equal (copy, f));
    } else {
      copy->indices[tokens - 1] ^= 1;
      g_assert_false (avq_frame_equal (copy, f));
    }
  }
}

static void
test_full_range_values (void)
{
  /* Extreme side ranges survive bit-exactly (including -0.0 and denormals). */
  g_autoptr (AvqFrame) f = random_frame (577, 16, 16);
  g_autoptr (AvqFrame) back = NULL;
  g_autoptr (GError) err = NULL;
  gsize len;
  g_autofree guint8 *data = NULL;

  f->side_range[0] = -G_MAXFLOAT;
  f->side_range[1] = -0.0f;
  f->side_range[2] = 1e-45f;
  f->side_range[3] = G_MAXFLOAT;
  data = avq_frame_serialize (f, &len);
  back = avq_frame_parse (data, len, &err);
  g_assert_no_error (err);
  g_assert_true (avq_frame_equal (f, back));
  g_assert_true (signbit (back->side_range[1]));
}

static void
test_serialize_refuses (void)
{
  /* The writer refuses frames its own parser would reject. */
  g_autoptr (AvqFrame) f = avq_frame_new (10, 4, 0, test_id);
  gsize len = 99;

  f->flags |= 0x80;
  g_test_expect_message ("avq", G_LOG_LEVEL_CRITICAL, "*");
  g_assert_null (avq_frame_serialize (f, &len));
  g_test_assert_expected_messages ();
  f->flags = AVQ_FRAME_FLAG_KEYFRAME | AVQ_FRAME_FLAG_SIDE_INFO;
  g_test_expect_message ("avq", G_LOG_LEVEL_CRITICAL, "*");
  g_assert_null (avq_frame_serialize (f, &len));
  g_test_assert_expected_messages ();
  f->flags = AVQ_FRAME_FLAG_KEYFRAME;
  f->version = 2;
  g_test_expect_message ("avq", G_LOG_LEVEL_CRITICAL, "*");
  g_assert_null (avq_frame_serialize (f, &len));
  g_test_assert_expected_messages ();
  g_assert_cmpuint (len, ==, 99);
}

/* ---- strict parser ---- */

static void
expect_reject (const guint8 *data, gsize len, gint code)
{
  g_autoptr (GError) err = NULL;
  AvqFrame *f = avq_frame_parse (data, len, &err);

  g_assert_null (f);
  g_assert_error (err, AVQ_ERROR, code);
}

static void
expect_header_reject (const guint8 *data, gsize len, gint code)
{
  g_autoptr (GError) err = NULL;
  gsize size = 12345;

  expect_reject (data, len, code);
  g_assert_false (avq_frame_peek_size (data, len, &size, &err));
  g_assert_error (err, AVQ_ERROR, code);
}

static void
test_reject_lengths (void)
{
  gsize len;
  g_autofree guint8 *data = serialize_random (577, 12, 8, &len);
  g_autofree guint8 *longer = g_malloc0 (len + 1);

  /* Every truncation, including an empty buffer and NULL. */
  for (gsize l = 0; l < len; l++)
    expect_reject (data, l, AVQ_ERROR_FORMAT);
  expect_reject (NULL, 0, AVQ_ERROR_FORMAT);
  /* Trailing bytes, zero or not. */
  memcpy (longer, data, len);
  expect_reject (longer, len + 1, AVQ_ERROR_FORMAT);
  longer[len] = 0x55;
  expect_reject (longer, len + 1, AVQ_ERROR_FORMAT);
  {
    g_autoptr (GError) err = NULL;
    gsize size = 0;
    g_assert_false (avq_frame_peek_size (data, 15, &size, &err));
    g_assert_error (err, AVQ_ERROR, AVQ_ERROR_FORMAT);
  }
}

static void
test_reject_header (void)
{
  gsize len, len_side;
  g_autofree guint8 *good = serialize_random (577, 12, 0, &len);
  g_autofree guint8 *good_side = serialize_random (100, 10, 6, &len_side);
  g_autofree guint8 *d = g_malloc (MAX (len, len_side));

#define RESET() memcpy (d, good, len)
#define RESET_SIDE() memcpy (d, good_side, len_side)

  /* versions */
  for (guint v = 0; v < 256; v++) {
    if (v == 1)
      continue;
    RESET (); d[0] = v;
    expect_header_reject (d, len, AVQ_ERROR_UNSUPPORTED);
  }
  /* every unknown flag bit, alone and with the known ones */
  for (guint bit = 2; bit < 8; bit++) {
    RESET (); d[1] |= 1u << bit;
    expect_header_reject (d, len, AVQ_ERROR_UNSUPPORTED);
    RESET_SIDE (); d[1] |= 1u << bit;
    expect_header_reject (d, len_side, AVQ_ERROR_UNSUPPORTED);
  }
  /* v1 without the keyframe bit */
  RESET (); d[1] &= ~AVQ_FRAME_FLAG_KEYFRAME;
  expect_header_reject (d, len, AVQ_ERROR_UNSUPPORTED);
  /* side flag without side bits and side bits without side flag */
  RESET (); d[1] |= AVQ_FRAME_FLAG_SIDE_INFO;
  expect_header_reject (d, len, AVQ_ERROR_FORMAT);
  RESET_SIDE (); d[1] &= ~AVQ_FRAME_FLAG_SIDE_INFO;
  expect_header_reject (d, len_side, AVQ_ERROR_FORMAT);
  RESET (); d[5] = 8;
  expect_header_reject (d, len, AVQ_ERROR_FORMAT);
  RESET_SIDE (); d[5] = 0;
  expect_header_reject (d, len_side, AVQ_ERROR_FORMAT);
  /* index_bits 0 and > 16 */
  for (guint b = 0; b < 256; b = b == 0 ? 17 : b + 1) {
    RESET (); d[4] = b;
    expect_header_reject (d, len, AVQ_ERROR_FORMAT);
  }
  /* side_bits > 16 */
  for (guint b = 17; b < 256; b++) {
    RESET_SIDE (); d[5] = b;
    expect_header_reject (d, len_side, AVQ_ERROR_FORMAT);
  }
  /* reserved */
  RESET (); d[6] = 1;
  expect_header_reject (d, len, AVQ_ERROR_FORMAT);
  RESET (); d[7] = 0x80;
  expect_header_reject (d, len, AVQ_ERROR_FORMAT);
  /* zero tokens */
  RESET (); d[2] = 0; d[3] = 0;
  expect_header_reject (d, len, AVQ_ERROR_FORMAT);
  /* a changed token count or width changes the size: rejected as such */
  RESET (); d[2] = 0x40;
  expect_reject (d, len, AVQ_ERROR_FORMAT);
  RESET (); d[4] = 11;
  expect_reject (d, len, AVQ_ERROR_FORMAT);
  /* the codebook id is opaque: any value parses */
  RESET (); memset (d + 8, 0xff, 8);
  {
    g_autoptr (GError) err = NULL;
    g_autoptr (AvqFrame) f = avq_frame_parse (d, len, &err);
    g_assert_no_error (err);
    g_assert_cmpuint (f->codebook_id[7], ==, 0xff);
  }
#undef RESET
#undef RESET_SIDE
}

static void
test_reject_padding (void)
{
  /* 577 x 12 bits leaves 4 padding bits; 100 x 10 = 1000 bits has none after
   * the indices, and 200 x 6 = 1200 bits none after the side codes, so use
   * widths that leave some. */
  gsize len;
  g_autofree guint8 *data = serialize_random (577, 12, 0, &len);

  for (guint bit = 4; bit < 8; bit++) {
    g_autofree guint8 *d = g_memdup2 (data, len);
    d[len - 1] |= 1u << bit;
    expect_reject (d, len, AVQ_ERROR_FORMAT);
  }
  {
    /* 5 tokens x 3 bits = 15 bits (1 pad), 10 side codes x 5 = 50 (6 pad) */
    gsize l2;
    g_autofree guint8 *s = serialize_random (5, 3, 5, &l2);
    gsize idx_last = 16 + 2 - 1;
    g_autofree guint8 *d = g_memdup2 (s, l2);
    g_autoptr (GError) err = NULL;
    g_autoptr (AvqFrame) ok = avq_frame_parse (s, l2, &err);

    g_assert_no_error (err);
    g_assert_nonnull (ok);
    g_assert_cmpuint (l2, ==, 16 + 2 + 16 + 7);
    d[idx_last] |= 0x80;
    expect_reject (d, l2, AVQ_ERROR_FORMAT);
    for (guint bit = 2; bit < 8; bit++) {
      g_free (d);
      d = g_memdup2 (s, l2);
      d[l2 - 1] |= 1u << bit;
      expect_reject (d, l2, AVQ_ERROR_FORMAT);
    }
  }
}

static void
put_f32 (guint8 *p, float v)
{
  guint32 u;
  memcpy (&u, &v, 4);
  u = GUINT32_TO_LE (u);
  memcpy (p, &u, 4);
}

static void
test_reject_side_range (void)
{
  gsize len;
  g_autofree guint8 *data = serialize_random (50, 7, 4, &len);
  gsize range_off = 16 + (50 * 7 + 7) / 8;
  const float bad[] = { NAN, -NAN, INFINITY, -INFINITY };

  for (guint slot = 0; slot < 4; slot++) {
    for (guint k = 0; k < G_N_ELEMENTS (bad); k++) {
      g_autofree guint8 *d = g_memdup2 (data, len);
      put_f32 (d + range_off + 4 * slot, bad[k]);
      expect_reject (d, len, AVQ_ERROR_FORMAT);
    }
  }
  /* lo > hi */
  {
    g_autofree guint8 *d = g_memdup2 (data, len);
    put_f32 (d + range_off, 3.0f);
    expect_reject (d, len, AVQ_ERROR_FORMAT);
  }
  {
    g_autofree guint8 *d = g_memdup2 (data, len);
    put_f32 (d + range_off + 12, -1.0f);
    expect_reject (d, len, AVQ_ERROR_FORMAT);
  }
  /* lo == hi is a legal (constant) range */
  {
    g_autofree guint8 *d = g_memdup2 (data, len);
    g_autoptr (GError) err = NULL;
    g_autoptr (AvqFrame) f = NULL;
    put_f32 (d + range_off, 2.25f);
    put_f32 (d + range_off + 8, 0.75f);
    f = avq_frame_parse (d, len, &err);
    g_assert_no_error (err);
    g_assert_cmpfloat (f->side_range[0], ==, f->side_range[1]);
  }
}

static void
test_random_garbage (void)
{
  /* Random bytes behind a valid-looking header: parse must fail cleanly or
   * return a frame that re-serialises to the same bytes. */
  for (guint iter = 0; iter < 3000; iter++) {
    gsize len = g_test_rand_int_range (0, 300);
    g_autofree guint8 *d = g_malloc (len + 1);
    g_autoptr (GError) err = NULL;
    g_autoptr (AvqFrame) f = NULL;

    for (gsize i = 0; i < len; i++)
      d[i] = g_test_rand_int_range (0, 256);
    if (len >= 16 && iter % 2 == 0) {
      d[0] = 1;
      d[1] = 1 | (iter % 4 == 0 ? 2 : 0);
      d[3] = 0;
      d[4] = 1 + d[4] % 16;
      d[5] = d[1] & 2 ? 1 + d[5] % 16 : 0;
      d[6] = d[7] = 0;
    }
    f = avq_frame_parse (d, len, &err);
    if (f != NULL) {
      gsize l2;
      g_autofree guint8 *again = avq_frame_serialize (f, &l2);
      g_assert_cmpmem (again, l2, d, len);
    } else {
      g_assert_nonnull (err);
    }
  }
}

/* ---- concatenated stream ---- */

static void
test_peek_stream (void)
{
  g_autoptr (GByteArray) stream = g_byte_array_new ();
  GPtrArray *frames = g_ptr_array_new_with_free_func ((GDestroyNotify) avq_frame_free);
  gsize off = 0;
  guint n = 0;

  for (guint i = 0; i < 40; i++) {
    guint sb = i % 3 == 0 ? 0 : 1 + i % 16;
    AvqFrame *f = random_frame (g_test_rand_int_range (1, 800), 1 + i % 16, sb);
    gsize len;
    g_autofree guint8 *d = avq_frame_serialize (f, &len);
    g_byte_array_append (stream, d, len);
    g_ptr_array_add (frames, f);
  }
  while (off < stream->len) {
    gsize size = 0;
    g_autoptr (GError) err = NULL;
    g_autoptr (AvqFrame) f = NULL;

    g_assert_true (avq_frame_peek_size (stream->data + off, stream->len - off,
                                        &size, &err));
    g_assert_no_error (err);
    g_assert_cmpuint (off + size, <=, stream->len);
    f = avq_frame_parse (stream->data + off, size, &err);
    g_assert_no_error (err);
    g_assert_true (avq_frame_equal (f, frames->pdata[n]));
    off += size;
    n++;
  }
  g_assert_cmpuint (n, ==, frames->len);
  /* peek needs only the header, not the whole frame */
  {
    gsize size = 0;
    AvqFrameHeader h;
    g_assert_true (avq_frame_peek_size (stream->data, 16, &size, NULL));
    g_assert_true (avq_frame_peek_header (stream->data, 16, &h, NULL));
    g_assert_cmpuint (h.frame_size, ==, size);
    g_assert_cmpuint (h.tokens, ==, ((AvqFrame *) frames->pdata[0])->tokens);
    g_assert_cmpmem (h.codebook_id, 8, test_id, 8);
  }
  g_ptr_array_unref (frames);
}

/* ---- codebook id hex ---- */

static void
test_codebook_hex (void)
{
  char hex[17];
  guint8 id[8];
  const guint8 zero[8] = { 0 };

  avq_codebook_id_to_hex (test_id, hex);
  g_assert_cmpstr (hex, ==, "0123456789abcdef");
  g_assert_true (avq_codebook_id_from_hex ("0123456789abcdef", id));
  g_assert_cmpmem (id, 8, test_id, 8);
  g_assert_true (avq_codebook_id_from_hex ("0123456789ABCDEF", id));
  g_assert_cmpmem (id, 8, test_id, 8);
  avq_codebook_id_to_hex (zero, hex);
  g_assert_cmpstr (hex, ==, "0000000000000000");

  memcpy (id, zero, 8);
  g_assert_false (avq_codebook_id_from_hex (NULL, id));
  g_assert_false (avq_codebook_id_from_hex ("", id));
  g_assert_false (avq_codebook_id_from_hex ("0123456789abcde", id));
  g_assert_false (avq_codebook_id_from_hex ("0123456789abcdef0", id));
  g_assert_false (avq_codebook_id_from_hex ("0123456789abcdeg", id));
  g_assert_false (avq_codebook_id_from_hex (" 0123456789abcdef", id));
  g_assert_false (avq_codebook_id_from_hex ("0x23456789abcdef", id));
  g_assert_cmpmem (id, 8, zero, 8);  /* untouched on failure */

  for (guint i = 0; i < 100; i++) {
    guint8 r[8], back[8];
    for (guint k = 0; k < 8; k++)
      r[k] = g_test_rand_int_range (0, 256);
    avq_codebook_id_to_hex (r, hex);
    g_assert_cmpuint (strlen (hex), ==, 16);
    g_assert_true (avq_codebook_id_from_hex (hex, back));
    g_assert_cmpmem (back, 8, r, 8);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/frame/bits/layout", test_bits_layout);
  g_test_add_func ("/frame/bits/roundtrip", test_bits_roundtrip);
  g_test_add_func ("/frame/sizes", test_sizes);
  g_test_add_func ("/frame/header-bytes", test_header_bytes);
  g_test_add_func ("/frame/side-bytes", test_side_bytes);
  g_test_add_func ("/frame/roundtrip", test_roundtrip);
  g_test_add_func ("/frame/full-range", test_full_range_values);
  g_test_add_func ("/frame/serialize-refuses", test_serialize_refuses);
  g_test_add_func ("/frame/reject/lengths", test_reject_lengths);
  g_test_add_func ("/frame/reject/header", test_reject_header);
  g_test_add_func ("/frame/reject/padding", test_reject_padding);
  g_test_add_func ("/frame/reject/side-range", test_reject_side_range);
  g_test_add_func ("/frame/random-garbage", test_random_garbage);
  g_test_add_func ("/frame/peek-stream", test_peek_stream);
  g_test_add_func ("/frame/codebook-hex", test_codebook_hex);
  return g_test_run ();
}
