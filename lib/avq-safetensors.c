#include "avq-safetensors.h"
#include "avq-error.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

/* The reference implementation refuses headers above 100 MB; a 7B model's
 * header is ~100 KB, so anything larger is garbage or an attack. */
#define HEADER_MAX (100u * 1024u * 1024u)

typedef struct {
  char *path;              /* shown in errors, stored in AvqTensor.file */
  GMappedFile *map;        /* NULL for avq_safetensors_open_memory */
  GHashTable *metadata;    /* char* -> char*, NULL when the file has none */
} StFile;

struct _AvqSafetensors {
  char *path;
  GPtrArray *files;        /* StFile*, owning */
  GPtrArray *tensors;      /* AvqTensor*, owning, sorted by name */
  GHashTable *by_name;     /* name -> AvqTensor* (borrowed) */
};

static void
st_file_free (gpointer p)
{
  StFile *f = p;
  if (f == NULL)
    return;
  g_free (f->path);
  if (f->map)
    g_mapped_file_unref (f->map);
  if (f->metadata)
    g_hash_table_unref (f->metadata);
  g_free (f);
}

static void
tensor_free (gpointer p)
{
  AvqTensor *t = p;
  if (t == NULL)
    return;
  g_free (t->name);
  g_free (t);
}

static AvqSafetensors *
st_new (const char *path)
{
  AvqSafetensors *st = g_new0 (AvqSafetensors, 1);
  st->path = g_strdup (path);
  st->files = g_ptr_array_new_with_free_func (st_file_free);
  st->tensors = g_ptr_array_new_with_free_func (tensor_free);
  st->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  return st;
}

void
avq_safetensors_free (AvqSafetensors *st)
{
  if (st == NULL)
    return;
  g_hash_table_unref (st->by_name);
  g_ptr_array_unref (st->tensors);
  g_ptr_array_unref (st->files);
  g_free (st->path);
  g_free (st);
}

/* ---- dtypes ------------------------------------------------------------ */

static const struct {
  const char *name;
  gsize size;
} dtype_info[] = {
  [AVQ_DTYPE_F32] = { "F32", 4 },
  [AVQ_DTYPE_F16] = { "F16", 2 },
  [AVQ_DTYPE_BF16] = { "BF16", 2 },
  [AVQ_DTYPE_F64] = { "F64", 8 },
  [AVQ_DTYPE_I64] = { "I64", 8 },
  [AVQ_DTYPE_I32] = { "I32", 4 },
  [AVQ_DTYPE_I16] = { "I16", 2 },
  [AVQ_DTYPE_I8] = { "I8", 1 },
  [AVQ_DTYPE_U8] = { "U8", 1 },
  [AVQ_DTYPE_BOOL] = { "BOOL", 1 },
};

static gboolean
dtype_valid (AvqDType d)
{
  return (guint) d < G_N_ELEMENTS (dtype_info);
}

const char *
avq_dtype_name (AvqDType dtype)
{
  return dtype_valid (dtype) ? dtype_info[dtype].name : "invalid";
}

gsize
avq_dtype_size (AvqDType dtype)
{
  return dtype_valid (dtype) ? dtype_info[dtype].size : 0;
}

static gboolean
dtype_from_name (const char *name, AvqDType *out)
{
  for (guint i = 0; i < G_N_ELEMENTS (dtype_info); i++) {
    if (strcmp (dtype_info[i].name, name) == 0) {
      *out = (AvqDType) i;
      return TRUE;
    }
  }
  return FALSE;
}

gsize
avq_tensor_numel (const AvqTensor *t)
{
  g_return_val_if_fail (t != NULL, 0);
  /* No overflow: open validated numel * dtype size against the file size. */
  gsize n = 1;
  for (int i = 0; i < t->ndim; i++)
    n *= (gsize) t->shape[i];
  return n;
}

/* ---- half / bfloat16 --------------------------------------------------- */

typedef union {
  float f;
  guint32 u;
} FloatBits;

/* Branch-free so the conversion loops vectorise. Normals only need the
 * exponent rebiased (15 -> 127, an integer add). Subnormals are built as
 * 2^-14 * (1 + m/1024) and 2^-14 subtracted, which is exact and never
 * touches float subnormals (those cost a microcode assist per element on
 * x86). Inf/NaN get an all-ones exponent with the payload kept. */
static inline float
half_to_float_inline (guint16 h)
{
  guint32 shifted = (guint32) (h & 0x7fffu) << 13;
  guint32 exp = shifted & 0x0f800000u;
  FloatBits normal = { .u = shifted + 0x38000000u };
  FloatBits sub = { .u = shifted + 0x38800000u };
  sub.f -= 0x1p-14f;
  guint32 special = shifted | 0x7f800000u;
  /* masks rather than ?: so GCC -O2 sees no control flow */
  guint32 is_sub = 0u - (guint32) (exp == 0);
  guint32 is_special = 0u - (guint32) (exp == 0x0f800000u);
  guint32 u = (normal.u & ~(is_sub | is_special)) | (sub.u & is_sub)
      | (special & is_special);
  FloatBits out = { .u = u | ((guint32) (h & 0x8000u) << 16) };
  return out.f;
}

float
avq_half_to_float (guint16 h)
{
  return half_to_float_inline (h);
}

float
avq_bf16_to_float (guint16 b)
{
  FloatBits v = { .u = (guint32) b << 16 };
  return v.f;
}

guint16
avq_float_to_half (float f)
{
  FloatBits v = { .f = f };
  guint16 sign = (guint16) ((v.u >> 16) & 0x8000u);
  guint32 ax = v.u & 0x7fffffffu;

  if (ax >= 0x7f800000u) {
    if (ax == 0x7f800000u)
      return sign | 0x7c00u;
    /* Keep the top payload bits so every half NaN round-trips; a payload
     * living only in the dropped low bits still has to stay a NaN. */
    guint16 m = (guint16) ((ax >> 13) & 0x3ffu);
    return sign | 0x7c00u | (m ? m : 0x200u);
  }
  /* 65520 is the midpoint between 65504 (largest half) and 2^16: even
   * rounding sends it, and everything above, to infinity. */
  if (ax >= 0x477ff000u)
    return sign | 0x7c00u;
  if (ax < 0x38800000u) {
    /* Below the smallest normal half: the result is the value in units of
     * 2^-24, rounded to nearest even (rintf uses the default RNE mode).
     * Scaling by a power of two is exact here. */
    FloatBits a = { .u = ax };
    return sign | (guint16) rintf (a.f * 0x1p24f);
  }
  /* Normal range: add just under half an ulp plus the lowest kept bit so
   * ties go to even; a mantissa carry correctly bumps the exponent. */
  guint32 r = (ax + 0xfffu + ((ax >> 13) & 1u)) >> 13;
  return sign | (guint16) (r - (112u << 10));
}

/* ---- reading ------------------------------------------------------------ */

/* Tensor data is only 2-byte aligned in real files (odd-sized tensors
 * precede others), so loads go through memcpy. Fixed-size inner blocks let
 * GCC vectorise even at -O2's cheap cost model. */
#define BLOCK 32

static void
convert_f16 (const guint8 *src, gsize n, float *dst)
{
  gsize i = 0;
  for (; i + BLOCK <= n; i += BLOCK) {
    guint16 tmp[BLOCK];
    float out[BLOCK];
    memcpy (tmp, src + 2 * i, sizeof tmp);
    for (int j = 0; j < BLOCK; j++)
      out[j] = half_to_float_inline (tmp[j]);
    memcpy (dst + i, out, sizeof out);
  }
  for (; i < n; i++) {
    guint16 h;
    memcpy (&h, src + 2 * i, 2);
    dst[i] = half_to_float_inline (h);
  }
}

static void
convert_bf16 (const guint8 *src, gsize n, float *dst)
{
  gsize i = 0;
  for (; i + BLOCK <= n; i += BLOCK) {
    guint16 tmp[BLOCK];
    guint32 out[BLOCK];
    memcpy (tmp, src + 2 * i, sizeof tmp);
    for (int j = 0; j < BLOCK; j++)
      out[j] = (guint32) tmp[j] << 16;
    memcpy (dst + i, out, sizeof out);
  }
  for (; i < n; i++) {
    guint16 b;
    memcpy (&b, src + 2 * i, 2);
    dst[i] = avq_bf16_to_float (b);
  }
}

void
avq_tensor_read_f32 (const AvqTensor *t, gsize offset, gsize n, float *dst)
{
  g_return_if_fail (t != NULL);
  g_return_if_fail (n == 0 || dst != NULL);
  gsize numel = avq_tensor_numel (t);
  g_return_if_fail (offset <= numel && n <= numel - offset);
  if (n == 0)
    return;
  const guint8 *base = t->data;
  switch (t->dtype) {
  case AVQ_DTYPE_F32:
    memcpy (dst, base + 4 * offset, 4 * n);
    break;
  case AVQ_DTYPE_F16:
    convert_f16 (base + 2 * offset, n, dst);
    break;
  case AVQ_DTYPE_BF16:
    convert_bf16 (base + 2 * offset, n, dst);
    break;
  default:
    g_return_if_reached ();
  }
}

float *
avq_tensor_dup_f32 (const AvqTensor *t)
{
  g_return_val_if_fail (t != NULL, NULL);
  g_return_val_if_fail (t->dtype == AVQ_DTYPE_F32 || t->dtype == AVQ_DTYPE_F16
                        || t->dtype == AVQ_DTYPE_BF16, NULL);
  gsize n = avq_tensor_numel (t);
  /* g_new would abort on n * 4 overflow; open already bounded n by the
   * file size, and keep at least one element so the result is never NULL. */
  float *out = g_new (float, MAX (n, 1));
  avq_tensor_read_f32 (t, 0, n, out);
  return out;
}

gboolean
avq_tensor_check_float (const AvqTensor *t, int ndim, const gint64 *shape,
                        GError **error)
{
  g_return_val_if_fail (t != NULL, FALSE);
  g_return_val_if_fail (ndim >= 0 && ndim <= AVQ_TENSOR_MAX_DIMS, FALSE);
  g_return_val_if_fail (ndim == 0 || shape != NULL, FALSE);

  if (t->dtype != AVQ_DTYPE_F32 && t->dtype != AVQ_DTYPE_F16
      && t->dtype != AVQ_DTYPE_BF16) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_SHAPE,
                 "%s: tensor %s has dtype %s, expected F32, F16 or BF16",
                 t->file, t->name, avq_dtype_name (t->dtype));
    return FALSE;
  }
  gboolean ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++)
    ok = shape[i] < 0 || shape[i] == t->shape[i];
  if (!ok) {
    GString *want = g_string_new ("[");
    GString *got = g_string_new ("[");
    for (int i = 0; i < ndim; i++)
      g_string_append_printf (want, "%s%" G_GINT64_FORMAT, i ? ", " : "",
                              shape[i]);
    for (int i = 0; i < t->ndim; i++)
      g_string_append_printf (got, "%s%" G_GINT64_FORMAT, i ? ", " : "",
                              t->shape[i]);
    g_string_append_c (want, ']');
    g_string_append_c (got, ']');
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_SHAPE,
                 "%s: tensor %s has shape %s, expected %s (-1 = any)",
                 t->file, t->name, got->str, want->str);
    g_string_free (want, TRUE);
    g_string_free (got, TRUE);
    return FALSE;
  }
  return TRUE;
}

/* ---- header parsing ------------------------------------------------------ */

/* json-glib 1.6 keeps the last of duplicate object members without a word,
 * which would let a file hide a tensor. The object-member signal fires
 * after each member is stored, so a member that leaves the object smaller
 * than the number of members seen so far was a duplicate. */
typedef struct {
  GHashTable *counts;   /* JsonObject* -> members parsed so far */
  char *dup;            /* first duplicated key */
} DupCheck;

static void
on_object_member (JsonParser *parser, JsonObject *object, char *name,
                  gpointer user_data)
{
  (void) parser;
  DupCheck *dc = user_data;
  guint c = GPOINTER_TO_UINT (g_hash_table_lookup (dc->counts, object)) + 1;
  g_hash_table_insert (dc->counts, object, GUINT_TO_POINTER (c));
  if (c > json_object_get_size (object) && dc->dup == NULL)
    dc->dup = g_strdup (name);
}

/* Parses JSON text into a root node, rejecting duplicate keys anywhere.
 * `what` describes the text in errors. */
static JsonNode *
parse_json_strict (const char *text, gsize len, const char *what,
                   GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GHashTable) counts = g_hash_table_new (NULL, NULL);
  g_autoptr (GError) local = NULL;
  DupCheck dc = { counts, NULL };

  if (len > G_MAXSSIZE) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: JSON too large", what);
    return NULL;
  }
  /* json-glib stops at an embedded NUL without complaint; a header with one
   * is not what the writer meant, so refuse it. */
  if (memchr (text, '\0', len) != NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: JSON contains a NUL byte", what);
    return NULL;
  }
  g_signal_connect (parser, "object-member", G_CALLBACK (on_object_member), &dc);
  gboolean ok = json_parser_load_from_data (parser, text, (gssize) len, &local);
  g_autofree char *dup = dc.dup;
  if (!ok) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: invalid JSON: %s",
                 what, local->message);
    return NULL;
  }
  if (dup != NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: duplicate key \"%s\"", what, dup);
    return NULL;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: empty JSON", what);
    return NULL;
  }
  return json_node_copy (root);
}

/* A JSON integer that is >= 0. json-glib turns out-of-range integers into
 * negative ones, so the sign test also catches overflow. */
static gboolean
node_get_uint (JsonNode *n, gint64 *out)
{
  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n)
      || json_node_get_value_type (n) != G_TYPE_INT64)
    return FALSE;
  gint64 v = json_node_get_int (n);
  if (v < 0)
    return FALSE;
  *out = v;
  return TRUE;
}

typedef struct {
  AvqTensor *t;
  guint64 begin, end;
} Span;

static int
span_cmp (gconstpointer a, gconstpointer b)
{
  const Span *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return 0;
}

static gboolean
parse_tensor_entry (const char *path, const char *name, JsonNode *node,
                    const guint8 *data, guint64 data_size, AvqTensor **out,
                    Span *span, GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT (node)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: tensor %s: header entry is not an object", path, name);
    return FALSE;
  }
  JsonObject *o = json_node_get_object (node);
  JsonNode *dn = json_object_get_member (o, "dtype");
  JsonNode *sn = json_object_get_member (o, "shape");
  JsonNode *on = json_object_get_member (o, "data_offsets");

  if (dn == NULL || json_node_get_value_type (dn) != G_TYPE_STRING) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: tensor %s: \"dtype\" missing or not a string", path, name);
    return FALSE;
  }
  AvqDType dtype;
  if (!dtype_from_name (json_node_get_string (dn), &dtype)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: tensor %s: unknown dtype \"%s\"", path, name,
                 json_node_get_string (dn));
    return FALSE;
  }
  if (sn == NULL || !JSON_NODE_HOLDS_ARRAY (sn)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: tensor %s: \"shape\" missing or not an array", path, name);
    return FALSE;
  }
  JsonArray *sa = json_node_get_array (sn);
  guint ndim = json_array_get_length (sa);
  if (ndim > AVQ_TENSOR_MAX_DIMS) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "%s: tensor %s: %u dimensions (at most %d supported)", path,
                 name, ndim, AVQ_TENSOR_MAX_DIMS);
    return FALSE;
  }
  gint64 shape[AVQ_TENSOR_MAX_DIMS] = { 0 };
  guint64 numel = 1;
  gboolean overflow = FALSE;
  for (guint i = 0; i < ndim; i++) {
    if (!node_get_uint (json_array_get_element (sa, i), &shape[i])) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: tensor %s: shape[%u] is not a non-negative integer",
                   path, name, i);
      return FALSE;
    }
    if (!overflow && !g_uint64_checked_mul (&numel, numel, (guint64) shape[i]))
      overflow = TRUE;
  }
  guint64 nbytes = 0;
  if (overflow || !g_uint64_checked_mul (&nbytes, numel, avq_dtype_size (dtype))
      || nbytes > data_size) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: tensor %s: shape holds more bytes than the file's "
                 "data area", 
                 path, name);
    return FALSE;
  }
  if (on == NULL || !JSON_NODE_HOLDS_ARRAY (on)
      || json_array_get_length (json_node_get_array (on)) != 2) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: tensor %s: \"data_offsets\" missing or not [begin, end]",
                 path, name);
    return FALSE;
  }
  JsonArray *oa = json_node_get_array (on);
  gint64 begin, end;
  if (!node_get_uint (json_array_get_element (oa, 0), &begin)
      || !node_get_uint (json_array_get_element (oa, 1), &end)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: tensor %s: data_offsets are not non-negative integers",
                 path, name);
    return FALSE;
  }
  if (begin > end || (guint64) end > data_size) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: tensor %s: data_offsets [%" G_GINT64_FORMAT ", %"
                 G_GINT64_FORMAT "] are not a range inside the data area of %"
                 G_GUINT64_FORMAT " bytes", path, name, begin, end, data_size);
    return FALSE;
  }
  if ((guint64) (end - begin) != nbytes) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: tensor %s: data_offsets span %" G_GINT64_FORMAT
                 " bytes but shape x %s needs %" G_GUINT64_FORMAT, path, name,
                 end - begin, avq_dtype_name (dtype), nbytes);
    return FALSE;
  }

  AvqTensor *t = g_new0 (AvqTensor, 1);
  t->name = g_strdup (name);
  t->dtype = dtype;
  t->ndim = (int) ndim;
  memcpy (t->shape, shape, sizeof shape);
  t->data = data + begin;
  t->nbytes = (gsize) nbytes;
  t->file = path;
  *out = t;
  span->t = t;
  span->begin = (guint64) begin;
  span->end = (guint64) end;
  return TRUE;
}

static gboolean
parse_metadata (const char *path, JsonNode *node, StFile *file, GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT (node)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: __metadata__ is not an object", path);
    return FALSE;
  }
  GHashTable *md = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  JsonObjectIter it;
  const char *key;
  JsonNode *value;
  json_object_iter_init (&it, json_node_get_object (node));
  while (json_object_iter_next (&it, &key, &value)) {
    if (!JSON_NODE_HOLDS_VALUE (value)
        || json_node_get_value_type (value) != G_TYPE_STRING) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: __metadata__ key %s: value is not a string", path, key);
      g_hash_table_unref (md);
      return FALSE;
    }
    g_hash_table_insert (md, g_strdup (key), g_strdup (json_node_get_string (value)));
  }
  file->metadata = md;
  return TRUE;
}

/* Validates one safetensors image and returns its tensors (owning array, in
 * header order). `file->path` names it in errors. */
static GPtrArray *
parse_image (StFile *file, const guint8 *buf, gsize size, GError **error)
{
  const char *path = file->path;
  if (size < 8 || buf == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: truncated: %" G_GSIZE_FORMAT " bytes, need at least 8 "
                 "for the header length", path, size);
    return NULL;
  }
  guint64 hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | buf[i];
  if (hlen > size - 8) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: header length %" G_GUINT64_FORMAT " runs past the end of "
                 "the file (%" G_GSIZE_FORMAT " bytes)", path, hlen, size);
    return NULL;
  }
  if (hlen > HEADER_MAX) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: header length %" G_GUINT64_FORMAT " exceeds the %u byte "
                 "limit", path, hlen, HEADER_MAX);
    return NULL;
  }
  const guint8 *data = buf + 8 + hlen;
  guint64 data_size = size - 8 - hlen;

  g_autofree char *what = g_strdup_printf ("%s: header", path);
  JsonNode *root = parse_json_strict ((const char *) buf + 8, (gsize) hlen, what,
                                      error);
  if (root == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: header is not a JSON object", path);
    json_node_unref (root);
    return NULL;
  }

  GPtrArray *tensors = g_ptr_array_new_with_free_func (tensor_free);
  JsonObject *obj = json_node_get_object (root);
  guint n_members = json_object_get_size (obj);
  Span *spans = g_new0 (Span, MAX (n_members, 1));
  guint n_spans = 0;
  gboolean ok = TRUE;

  JsonObjectIter it;
  const char *name;
  JsonNode *member;
  json_object_iter_init (&it, obj);
  while (ok && json_object_iter_next (&it, &name, &member)) {
    if (strcmp (name, "__metadata__") == 0) {
      ok = parse_metadata (path, member, file, error);
      continue;
    }
    AvqTensor *t = NULL;
    ok = parse_tensor_entry (path, name, member, data, data_size, &t,
                             &spans[n_spans], error);
    if (ok) {
      g_ptr_array_add (tensors, t);
      n_spans++;
    }
  }

  if (ok && n_spans > 1) {
    qsort (spans, n_spans, sizeof (Span), span_cmp);
    /* Empty tensors own no bytes, so they cannot clash with anything. */
    guint64 prev_end = 0;
    const AvqTensor *prev = NULL;
    for (guint i = 0; ok && i < n_spans; i++) {
      if (spans[i].begin == spans[i].end)
        continue;
      if (prev != NULL && spans[i].begin < prev_end) {
        g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                     "%s: tensor %s overlaps tensor %s in the data area", path,
                     spans[i].t->name, prev->name);
        ok = FALSE;
      }
      prev_end = spans[i].end;
      prev = spans[i].t;
    }
  }

  g_free (spans);
  json_node_unref (root);
  if (!ok) {
    g_ptr_array_unref (tensors);
    return NULL;
  }
  return tensors;
}

static int
tensor_ptr_cmp (gconstpointer a, gconstpointer b)
{
  const AvqTensor *x = *(AvqTensor *const *) a;
  const AvqTensor *y = *(AvqTensor *const *) b;
  return strcmp (x->name, y->name);
}

/* Moves the tensors of one file into st, rejecting names already present
 * (from another shard). */
static gboolean
st_adopt (AvqSafetensors *st, GPtrArray *tensors, GError **error)
{
  for (guint i = 0; i < tensors->len; i++) {
    AvqTensor *t = g_ptr_array_index (tensors, i);
    AvqTensor *other = g_hash_table_lookup (st->by_name, t->name);
    if (other != NULL) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "tensor %s is stored twice: in %s and in %s", t->name,
                   other->file, t->file);
      return FALSE;
    }
  }
  g_ptr_array_set_free_func (tensors, NULL);
  for (guint i = 0; i < tensors->len; i++) {
    AvqTensor *t = g_ptr_array_index (tensors, i);
    g_ptr_array_add (st->tensors, t);
    g_hash_table_insert (st->by_name, t->name, t);
  }
  g_ptr_array_set_size (tensors, 0);
  return TRUE;
}

static void
st_finish (AvqSafetensors *st)
{
  g_ptr_array_sort (st->tensors, tensor_ptr_cmp);
}

/* Maps and parses one file, appending it to st. */
static gboolean
st_add_file (AvqSafetensors *st, const char *path, GError **error)
{
  g_autoptr (GError) local = NULL;
  GMappedFile *map = g_mapped_file_new (path, FALSE, &local);
  if (map == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: cannot map: %s", path,
                 local->message);
    return FALSE;
  }
  StFile *f = g_new0 (StFile, 1);
  f->path = g_strdup (path);
  f->map = map;
  g_ptr_array_add (st->files, f);

  GPtrArray *tensors = parse_image (f, (const guint8 *) g_mapped_file_get_contents (map),
                                    g_mapped_file_get_length (map), error);
  if (tensors == NULL)
    return FALSE;
  gboolean ok = st_adopt (st, tensors, error);
  g_ptr_array_unref (tensors);
  return ok;
}

AvqSafetensors *
avq_safetensors_open_memory (const guint8 *data, gsize size,
                             const char *display_name, GError **error)
{
  g_return_val_if_fail (data != NULL || size == 0, NULL);
  AvqSafetensors *st = st_new (display_name ? display_name : "<memory>");
  StFile *f = g_new0 (StFile, 1);
  f->path = g_strdup (st->path);
  g_ptr_array_add (st->files, f);
  GPtrArray *tensors = parse_image (f, data, size, error);
  if (tensors == NULL || !st_adopt (st, tensors, error)) {
    if (tensors)
      g_ptr_array_unref (tensors);
    avq_safetensors_free (st);
    return NULL;
  }
  g_ptr_array_unref (tensors);
  st_finish (st);
  return st;
}

static int
str_ptr_cmp (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* Shard names come from a file we do not trust: only plain names in the
 * index's own directory are allowed. */
static gboolean
shard_name_ok (const char *name)
{
  return name[0] != '\0' && strchr (name, '/') == NULL
      && strchr (name, '\\') == NULL && strcmp (name, ".") != 0
      && strcmp (name, "..") != 0;
}

static AvqSafetensors *
open_index (const char *index_path, GError **error)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  g_autoptr (GError) local = NULL;
  g_autofree char *dir = g_path_get_dirname (index_path);
  /* shard name -> full path, each shard opened once in a stable order */
  g_autoptr (GHashTable) shards = g_hash_table_new_full (g_str_hash, g_str_equal,
                                                         NULL, g_free);
  g_autoptr (GPtrArray) order = g_ptr_array_new ();
  if (!g_file_get_contents (index_path, &text, &len, &local)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: cannot read: %s",
                 index_path, local->message);
    return NULL;
  }
  JsonNode *root = parse_json_strict (text, len, index_path, error);
  if (root == NULL)
    return NULL;

  AvqSafetensors *st = NULL;
  JsonObject *map;
  JsonObjectIter it;
  const char *name;
  JsonNode *value;
  JsonNode *wm = JSON_NODE_HOLDS_OBJECT (root)
      ? json_object_get_member (json_node_get_object (root), "weight_map") : NULL;
  if (wm == NULL || !JSON_NODE_HOLDS_OBJECT (wm)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: no \"weight_map\" object", index_path);
    goto out;
  }
  map = json_node_get_object (wm);
  json_object_iter_init (&it, map);
  while (json_object_iter_next (&it, &name, &value)) {
    if (!JSON_NODE_HOLDS_VALUE (value)
        || json_node_get_value_type (value) != G_TYPE_STRING
        || !shard_name_ok (json_node_get_string (value))) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: weight_map entry %s is not a plain file name",
                   index_path, name);
      goto out;
    }
    const char *shard = json_node_get_string (value);
    if (!g_hash_table_contains (shards, shard)) {
      g_hash_table_insert (shards, (gpointer) shard,
                           g_build_filename (dir, shard, NULL));
      g_ptr_array_add (order, (gpointer) shard);
    }
  }
  if (order->len == 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                 "%s: weight_map is empty", index_path);
    goto out;
  }
  g_ptr_array_sort (order, str_ptr_cmp);
  st = st_new (index_path);
  for (guint i = 0; i < order->len; i++) {
    const char *shard = g_ptr_array_index (order, i);
    if (!st_add_file (st, g_hash_table_lookup (shards, shard), error)) {
      g_clear_pointer (&st, avq_safetensors_free);
      goto out;
    }
  }
  json_object_iter_init (&it, map);
  while (json_object_iter_next (&it, &name, &value)) {
    const char *shard = json_node_get_string (value);
    const char *shard_path = g_hash_table_lookup (shards, shard);
    const AvqTensor *t = g_hash_table_lookup (st->by_name, name);
    if (t == NULL || strcmp (t->file, shard_path) != 0) {
      if (t == NULL)
        g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
                     "%s: tensor %s is listed in %s but not stored there",
                     shard_path, name, index_path);
      else
        g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
                     "%s: tensor %s is listed for %s but stored in another "
                     "shard, %s", index_path, name, shard, t->file);
      g_clear_pointer (&st, avq_safetensors_free);
      goto out;
    }
  }
  st_finish (st);

out:
  json_node_unref (root);
  return st;
}

AvqSafetensors *
avq_safetensors_open (const char *path, GError **error)
{
  g_return_val_if_fail (path != NULL, NULL);
  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    g_autofree char *single = g_build_filename (path, "model.safetensors", NULL);
    g_autofree char *index = g_build_filename (path, "model.safetensors.index.json",
                                               NULL);
    if (g_file_test (single, G_FILE_TEST_EXISTS))
      return avq_safetensors_open (single, error);
    if (g_file_test (index, G_FILE_TEST_EXISTS))
      return avq_safetensors_open (index, error);
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING,
                 "%s: neither model.safetensors nor model.safetensors.index.json "
                 "found", path);
    return NULL;
  }
  if (g_str_has_suffix (path, ".json"))
    return open_index (path, error);

  AvqSafetensors *st = st_new (path);
  if (!st_add_file (st, path, error)) {
    avq_safetensors_free (st);
    return NULL;
  }
  st_finish (st);
  return st;
}

const AvqTensor *
avq_safetensors_find (const AvqSafetensors *st, const char *name)
{
  g_return_val_if_fail (st != NULL && name != NULL, NULL);
  return g_hash_table_lookup (st->by_name, name);
}

guint
avq_safetensors_n_tensors (const AvqSafetensors *st)
{
  g_return_val_if_fail (st != NULL, 0);
  return st->tensors->len;
}

const AvqTensor *
avq_safetensors_nth (const AvqSafetensors *st, guint i)
{
  g_return_val_if_fail (st != NULL, NULL);
  g_return_val_if_fail (i < st->tensors->len, NULL);
  return g_ptr_array_index (st->tensors, i);
}

const char *
avq_safetensors_metadata (const AvqSafetensors *st, const char *key)
{
  g_return_val_if_fail (st != NULL && key != NULL, NULL);
  for (guint i = 0; i < st->files->len; i++) {
    StFile *f = g_ptr_array_index (st->files, i);
    if (f->metadata)
      return g_hash_table_lookup (f->metadata, key);
  }
  return NULL;
}

const char *
avq_safetensors_path (const AvqSafetensors *st)
{
  g_return_val_if_fail (st != NULL, NULL);
  return st->path;
}

/* ---- writer -------------------------------------------------------------- */

typedef struct {
  char *name;
  AvqDType dtype;
  int ndim;
  gint64 shape[AVQ_TENSOR_MAX_DIMS];
  guint8 *data;
  gsize nbytes;
} WEntry;

struct _AvqSafetensorsWriter {
  GHashTable *entries;   /* name -> WEntry* */
  GHashTable *metadata;  /* key -> value */
};

static void
wentry_free (gpointer p)
{
  WEntry *e = p;
  g_free (e->name);
  g_free (e->data);
  g_free (e);
}

AvqSafetensorsWriter *
avq_safetensors_writer_new (void)
{
  AvqSafetensorsWriter *w = g_new0 (AvqSafetensorsWriter, 1);
  w->entries = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, wentry_free);
  w->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  return w;
}

void
avq_safetensors_writer_free (AvqSafetensorsWriter *w)
{
  if (w == NULL)
    return;
  g_hash_table_unref (w->entries);
  g_hash_table_unref (w->metadata);
  g_free (w);
}

/* A later tensor with the same name replaces the earlier one: a file can
 * hold each name only once. */
void
avq_safetensors_writer_add (AvqSafetensorsWriter *w, const char *name,
                            AvqDType dtype, int ndim, const gint64 *shape,
                            const void *data)
{
  g_return_if_fail (w != NULL && name != NULL);
  /* the header is JSON: names must be valid UTF-8 */
  g_return_if_fail (g_utf8_validate (name, -1, NULL));
  g_return_if_fail (strcmp (name, "__metadata__") != 0);
  g_return_if_fail (dtype_valid (dtype));
  g_return_if_fail (ndim >= 0 && ndim <= AVQ_TENSOR_MAX_DIMS);
  g_return_if_fail (ndim == 0 || shape != NULL);
  guint64 numel = 1;
  for (int i = 0; i < ndim; i++) {
    g_return_if_fail (shape[i] >= 0);
    g_return_if_fail (g_uint64_checked_mul (&numel, numel, (guint64) shape[i]));
  }
  guint64 nbytes;
  g_return_if_fail (g_uint64_checked_mul (&nbytes, numel, avq_dtype_size (dtype)));
  g_return_if_fail (nbytes <= G_MAXSIZE);
  g_return_if_fail (nbytes == 0 || data != NULL);

  WEntry *e = g_new0 (WEntry, 1);
  e->name = g_strdup (name);
  e->dtype = dtype;
  e->ndim = ndim;
  if (ndim > 0)
    memcpy (e->shape, shape, sizeof (gint64) * (gsize) ndim);
  e->nbytes = (gsize) nbytes;
  e->data = nbytes ? g_memdup2 (data, (gsize) nbytes) : NULL;
  g_hash_table_replace (w->entries, e->name, e);
}

void
avq_safetensors_writer_set_metadata (AvqSafetensorsWriter *w, const char *key,
                                     const char *value)
{
  g_return_if_fail (w != NULL && key != NULL && value != NULL);
  g_return_if_fail (g_utf8_validate (key, -1, NULL) && g_utf8_validate (value, -1, NULL));
  g_hash_table_replace (w->metadata, g_strdup (key), g_strdup (value));
}

static int
wentry_cmp (gconstpointer a, gconstpointer b)
{
  const WEntry *x = *(WEntry *const *) a;
  const WEntry *y = *(WEntry *const *) b;
  return strcmp (x->name, y->name);
}

gboolean
avq_safetensors_writer_save (AvqSafetensorsWriter *w, const char *path,
                             GError **error)
{
  g_return_val_if_fail (w != NULL && path != NULL, FALSE);

  /* GLib 2.74 lacks g_hash_table_get_values_as_ptr_array */
  g_autoptr (GPtrArray) entries = g_ptr_array_new ();
  GHashTableIter hit;
  gpointer hkey, hval;
  g_hash_table_iter_init (&hit, w->entries);
  while (g_hash_table_iter_next (&hit, &hkey, &hval))
    g_ptr_array_add (entries, hval);
  g_ptr_array_sort (entries, wentry_cmp);

  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  if (g_hash_table_size (w->metadata) > 0) {
    g_autoptr (GPtrArray) keys = g_ptr_array_new ();
    g_hash_table_iter_init (&hit, w->metadata);
    while (g_hash_table_iter_next (&hit, &hkey, &hval))
      g_ptr_array_add (keys, hkey);
    g_ptr_array_sort (keys, str_ptr_cmp);
    json_builder_set_member_name (b, "__metadata__");
    json_builder_begin_object (b);
    for (guint i = 0; i < keys->len; i++) {
      const char *k = g_ptr_array_index (keys, i);
      json_builder_set_member_name (b, k);
      json_builder_add_string_value (b, g_hash_table_lookup (w->metadata, k));
    }
    json_builder_end_object (b);
  }
  guint64 offset = 0;
  for (guint i = 0; i < entries->len; i++) {
    WEntry *e = g_ptr_array_index (entries, i);
    json_builder_set_member_name (b, e->name);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "dtype");
    json_builder_add_string_value (b, avq_dtype_name (e->dtype));
    json_builder_set_member_name (b, "shape");
    json_builder_begin_array (b);
    for (int d = 0; d < e->ndim; d++)
      json_builder_add_int_value (b, e->shape[d]);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "data_offsets");
    json_builder_begin_array (b);
    json_builder_add_int_value (b, (gint64) offset);
    json_builder_add_int_value (b, (gint64) (offset + e->nbytes));
    json_builder_end_array (b);
    json_builder_end_object (b);
    offset += e->nbytes;
  }
  json_builder_end_object (b);

  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  gsize json_len = 0;
  g_autofree char *json = json_generator_to_data (gen, &json_len);

  /* Pad with spaces so tensor data starts 8-byte aligned in the file, as
   * the reference writer does; JSON ignores trailing whitespace. */
  gsize hlen = (json_len + 7) & ~(gsize) 7;
  guint8 lenbuf[8];
  for (int i = 0; i < 8; i++)
    lenbuf[i] = (guint8) (((guint64) hlen >> (8 * i)) & 0xff);

  g_autofree char *tmp = g_strdup_printf ("%s.XXXXXX", path);
  int fd = g_mkstemp_full (tmp, O_WRONLY, 0644);
  if (fd < 0) {
    int err = errno;
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: cannot create: %s", path,
                 g_strerror (err));
    return FALSE;
  }
  FILE *fp = fdopen (fd, "wb");
  if (fp == NULL) {
    int err = errno;
    close (fd);
    g_unlink (tmp);
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: cannot write: %s", path,
                 g_strerror (err));
    return FALSE;
  }
  gboolean ok = fwrite (lenbuf, 1, 8, fp) == 8
      && fwrite (json, 1, json_len, fp) == json_len;
  for (gsize i = json_len; ok && i < hlen; i++)
    ok = fputc (' ', fp) != EOF;
  for (guint i = 0; ok && i < entries->len; i++) {
    WEntry *e = g_ptr_array_index (entries, i);
    ok = e->nbytes == 0 || fwrite (e->data, 1, e->nbytes, fp) == e->nbytes;
  }
  int err = errno;
  if (fclose (fp) != 0 && ok) {
    err = errno;
    ok = FALSE;
  }
  if (ok && g_rename (tmp, path) != 0) {
    err = errno;
    ok = FALSE;
  }
  if (!ok) {
    g_unlink (tmp);
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: write failed: %s", path,
                 g_strerror (err));
  }
  return ok;
}
