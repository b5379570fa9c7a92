/* Safetensors reader/writer, half/bfloat16 conversion and model directory
 * loading (both tensor naming schemes). */
#include <math.h>
#include <string.h>
#include <glib/gstdio.h>

#include "avq-error.h"
#include "avq-model.h"
#include "avq-safetensors.h"
#include "test-util.h"

static guint32
float_bits (float f)
{
  guint32 u;
  memcpy (&u, &f, 4);
  return u;
}

static float
bits_float (guint32 u)
{
  float f;
  memcpy (&f, &u, 4);
  return f;
}

/* Independent reference for a half: the textbook formula in double. */
static double
half_reference (guint16 h)
{
  int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0)
    v = ldexp (mant, -24);
  else if (exp == 31)
    v = mant ? NAN : INFINITY;
  else
    v = ldexp (1024 + mant, exp - 25);
  return sign ? -v : v;
}

static char *
make_tmpdir (void)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("avq-st-XXXXXX", &error);
  g_assert_no_error (error);
  return dir;
}

static void
rm_rf (const char *dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return;
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL) {
    g_autofree char *p = g_build_filename (dir, name, NULL);
    g_unlink (p);
  }
  g_dir_close (d);
  g_rmdir (dir);
}

/* ---- fixtures ------------------------------------------------------------ */

static void
test_fixture_avq (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = avq_test_data_path ("tiny-llava/avq-L0-derive.safetensors");
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (st);
  g_assert_cmpstr (avq_safetensors_path (st), ==, path);
  g_assert_cmpuint (avq_safetensors_n_tensors (st), ==, 7);

  static const char *const md[][2] = {
    { "avq.format", "1" }, { "avq.layer", "0" }, { "avq.site", "ln1" },
    { "avq.residual", "derive" }, { "avq.side_bits", "0" },
    { "avq.index_bits", "12" }, { "avq.codebook_size", "4096" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (md); i++)
    g_assert_cmpstr (avq_safetensors_metadata (st, md[i][0]), ==, md[i][1]);
  g_assert_null (avq_safetensors_metadata (st, "avq.missing"));

  const AvqTensor *cb = avq_safetensors_find (st, "avq.codebook");
  g_assert_nonnull (cb);
  g_assert_cmpint (cb->dtype, ==, AVQ_DTYPE_F16);
  g_assert_cmpint (cb->ndim, ==, 2);
  g_assert_cmpint (cb->shape[0], ==, 4096);
  g_assert_cmpint (cb->shape[1], ==, 64);
  g_assert_cmpuint (cb->nbytes, ==, 4096 * 64 * 2);
  g_assert_cmpuint (avq_tensor_numel (cb), ==, 4096 * 64);
  g_assert_cmpstr (cb->file, ==, path);
  g_autofree float *v = avq_tensor_dup_f32 (cb);
  /* values computed with numpy from the same file */
  g_assert_cmpfloat (v[0], ==, -0.20751953125f);
  g_assert_cmpfloat (v[4096 * 64 - 1], ==, 2.06640625f);
  double sum = 0;
  for (gsize i = 0; i < 4096 * 64; i++)
    sum += v[i];
  g_assert_cmpfloat_with_epsilon (sum, -9376.46156436205, 1e-6);

  const AvqTensor *gamma = avq_safetensors_find (st, "avq.dlp_in.gamma");
  g_assert_nonnull (gamma);
  g_assert_cmpint (gamma->ndim, ==, 1);
  g_assert_cmpint (gamma->shape[0], ==, 1);
  float g;
  avq_tensor_read_f32 (gamma, 0, 1, &g);
  g_assert_cmpfloat (g, ==, 0.25f);

  /* dlp_out.weight starts at an offset that is only 2-byte aligned */
  const AvqTensor *w = avq_safetensors_find (st, "avq.dlp_out.weight");
  g_assert_nonnull (w);
  g_autofree float *wv = avq_tensor_dup_f32 (w);
  g_assert_cmpfloat (wv[0], ==, -0.11761474609375f);
  g_assert_cmpfloat (wv[64 * 64 - 1], ==, -0.10565185546875f);
  float part[3];
  avq_tensor_read_f32 (w, 64 * 64 - 3, 3, part);
  g_assert_cmpfloat (part[2], ==, -0.10565185546875f);
  g_assert_cmpmem (part, sizeof part, wv + 64 * 64 - 3, sizeof part);

  g_assert_null (avq_safetensors_find (st, "avq.nothing"));
  g_assert_true (avq_tensor_check_float (w, 2, (gint64[]) { 64, -1 }, &error));
  g_assert_no_error (error);
}

static void
test_fixture_model (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  /* a directory finds model.safetensors */
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_safetensors_n_tensors (st), ==, 96);
  g_assert_cmpstr (avq_safetensors_metadata (st, "format"), ==, "pt");

  for (guint i = 0; i < avq_safetensors_n_tensors (st); i++) {
    const AvqTensor *t = avq_safetensors_nth (st, i);
    g_assert_cmpint (t->dtype, ==, AVQ_DTYPE_F16);
    g_assert_true (avq_safetensors_find (st, t->name) == t);
    if (i > 0)
      g_assert_cmpstr (avq_safetensors_nth (st, i - 1)->name, <, t->name);
  }
  const AvqTensor *t = avq_safetensors_find (st,
      "vision_tower.vision_model.embeddings.patch_embedding.weight");
  g_assert_nonnull (t);
  g_assert_true (avq_tensor_check_float (t, 4, (gint64[]) { 64, 3, 14, 14 }, &error));
  g_assert_no_error (error);
  t = avq_safetensors_find (st, "vision_tower.vision_model.embeddings.position_embedding.weight");
  g_assert_nonnull (t);
  g_assert_cmpint (t->shape[0], ==, 577);
  t = avq_safetensors_find (st, "language_model.lm_head.weight");
  g_assert_nonnull (t);
  g_assert_cmpint (t->shape[0], ==, 32064);
  g_assert_nonnull (avq_safetensors_find (st, "multi_modal_projector.linear_2.bias"));

  /* wrong shape is reported with the tensor and the file */
  g_assert_false (avq_tensor_check_float (t, 2, (gint64[]) { 32000, 64 }, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_SHAPE);
  g_assert_nonnull (strstr (error->message, "language_model.lm_head.weight"));
  g_assert_nonnull (strstr (error->message, "model.safetensors"));
  g_clear_error (&error);
  g_assert_false (avq_tensor_check_float (t, 1, (gint64[]) { -1 }, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_SHAPE);
}

static void
test_fixture_reference (void)
{
  const AvqSafetensors *ref = avq_test_reference ();
  g_assert_cmpuint (avq_safetensors_n_tensors (ref), ==, 29);
  const AvqTensor *pv = avq_safetensors_find (ref, "pixel_values");
  g_assert_nonnull (pv);
  g_assert_cmpint (pv->dtype, ==, AVQ_DTYPE_F32);
  g_assert_cmpint (pv->ndim, ==, 4);
  const gint64 want[] = { 3, 3, 336, 336 };
  for (int i = 0; i < 4; i++)
    g_assert_cmpint (pv->shape[i], ==, want[i]);
  /* F32 goes through a copy that must be bit-exact */
  g_autofree float *f = avq_tensor_dup_f32 (pv);
  g_assert_cmpmem (f, pv->nbytes, pv->data, pv->nbytes);

  const AvqTensor *idx = avq_safetensors_find (ref, "avq.L0-derive.indices");
  g_assert_nonnull (idx);
  g_assert_cmpint (idx->dtype, ==, AVQ_DTYPE_I32);
  g_assert_cmpint (idx->shape[1], ==, 577);
  const AvqTensor *side = avq_safetensors_find (ref, "avq.L1-side8.side_q");
  g_assert_nonnull (side);
  g_assert_cmpint (side->ndim, ==, 3);
  g_assert_cmpint (side->shape[2], ==, 2);
  g_autoptr (GError) error = NULL;
  g_assert_false (avq_tensor_check_float (idx, 2, (gint64[]) { 3, 577 }, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_SHAPE);
  g_assert_nonnull (strstr (error->message, "avq.L0-derive.indices"));
  g_assert_nonnull (strstr (error->message, "I32"));
  g_assert_cmpint (avq_safetensors_find (ref, "vision.hidden.4")->shape[1], ==, 577);
  g_assert_null (avq_safetensors_metadata (ref, "format"));
}

/* ---- conversions --------------------------------------------------------- */

static void
test_half_all (void)
{
  for (guint32 i = 0; i < 65536; i++) {
    guint16 h = (guint16) i;
    float f = avq_half_to_float (h);
    double ref = half_reference (h);
    if (isnan (ref)) {
      g_assert_true (isnan (f));
      g_assert_cmpint (signbit (f) != 0, ==, (h >> 15) != 0);
    } else {
      if ((double) f != ref)
        g_error ("half 0x%04x -> %.9g, want %.9g", h, f, ref);
      g_assert_cmpint (signbit (f) != 0, ==, (h >> 15) != 0);   /* -0 too */
    }
    guint16 back = avq_float_to_half (f);
    if (back != h)
      g_error ("half 0x%04x -> %.9g -> 0x%04x", h, f, back);
  }
  g_assert_cmpfloat (avq_half_to_float (0x7bff), ==, 65504.0f);
  g_assert_cmpfloat (avq_half_to_float (0x0001), ==, 0x1p-24f);
  g_assert_cmpfloat (avq_half_to_float (0x3c00), ==, 1.0f);
  g_assert_true (isinf (avq_half_to_float (0xfc00)) && avq_half_to_float (0xfc00) < 0);
}

static void
test_half_rounding (void)
{
  /* For each pair of neighbouring positive finite halves, the float
   * midpoint goes to the even one and its float neighbours go to the
   * nearer one. */
  for (guint32 h = 0; h < 0x7bff; h++) {
    double lo = half_reference ((guint16) h), hi = half_reference ((guint16) (h + 1));
    float mid = (float) ((lo + hi) / 2);
    g_assert_cmpfloat ((double) mid, ==, (lo + hi) / 2);   /* exact in float */
    guint16 even = (h & 1) ? (guint16) (h + 1) : (guint16) h;
    if (avq_float_to_half (mid) != even)
      g_error ("midpoint after 0x%04x rounded to 0x%04x", h, avq_float_to_half (mid));
    g_assert_cmpuint (avq_float_to_half (nextafterf (mid, 0)), ==, h);
    g_assert_cmpuint (avq_float_to_half (nextafterf (mid, INFINITY)), ==, h + 1);
    g_assert_cmpuint (avq_float_to_half (-nextafterf (mid, 0)), ==, h | 0x8000);
  }
  g_assert_cmpuint (avq_float_to_half (65519.99f), ==, 0x7bff);
  g_assert_cmpuint (avq_float_to_half (65520.0f), ==, 0x7c00);
  g_assert_cmpuint (avq_float_to_half (1e30f), ==, 0x7c00);
  g_assert_cmpuint (avq_float_to_half (-1e30f), ==, 0xfc00);
  g_assert_cmpuint (avq_float_to_half (0x1p-25f), ==, 0);        /* tie -> even 0 */
  g_assert_cmpuint (avq_float_to_half (0x1.8p-24f), ==, 2);      /* tie -> even 2 */
  g_assert_cmpuint (avq_float_to_half (1e-30f), ==, 0);
  g_assert_cmpuint (avq_float_to_half (bits_float (1)), ==, 0);  /* float subnormal */
  g_assert_cmpuint (avq_float_to_half (-0.0f), ==, 0x8000);
  g_assert_cmpuint (avq_float_to_half (NAN) & 0x7c00, ==, 0x7c00);
  g_assert_cmpuint (avq_float_to_half (NAN) & 0x3ff, !=, 0);
  /* a NaN whose payload sits only in the low bits must stay NaN */
  g_assert_cmpuint (avq_float_to_half (bits_float (0x7f800001)) & 0x3ff, !=, 0);
}

static void
test_bf16_all (void)
{
  for (guint32 i = 0; i < 65536; i++)
    g_assert_cmpuint (float_bits (avq_bf16_to_float ((guint16) i)), ==, i << 16);
  g_assert_cmpfloat (avq_bf16_to_float (0x3f80), ==, 1.0f);
}

/* All 65536 codes stored in F16 and BF16 tensors behind a 1-element tensor,
 * so the data is not 4-byte aligned; read whole and in odd pieces. */
static void
test_tensor_conversion (void)
{
  g_autofree char *dir = make_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "codes.safetensors", NULL);
  g_autofree guint16 *codes = g_new (guint16, 65536);
  for (guint32 i = 0; i < 65536; i++)
    codes[i] = (guint16) i;
  guint16 one = 0x3c00;
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  avq_safetensors_writer_add (w, "a", AVQ_DTYPE_F16, 1, (gint64[]) { 1 }, &one);
  avq_safetensors_writer_add (w, "bf16", AVQ_DTYPE_BF16, 2, (gint64[]) { 256, 256 }, codes);
  avq_safetensors_writer_add (w, "f16", AVQ_DTYPE_F16, 1, (gint64[]) { 65536 }, codes);
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_safetensors_writer_save (w, path, &error));
  g_assert_no_error (error);

  g_autoptr (AvqSafetensors) st = avq_safetensors_open (path, &error);
  g_assert_no_error (error);
  const AvqTensor *f16 = avq_safetensors_find (st, "f16");
  const AvqTensor *bf16 = avq_safetensors_find (st, "bf16");
  g_assert_nonnull (f16);
  g_assert_nonnull (bf16);
  g_assert_cmpuint (((guintptr) f16->data) % 4, !=, 0);

  g_autofree float *fa = avq_tensor_dup_f32 (f16);
  g_autofree float *ba = avq_tensor_dup_f32 (bf16);
  for (guint32 i = 0; i < 65536; i++) {
    float want = avq_half_to_float ((guint16) i);
    g_assert_cmpuint (float_bits (fa[i]), ==, float_bits (want));
    g_assert_cmpuint (float_bits (ba[i]), ==, i << 16);
  }
  /* pieces that start and end inside the vectorised blocks */
  static const gsize pieces[][2] = { { 0, 1 }, { 1, 31 }, { 5, 37 }, { 33, 64 },
                                     { 65535, 1 }, { 65000, 536 }, { 100, 0 } };
  float buf[1024];
  for (guint p = 0; p < G_N_ELEMENTS (pieces); p++) {
    gsize off = pieces[p][0], n = pieces[p][1];
    for (gsize k = 0; k < G_N_ELEMENTS (buf); k++)
      buf[k] = -12345.0f;
    avq_tensor_read_f32 (f16, off, n, buf);
    g_assert_cmpmem (buf, n * 4, fa + off, n * 4);
    g_assert_cmpfloat (buf[n], ==, -12345.0f);   /* nothing written past n */
    avq_tensor_read_f32 (bf16, off, n, buf);
    g_assert_cmpmem (buf, n * 4, ba + off, n * 4);
    g_assert_cmpfloat (buf[n], ==, -12345.0f);
  }
  avq_safetensors_free (g_steal_pointer (&st));
  rm_rf (dir);
}

/* ---- writer ------------------------------------------------------------- */

static void
test_writer_roundtrip (void)
{
  g_autofree char *dir = make_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "w.safetensors", NULL);
  const float f32[6] = { 1, -2, 3.5f, 1e-20f, INFINITY, -0.0f };
  const guint16 f16[5] = { 0x3c00, 0x0001, 0x7bff, 0xfc00, 0x8000 };
  const gint32 i32[3] = { -1, 0, 0x7fffffff };
  const guint8 u8[1] = { 42 };
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  /* added out of name order on purpose */
  avq_safetensors_writer_add (w, "z.f32", AVQ_DTYPE_F32, 2, (gint64[]) { 2, 3 }, f32);
  avq_safetensors_writer_add (w, "b.i32", AVQ_DTYPE_I32, 1, (gint64[]) { 3 }, i32);
  avq_safetensors_writer_add (w, "m.f16", AVQ_DTYPE_F16, 1, (gint64[]) { 5 }, f16);
  avq_safetensors_writer_add (w, "e.empty", AVQ_DTYPE_F32, 2, (gint64[]) { 0, 7 }, NULL);
  avq_safetensors_writer_add (w, "s.scalar", AVQ_DTYPE_U8, 0, NULL, u8);
  avq_safetensors_writer_set_metadata (w, "avq.format", "1");
  avq_safetensors_writer_set_metadata (w, "note", "quote \" and \xc3\xa9");
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_safetensors_writer_save (w, path, &error));
  g_assert_no_error (error);

  g_autofree char *raw = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (path, &raw, &len, NULL));
  guint64 hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | (guint8) raw[i];
  g_assert_cmpuint (hlen % 8, ==, 0);
  g_assert_cmpuint (len, ==, 8 + hlen + 24 + 12 + 10 + 0 + 1);
  g_assert_cmpint (raw[8], ==, '{');
  /* tensors in name order: offsets grow with the name */
  const char *hdr = raw + 8;
  const char *pb = g_strstr_len (hdr, (gssize) hlen, "\"b.i32\"");
  const char *pm = g_strstr_len (hdr, (gssize) hlen, "\"m.f16\"");
  const char *pz = g_strstr_len (hdr, (gssize) hlen, "\"z.f32\"");
  const char *pmd = g_strstr_len (hdr, (gssize) hlen, "\"__metadata__\"");
  g_assert_true (pmd && pb && pm && pz && pmd < pb && pb < pm && pm < pz);
  g_assert_cmpmem (raw + 8 + hlen, 12, i32, 12);   /* b.i32 first in data */
  for (const char *p = hdr + hlen - 1; *p != '}'; p--)
    g_assert_cmpint (*p, ==, ' ');

  g_autoptr (AvqSafetensors) st = avq_safetensors_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_safetensors_n_tensors (st), ==, 5);
  g_assert_cmpstr (avq_safetensors_nth (st, 0)->name, ==, "b.i32");
  g_assert_cmpstr (avq_safetensors_nth (st, 4)->name, ==, "z.f32");
  g_assert_cmpstr (avq_safetensors_metadata (st, "avq.format"), ==, "1");
  g_assert_cmpstr (avq_safetensors_metadata (st, "note"), ==, "quote \" and \xc3\xa9");

  const AvqTensor *t = avq_safetensors_find (st, "z.f32");
  g_assert_cmpint (t->ndim, ==, 2);
  g_autofree float *fv = avq_tensor_dup_f32 (t);
  g_assert_cmpmem (fv, sizeof f32, f32, sizeof f32);
  t = avq_safetensors_find (st, "m.f16");
  g_assert_cmpmem (t->data, t->nbytes, f16, sizeof f16);
  t = avq_safetensors_find (st, "b.i32");
  g_assert_cmpint (t->dtype, ==, AVQ_DTYPE_I32);
  g_assert_cmpmem (t->data, t->nbytes, i32, sizeof i32);
  t = avq_safetensors_find (st, "e.empty");
  g_assert_cmpuint (t->nbytes, ==, 0);
  g_assert_cmpuint (avq_tensor_numel (t), ==, 0);
  g_assert_cmpint (t->shape[1], ==, 7);
  g_autofree float *ev = avq_tensor_dup_f32 (t);
  g_assert_nonnull (ev);
  t = avq_safetensors_find (st, "s.scalar");
  g_assert_cmpint (t->ndim, ==, 0);
  g_assert_cmpuint (avq_tensor_numel (t), ==, 1);
  g_assert_cmpint (*(const guint8 *) t->data, ==, 42);

  /* overwriting an existing file works and leaves no temporary behind */
  avq_safetensors_free (g_steal_pointer (&st));
  g_assert_true (avq_safetensors_writer_save (w, path, &error));
  g_assert_no_error (error);
  GDir *d = g_dir_open (dir, 0, NULL);
  guint n = 0;
  while (g_dir_read_name (d))
    n++;
  g_dir_close (d);
  g_assert_cmpuint (n, ==, 1);

  g_autofree char *bad = g_build_filename (dir, "no-such-dir", "x.safetensors", NULL);
  g_assert_false (avq_safetensors_writer_save (w, bad, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_IO);
  rm_rf (dir);
}

/* ---- malformed files --------------------------------------------------- */

static GBytes *
image (const char *header, gsize data_size)
{
  gsize hlen = strlen (header);
  gsize total = 8 + hlen + data_size;
  guint8 *b = g_malloc0 (total);
  for (int i = 0; i < 8; i++)
    b[i] = (guint8) (((guint64) hlen >> (8 * i)) & 0xff);
  memcpy (b + 8, header, hlen);
  return g_bytes_new_take (b, total);
}

typedef struct {
  const char *what;
  const char *header;
  gsize data_size;
  int code;
  const char *mention;   /* must appear in the error message */
} BadCase;

static const BadCase bad_cases[] = {
  { "bad JSON", "{\"a\":", 0, AVQ_ERROR_FORMAT, NULL },
  { "JSON garbage", "\x01\x02\xff", 0, AVQ_ERROR_FORMAT, NULL },
  { "empty header", "", 0, AVQ_ERROR_FORMAT, NULL },
  { "not an object", "[1,2]", 0, AVQ_ERROR_FORMAT, NULL },
  { "entry not an object", "{\"t\":5}", 0, AVQ_ERROR_FORMAT, "t" },
  { "no dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
    AVQ_ERROR_FORMAT, "t" },
  { "dtype not string", "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
    AVQ_ERROR_FORMAT, "t" },
  { "unknown dtype", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}",
    1, AVQ_ERROR_UNSUPPORTED, "F8_E4M3" },
  { "lower-case dtype", "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
    4, AVQ_ERROR_UNSUPPORTED, "w" },
  { "no shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
    AVQ_ERROR_FORMAT, "w" },
  { "shape not array", "{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}",
    4, AVQ_ERROR_FORMAT, "w" },
  { "negative shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
    4, AVQ_ERROR_FORMAT, "w" },
  { "fractional shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
    4, AVQ_ERROR_FORMAT, "w" },
  { "string shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}",
    4, AVQ_ERROR_FORMAT, "w" },
  { "shape beyond int64",
    "{\"w\":{\"dtype\":\"F32\",\"shape\":[18446744073709551617],\"data_offsets\":[0,4]}}",
    4, AVQ_ERROR_FORMAT, "w" },
  { "shape product overflows",
    "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}",
    0, AVQ_ERROR_FORMAT, "w" },
  { "bytes overflow",
    "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}",
    0, AVQ_ERROR_FORMAT, "w" },
  { "too many dims",
    "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
    1, AVQ_ERROR_UNSUPPORTED, "w" },
  { "no offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, AVQ_ERROR_FORMAT, "w" },
  { "one offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4,
    AVQ_ERROR_FORMAT, "w" },
  { "three offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
    8, AVQ_ERROR_FORMAT, "w" },
  { "negative offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
    4, AVQ_ERROR_FORMAT, "w" },
  { "begin after end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}",
    4, AVQ_ERROR_FORMAT, "w" },
  { "offsets past data", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
    8, AVQ_ERROR_FORMAT, "w" },
  { "huge offsets",
    "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9223372036854775806,9223372036854775807]}}",
    8, AVQ_ERROR_FORMAT, "w" },
  { "size != shape x dtype", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",
    8, AVQ_ERROR_FORMAT, "w" },
  { "span larger than shape x dtype",
    "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
    AVQ_ERROR_FORMAT, "w" },
  { "size != shape x dtype (F16)", "{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,4]}}",
    8, AVQ_ERROR_FORMAT, "w" },
  { "overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
    AVQ_ERROR_FORMAT, "overlaps" },
  { "same range twice", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
    AVQ_ERROR_FORMAT, "overlaps" },
  { "nested overlap", "{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
    "\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[10,12]},"
    "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 16,
    AVQ_ERROR_FORMAT, "overlaps" },
  { "duplicate name", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
    AVQ_ERROR_FORMAT, "duplicate key \"a\"" },
  { "duplicate key in entry", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],"
    "\"data_offsets\":[0,4]}}", 4, AVQ_ERROR_FORMAT, "duplicate key \"dtype\"" },
  { "metadata not object", "{\"__metadata__\":[1]}", 0, AVQ_ERROR_FORMAT, "__metadata__" },
  { "metadata value not string", "{\"__metadata__\":{\"k\":1}}", 0, AVQ_ERROR_FORMAT, "k" },
  { "NUL in header", "{\"a\"\0:1}", 0, AVQ_ERROR_FORMAT, "NUL" },
};

static void
test_malformed (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (bad_cases); i++) {
    const BadCase *c = &bad_cases[i];
    /* the NUL case needs its real length */
    g_autoptr (GBytes) b = NULL;
    if (strcmp (c->what, "NUL in header") == 0) {
      guint8 raw[8 + 8] = { 8, 0, 0, 0, 0, 0, 0, 0 };
      memcpy (raw + 8, "{\"a\"\0:1}", 8);
      b = g_bytes_new (raw, sizeof raw);
    } else {
      b = image (c->header, c->data_size);
    }
    g_autoptr (GError) error = NULL;
    gsize size;
    const guint8 *data = g_bytes_get_data (b, &size);
    AvqSafetensors *st = avq_safetensors_open_memory (data, size, "bad.safetensors",
                                                      &error);
    if (st != NULL)
      g_error ("case '%s' was accepted", c->what);
    if (error == NULL)
      g_error ("case '%s' failed without an error", c->what);
    g_test_message ("%s: %s", c->what, error->message);
    g_assert_error (error, AVQ_ERROR, c->code);
    g_assert_nonnull (strstr (error->message, "bad.safetensors"));
    if (c->mention && strstr (error->message, c->mention) == NULL)
      g_error ("case '%s': message '%s' does not mention '%s'", c->what,
               error->message, c->mention);
  }
}

static void
test_malformed_length (void)
{
  g_autoptr (GError) error = NULL;
  /* shorter than the length field */
  static const guint8 tiny[5] = { 2, 0, 0, 0, 0 };
  g_assert_null (avq_safetensors_open_memory (tiny, sizeof tiny, "t", &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  g_clear_error (&error);
  g_assert_null (avq_safetensors_open_memory (NULL, 0, "t", &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  g_clear_error (&error);

  /* header length runs past the end; also lengths that overflow 8 + len */
  static const guint64 lens[] = { 3, 1000, G_MAXUINT64, G_MAXUINT64 - 7,
                                  (guint64) 1 << 63 };
  for (guint i = 0; i < G_N_ELEMENTS (lens); i++) {
    guint8 raw[10] = { 0 };
    for (int k = 0; k < 8; k++)
      raw[k] = (guint8) ((lens[i] >> (8 * k)) & 0xff);
    raw[8] = '{';
    raw[9] = '}';
    g_assert_null (avq_safetensors_open_memory (raw, sizeof raw, "len", &error));
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
    g_clear_error (&error);
  }

  /* a header length that fits the bytes present but not the size given:
   * the parser must trust `size`, not what lies beyond it */
  {
    guint8 raw[16] = { 8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' ' };
    g_assert_null (avq_safetensors_open_memory (raw, 15, "short", &error));
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
    g_clear_error (&error);
    g_autoptr (AvqSafetensors) full = avq_safetensors_open_memory (raw, 16, "full", &error);
    g_assert_no_error (error);
    g_assert_cmpuint (avq_safetensors_n_tensors (full), ==, 0);
  }

  /* empty header object: valid, no tensors; trailing spaces are fine */
  g_autoptr (GBytes) ok = image ("{}      ", 0);
  gsize size;
  const guint8 *data = g_bytes_get_data (ok, &size);
  g_autoptr (AvqSafetensors) st = avq_safetensors_open_memory (data, size, "ok", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_safetensors_n_tensors (st), ==, 0);

  /* zero-sized tensors own no bytes and may share an offset */
  g_autoptr (GBytes) z = image ("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"c\":{\"dtype\":\"F16\",\"shape\":[3,0],\"data_offsets\":[2,2]}}",
                                4);
  data = g_bytes_get_data (z, &size);
  g_autoptr (AvqSafetensors) st2 = avq_safetensors_open_memory (data, size, "z", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_safetensors_n_tensors (st2), ==, 3);
}

static void
test_malformed_files (void)
{
  g_autofree char *dir = make_tmpdir ();
  g_autoptr (GError) error = NULL;

  /* a real file cut short: the header length now points past the end */
  g_autofree char *src = avq_test_data_path ("tiny-llava/avq-L0-derive.safetensors");
  g_autofree char *raw = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (src, &raw, &len, NULL));
  g_autofree char *cut = g_build_filename (dir, "cut.safetensors", NULL);
  static const gsize cuts[] = { 0, 4, 8, 100, 735, 541659 };
  for (guint i = 0; i < G_N_ELEMENTS (cuts); i++) {
    g_assert_true (g_file_set_contents (cut, raw, (gssize) cuts[i], NULL));
    AvqSafetensors *st = avq_safetensors_open (cut, &error);
    g_assert_null (st);
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
    g_assert_nonnull (strstr (error->message, "cut.safetensors"));
    g_test_message ("cut at %zu: %s", cuts[i], error->message);
    g_clear_error (&error);
  }
  /* extra trailing bytes after the last tensor are harmless */
  g_assert_true (g_file_set_contents (cut, raw, (gssize) len, NULL));
  g_autoptr (AvqSafetensors) whole = avq_safetensors_open (cut, &error);
  g_assert_no_error (error);

  g_autofree char *missing = g_build_filename (dir, "nope.safetensors", NULL);
  g_assert_null (avq_safetensors_open (missing, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "nope.safetensors"));
  g_clear_error (&error);

  g_autofree char *empty_dir = g_build_filename (dir, "empty", NULL);
  g_mkdir (empty_dir, 0755);
  g_assert_null (avq_safetensors_open (empty_dir, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISSING);
  g_clear_error (&error);
  g_rmdir (empty_dir);
  avq_safetensors_free (g_steal_pointer (&whole));
  rm_rf (dir);
}

/* ---- sharded ----------------------------------------------------------- */

static void
write_shard (const char *dir, const char *file, const char *const *names,
             guint n, float base)
{
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  for (guint i = 0; i < n; i++) {
    float v[4] = { base + (float) i, base + (float) i + 0.5f, -base, 1 };
    avq_safetensors_writer_add (w, names[i], AVQ_DTYPE_F32, 2, (gint64[]) { 2, 2 }, v);
  }
  avq_safetensors_writer_set_metadata (w, "format", "pt");
  g_autofree char *path = g_build_filename (dir, file, NULL);
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_safetensors_writer_save (w, path, &error));
  g_assert_no_error (error);
}

static void
write_text (const char *dir, const char *file, const char *text)
{
  g_autofree char *path = g_build_filename (dir, file, NULL);
  g_assert_true (g_file_set_contents (path, text, -1, NULL));
}

static const char *const shard1[] = { "x.a", "x.b" };
static const char *const shard2[] = { "x.c" };

static void
test_sharded (void)
{
  g_autofree char *dir = make_tmpdir ();
  write_shard (dir, "model-00001-of-00002.safetensors", shard1, 2, 10);
  write_shard (dir, "model-00002-of-00002.safetensors", shard2, 1, 20);
  write_text (dir, "model.safetensors.index.json",
              "{\"metadata\":{\"total_size\":48},\"weight_map\":{"
              "\"x.c\":\"model-00002-of-00002.safetensors\","
              "\"x.a\":\"model-00001-of-00002.safetensors\","
              "\"x.b\":\"model-00001-of-00002.safetensors\"}}");
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_safetensors_n_tensors (st), ==, 3);
  g_assert_cmpstr (avq_safetensors_nth (st, 2)->name, ==, "x.c");
  g_assert_true (g_str_has_suffix (avq_safetensors_path (st), "model.safetensors.index.json"));
  const AvqTensor *c = avq_safetensors_find (st, "x.c");
  g_assert_true (g_str_has_suffix (c->file, "model-00002-of-00002.safetensors"));
  g_assert_true (g_str_has_suffix (avq_safetensors_find (st, "x.a")->file,
                                   "model-00001-of-00002.safetensors"));
  float v[4];
  avq_tensor_read_f32 (c, 0, 4, v);
  g_assert_cmpfloat (v[0], ==, 20);
  g_assert_cmpfloat (v[2], ==, -20);
  avq_tensor_read_f32 (avq_safetensors_find (st, "x.b"), 1, 1, v);
  g_assert_cmpfloat (v[0], ==, 11.5f);
  g_assert_cmpstr (avq_safetensors_metadata (st, "format"), ==, "pt");

  /* the index itself can be named */
  g_autofree char *index = g_build_filename (dir, "model.safetensors.index.json", NULL);
  g_autoptr (AvqSafetensors) st2 = avq_safetensors_open (index, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_safetensors_n_tensors (st2), ==, 3);
  avq_safetensors_free (g_steal_pointer (&st));
  avq_safetensors_free (g_steal_pointer (&st2));

  /* a bad index next to good shards */
  static const struct {
    const char *what, *json;
    int code;
    const char *mention;
  } bad[] = {
    { "missing shard", "{\"weight_map\":{\"x.a\":\"model-00003-of-00003.safetensors\"}}",
      AVQ_ERROR_IO, "model-00003-of-00003.safetensors" },
    { "missing tensor", "{\"weight_map\":{\"x.a\":\"model-00001-of-00002.safetensors\","
      "\"x.zz\":\"model-00001-of-00002.safetensors\"}}", AVQ_ERROR_MISSING, "x.zz" },
    { "wrong shard", "{\"weight_map\":{\"x.a\":\"model-00001-of-00002.safetensors\","
      "\"x.c\":\"model-00001-of-00002.safetensors\","
      "\"x.b\":\"model-00002-of-00002.safetensors\"}}", AVQ_ERROR_MISSING,
      "another shard" },
    { "path escape", "{\"weight_map\":{\"x.a\":\"../model-00001-of-00002.safetensors\"}}",
      AVQ_ERROR_FORMAT, "x.a" },
    { "absolute path", "{\"weight_map\":{\"x.a\":\"/etc/passwd\"}}",
      AVQ_ERROR_FORMAT, "x.a" },
    { "non-string shard", "{\"weight_map\":{\"x.a\":1}}", AVQ_ERROR_FORMAT, "x.a" },
    { "no weight_map", "{\"metadata\":{}}", AVQ_ERROR_FORMAT, "weight_map" },
    { "weight_map not object", "{\"weight_map\":[]}", AVQ_ERROR_FORMAT, "weight_map" },
    { "empty weight_map", "{\"weight_map\":{}}", AVQ_ERROR_FORMAT, "weight_map" },
    { "bad JSON", "{\"weight_map\":", AVQ_ERROR_FORMAT, "index" },
    { "duplicate entry", "{\"weight_map\":{\"x.a\":\"model-00001-of-00002.safetensors\","
      "\"x.a\":\"model-00002-of-00002.safetensors\"}}", AVQ_ERROR_FORMAT,
      "duplicate key \"x.a\"" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    write_text (dir, "model.safetensors.index.json", bad[i].json);
    AvqSafetensors *s = avq_safetensors_open (dir, &error);
    if (s != NULL)
      g_error ("index case '%s' was accepted", bad[i].what);
    g_assert_nonnull (error);
    g_test_message ("%s: %s", bad[i].what, error->message);
    g_assert_error (error, AVQ_ERROR, bad[i].code);
    if (strstr (error->message, bad[i].mention) == NULL)
      g_error ("index case '%s': '%s' does not mention '%s'", bad[i].what,
               error->message, bad[i].mention);
    g_clear_error (&error);
  }

  /* the same tensor stored in two shards */
  write_shard (dir, "model-00002-of-00002.safetensors", shard1, 1, 30);
  write_text (dir, "model.safetensors.index.json",
              "{\"weight_map\":{\"x.a\":\"model-00001-of-00002.safetensors\","
              "\"x.b\":\"model-00001-of-00002.safetensors\"," 
              "\"x.q\":\"model-00002-of-00002.safetensors\"}}");
  g_assert_null (avq_safetensors_open (dir, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, "x.a"));
  g_assert_nonnull (strstr (error->message, "twice"));
  g_clear_error (&error);

  /* a corrupt shard is reported with its own file name */
  write_text (dir, "model-00002-of-00002.safetensors", "garbage!");
  write_text (dir, "model.safetensors.index.json",
              "{\"weight_map\":{\"x.a\":\"model-00002-of-00002.safetensors\"}}");
  g_assert_null (avq_safetensors_open (dir, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, "model-00002-of-00002.safetensors"));
  g_clear_error (&error);
  rm_rf (dir);
}

/* ---- model directories with both naming schemes --------------------------- */

static void
test_model_alias_names (void)
{
  static const char *const pairs[][2] = {
    { "vision_tower.vision_model.encoder.layers.3.mlp.fc1.weight",
      "model.vision_tower.encoder.layers.3.mlp.fc1.weight" },
    { "vision_tower.vision_model.pre_layrnorm.bias", "model.vision_tower.pre_layrnorm.bias" },
    { "multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_1.weight" },
    { "language_model.model.layers.0.self_attn.q_proj.weight",
      "model.language_model.layers.0.self_attn.q_proj.weight" },
    { "language_model.model.norm.weight", "model.language_model.norm.weight" },
    { "language_model.lm_head.weight", "lm_head.weight" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (pairs); i++) {
    g_autofree char *a = avq_model_alias_name (pairs[i][0]);
    g_assert_cmpstr (a, ==, pairs[i][1]);
  }
  g_assert_null (avq_model_alias_name ("avq.codebook"));
  g_assert_null (avq_model_alias_name ("language_model.lm_head.weight.x"));
  g_assert_null (avq_model_alias_name ("vision_model.x"));
}

static void
copy_file (const char *from, const char *to)
{
  g_autofree char *text = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (from, &text, &len, NULL));
  g_assert_true (g_file_set_contents (to, text, (gssize) len, NULL));
}

/* The tiny model re-saved with transformers-5 names in two shards must
 * answer every classic-name lookup with the same tensor data. */
static void
test_model_v5_sharded (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *tiny = avq_test_data_path ("tiny-llava");
  g_autoptr (AvqModel) classic = avq_model_open (tiny, &error);
  g_assert_no_error (error);
  g_assert_cmpint (classic->config.vision.num_layers, ==, 4);
  /* preprocessor_config.json, or the CLIP defaults, both at 336 */
  g_assert_cmpint (classic->preprocess.crop_width, ==, 336);
  g_assert_cmpint (classic->preprocess.shortest_edge, ==, 336);

  g_autofree char *dir = make_tmpdir ();
  g_autofree char *cfg_from = g_build_filename (tiny, "config.json", NULL);
  g_autofree char *cfg_to = g_build_filename (dir, "config.json", NULL);
  copy_file (cfg_from, cfg_to);
  g_autofree char *pp_from = avq_test_data_path ("llava-1.5-7b-hf/preprocessor_config.json");
  g_autofree char *pp_to = g_build_filename (dir, "preprocessor_config.json", NULL);
  copy_file (pp_from, pp_to);

  g_autoptr (AvqSafetensorsWriter) w1 = avq_safetensors_writer_new ();
  g_autoptr (AvqSafetensorsWriter) w2 = avq_safetensors_writer_new ();
  GString *index = g_string_new ("{\"metadata\":{},\"weight_map\":{");
  guint n = avq_safetensors_n_tensors (classic->weights);
  for (guint i = 0; i < n; i++) {
    const AvqTensor *t = avq_safetensors_nth (classic->weights, i);
    g_autofree char *v5 = avq_model_alias_name (t->name);
    g_assert_nonnull (v5);
    gboolean first = g_str_has_prefix (v5, "model.vision_tower.");
    avq_safetensors_writer_add (first ? w1 : w2, v5, t->dtype, t->ndim, t->shape, t->data);
    g_string_append_printf (index, "%s\"%s\":\"model-0000%d-of-00002.safetensors\"",
                            i ? "," : "", v5, first ? 1 : 2);
  }
  g_string_append (index, "}}");
  g_autofree char *p1 = g_build_filename (dir, "model-00001-of-00002.safetensors", NULL);
  g_autofree char *p2 = g_build_filename (dir, "model-00002-of-00002.safetensors", NULL);
  g_assert_true (avq_safetensors_writer_save (w1, p1, &error));
  g_assert_true (avq_safetensors_writer_save (w2, p2, &error));
  g_assert_no_error (error);
  write_text (dir, "model.safetensors.index.json", index->str);
  g_string_free (index, TRUE);

  g_autoptr (AvqModel) v5 = avq_model_open (dir, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_safetensors_n_tensors (v5->weights), ==, n);
  g_assert_cmpint (v5->preprocess.shortest_edge, ==, 336);
  g_assert_cmpfloat_with_epsilon (v5->preprocess.image_std[2], 0.27577711f, 1e-7);
  for (guint i = 0; i < n; i++) {
    const AvqTensor *t = avq_safetensors_nth (classic->weights, i);
    const AvqTensor *u = avq_model_find (v5, t->name);
    if (u == NULL)
      g_error ("%s not found under its v5 name", t->name);
    g_assert_cmpmem (u->data, u->nbytes, t->data, t->nbytes);
    g_assert_true (avq_model_find (classic, t->name) == t);
    /* the v5 name works on both */
    g_autofree char *alias = avq_model_alias_name (t->name);
    g_assert_true (avq_model_find (classic, alias) == t);
    g_assert_true (avq_model_find (v5, alias) == u);
  }

  const AvqTensor *t = avq_model_require (v5, 2, (gint64[]) { 32064, 64 }, &error,
                                          "language_model.lm_head.weight");
  g_assert_no_error (error);
  g_assert_nonnull (t);
  g_assert_cmpstr (t->name, ==, "lm_head.weight");
  t = avq_model_require (v5, 2, (gint64[]) { -1, 64 }, &error,
                         "language_model.model.layers.%d.self_attn.q_proj.weight", 1);
  g_assert_no_error (error);
  g_assert_cmpstr (t->name, ==, "model.language_model.layers.1.self_attn.q_proj.weight");
  g_assert_true (g_str_has_suffix (t->file, "model-00002-of-00002.safetensors"));

  g_assert_null (avq_model_require (v5, 2, (gint64[]) { 64, 65 }, &error,
                                    "vision_tower.vision_model.encoder.layers.%d.mlp.fc2.weight", 0));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_SHAPE);
  g_assert_nonnull (strstr (error->message, "model.vision_tower.encoder.layers.0.mlp.fc2.weight"));
  g_assert_nonnull (strstr (error->message, "model-00001-of-00002.safetensors"));
  g_clear_error (&error);
  g_assert_null (avq_model_require (v5, 1, (gint64[]) { 64 }, &error,
                                    "language_model.model.layers.%d.input_layernorm.weight", 2));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISSING);
  g_assert_nonnull (strstr (error->message, "language_model.model.layers.2.input_layernorm.weight"));
  g_clear_error (&error);

  avq_model_free (g_steal_pointer (&v5));
  /* missing config.json */
  g_unlink (cfg_to);
  g_assert_null (avq_model_open (dir, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISSING);
  g_assert_nonnull (strstr (error->message, "config.json"));
  g_clear_error (&error);
  rm_rf (dir);

  g_assert_null (avq_model_open ("/nonexistent/avq-model", &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_IO);
}

/* The real llava-1.5-7b-hf index (no weights in the fixture): it must parse,
 * and the first missing shard is reported by name. */
static void
test_real_index (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("llava-1.5-7b-hf");
  g_assert_null (avq_safetensors_open (dir, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "model-00001-of-00003.safetensors"));
  g_clear_error (&error);
  g_assert_null (avq_model_open (dir, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "model-00001-of-00003.safetensors"));
}

/* With tied embeddings there is no lm_head; the embedding matrix serves. */
static void
test_model_tied (void)
{
  g_autofree char *dir = make_tmpdir ();
  g_autofree char *weights = g_build_filename (dir, "model.safetensors", NULL);
  float emb[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  avq_safetensors_writer_add (w, "model.language_model.embed_tokens.weight", AVQ_DTYPE_F32,
                              2, (gint64[]) { 4, 2 }, emb);
  g_autoptr (GError) error = NULL;
  g_assert_true (avq_safetensors_writer_save (w, weights, &error));
  for (int tied = 0; tied < 2; tied++) {
    write_text (dir, "config.json", tied
                ? "{\"text_config\":{\"vocab_size\":4,\"hidden_size\":2,\"num_attention_heads\":1,"
                  "\"intermediate_size\":4,\"tie_word_embeddings\":true},"
                  "\"vision_config\":{\"image_size\":224}}"
                : "{\"text_config\":{\"vocab_size\":4,\"hidden_size\":2,\"num_attention_heads\":1,"
                  "\"intermediate_size\":4},\"vision_config\":{\"image_size\":224}}");
    g_autoptr (AvqModel) m = avq_model_open (dir, &error);
    g_assert_no_error (error);
    /* no preprocessor_config.json: CLIP defaults at the vision image size */
    g_assert_cmpint (m->preprocess.shortest_edge, ==, 224);
    g_assert_cmpint (m->preprocess.crop_height, ==, 224);
    g_assert_cmpint (m->preprocess.crop_width, ==, 224);
    g_assert_true (m->preprocess.do_center_crop);
    const AvqTensor *e = avq_model_find (m, "language_model.model.embed_tokens.weight");
    g_assert_nonnull (e);
    const AvqTensor *head = avq_model_find (m, "language_model.lm_head.weight");
    if (tied)
      g_assert_true (head == e);
    else
      g_assert_null (head);
  }
  rm_rf (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/safetensors/fixture/avq", test_fixture_avq);
  g_test_add_func ("/safetensors/fixture/model", test_fixture_model);
  g_test_add_func ("/safetensors/fixture/reference", test_fixture_reference);
  g_test_add_func ("/safetensors/half/all", test_half_all);
  g_test_add_func ("/safetensors/half/rounding", test_half_rounding);
  g_test_add_func ("/safetensors/bf16/all", test_bf16_all);
  g_test_add_func ("/safetensors/tensor/conversion", test_tensor_conversion);
  g_test_add_func ("/safetensors/writer/roundtrip", test_writer_roundtrip);
  g_test_add_func ("/safetensors/malformed/headers", test_malformed);
  g_test_add_func ("/safetensors/malformed/length", test_malformed_length);
  g_test_add_func ("/safetensors/malformed/files", test_malformed_files);
  g_test_add_func ("/safetensors/sharded", test_sharded);
  g_test_add_func ("/safetensors/model/alias-names", test_model_alias_names);
  g_test_add_func ("/safetensors/model/v5-sharded", test_model_v5_sharded);
  g_test_add_func ("/safetensors/model/tied", test_model_tied);
  g_test_add_func ("/safetensors/model/real-index", test_real_index);
  return g_test_run ();
}
