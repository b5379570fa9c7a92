/* The AVQ file, the edge quantiser and the cloud reconstruction against the
 * tiny fixture, each half from the fixture's own inputs; plus hostile AVQ
 * files and frames that do not belong to the file. */
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include "avq-engine.h"
#include "avq-error.h"
#include "avq-quantizer.h"
#include "avq-vision.h"
#include "test-util.h"

#define TOL 1e-4
#define B 3
#define T 577
#define D 64
#define S 336
#define CLEAR_MARGIN 1e-3

typedef struct {
  const char *name;      /* fixture case */
  int layer;
  AvqResidualMode residual;
  guint side_bits;
  const char *id_hex;    /* sha256sum of the codebook bytes, first 16 digits */
} Case;

static const Case cases[] = {
  { "L0-derive", 0, AVQ_RESIDUAL_DERIVE, 0, "3d12a9d6165dc9cd" },
  { "L1-side8", 1, AVQ_RESIDUAL_SIDE, 8, "ee3ee8e9df724c82" },
};

static AvqModel *
open_tiny (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  AvqModel *m = avq_model_open (dir, &error);
  g_assert_no_error (error);
  return m;
}

static char *
avq_path (const Case *c)
{
  g_autofree char *rel = g_strdup_printf ("tiny-llava/avq-%s.safetensors", c->name);
  return avq_test_data_path (rel);
}

static gint32 *
reference_i32 (const char *name, gsize *n)
{
  const AvqTensor *t = avq_safetensors_find (avq_test_reference (), name);
  if (t == NULL || t->dtype != AVQ_DTYPE_I32)
    g_error ("reference tensor %s missing or not I32", name);
  *n = avq_tensor_numel (t);
  gint32 *v = g_new (gint32, *n);
  memcpy (v, t->data, *n * sizeof (gint32));
  return v;
}

static float *
reference_case (const Case *c, const char *what)
{
  g_autofree char *name = g_strdup_printf ("avq.%s.%s", c->name, what);
  return avq_test_reference_f32 (name, NULL);
}

static AvqQuantizer *
load_case (const AvqModel *model, const Case *c)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = avq_path (c);
  AvqQuantizer *q = avq_quantizer_load (path, model, &error);
  g_assert_no_error (error);
  return q;
}

static void
test_file (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (AvqModel) model = open_tiny ();
  g_autoptr (AvqQuantizer) q = load_case (model, c);
  g_assert_cmpint (q->layer, ==, c->layer);
  g_assert_cmpint (q->residual, ==, c->residual);
  g_assert_cmpuint (q->side_bits, ==, c->side_bits);
  g_assert_cmpuint (q->index_bits, ==, 12);
  g_assert_cmpint (q->codebook_size, ==, 4096);
  g_assert_cmpint (q->tokens, ==, T);

  /* The id, recomputed from the raw tensor bytes, and as sha256sum shows it. */
  g_autoptr (GError) error = NULL;
  g_autofree char *path = avq_path (c);
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (path, &error);
  g_assert_no_error (error);
  const AvqTensor *cb = avq_safetensors_find (st, "avq.codebook");
  g_assert_nonnull (cb);
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_checksum_update (sum, cb->data, cb->nbytes);
  guint8 digest[32];
  gsize len = sizeof digest;
  g_checksum_get_digest (sum, digest, &len);
  g_checksum_free (sum);
  g_assert_cmpmem (q->codebook_id, 8, digest, 8);
  char hex[17];
  avq_codebook_id_to_hex (q->codebook_id, hex);
  g_assert_cmpstr (hex, ==, c->id_hex);
}

/* Edge from the fixture's own x_L. */
static void
test_encode (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (AvqModel) model = open_tiny ();
  g_autoptr (AvqQuantizer) q = load_case (model, c);
  g_autoptr (AvqQuantizerScratch) s = avq_quantizer_scratch_new (q);
  g_autofree char *hname = g_strdup_printf ("vision.hidden.%d", c->layer);
  g_autofree float *x = avq_test_reference_f32 (hname, NULL);
  g_autofree float *margin = reference_case (c, "margin");
  g_autofree char *iname = g_strdup_printf ("avq.%s.indices", c->name);
  gsize n;
  g_autofree gint32 *want = reference_i32 (iname, &n);
  g_assert_cmpuint (n, ==, B * T);
  float margins[T];

  for (int b = 0; b < B; b++) {
    g_autoptr (AvqFrame) f = avq_quantizer_encode (q, x + (gsize) b * T * D, s,
                                                   margins);
    g_assert_cmpuint (f->tokens, ==, T);
    g_assert_cmpuint (f->index_bits, ==, 12);
    g_assert_cmpuint (f->side_bits, ==, c->side_bits);
    g_assert_cmpuint (f->flags & AVQ_FRAME_FLAG_KEYFRAME, !=, 0);
    g_assert_cmpuint (!!(f->flags & AVQ_FRAME_FLAG_SIDE_INFO), ==, c->side_bits > 0);
    g_assert_cmpmem (f->codebook_id, 8, q->codebook_id, 8);
    int clear = 0, flips = 0;
    for (int t = 0; t < T; t++) {
      int w = want[b * T + t];
      if (margin[b * T + t] > CLEAR_MARGIN) {
        clear++;
        if (f->indices[t] != w)
          g_error ("%s image %d token %d: index %u, reference %d (margin %g)",
                   c->name, b, t, f->indices[t], w, margin[b * T + t]);
      } else if (f->indices[t] != w) {
        flips++;
      }
    }
    g_test_message ("%s image %d: %d of %d indices have a clear margin; %d "
                    "near-ties differ", c->name, b, clear, T, flips);
    g_assert_cmpint (clear, >, T * 9 / 10);
    avq_test_assert_close ("margins", margins, margin + (gsize) b * T, T, 1e-3);

    if (c->side_bits > 0) {
      g_autofree gint32 *side_q = reference_i32 ("avq.L1-side8.side_q", &n);
      g_autofree float *range = reference_case (c, "side_range");
      for (int i = 0; i < 2 * T; i++)
        if (f->side_codes[i] != side_q[b * 2 * T + i])
          g_error ("image %d side code %d: %u, reference %d", b, i,
                   f->side_codes[i], side_q[b * 2 * T + i]);
      for (int i = 0; i < 4; i++)
        g_assert_cmpfloat_with_epsilon (f->side_range[i], range[b * 4 + i],
                                        1e-5 * MAX (1.0, fabs (range[b * 4 + i])));
    }
  }
}

/* Side codes round half to even (rint), as the reference does: token means
 * placed exactly on half steps of the grid (lo = 0, hi = 255, step 1). */
static void
test_side_rounding (void)
{
  g_autoptr (AvqModel) model = open_tiny ();
  g_autoptr (AvqQuantizer) q = load_case (model, &cases[1]);
  g_autoptr (AvqQuantizerScratch) s = avq_quantizer_scratch_new (q);
  g_autofree float *x = g_new (float, T * D);
  const float means[6] = { 0.0f, 255.0f, 2.5f, 3.5f, 0.5f, 254.5f };
  const guint16 codes[6] = { 0, 255, 2, 4, 0, 254 };
  for (int t = 0; t < T; t++) {
    float m = t < 6 ? means[t] : 1.0f;
    for (int c = 0; c < D; c++)
      x[t * D + c] = m + ((c & 1) ? 0.25f : -0.25f);
  }
  g_autoptr (AvqFrame) f = avq_quantizer_encode (q, x, s, NULL);
  g_assert_cmpfloat (f->side_range[0], ==, 0.0f);
  g_assert_cmpfloat (f->side_range[1], ==, 255.0f);
  for (int t = 0; t < 6; t++)
    g_assert_cmpuint (f->side_codes[2 * t], ==, codes[t]);
  /* Every token has the same scale: hi == lo, step 1, code 0. */
  g_assert_cmpfloat (f->side_range[2], ==, f->side_range[3]);
  g_assert_cmpuint (f->side_codes[1], ==, 0);
}

/* A frame carrying the fixture's indices (and side codes) for image b. */
static AvqFrame *
reference_frame (const AvqQuantizer *q, const Case *c, int b)
{
  gsize n;
  g_autofree char *iname = g_strdup_printf ("avq.%s.indices", c->name);
  g_autofree gint32 *idx = reference_i32 (iname, &n);
  AvqFrame *f = avq_frame_new (T, q->index_bits, q->side_bits, q->codebook_id);
  for (int t = 0; t < T; t++)
    f->indices[t] = (guint16) idx[b * T + t];
  if (c->side_bits > 0) {
    g_autofree gint32 *side_q = reference_i32 ("avq.L1-side8.side_q", &n);
    g_autofree float *range = reference_case (c, "side_range");
    for (int i = 0; i < 2 * T; i++)
      f->side_codes[i] = (guint16) side_q[b * 2 * T + i];
    memcpy (f->side_range, range + b * 4, sizeof f->side_range);
  }
  return f;
}

/* Cloud from the fixture's indices: zhat, residual, and on through the
 * tower and the projector. */
static void
test_decode (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqModel) model = open_tiny ();
  g_autoptr (AvqQuantizer) q = load_case (model, c);
  g_autoptr (AvqQuantizerScratch) s = avq_quantizer_scratch_new (q);
  g_autoptr (AvqVisionTower) tw = avq_vision_tower_new (model, -1, &error);
  g_assert_no_error (error);
  g_autoptr (AvqVisionScratch) vs = avq_vision_scratch_new (tw);
  g_autoptr (AvqProjector) proj = avq_projector_new (model, &error);
  g_assert_no_error (error);

  g_autofree float *want_zhat = reference_case (c, "zhat");
  g_autofree float *want_res = reference_case (c, "residual");
  g_autofree float *want_sel = reference_case (c, "selected");
  g_autofree float *want_proj = reference_case (c, "projector");
  g_autofree float *zhat = g_new (float, T * D);
  g_autofree float *x = g_new (float, T * D);
  g_autofree float *sel = g_new (float, (T - 1) * D);
  g_autofree float *out = g_new (float, (T - 1) * D);
  g_autofree float *tmp = g_new (float, (T - 1) * D);

  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  g_autofree char *path = avq_path (c);
  AvqEngineOptions opt = { .model_dir = dir, .avq_path = path };
  g_autoptr (AvqEngine) e = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  g_assert_cmpint (avq_engine_split_layer (e), ==, c->layer);
  g_assert_cmpint (avq_engine_residual (e), ==, c->residual);

  for (int b = 0; b < B; b++) {
    char what[80];
    g_autoptr (AvqFrame) f = reference_frame (q, c, b);
    g_assert_true (avq_quantizer_decode (q, f, zhat, x, s, &error));
    g_assert_no_error (error);
    g_snprintf (what, sizeof what, "%s image %d zhat", c->name, b);
    avq_test_assert_close (what, zhat, want_zhat + (gsize) b * T * D, T * D, TOL);
    g_snprintf (what, sizeof what, "%s image %d residual", c->name, b);
    avq_test_assert_close (what, x, want_res + (gsize) b * T * D, T * D, TOL);

    avq_vision_layer_from_ln1 (tw, c->layer, x, zhat, vs);
    avq_vision_run_layers (tw, c->layer + 1, tw->layers_run, x, vs);
    avq_vision_select (tw, x, sel);
    g_snprintf (what, sizeof what, "%s image %d selected", c->name, b);
    avq_test_assert_close (what, sel, want_sel + (gsize) b * (T - 1) * D,
                           (T - 1) * D, TOL);
    avq_projector_run (proj, sel, T - 1, out, tmp);
    g_snprintf (what, sizeof what, "%s image %d projector", c->name, b);
    avq_test_assert_close (what, out, want_proj + (gsize) b * (T - 1) * D,
                           (T - 1) * D, TOL);

    /* The engine, from the frame as it arrives off the wire. */
    gsize len;
    g_autofree guint8 *wire = avq_frame_serialize (f, &len);
    g_assert_cmpuint (len, ==, c->side_bits ? 16 + 866 + 16 + 1154 : 882);
    g_autoptr (AvqFrame) parsed = avq_frame_parse (wire, len, &error);
    g_assert_no_error (error);
    memset (out, 0, sizeof (float) * (T - 1) * D);
    g_assert_true (avq_engine_decode_frame (e, parsed, out, &error));
    g_assert_no_error (error);
    g_snprintf (what, sizeof what, "%s image %d engine decode", c->name, b);
    avq_test_assert_close (what, out, want_proj + (gsize) b * (T - 1) * D,
                           (T - 1) * D, TOL);
  }
}

/* The engine's edge half from pixel_values: the whole front of the tower and
 * the quantiser together. */
static void
test_engine_encode (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  g_autofree char *path = avq_path (c);
  AvqEngineOptions opt = { .model_dir = dir, .avq_path = path, .threads = 2 };
  g_autoptr (AvqEngine) e = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  g_autofree float *margin = reference_case (c, "margin");
  gsize n;
  g_autofree char *iname = g_strdup_printf ("avq.%s.indices", c->name);
  g_autofree gint32 *want = reference_i32 (iname, &n);
  for (int b = 0; b < B; b++) {
    g_autoptr (AvqFrame) f = avq_engine_encode_pixels (e, px + (gsize) b * 3 * S * S,
                                                       &error);
    g_assert_no_error (error);
    g_assert_cmpmem (f->codebook_id, 8, avq_engine_codebook_id (e), 8);
    for (int t = 0; t < T; t++)
      if (margin[b * T + t] > CLEAR_MARGIN && f->indices[t] != want[b * T + t])
        g_error ("%s engine image %d token %d: index %u, reference %d",
                 c->name, b, t, f->indices[t], want[b * T + t]);
    if (c->side_bits > 0) {
      g_autofree gint32 *side_q = reference_i32 ("avq.L1-side8.side_q", &n);
      int diff = 0;
      for (int i = 0; i < 2 * T; i++)
        diff += abs ((int) f->side_codes[i] - side_q[b * 2 * T + i]);
      /* From pixels, x_1 carries the tower's 1e-7 rounding: a code may
       * land one step over at a rounding boundary, rarely. */
      g_assert_cmpint (diff, <=, 4);
    }
  }
}

/* ---- hostile AVQ files ---- */

typedef struct {
  const char *drop;           /* tensor left out */
  const char *replace;        /* tensor replaced by (dtype, ndim, shape, data) */
  AvqDType dtype;
  int ndim;
  gint64 shape[2];
  const void *data;
  const char *meta_key;       /* metadata override (value NULL: key removed) */
  const char *meta_value;
  const char *meta_key2;
  const char *meta_value2;
  int code;                   /* expected AvqErrorCode */
  const char *needle;         /* expected in the message */
} Variant;

static const char *meta_keys[] = {
  "avq.format", "avq.layer", "avq.site", "avq.residual", "avq.side_bits",
  "avq.index_bits", "avq.codebook_size",
};

static char *
write_variant (const char *base, const Variant *v, const char *dir, int i)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (base, &error);
  g_assert_no_error (error);
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  for (guint k = 0; k < avq_safetensors_n_tensors (st); k++) {
    const AvqTensor *t = avq_safetensors_nth (st, k);
    if (v->drop && strcmp (t->name, v->drop) == 0)
      continue;
    if (v->replace && strcmp (t->name, v->replace) == 0)
      avq_safetensors_writer_add (w, t->name, v->dtype, v->ndim, v->shape, v->data);
    else
      avq_safetensors_writer_add (w, t->name, t->dtype, t->ndim, t->shape, t->data);
  }
  for (guint k = 0; k < G_N_ELEMENTS (meta_keys); k++) {
    const char *value = avq_safetensors_metadata (st, meta_keys[k]);
    if (v->meta_key && strcmp (v->meta_key, meta_keys[k]) == 0)
      value = v->meta_value;
    if (v->meta_key2 && strcmp (v->meta_key2, meta_keys[k]) == 0)
      value = v->meta_value2;
    if (value)
      avq_safetensors_writer_set_metadata (w, meta_keys[k], value);
  }
  char *path = g_strdup_printf ("%s/variant-%d.safetensors", dir, i);
  g_assert_true (avq_safetensors_writer_save (w, path, &error));
  g_assert_no_error (error);
  return path;
}

static void
test_malformed_files (void)
{
  g_autoptr (AvqModel) model = open_tiny ();
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("avq-quantizer-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *l0 = avq_path (&cases[0]);
  g_autofree char *l1 = avq_path (&cases[1]);

  static float big[4096 * 65];
  static gint32 ints[4096 * 64];
  static float nan_codebook[4096 * 64];
  memcpy (nan_codebook, big, sizeof nan_codebook);
  nan_codebook[1234] = NAN;

  const Variant l0_variants[] = {
    /* shapes */
    { .replace = "avq.codebook", .dtype = AVQ_DTYPE_F32, .ndim = 2,
      .shape = { 2048, 64 }, .data = big, .code = AVQ_ERROR_SHAPE,
      .needle = "avq.codebook" },
    { .replace = "avq.codebook", .dtype = AVQ_DTYPE_F32, .ndim = 2,
      .shape = { 4096, 65 }, .data = big, .code = AVQ_ERROR_MISMATCH,
      .needle = "hidden size" },
    { .replace = "avq.codebook", .dtype = AVQ_DTYPE_I32, .ndim = 2,
      .shape = { 4096, 64 }, .data = ints, .code = AVQ_ERROR_SHAPE,
      .needle = "avq.codebook" },
    { .replace = "avq.codebook", .dtype = AVQ_DTYPE_F32, .ndim = 2,
      .shape = { 4096, 64 }, .data = nan_codebook, .code = AVQ_ERROR_FORMAT,
      .needle = "non-finite" },
    { .replace = "avq.dlp_in.weight", .dtype = AVQ_DTYPE_F32, .ndim = 2,
      .shape = { 64, 32 }, .data = big, .code = AVQ_ERROR_SHAPE,
      .needle = "avq.dlp_in.weight" },
    { .replace = "avq.dlp_out.gamma", .dtype = AVQ_DTYPE_F32, .ndim = 1,
      .shape = { 2 }, .data = big, .code = AVQ_ERROR_SHAPE,
      .needle = "avq.dlp_out.gamma" },
    { .replace = "avq.dlp_in.bias", .dtype = AVQ_DTYPE_F32, .ndim = 2,
      .shape = { 1, 64 }, .data = big, .code = AVQ_ERROR_SHAPE,
      .needle = "avq.dlp_in.bias" },
    { .drop = "avq.dlp_out.bias", .code = AVQ_ERROR_MISSING,
      .needle = "avq.dlp_out.bias" },
    { .drop = "avq.codebook", .code = AVQ_ERROR_MISSING, .needle = "avq.codebook" },
    /* K against index_bits */
    { .meta_key = "avq.codebook_size", .meta_value = "4000",
      .code = AVQ_ERROR_FORMAT, .needle = "codebook_size" },
    { .meta_key = "avq.index_bits", .meta_value = "11",
      .code = AVQ_ERROR_FORMAT, .needle = "codebook_size" },
    { .meta_key = "avq.index_bits", .meta_value = "11",
      .meta_key2 = "avq.codebook_size", .meta_value2 = "2048",
      .code = AVQ_ERROR_SHAPE, .needle = "avq.codebook" },
    { .meta_key = "avq.index_bits", .meta_value = "17",
      .meta_key2 = "avq.codebook_size", .meta_value2 = "131072",
      .code = AVQ_ERROR_FORMAT, .needle = "avq.index_bits" },
    /* metadata */
    { .meta_key = "avq.format", .meta_value = "2", .code = AVQ_ERROR_UNSUPPORTED,
      .needle = "avq.format" },
    { .meta_key = "avq.format", .meta_value = NULL, .code = AVQ_ERROR_MISSING,
      .needle = "avq.format" },
    { .meta_key = "avq.site", .meta_value = "ln2", .code = AVQ_ERROR_UNSUPPORTED,
      .needle = "avq.site" },
    { .meta_key = "avq.residual", .meta_value = "magic", .code = AVQ_ERROR_FORMAT,
      .needle = "avq.residual" },
    { .meta_key = "avq.layer", .meta_value = NULL, .code = AVQ_ERROR_MISSING,
      .needle = "avq.layer" },
    { .meta_key = "avq.layer", .meta_value = "zero", .code = AVQ_ERROR_FORMAT,
      .needle = "avq.layer" },
    { .meta_key = "avq.layer", .meta_value = " 0", .code = AVQ_ERROR_FORMAT,
      .needle = "avq.layer" },
    { .meta_key = "avq.side_bits", .meta_value = "8", .code = AVQ_ERROR_FORMAT,
      .needle = "derive" },
    { .meta_key = "avq.side_bits", .meta_value = "-1", .code = AVQ_ERROR_FORMAT,
      .needle = "avq.side_bits" },
    /* derive at L = 1 */
    { .meta_key = "avq.layer", .meta_value = "1", .code = AVQ_ERROR_FORMAT,
      .needle = "derive" },
  };
  const Variant l1_variants[] = {
    /* layers run: 0..2 for a 4-layer tower with feature layer -2 */
    { .meta_key = "avq.layer", .meta_value = "3", .code = AVQ_ERROR_MISMATCH,
      .needle = "avq.layer" },
    { .meta_key = "avq.layer", .meta_value = "99999999999", .code = AVQ_ERROR_FORMAT,
      .needle = "avq.layer" },
    { .meta_key = "avq.layer", .meta_value = "-1", .code = AVQ_ERROR_FORMAT,
      .needle = "avq.layer" },
    { .meta_key = "avq.side_bits", .meta_value = "0", .code = AVQ_ERROR_FORMAT,
      .needle = "side_bits" },
    { .meta_key = "avq.side_bits", .meta_value = "17", .code = AVQ_ERROR_FORMAT,
      .needle = "side_bits" },
  };

  struct { const char *base; const Variant *v; guint n; } sets[] = {
    { l0, l0_variants, G_N_ELEMENTS (l0_variants) },
    { l1, l1_variants, G_N_ELEMENTS (l1_variants) },
  };
  int i = 0;
  for (guint s = 0; s < G_N_ELEMENTS (sets); s++)
    for (guint k = 0; k < sets[s].n; k++, i++) {
      const Variant *v = &sets[s].v[k];
      g_autofree char *path = write_variant (sets[s].base, v, dir, i);
      g_autoptr (GError) err = NULL;
      g_autoptr (AvqQuantizer) q = avq_quantizer_load (path, model, &err);
      if (q != NULL)
        g_error ("variant %d (%s%s%s) was accepted", i,
                 v->meta_key ? v->meta_key : "", v->replace ? v->replace : "",
                 v->drop ? v->drop : "");
      g_test_message ("variant %d: %s", i, err->message);
      g_assert_error (err, AVQ_ERROR, v->code);
      g_assert_nonnull (strstr (err->message, v->needle));
      /* Errors about the file must say which file. */
      g_assert_nonnull (strstr (err->message, "variant-"));
      g_unlink (path);

      /* The engine must refuse it the same way. */
      if (k == 0) {
        g_autofree char *p2 = write_variant (sets[s].base, v, dir, i);
        g_autofree char *mdir = avq_test_data_path ("tiny-llava");
        AvqEngineOptions opt = { .model_dir = mdir, .avq_path = p2 };
        g_autoptr (GError) e2 = NULL;
        g_autoptr (AvqEngine) e = avq_engine_new (&opt, &e2);
        g_assert_null (e);
        g_assert_error (e2, AVQ_ERROR, v->code);
        g_unlink (p2);
      }
    }
  g_rmdir (dir);
}

/* Model with a zero LN1 gain: the side residual divides by it. */
static void
test_uninvertible_model (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *src = avq_test_data_path ("tiny-llava");
  g_autofree char *st_path = g_build_filename (src, "model.safetensors", NULL);
  g_autoptr (AvqSafetensors) st = avq_safetensors_open (st_path, &error);
  g_assert_no_error (error);
  g_autofree char *dir = g_dir_make_tmp ("avq-quantizer-XXXXXX", &error);
  g_assert_no_error (error);
  const char *ln1 = "vision_tower.vision_model.encoder.layers.1.layer_norm1.weight";
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  float gains[64];
  for (int c = 0; c < 64; c++)
    gains[c] = c == 17 ? 0.0f : 1.0f;
  for (guint i = 0; i < avq_safetensors_n_tensors (st); i++) {
    const AvqTensor *t = avq_safetensors_nth (st, i);
    if (strcmp (t->name, ln1) == 0)
      avq_safetensors_writer_add (w, t->name, AVQ_DTYPE_F32, 1, t->shape, gains);
    else
      avq_safetensors_writer_add (w, t->name, t->dtype, t->ndim, t->shape, t->data);
  }
  g_autofree char *out = g_build_filename (dir, "model.safetensors", NULL);
  g_assert_true (avq_safetensors_writer_save (w, out, &error));
  g_autofree char *cfg_src = g_build_filename (src, "config.json", NULL);
  g_autofree char *cfg_dst = g_build_filename (dir, "config.json", NULL);
  g_autofree char *json = NULL;
  gsize len;
  g_assert_true (g_file_get_contents (cfg_src, &json, &len, NULL));
  g_assert_true (g_file_set_contents (cfg_dst, json, len, NULL));

  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  g_assert_no_error (error);
  g_autofree char *l1 = avq_path (&cases[1]);
  g_autoptr (AvqQuantizer) q = avq_quantizer_load (l1, model, &error);
  g_assert_null (q);
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, ln1));
  g_unlink (out);
  g_unlink (cfg_dst);
  g_rmdir (dir);
}

static void
expect_frame_error (const AvqQuantizer *q, AvqQuantizerScratch *s,
                    const AvqFrame *f, int code)
{
  g_autoptr (GError) error = NULL;
  g_autofree float *zhat = g_new (float, T * D);
  g_autofree float *x = g_new (float, T * D);
  g_assert_false (avq_quantizer_decode (q, f, zhat, x, s, &error));
  g_assert_error (error, AVQ_ERROR, code);
  g_test_message ("frame rejected: %s", error->message);
}

static void
test_frame_mismatch (void)
{
  g_autoptr (AvqModel) model = open_tiny ();
  g_autoptr (AvqQuantizer) q0 = load_case (model, &cases[0]);
  g_autoptr (AvqQuantizer) q1 = load_case (model, &cases[1]);
  g_autoptr (AvqQuantizerScratch) s0 = avq_quantizer_scratch_new (q0);
  g_autoptr (AvqQuantizerScratch) s1 = avq_quantizer_scratch_new (q1);

  /* A frame of one codebook offered to the other. */
  g_autoptr (AvqFrame) f0 = reference_frame (q0, &cases[0], 0);
  g_autoptr (AvqFrame) f1 = reference_frame (q1, &cases[1], 0);
  expect_frame_error (q1, s1, f0, AVQ_ERROR_MISMATCH);
  expect_frame_error (q0, s0, f1, AVQ_ERROR_MISMATCH);

  /* Right codebook, wrong sizes. */
  g_autoptr (AvqFrame) tokens = avq_frame_new (T - 1, 12, 0, q0->codebook_id);
  expect_frame_error (q0, s0, tokens, AVQ_ERROR_MISMATCH);
  g_autoptr (AvqFrame) bits = avq_frame_new (T, 11, 0, q0->codebook_id);
  expect_frame_error (q0, s0, bits, AVQ_ERROR_MISMATCH);
  g_autoptr (AvqFrame) side = avq_frame_new (T, 12, 8, q0->codebook_id);
  expect_frame_error (q0, s0, side, AVQ_ERROR_MISMATCH);
  g_autoptr (AvqFrame) side4 = avq_frame_new (T, 12, 4, q1->codebook_id);
  expect_frame_error (q1, s1, side4, AVQ_ERROR_MISMATCH);

  /* Values no encoder writes. */
  g_autoptr (AvqFrame) idx = avq_frame_copy (f0);
  idx->indices[100] = 4096;
  expect_frame_error (q0, s0, idx, AVQ_ERROR_FORMAT);
  g_autoptr (AvqFrame) code = avq_frame_copy (f1);
  code->side_codes[5] = 256;
  expect_frame_error (q1, s1, code, AVQ_ERROR_FORMAT);
  g_autoptr (AvqFrame) range = avq_frame_copy (f1);
  range->side_range[3] = NAN;
  expect_frame_error (q1, s1, range, AVQ_ERROR_FORMAT);
  g_autoptr (AvqFrame) back = avq_frame_copy (f1);
  back->side_range[0] = back->side_range[1] + 1.0f;
  expect_frame_error (q1, s1, back, AVQ_ERROR_FORMAT);
  g_autoptr (AvqFrame) version = avq_frame_copy (f0);
  version->version = 2;
  expect_frame_error (q0, s0, version, AVQ_ERROR_UNSUPPORTED);

  /* And through the engine. */
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  g_autofree char *path = avq_path (&cases[0]);
  AvqEngineOptions opt = { .model_dir = dir, .avq_path = path };
  g_autoptr (AvqEngine) e = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  g_autofree float *features = g_new (float, (T - 1) * 64);
  g_assert_false (avq_engine_decode_frame (e, f1, features, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *p1 = g_strdup_printf ("/quantizer/%s/file", cases[i].name);
    g_autofree char *p2 = g_strdup_printf ("/quantizer/%s/encode", cases[i].name);
    g_autofree char *p3 = g_strdup_printf ("/quantizer/%s/decode", cases[i].name);
    g_autofree char *p4 = g_strdup_printf ("/quantizer/%s/engine-encode", cases[i].name);
    g_test_add_data_func (p1, &cases[i], test_file);
    g_test_add_data_func (p2, &cases[i], test_encode);
    g_test_add_data_func (p3, &cases[i], test_decode);
    g_test_add_data_func (p4, &cases[i], test_engine_encode);
  }
  g_test_add_func ("/quantizer/side-rounding", test_side_rounding);
  g_test_add_func ("/quantizer/malformed-files", test_malformed_files);
  g_test_add_func ("/quantizer/uninvertible-model", test_uninvertible_model);
  g_test_add_func ("/quantizer/frame-mismatch", test_frame_mismatch);
  return g_test_run ();
}
