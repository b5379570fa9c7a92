/* BPE tokenizer with the semantics of HF `tokenizers` for SentencePiece-style
 * Llama tokenizer.json files (see avq-tokenizer.h).
 *
 * Loading parses the file with json-glib and builds open-addressing tables
 * for the vocabulary and the merges straight from its tree, which is freed
 * right after; encoding costs a few hash probes per character plus one heap
 * operation per merge. */
#include "avq-tokenizer.h"
#include "avq-error.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A real tokenizer.json is a few MB; the cap only stops a hostile path
 * (a device, a huge file) from being slurped into memory. */
#define MAX_FILE_BYTES ((gsize) 512 << 20)
/* Ids index dense tables; the bound keeps a hostile id from allocating
 * gigabytes while leaving room far beyond any real vocabulary. */
#define MAX_ID ((1 << 24) - 1)

enum {
  FLAG_MODEL = 1 << 0,   /* in model.vocab */
  FLAG_ADDED = 1 << 1,   /* in added_tokens */
  FLAG_SPECIAL = 1 << 2, /* added token with special: true */
};

/* string -> id; slots hold ids, the strings live in id_str/id_len. */
typedef struct {
  gint32 *slots;
  guint32 mask;
} IdIndex;

/* (left id, right id) -> (rank, merged id) */
typedef struct {
  guint64 *keys;
  guint32 *ranks; /* G_MAXUINT32 marks an empty slot */
  gint32 *new_ids;
  guint32 mask;
} MergeIndex;

typedef struct {
  const char *content;
  guint32 len;
  gint32 id;
  gboolean single_word, lstrip, rstrip;
} AddedPattern;

/* Patterns sorted by first byte, longest first within a byte, so the first
 * hit at a position is the leftmost-longest match aho-corasick would give. */
typedef struct {
  AddedPattern *items;
  guint n;
  guint32 first[257];
} PatternSet;

typedef enum {
  NORM_PREPEND, NORM_REPLACE, NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD,
  NORM_LOWERCASE, NORM_STRIP,
} NormKind;

typedef struct {
  NormKind kind;
  const char *a; /* prepend / replace pattern */
  const char *b; /* replace content */
  gboolean left, right;
} NormOp;

typedef enum {
  DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE,
} DecKind;

typedef struct {
  DecKind kind;
  const char *a, *b;
  gunichar ch;
  guint start, stop;
  gboolean prepend;
} DecOp;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } PrependScheme;

typedef struct {
  gboolean is_sequence;
  gint32 *ids;
  guint n_ids;
} TemplatePiece;

struct _AvqTokenizer {
  GStringChunk *strings;
  gsize n_ids;
  const char **id_str;
  guint32 *id_len;
  guint8 *id_flags;
  IdIndex vocab, added;
  MergeIndex merges;
  PatternSet raw_patterns, norm_patterns;

  NormOp *norm_ops;
  guint n_norm_ops;

  gboolean metaspace;
  const char *meta_rep;
  PrependScheme meta_scheme;
  gboolean meta_split;

  gint32 unk_id;
  gboolean fuse_unk, byte_fallback, ignore_merges;
  /* The word-boundary char (U+2581) when BPE may be cut in front of it
   * (see find_split_char), else NULL. */
  const char *split_char;
  gint32 byte_ids[256];

  TemplatePiece *tmpl;
  guint n_tmpl;

  gboolean has_decoder;
  DecOp *dec_ops;
  guint n_dec_ops;

  gint32 bos_id, eos_id;
};

/* ---------------------------------------------------------------- UTF-8 */

/* Byte length of the well-formed UTF-8 sequence at p, 0 if malformed.
 * Own decoder because GLib's validators treat NUL as an error and HF
 * accepts it (it becomes <0x00>). */
static guint
utf8_len (const guchar *p, gsize avail, gunichar *out)
{
  guchar c = p[0];
  guint n;
  gunichar u, min;
  if (c < 0x80) {
    if (out)
      *out = c;
    return 1;
  } else if (c >= 0xc2 && c <= 0xdf) {
    n = 2; u = c & 0x1f; min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3; u = c & 0x0f; min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4; u = c & 0x07; min = 0x10000;
  } else {
    return 0;
  }
  if (avail < n)
    return 0;
  for (guint i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    u = (u << 6) | (p[i] & 0x3f);
  }
  if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff))
    return 0;
  if (out)
    *out = u;
  return n;
}

static gboolean
utf8_valid (const char *s, gsize len)
{
  gsize i = 0;
  while (i < len) {
    /* Tokenizer files and prompts are mostly ASCII: skip it 8 bytes at once. */
    while (i + 8 <= len) {
      guint64 w;
      memcpy (&w, s + i, 8);
      if (w & 0x8080808080808080ull)
        break;
      i += 8;
    }
    if (i >= len)
      break;
    guint n = utf8_len ((const guchar *) s + i, len - i, NULL);
    if (n == 0)
      return FALSE;
    i += n;
  }
  return TRUE;
}

/* The \w of the regex crate HF uses for single_word boundaries. */
static gboolean
is_word_char (gunichar u)
{
  return u == '_' || g_unichar_isalnum (u) || g_unichar_ismark (u) ||
         g_unichar_type (u) == G_UNICODE_CONNECT_PUNCTUATION;
}

/* Character ending just before `end` (s[0..end) is valid UTF-8). */
static gunichar
utf8_prev_char (const char *s, gsize end, gsize *start)
{
  gsize i = end;
  while (i > 0 && ((guchar) s[i - 1] & 0xc0) == 0x80)
    i--;
  if (i > 0)
    i--;
  gunichar u = 0;
  utf8_len ((const guchar *) s + i, end - i, &u);
  if (start)
    *start = i;
  return u;
}

/* --------------------------------------------------------- hash tables */

static inline guint64
hash_bytes (const char *s, gsize len)
{
  /* FNV-1a with a final mix: tokens are short, so this beats anything
   * block-based, and the mix spreads the low bits used for the mask. */
  guint64 h = 0xcbf29ce484222325ull;
  for (gsize i = 0; i < len; i++) {
    h ^= (guchar) s[i];
    h *= 0x100000001b3ull;
  }
  h ^= h >> 32;
  h *= 0x9e3779b97f4a7c15ull;
  return h ^ (h >> 29);
}

static inline guint64
hash_pair (guint64 key)
{
  key *= 0x9e3779b97f4a7c15ull;
  return key ^ (key >> 31);
}

static guint32
table_size_for (gsize n)
{
  guint32 size = 16;
  while (size < n * 2 + 1)
    size <<= 1;
  return size;
}

static void
id_index_init (IdIndex *index, gsize n)
{
  guint32 size = table_size_for (n);
  index->slots = g_new (gint32, size);
  memset (index->slots, 0xff, sizeof (gint32) * size);
  index->mask = size - 1;
}

static gint32
id_index_lookup (const AvqTokenizer *t, const IdIndex *index, const char *s, gsize len)
{
  if (index->slots == NULL)
    return -1;
  guint32 i = (guint32) hash_bytes (s, len) & index->mask;
  for (;;) {
    gint32 id = index->slots[i];
    if (id < 0)
      return -1;
    if (t->id_len[id] == len && memcmp (t->id_str[id], s, len) == 0)
      return id;
    i = (i + 1) & index->mask;
  }
}

/* Returns the id already holding the string, or -1 after inserting `id`. */
static gint32
id_index_insert (const AvqTokenizer *t, IdIndex *index, gint32 id)
{
  const char *s = t->id_str[id];
  gsize len = t->id_len[id];
  guint32 i = (guint32) hash_bytes (s, len) & index->mask;
  for (;;) {
    gint32 other = index->slots[i];
    if (other < 0) {
      index->slots[i] = id;
      return -1;
    }
    if (t->id_len[other] == len && memcmp (t->id_str[other], s, len) == 0)
      return other;
    i = (i + 1) & index->mask;
  }
}

static void
merge_index_init (MergeIndex *index, gsize n)
{
  guint32 size = table_size_for (n);
  index->keys = g_new (guint64, size);
  index->ranks = g_new (guint32, size);
  index->new_ids = g_new (gint32, size);
  memset (index->ranks, 0xff, sizeof (guint32) * size);
  index->mask = size - 1;
}

static inline gboolean
merge_lookup (const MergeIndex *index, gint32 a, gint32 b, guint32 *rank, gint32 *new_id)
{
  if (index->keys == NULL)
    return FALSE;
  guint64 key = ((guint64) (guint32) a << 32) | (guint32) b;
  guint32 i = (guint32) hash_pair (key) & index->mask;
  for (;;) {
    if (index->ranks[i] == G_MAXUINT32)
      return FALSE;
    if (index->keys[i] == key) {
      *rank = index->ranks[i];
      *new_id = index->new_ids[i];
      return TRUE;
    }
    i = (i + 1) & index->mask;
  }
}

/* A pair listed twice keeps its last rank, as HF's HashMap collect does. */
static void
merge_insert (MergeIndex *index, gint32 a, gint32 b, guint32 rank, gint32 new_id)
{
  guint64 key = ((guint64) (guint32) a << 32) | (guint32) b;
  guint32 i = (guint32) hash_pair (key) & index->mask;
  while (index->ranks[i] != G_MAXUINT32 && index->keys[i] != key)
    i = (i + 1) & index->mask;
  index->keys[i] = key;
  index->ranks[i] = rank;
  index->new_ids[i] = new_id;
}

/* ---------------------------------------------------------- JSON input */

/* Files are parsed with json-glib, whose 1.6 parser has two gaps this pass
 * over the raw bytes closes first: it recurses once per nesting level (a
 * file nesting some 10,000 levels overflows the stack) and it cuts a
 * string short at an escaped NUL ("a\u0000b" reads as "a"). The pass only
 * follows double-quoted strings, so the non-JSON extensions json-glib takes
 * outside them (single-quoted strings, comments) are refused as well:
 * they could hide brackets from the count. */
#define MAX_DEPTH 64

static gboolean
json_prescan (const char *buf, gsize len, const char *path, GError **error)
{
  const char *what = NULL;
  guint depth = 0;
  gsize i;
  for (i = 0; i < len && what == NULL; i++) {
    char c = buf[i];
    if (c == '"') {
      for (i++; i < len && buf[i] != '"'; i++) {
        if (buf[i] != '\\')
          continue;
        if (len - i >= 6 && memcmp (buf + i + 1, "u0000", 5) == 0) {
          what = "\\u0000 in a string is not supported";
          break;
        }
        i++;
      }
    } else if (c == '[' || c == '{') {
      if (++depth > MAX_DEPTH)
        what = "nested too deeply";
    } else if (c == ']' || c == '}') {
      if (depth > 0)
        depth--;
    } else if (c == '\'' || c == '/') {
      what = "unexpected character";
    }
  }
  if (what == NULL)
    return TRUE;
  gsize at = i - 1, line = 1, col = 1;
  for (gsize k = 0; k < at; k++) {
    if (buf[k] == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: not valid JSON: %s at line %"
               G_GSIZE_FORMAT ", column %" G_GSIZE_FORMAT, path, what, line, col);
  return FALSE;
}

/* The whole file, NUL-terminated. */
static char *
read_json_file (const char *path, gsize *len, GError **error)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR)
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISSING, "%s: no such file", path);
    else
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: %s", path, g_strerror (err));
    return NULL;
  }
  if (!S_ISREG (st.st_mode)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: not a regular file", path);
    return NULL;
  }
  if ((guint64) st.st_size > MAX_FILE_BYTES) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: %" G_GUINT64_FORMAT
                 " bytes is too large for a tokenizer file", path, (guint64) st.st_size);
    return NULL;
  }
  char *data = NULL;
  GError *err = NULL;
  if (!g_file_get_contents (path, &data, len, &err)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_IO, "%s: %s", path, err->message);
    g_error_free (err);
    return NULL;
  }
  return data;
}

/* Reads and parses `path`; the returned parser owns the tree, which has a
 * root. json-glib's messages start "<data>:LINE:COL: "; that part is
 * rewritten to name the file. */
static JsonParser *
parse_json_file (const char *path, GError **error)
{
  gsize len;
  g_autofree char *data = read_json_file (path, &len, error);
  if (data == NULL || !json_prescan (data, len, path, error))
    return NULL;
  JsonParser *parser = json_parser_new ();
  g_autoptr (GError) err = NULL;
  if (!json_parser_load_from_data (parser, data, (gssize) len, &err)) {
    const char *msg = err->message;
    guint line, col;
    int skip = 0;
    if (g_str_has_prefix (msg, "<data>:") &&
        sscanf (msg + 7, "%u:%u: %n", &line, &col, &skip) == 2 && skip > 0) {
      const char *what = msg + 7 + skip;
      if (g_str_has_prefix (what, "Parse error: "))
        what += strlen ("Parse error: ");
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT,
                   "%s: not valid JSON: %s at line %u, column %u", path, what, line, col);
    } else {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: not valid JSON: %s", path, msg);
    }
    g_object_unref (parser);
    return NULL;
  }
  if (json_parser_get_root (parser) == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: not valid JSON: no value", path);
    g_object_unref (parser);
    return NULL;
  }
  return parser;
}

typedef enum { K_NULL, K_BOOL, K_INT, K_NUMBER, K_STRING, K_ARRAY, K_OBJECT, K_OTHER } Kind;

/* An absent member counts as null. */
static Kind
kind_of (JsonNode *n)
{
  if (n == NULL)
    return K_NULL;
  switch (JSON_NODE_TYPE (n)) {
  case JSON_NODE_OBJECT:
    return K_OBJECT;
  case JSON_NODE_ARRAY:
    return K_ARRAY;
  case JSON_NODE_NULL:
    return K_NULL;
  case JSON_NODE_VALUE:
    break;
  }
  GType type = json_node_get_value_type (n);
  if (type == G_TYPE_INT64)
    return K_INT;
  if (type == G_TYPE_DOUBLE)
    return K_NUMBER;
  if (type == G_TYPE_STRING)
    return K_STRING;
  if (type == G_TYPE_BOOLEAN)
    return K_BOOL;
  return K_OTHER;
}

/* json-glib keeps the last of duplicate members, as serde maps do. */
static JsonNode *
member (JsonNode *obj, const char *name)
{
  if (kind_of (obj) != K_OBJECT)
    return NULL;
  return json_object_get_member (json_node_get_object (obj), name);
}

/* Children of an array or object (0 for anything else). */
static guint
node_count (JsonNode *n)
{
  switch (kind_of (n)) {
  case K_ARRAY:
    return json_array_get_length (json_node_get_array (n));
  case K_OBJECT:
    return json_object_get_size (json_node_get_object (n));
  default:
    return 0;
  }
}

static JsonNode *
element (JsonNode *array, guint i)
{
  return json_array_get_element (json_node_get_array (array), i);
}

typedef struct {
  const char *file;
  GError **error;
} Ctx;

static gboolean G_GNUC_PRINTF (4, 5)
fail (Ctx *ctx, AvqErrorCode code, const char *field, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (ctx->error, AVQ_ERROR, code, "%s: %s: %s", ctx->file, field, msg);
  return FALSE;
}

static const char *
node_kind (JsonNode *v)
{
  static const char *const names[] = { "null", "a boolean", "an integer", "a number",
                                       "a string", "an array", "an object", "a value" };
  return names[kind_of (v)];
}

static gboolean
node_is_null (JsonNode *v)
{
  return kind_of (v) == K_NULL;
}

static gboolean
node_is (JsonNode *v, Kind kind)
{
  return kind_of (v) == kind;
}

/* Optional boolean: absent or null gives `def`. */
static gboolean
get_bool (Ctx *ctx, JsonNode *obj, const char *name, const char *field,
          gboolean def, gboolean *out)
{
  JsonNode *n = member (obj, name);
  if (node_is_null (n)) {
    *out = def;
    return TRUE;
  }
  if (!node_is (n, K_BOOL))
    return fail (ctx, AVQ_ERROR_FORMAT, field, "expected a boolean, got %s", node_kind (n));
  *out = json_node_get_boolean (n);
  return TRUE;
}

static gboolean
get_string (Ctx *ctx, JsonNode *obj, const char *name, const char *field,
            gboolean required, const char **out)
{
  JsonNode *n = member (obj, name);
  if (node_is_null (n)) {
    *out = NULL;
    if (required)
      return fail (ctx, AVQ_ERROR_MISSING, field, "missing");
    return TRUE;
  }
  if (!node_is (n, K_STRING))
    return fail (ctx, AVQ_ERROR_FORMAT, field, "expected a string, got %s", node_kind (n));
  *out = json_node_get_string (n);
  /* json-glib turns an unpaired surrogate escape followed by more text
   * into bytes that are not UTF-8; everything downstream relies on it. */
  if (!utf8_valid (*out, strlen (*out)))
    return fail (ctx, AVQ_ERROR_FORMAT, field, "not valid UTF-8");
  return TRUE;
}

static gboolean
get_uint (Ctx *ctx, JsonNode *obj, const char *name, const char *field,
          gint64 def, gint64 max, gint64 *out)
{
  JsonNode *n = member (obj, name);
  if (node_is_null (n)) {
    *out = def;
    return TRUE;
  }
  if (!node_is (n, K_INT))
    return fail (ctx, AVQ_ERROR_FORMAT, field, "expected an integer, got %s", node_kind (n));
  /* json-glib reads integers beyond gint64 as -1 or G_MAXINT64, both
   * caught here. */
  gint64 v = json_node_get_int (n);
  if (v < 0 || v > max)
    return fail (ctx, AVQ_ERROR_FORMAT, field, "%" G_GINT64_FORMAT " is out of range", v);
  *out = v;
  return TRUE;
}

/* A one-character string (Metaspace replacement, Strip content). */
static gboolean
get_char (Ctx *ctx, JsonNode *obj, const char *name, const char *field,
          const char **out_str, gunichar *out_ch)
{
  const char *s;
  if (!get_string (ctx, obj, name, field, TRUE, &s))
    return FALSE;
  gsize len = strlen (s);
  guint n = len ? utf8_len ((const guchar *) s, len, out_ch) : 0;
  if (n == 0 || n != len)
    return fail (ctx, AVQ_ERROR_FORMAT, field, "expected a single character");
  if (out_str)
    *out_str = s;
  return TRUE;
}

/* `{"String": s}`; regex patterns are refused rather than misapplied. */
static gboolean
get_pattern (Ctx *ctx, JsonNode *obj, const char *field, const char **out)
{
  g_autofree char *f = g_strdup_printf ("%s.pattern", field);
  JsonNode *n = member (obj, "pattern");
  if (node_is_null (n))
    return fail (ctx, AVQ_ERROR_MISSING, f, "missing");
  if (!node_is (n, K_OBJECT))
    return fail (ctx, AVQ_ERROR_FORMAT, f, "expected an object, got %s", node_kind (n));
  if (member (n, "Regex") != NULL)
    return fail (ctx, AVQ_ERROR_UNSUPPORTED, f, "regex patterns are not supported");
  g_autofree char *fs = g_strdup_printf ("%s.String", f);
  if (!get_string (ctx, n, "String", fs, TRUE, out))
    return FALSE;
  if (**out == '\0')
    return fail (ctx, AVQ_ERROR_FORMAT, fs, "empty pattern");
  return TRUE;
}

static gboolean
get_prepend_scheme (Ctx *ctx, JsonNode *obj, const char *field, PrependScheme *out)
{
  const char *scheme;
  g_autofree char *f = g_strdup_printf ("%s.prepend_scheme", field);
  if (!get_string (ctx, obj, "prepend_scheme", f, FALSE, &scheme))
    return FALSE;
  if (scheme == NULL) {
    /* Files from before prepend_scheme existed say add_prefix_space. */
    gboolean add_prefix;
    g_autofree char *fa = g_strdup_printf ("%s.add_prefix_space", field);
    if (!get_bool (ctx, obj, "add_prefix_space", fa, TRUE, &add_prefix))
      return FALSE;
    *out = add_prefix ? PREPEND_ALWAYS : PREPEND_NEVER;
  } else if (strcmp (scheme, "always") == 0) {
    *out = PREPEND_ALWAYS;
  } else if (strcmp (scheme, "first") == 0) {
    *out = PREPEND_FIRST;
  } else if (strcmp (scheme, "never") == 0) {
    *out = PREPEND_NEVER;
  } else {
    return fail (ctx, AVQ_ERROR_FORMAT, f, "unknown scheme '%s'", scheme);
  }
  return TRUE;
}

static const char *
keep (AvqTokenizer *t, const char *s)
{
  return s ? g_string_chunk_insert (t->strings, s) : NULL;
}

/* ------------------------------------------------------------ loading */

/* First pass over ids: types, range, and the table size they need. */
static gboolean
scan_vocab (Ctx *ctx, JsonNode *vocab, gint64 *max_id)
{
  JsonObjectIter iter;
  const char *key;
  JsonNode *n;
  json_object_iter_init_ordered (&iter, json_node_get_object (vocab));
  while (json_object_iter_next_ordered (&iter, &key, &n)) {
    if (!node_is (n, K_INT))
      return fail (ctx, AVQ_ERROR_FORMAT, "model.vocab",
                   "id of token '%s' is %s, expected an integer", key, node_kind (n));
    gint64 id = json_node_get_int (n);
    if (id < 0 || id > MAX_ID)
      return fail (ctx, AVQ_ERROR_FORMAT, "model.vocab",
                   "id %" G_GINT64_FORMAT " of token '%s' is out of range", id, key);
    if (key[0] == '\0')
      return fail (ctx, AVQ_ERROR_FORMAT, "model.vocab", "token with id %" G_GINT64_FORMAT
                   " is empty", id);
    if (!utf8_valid (key, strlen (key)))
      return fail (ctx, AVQ_ERROR_FORMAT, "model.vocab", "token with id %" G_GINT64_FORMAT
                   " is not valid UTF-8", id);
    *max_id = MAX (*max_id, id);
  }
  return TRUE;
}

/* json-glib keeps one member per key (the last one's value, as serde maps
 * in HF do), so unlike an id a token string cannot repeat here. */
static gboolean
load_vocab (AvqTokenizer *t, Ctx *ctx, JsonNode *vocab)
{
  JsonObjectIter iter;
  const char *key;
  JsonNode *n;
  id_index_init (&t->vocab, node_count (vocab));
  json_object_iter_init_ordered (&iter, json_node_get_object (vocab));
  while (json_object_iter_next_ordered (&iter, &key, &n)) {
    gint32 id = (gint32) json_node_get_int (n);
    if (t->id_flags[id] & FLAG_MODEL)
      return fail (ctx, AVQ_ERROR_FORMAT, "model.vocab", "id %d is used by both '%s' and '%s'",
                   id, t->id_str[id], key);
    t->id_str[id] = g_string_chunk_insert (t->strings, key);
    t->id_len[id] = (guint32) strlen (key);
    t->id_flags[id] |= FLAG_MODEL;
    id_index_insert (t, &t->vocab, id);
  }
  return TRUE;
}

static gboolean
merge_parts (Ctx *ctx, JsonNode *n, guint i, const char **a, gsize *alen, const char **b,
             gsize *blen)
{
  if (node_is (n, K_STRING)) {
    /* Older files write "a b"; tokens never contain a plain space because
     * SentencePiece vocabularies spell it U+2581. */
    const char *s = json_node_get_string (n);
    const char *sp = strchr (s, ' ');
    if (sp != NULL && strchr (sp + 1, ' ') == NULL) {
      *a = s;
      *alen = (gsize) (sp - s);
      *b = sp + 1;
      *blen = strlen (sp + 1);
      return TRUE;
    }
  } else if (node_is (n, K_ARRAY) && node_count (n) == 2 &&
             node_is (element (n, 0), K_STRING) && node_is (element (n, 1), K_STRING)) {
    *a = json_node_get_string (element (n, 0));
    *alen = strlen (*a);
    *b = json_node_get_string (element (n, 1));
    *blen = strlen (*b);
    return TRUE;
  }
  g_autofree char *field = g_strdup_printf ("model.merges[%u]", i);
  return fail (ctx, AVQ_ERROR_FORMAT, field, "expected [\"a\", \"b\"] or \"a b\", got %s",
               node_kind (n));
}

static gboolean
load_merges (AvqTokenizer *t, Ctx *ctx, JsonNode *merges)
{
  guint count = node_count (merges);
  merge_index_init (&t->merges, count);
  GString *joined = g_string_new (NULL);
  gboolean ok = TRUE;
  for (guint i = 0; i < count; i++) {
    JsonNode *n = element (merges, i);
    const char *a = NULL, *b = NULL;
    gsize alen = 0, blen = 0;
    if (!merge_parts (ctx, n, i, &a, &alen, &b, &blen)) {
      ok = FALSE;
      break;
    }
    gint32 ia = id_index_lookup (t, &t->vocab, a, alen);
    gint32 ib = id_index_lookup (t, &t->vocab, b, blen);
    g_string_truncate (joined, 0);
    g_string_append_len (joined, a, (gssize) alen);
    g_string_append_len (joined, b, (gssize) blen);
    gint32 inew = id_index_lookup (t, &t->vocab, joined->str, joined->len);
    if (ia < 0 || ib < 0 || inew < 0) {
      g_autofree char *field = g_strdup_printf ("model.merges[%u]", i);
      g_autofree char *missing = ia < 0 ? g_strndup (a, alen) : ib < 0 ? g_strndup (b, blen)
                                                                       : g_strdup (joined->str);
      ok = fail (ctx, AVQ_ERROR_FORMAT, field, "token '%s' is not in model.vocab", missing);
      break;
    }
    merge_insert (&t->merges, ia, ib, i, inew);
  }
  g_string_free (joined, TRUE);
  return ok;
}

static gint
pattern_cmp (gconstpointer pa, gconstpointer pb)
{
  const AddedPattern *a = pa, *b = pb;
  guchar ca = (guchar) a->content[0], cb = (guchar) b->content[0];
  if (ca != cb)
    return ca < cb ? -1 : 1;
  if (a->len != b->len)
    return a->len > b->len ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

static void
pattern_set_build (PatternSet *set, GArray *patterns)
{
  set->n = patterns->len;
  set->items = (AddedPattern *) g_array_free (patterns, FALSE);
  if (set->n > 0)
    qsort (set->items, set->n, sizeof (AddedPattern), pattern_cmp);
  guint j = 0;
  for (guint b = 0; b <= 256; b++) {
    while (j < set->n && (guchar) set->items[j].content[0] < b)
      j++;
    set->first[b] = j;
  }
}

static void normalize (const AvqTokenizer *t, GString *s);

static gboolean
scan_added (Ctx *ctx, JsonNode *added, gint64 *max_id)
{
  guint count = node_count (added);
  for (guint i = 0; i < count; i++) {
    JsonNode *e = element (added, i);
    g_autofree char *field = g_strdup_printf ("added_tokens[%u]", i);
    if (!node_is (e, K_OBJECT))
      return fail (ctx, AVQ_ERROR_FORMAT, field, "expected an object, got %s", node_kind (e));
    g_autofree char *fid = g_strdup_printf ("%s.id", field);
    g_autofree char *fc = g_strdup_printf ("%s.content", field);
    if (node_is_null (member (e, "id")))
      return fail (ctx, AVQ_ERROR_MISSING, fid, "missing");
    gint64 id;
    const char *content;
    if (!get_uint (ctx, e, "id", fid, 0, MAX_ID, &id) ||
        !get_string (ctx, e, "content", fc, TRUE, &content))
      return FALSE;
    if (content[0] == '\0')
      return fail (ctx, AVQ_ERROR_FORMAT, fc, "empty");
    *max_id = MAX (*max_id, id);
  }
  return TRUE;
}

static gboolean
load_added (AvqTokenizer *t, Ctx *ctx, JsonNode *added)
{
  g_autoptr (GArray) raw = g_array_new (FALSE, FALSE, sizeof (AddedPattern));
  g_autoptr (GArray) norm = g_array_new (FALSE, FALSE, sizeof (AddedPattern));
  guint count = node_count (added);
  id_index_init (&t->added, count);
  for (guint i = 0; i < count; i++) {
    JsonNode *o = element (added, i);
    g_autofree char *field = g_strdup_printf ("added_tokens[%u]", i);
    g_autofree char *f = NULL;
    /* Both were checked by scan_added. */
    gint32 id = (gint32) json_node_get_int (member (o, "id"));
    const char *content = json_node_get_string (member (o, "content"));
    gboolean special, normalized;
    AddedPattern p = { 0 };
#define FLAG(name, def, out)                                           \
    g_free (f);                                                        \
    f = g_strdup_printf ("%s." name, field);                           \
    if (!get_bool (ctx, o, name, f, def, out))                         \
      return FALSE;
    FLAG ("special", FALSE, &special);
    FLAG ("normalized", !special, &normalized);
    FLAG ("single_word", FALSE, &p.single_word);
    FLAG ("lstrip", FALSE, &p.lstrip);
    FLAG ("rstrip", FALSE, &p.rstrip);
#undef FLAG

    gsize len = strlen (content);
    gint32 in_vocab = id_index_lookup (t, &t->vocab, content, len);
    if (in_vocab >= 0 && in_vocab != id)
      return fail (ctx, AVQ_ERROR_FORMAT, field,
                   "'%s' has id %d but model.vocab gives it %d", content, id, in_vocab);
    if ((t->id_flags[id] & FLAG_MODEL) && in_vocab < 0)
      return fail (ctx, AVQ_ERROR_FORMAT, field, "id %d of '%s' belongs to '%s' in model.vocab",
                   id, content, t->id_str[id]);
    if (t->id_flags[id] & FLAG_ADDED)
      return fail (ctx, AVQ_ERROR_FORMAT, field, "id %d is used by two added tokens", id);
    if (in_vocab < 0) {
      t->id_str[id] = g_string_chunk_insert (t->strings, content);
      t->id_len[id] = (guint32) len;
    }
    t->id_flags[id] |= FLAG_ADDED | (special ? FLAG_SPECIAL : 0);
    if (id_index_insert (t, &t->added, id) >= 0)
      return fail (ctx, AVQ_ERROR_FORMAT, field, "'%s' is listed twice", content);

    p.id = id;
    if (normalized) {
      /* HF matches normalized added tokens against normalized text, so the
       * pattern is the token's own normalized form. */
      GString *s = g_string_new (content);
      normalize (t, s);
      p.content = g_string_chunk_insert_len (t->strings, s->str, (gssize) s->len);
      p.len = (guint32) s->len;
      g_string_free (s, TRUE);
      if (p.len > 0)
        g_array_append_val (norm, p);
    } else {
      p.content = t->id_str[id];
      p.len = t->id_len[id];
      g_array_append_val (raw, p);
    }
  }
  pattern_set_build (&t->raw_patterns, g_steal_pointer (&raw));
  pattern_set_build (&t->norm_patterns, g_steal_pointer (&norm));
  return TRUE;
}

static gboolean
load_normalizer (AvqTokenizer *t, Ctx *ctx, JsonNode *node, const char *field, GArray *ops,
                 guint depth)
{
  if (node_is_null (node))
    return TRUE;
  if (!node_is (node, K_OBJECT))
    return fail (ctx, AVQ_ERROR_FORMAT, field, "expected an object, got %s", node_kind (node));
  if (depth > 8)
    return fail (ctx, AVQ_ERROR_FORMAT, field, "nested too deeply");
  const char *type;
  g_autofree char *ft = g_strdup_printf ("%s.type", field);
  if (!get_string (ctx, node, "type", ft, TRUE, &type))
    return FALSE;
  NormOp op = { 0 };
  if (strcmp (type, "Sequence") == 0) {
    g_autofree char *fn = g_strdup_printf ("%s.normalizers", field);
    JsonNode *list = member (node, "normalizers");
    if (!node_is (list, K_ARRAY))
      return fail (ctx, AVQ_ERROR_FORMAT, fn, "expected an array, got %s", node_kind (list));
    guint count = node_count (list);
    for (guint i = 0; i < count; i++) {
      JsonNode *e = element (list, i);
      g_autofree char *fi = g_strdup_printf ("%s[%u]", fn, i);
      if (node_is_null (e))
        return fail (ctx, AVQ_ERROR_FORMAT, fi, "expected an object, got null");
      if (!load_normalizer (t, ctx, e, fi, ops, depth + 1))
        return FALSE;
    }
    return TRUE;
  } else if (strcmp (type, "Prepend") == 0) {
    g_autofree char *f = g_strdup_printf ("%s.prepend", field);
    op.kind = NORM_PREPEND;
    if (!get_string (ctx, node, "prepend", f, TRUE, &op.a))
      return FALSE;
  } else if (strcmp (type, "Replace") == 0) {
    g_autofree char *f = g_strdup_printf ("%s.content", field);
    op.kind = NORM_REPLACE;
    if (!get_pattern (ctx, node, field, &op.a) ||
        !get_string (ctx, node, "content", f, TRUE, &op.b))
      return FALSE;
  } else if (strcmp (type, "NFC") == 0) {
    op.kind = NORM_NFC;
  } else if (strcmp (type, "NFD") == 0) {
    op.kind = NORM_NFD;
  } else if (strcmp (type, "NFKC") == 0) {
    op.kind = NORM_NFKC;
  } else if (strcmp (type, "NFKD") == 0) {
    op.kind = NORM_NFKD;
  } else if (strcmp (type, "Lowercase") == 0) {
    op.kind = NORM_LOWERCASE;
  } else if (strcmp (type, "Strip") == 0) {
    g_autofree char *fl = g_strdup_printf ("%s.strip_left", field);
    g_autofree char *fr = g_strdup_printf ("%s.strip_right", field);
    op.kind = NORM_STRIP;
    if (!get_bool (ctx, node, "strip_left", fl, FALSE, &op.left) ||
        !get_bool (ctx, node, "strip_right", fr, FALSE, &op.right))
      return FALSE;
  } else {
    return fail (ctx, AVQ_ERROR_UNSUPPORTED, ft, "normalizer '%s' is not supported", type);
  }
  op.a = keep (t, op.a);
  op.b = keep (t, op.b);
  g_array_append_val (ops, op);
  return TRUE;
}

static gboolean
load_pre_tokenizer (AvqTokenizer *t, Ctx *ctx, JsonNode *node)
{
  const char *field = "pre_tokenizer";
  if (node_is_null (node))
    return TRUE;
  if (!node_is (node, K_OBJECT))
    return fail (ctx, AVQ_ERROR_FORMAT, field, "expected an object, got %s", node_kind (node));
  const char *type;
  if (!get_string (ctx, node, "type", "pre_tokenizer.type", TRUE, &type))
    return FALSE;
  if (strcmp (type, "Metaspace") != 0)
    return fail (ctx, AVQ_ERROR_UNSUPPORTED, "pre_tokenizer.type",
                 "pre-tokenizer '%s' is not supported", type);
  const char *rep;
  gunichar ch;
  if (!get_char (ctx, node, "replacement", "pre_tokenizer.replacement", &rep, &ch) ||
      !get_prepend_scheme (ctx, node, field, &t->meta_scheme) ||
      !get_bool (ctx, node, "split", "pre_tokenizer.split", TRUE, &t->meta_split))
    return FALSE;
  t->metaspace = TRUE;
  t->meta_rep = keep (t, rep);
  return TRUE;
}

static gboolean
load_decoder (AvqTokenizer *t, Ctx *ctx, JsonNode *node, const char *field, GArray *ops,
              guint depth)
{
  if (!node_is (node, K_OBJECT))
    return fail (ctx, AVQ_ERROR_FORMAT, field, "expected an object, got %s", node_kind (node));
  if (depth > 8)
    return fail (ctx, AVQ_ERROR_FORMAT, field, "nested too deeply");
  const char *type;
  g_autofree char *ft = g_strdup_printf ("%s.type", field);
  if (!get_string (ctx, node, "type", ft, TRUE, &type))
    return FALSE;
  DecOp op = { 0 };
  if (strcmp (type, "Sequence") == 0) {
    g_autofree char *fd = g_strdup_printf ("%s.decoders", field);
    JsonNode *list = member (node, "decoders");
    if (!node_is (list, K_ARRAY))
      return fail (ctx, AVQ_ERROR_FORMAT, fd, "expected an array, got %s", node_kind (list));
    guint count = node_count (list);
    for (guint i = 0; i < count; i++) {
      JsonNode *e = element (list, i);
      g_autofree char *fi = g_strdup_printf ("%s[%u]", fd, i);
      if (!load_decoder (t, ctx, e, fi, ops, depth + 1))
        return FALSE;
    }
    return TRUE;
  } else if (strcmp (type, "Replace") == 0) {
    g_autofree char *f = g_strdup_printf ("%s.content", field);
    op.kind = DEC_REPLACE;
    if (!get_pattern (ctx, node, field, &op.a) ||
        !get_string (ctx, node, "content", f, TRUE, &op.b))
      return FALSE;
  } else if (strcmp (type, "ByteFallback") == 0) {
    op.kind = DEC_BYTE_FALLBACK;
  } else if (strcmp (type, "Fuse") == 0) {
    op.kind = DEC_FUSE;
  } else if (strcmp (type, "Strip") == 0) {
    g_autofree char *fc = g_strdup_printf ("%s.content", field);
    g_autofree char *fs = g_strdup_printf ("%s.start", field);
    g_autofree char *fe = g_strdup_printf ("%s.stop", field);
    gint64 start, stop;
    op.kind = DEC_STRIP;
    if (!get_char (ctx, node, "content", fc, NULL, &op.ch) ||
        !get_uint (ctx, node, "start", fs, 0, G_MAXINT32, &start) ||
        !get_uint (ctx, node, "stop", fe, 0, G_MAXINT32, &stop))
      return FALSE;
    op.start = (guint) start;
    op.stop = (guint) stop;
  } else if (strcmp (type, "Metaspace") == 0) {
    g_autofree char *fr = g_strdup_printf ("%s.replacement", field);
    PrependScheme scheme;
    op.kind = DEC_METASPACE;
    if (!get_char (ctx, node, "replacement", fr, NULL, &op.ch) ||
        !get_prepend_scheme (ctx, node, field, &scheme))
      return FALSE;
    op.prepend = scheme != PREPEND_NEVER;
  } else {
    return fail (ctx, AVQ_ERROR_UNSUPPORTED, ft, "decoder '%s' is not supported", type);
  }
  op.a = keep (t, op.a);
  op.b = keep (t, op.b);
  g_array_append_val (ops, op);
  return TRUE;
}

static gboolean
load_post_processor (AvqTokenizer *t, Ctx *ctx, JsonNode *node)
{
  if (node_is_null (node))
    return TRUE;
  if (!node_is (node, K_OBJECT))
    return fail (ctx, AVQ_ERROR_FORMAT, "post_processor", "expected an object, got %s",
                 node_kind (node));
  const char *type;
  if (!get_string (ctx, node, "type", "post_processor.type", TRUE, &type))
    return FALSE;
  if (strcmp (type, "TemplateProcessing") != 0)
    return fail (ctx, AVQ_ERROR_UNSUPPORTED, "post_processor.type",
                 "post-processor '%s' is not supported", type);
  JsonNode *single = member (node, "single");
  if (!node_is (single, K_ARRAY))
    return fail (ctx, AVQ_ERROR_FORMAT, "post_processor.single", "expected an array, got %s",
                 node_kind (single));
  JsonNode *specials = member (node, "special_tokens");
  if (!node_is_null (specials) && !node_is (specials, K_OBJECT))
    return fail (ctx, AVQ_ERROR_FORMAT, "post_processor.special_tokens",
                 "expected an object, got %s", node_kind (specials));
  guint n_single = node_count (single);
  t->tmpl = g_new0 (TemplatePiece, MAX (n_single, 1));
  for (guint i = 0; i < n_single; i++) {
    JsonNode *e = element (single, i);
    g_autofree char *field = g_strdup_printf ("post_processor.single[%u]", i);
    JsonNode *seq = member (e, "Sequence");
    JsonNode *sp = member (e, "SpecialToken");
    TemplatePiece *piece = &t->tmpl[t->n_tmpl];
    if (node_is (seq, K_OBJECT)) {
      piece->is_sequence = TRUE;
      t->n_tmpl++;
      continue;
    }
    if (!node_is (sp, K_OBJECT))
      return fail (ctx, AVQ_ERROR_FORMAT, field, "expected {\"Sequence\": ...} or "
                   "{\"SpecialToken\": ...}");
    const char *name;
    g_autofree char *fid = g_strdup_printf ("%s.SpecialToken.id", field);
    if (!get_string (ctx, sp, "id", fid, TRUE, &name))
      return FALSE;
    JsonNode *def = member (specials, name);
    g_autofree char *fdef = g_strdup_printf ("post_processor.special_tokens.%s", name);
    if (!node_is (def, K_OBJECT))
      return fail (ctx, AVQ_ERROR_MISSING, fdef, "missing or not an object");
    JsonNode *ids = member (def, "ids");
    g_autofree char *fids = g_strdup_printf ("%s.ids", fdef);
    if (!node_is (ids, K_ARRAY))
      return fail (ctx, AVQ_ERROR_FORMAT, fids, "expected an array, got %s", node_kind (ids));
    piece->n_ids = node_count (ids);
    piece->ids = g_new (gint32, MAX (piece->n_ids, 1));
    t->n_tmpl++;
    for (guint k = 0; k < piece->n_ids; k++) {
      JsonNode *v = element (ids, k);
      if (!node_is (v, K_INT))
        return fail (ctx, AVQ_ERROR_FORMAT, fids, "expected integers, got %s", node_kind (v));
      gint64 id = json_node_get_int (v);
      if (id < 0 || (guint64) id >= t->n_ids || t->id_str[id] == NULL)
        return fail (ctx, AVQ_ERROR_FORMAT, fids, "id %" G_GINT64_FORMAT " is not a known token",
                     id);
      piece->ids[k] = (gint32) id;
    }
  }
  return TRUE;
}

/* `bos_token` in tokenizer_config.json is either "<s>" or {"content": "<s>"}. */
static const char *
config_token (JsonNode *n)
{
  if (node_is (n, K_STRING))
    return json_node_get_string (n);
  JsonNode *c = member (n, "content");
  return node_is (c, K_STRING) ? json_node_get_string (c) : NULL;
}

static gboolean
load_config (AvqTokenizer *t, const char *dir, GError **error)
{
  g_autofree char *path = g_build_filename (dir, "tokenizer_config.json", NULL);
  const char *bos = "<s>", *eos = "</s>";
  g_autoptr (JsonParser) parser = NULL;
  if (g_file_test (path, G_FILE_TEST_EXISTS)) {
    if ((parser = parse_json_file (path, error)) == NULL)
      return FALSE;
    JsonNode *root = json_parser_get_root (parser);
    if (!node_is (root, K_OBJECT)) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: expected a JSON object", path);
      return FALSE;
    }
    /* An explicit null means "no such token"; absent keeps the default. */
    JsonNode *b = member (root, "bos_token"), *e = member (root, "eos_token");
    if (b)
      bos = config_token (b);
    if (e)
      eos = config_token (e);
  }
  t->bos_id = bos ? avq_tokenizer_token_to_id (t, bos) : -1;
  t->eos_id = eos ? avq_tokenizer_token_to_id (t, eos) : -1;
  return TRUE;
}

static gboolean
load_model (AvqTokenizer *t, Ctx *ctx, JsonNode *root)
{
  JsonNode *model = member (root, "model");
  if (node_is_null (model))
    return fail (ctx, AVQ_ERROR_MISSING, "model", "missing");
  if (!node_is (model, K_OBJECT))
    return fail (ctx, AVQ_ERROR_FORMAT, "model", "expected an object, got %s", node_kind (model));
  const char *type, *unk;
  if (!get_string (ctx, model, "type", "model.type", FALSE, &type))
    return FALSE;
  if (type && strcmp (type, "BPE") != 0)
    return fail (ctx, AVQ_ERROR_UNSUPPORTED, "model.type", "model '%s' is not supported", type);

  JsonNode *vocab = member (model, "vocab"), *merges = member (model, "merges");
  if (node_is_null (vocab))
    return fail (ctx, AVQ_ERROR_MISSING, "model.vocab", "missing");
  if (!node_is (vocab, K_OBJECT))
    return fail (ctx, AVQ_ERROR_FORMAT, "model.vocab", "expected an object, got %s",
                 node_kind (vocab));
  if (node_is_null (merges))
    return fail (ctx, AVQ_ERROR_MISSING, "model.merges", "missing");
  if (!node_is (merges, K_ARRAY))
    return fail (ctx, AVQ_ERROR_FORMAT, "model.merges", "expected an array, got %s",
                 node_kind (merges));
  if (node_count (vocab) == 0)
    return fail (ctx, AVQ_ERROR_FORMAT, "model.vocab", "empty");

  JsonNode *dn = member (model, "dropout");
  if (!node_is_null (dn)) {
    if (!node_is (dn, K_NUMBER) && !node_is (dn, K_INT))
      return fail (ctx, AVQ_ERROR_FORMAT, "model.dropout", "expected a number, got %s",
                   node_kind (dn));
    /* Dropout makes encoding random; it is a training-time option. */
    double dropout = node_is (dn, K_INT) ? (double) json_node_get_int (dn)
                                         : json_node_get_double (dn);
    if (dropout > 0.0)
      return fail (ctx, AVQ_ERROR_UNSUPPORTED, "model.dropout", "BPE dropout is not supported");
  }
  const char *affix;
  if (!get_string (ctx, model, "continuing_subword_prefix", "model.continuing_subword_prefix",
                   FALSE, &affix))
    return FALSE;
  if (affix && *affix)
    return fail (ctx, AVQ_ERROR_UNSUPPORTED, "model.continuing_subword_prefix", "not supported");
  if (!get_string (ctx, model, "end_of_word_suffix", "model.end_of_word_suffix", FALSE, &affix))
    return FALSE;
  if (affix && *affix)
    return fail (ctx, AVQ_ERROR_UNSUPPORTED, "model.end_of_word_suffix", "not supported");
  if (!get_string (ctx, model, "unk_token", "model.unk_token", FALSE, &unk) ||
      !get_bool (ctx, model, "fuse_unk", "model.fuse_unk", FALSE, &t->fuse_unk) ||
      !get_bool (ctx, model, "byte_fallback", "model.byte_fallback", FALSE, &t->byte_fallback) ||
      !get_bool (ctx, model, "ignore_merges", "model.ignore_merges", FALSE, &t->ignore_merges))
    return FALSE;

  JsonNode *added = member (root, "added_tokens");
  if (!node_is_null (added) && !node_is (added, K_ARRAY))
    return fail (ctx, AVQ_ERROR_FORMAT, "added_tokens", "expected an array, got %s",
                 node_kind (added));
  if (node_is_null (added))
    added = NULL;

  gint64 max_id = -1;
  if (!scan_vocab (ctx, vocab, &max_id) || (added && !scan_added (ctx, added, &max_id)))
    return FALSE;
  /* Tables are indexed by id; real files number their tokens densely, so a
   * few stray huge ids must not cost hundreds of MB. */
  guint64 entries = (guint64) node_count (vocab) + node_count (added);
  if ((guint64) max_id >= 2 * entries + 1024)
    return fail (ctx, AVQ_ERROR_FORMAT, added ? "model.vocab/added_tokens" : "model.vocab",
                 "id %" G_GINT64_FORMAT " is out of range for %" G_GUINT64_FORMAT " tokens",
                 max_id, entries);
  t->n_ids = (gsize) max_id + 1;
  t->id_str = g_new0 (const char *, t->n_ids);
  t->id_len = g_new0 (guint32, t->n_ids);
  t->id_flags = g_new0 (guint8, t->n_ids);
  if (!load_vocab (t, ctx, vocab) || !load_merges (t, ctx, merges))
    return FALSE;

  t->unk_id = -1;
  if (unk) {
    t->unk_id = id_index_lookup (t, &t->vocab, unk, strlen (unk));
    if (t->unk_id < 0)
      return fail (ctx, AVQ_ERROR_FORMAT, "model.unk_token", "'%s' is not in model.vocab", unk);
  }
  for (guint b = 0; b < 256; b++) {
    char name[8];
    g_snprintf (name, sizeof name, "<0x%02X>", b);
    t->byte_ids[b] = id_index_lookup (t, &t->vocab, name, 6);
  }

  /* The normalizer comes first: normalized added tokens are stored in their
   * normalized form. */
  g_autoptr (GArray) norm_ops = g_array_new (FALSE, FALSE, sizeof (NormOp));
  if (!load_normalizer (t, ctx, member (root, "normalizer"), "normalizer", norm_ops, 0))
    return FALSE;
  t->n_norm_ops = norm_ops->len;
  t->norm_ops = (NormOp *) g_array_free (g_steal_pointer (&norm_ops), FALSE);

  if (added) {
    if (!load_added (t, ctx, added))
      return FALSE;
  } else {
    pattern_set_build (&t->raw_patterns, g_array_new (FALSE, FALSE, sizeof (AddedPattern)));
    pattern_set_build (&t->norm_patterns, g_array_new (FALSE, FALSE, sizeof (AddedPattern)));
  }

  if (!load_pre_tokenizer (t, ctx, member (root, "pre_tokenizer")) ||
      !load_post_processor (t, ctx, member (root, "post_processor")))
    return FALSE;

  JsonNode *dec = member (root, "decoder");
  if (!node_is_null (dec)) {
    g_autoptr (GArray) dec_ops = g_array_new (FALSE, FALSE, sizeof (DecOp));
    if (!load_decoder (t, ctx, dec, "decoder", dec_ops, 0))
      return FALSE;
    t->has_decoder = TRUE;
    t->n_dec_ops = dec_ops->len;
    t->dec_ops = (DecOp *) g_array_free (g_steal_pointer (&dec_ops), FALSE);
  }
  return TRUE;
}

/* The char that spaces become (normalizer Replace(" ", R) or Metaspace),
 * when cutting BPE words in front of it is exact: R must be a vocabulary
 * token itself (so it never falls back to bytes or <unk>), and no token may
 * contain R right after a different char. */
static void
find_split_char (AvqTokenizer *t)
{
  const char *r = NULL;
  for (guint i = 0; i < t->n_norm_ops; i++)
    if (t->norm_ops[i].kind == NORM_REPLACE && strcmp (t->norm_ops[i].a, " ") == 0)
      r = t->norm_ops[i].b;
  if (t->metaspace)
    r = t->meta_rep;
  if (r == NULL || t->ignore_merges)
    return;
  gsize rl = strlen (r);
  gunichar u;
  if (rl == 0 || utf8_len ((const guchar *) r, rl, &u) != rl ||
      id_index_lookup (t, &t->vocab, r, rl) < 0)
    return;
  for (gsize id = 0; id < t->n_ids; id++) {
    const char *tok = t->id_str[id];
    if (tok == NULL || !(t->id_flags[id] & FLAG_MODEL))
      continue;
    gsize len = t->id_len[id];
    for (const char *hit = memmem (tok + 1, len - 1, r, rl); hit != NULL;
         hit = memmem (hit + 1, len - (gsize) (hit + 1 - tok), r, rl)) {
      if ((gsize) (hit - tok) < rl || memcmp (hit - rl, r, rl) != 0)
        return;
    }
  }
  t->split_char = r;
}

AvqTokenizer *
avq_tokenizer_load (const char *path_or_model_dir, GError **error)
{
  g_return_val_if_fail (path_or_model_dir != NULL, NULL);
  g_autofree char *path = NULL;
  if (g_file_test (path_or_model_dir, G_FILE_TEST_IS_DIR))
    path = g_build_filename (path_or_model_dir, "tokenizer.json", NULL);
  else
    path = g_strdup (path_or_model_dir);

  JsonParser *parser = parse_json_file (path, error);
  if (parser == NULL)
    return NULL;
  JsonNode *root = json_parser_get_root (parser);
  if (!node_is (root, K_OBJECT)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT, "%s: top level: expected an object", path);
    g_object_unref (parser);
    return NULL;
  }

  AvqTokenizer *t = g_new0 (AvqTokenizer, 1);
  t->strings = g_string_chunk_new (1 << 16);
  t->bos_id = t->eos_id = t->unk_id = -1;
  Ctx ctx = { path, error };
  gboolean ok = load_model (t, &ctx, root);
  /* Everything kept was copied out of the tree. */
  g_object_unref (parser);
  if (ok)
    find_split_char (t);
  if (ok) {
    g_autofree char *dir = g_path_get_dirname (path);
    ok = load_config (t, dir, error);
  }
  if (!ok) {
    avq_tokenizer_free (t);
    return NULL;
  }
  return t;
}

void
avq_tokenizer_free (AvqTokenizer *t)
{
  if (t == NULL)
    return;
  g_free (t->id_str);
  g_free (t->id_len);
  g_free (t->id_flags);
  g_free (t->vocab.slots);
  g_free (t->added.slots);
  g_free (t->merges.keys);
  g_free (t->merges.ranks);
  g_free (t->merges.new_ids);
  g_free (t->raw_patterns.items);
  g_free (t->norm_patterns.items);
  g_free (t->norm_ops);
  g_free (t->dec_ops);
  for (guint i = 0; i < t->n_tmpl; i++)
    g_free (t->tmpl[i].ids);
  g_free (t->tmpl);
  if (t->strings)
    g_string_chunk_free (t->strings);
  g_free (t);
}

/* ------------------------------------------------------------ encoding */

static void
string_replace (GString *s, const char *pattern, const char *content)
{
  gsize plen = strlen (pattern);
  const char *hit = memmem (s->str, s->len, pattern, plen);
  if (hit == NULL)
    return;
  GString *out = g_string_sized_new (s->len + 16);
  gsize i = 0;
  while (hit != NULL) {
    gsize at = (gsize) (hit - s->str);
    g_string_append_len (out, s->str + i, (gssize) (at - i));
    g_string_append (out, content);
    i = at + plen;
    hit = memmem (s->str + i, s->len - i, pattern, plen);
  }
  g_string_append_len (out, s->str + i, (gssize) (s->len - i));
  g_string_truncate (s, 0);
  g_string_append_len (s, out->str, (gssize) out->len);
  g_string_free (out, TRUE);
}

static void
string_take (GString *s, char *replacement)
{
  if (replacement == NULL)
    return;
  g_string_assign (s, replacement);
  g_free (replacement);
}

static void
normalize (const AvqTokenizer *t, GString *s)
{
  for (guint i = 0; i < t->n_norm_ops; i++) {
    const NormOp *op = &t->norm_ops[i];
    switch (op->kind) {
    case NORM_PREPEND:
      /* HF prepends only to non-empty text: "" stays "" (no lone ▁). */
      if (s->len > 0)
        g_string_prepend (s, op->a);
      break;
    case NORM_REPLACE:
      string_replace (s, op->a, op->b);
      break;
    case NORM_NFC:
      string_take (s, g_utf8_normalize (s->str, (gssize) s->len, G_NORMALIZE_NFC));
      break;
    case NORM_NFD:
      string_take (s, g_utf8_normalize (s->str, (gssize) s->len, G_NORMALIZE_NFD));
      break;
    case NORM_NFKC:
      string_take (s, g_utf8_normalize (s->str, (gssize) s->len, G_NORMALIZE_NFKC));
      break;
    case NORM_NFKD:
      string_take (s, g_utf8_normalize (s->str, (gssize) s->len, G_NORMALIZE_NFKD));
      break;
    case NORM_LOWERCASE:
      string_take (s, g_utf8_strdown (s->str, (gssize) s->len));
      break;
    case NORM_STRIP: {
      gsize start = 0, end = s->len;
      gunichar u;
      if (op->left) {
        guint n;
        while (start < end && (n = utf8_len ((const guchar *) s->str + start, end - start, &u)) &&
               g_unichar_isspace (u))
          start += n;
      }
      if (op->right) {
        while (end > start) {
          gsize cs;
          u = utf8_prev_char (s->str, end, &cs);
          if (!g_unichar_isspace (u))
            break;
          end = cs;
        }
      }
      g_string_truncate (s, end);
      g_string_erase (s, 0, (gssize) start);
      break;
    }
    }
  }
}

/* One split produced by the added-token matcher: either a token id or the
 * byte range [start, end) of plain text. */
typedef struct {
  gint32 id; /* -1 for text */
  gsize start, end;
} Split;

static gsize
leading_space (const char *s, gsize len)
{
  gsize i = 0;
  gunichar u;
  guint n;
  while (i < len && (n = utf8_len ((const guchar *) s + i, len - i, &u)) && g_unichar_isspace (u))
    i += n;
  return i;
}

/* HF AddedVocabulary::find_matches over s[0..len). */
static void
split_added (const PatternSet *set, const char *s, gsize len, GArray *out)
{
  gsize pos = 0, done = 0;
  if (set->n == 0) {
    Split sp = { -1, 0, len };
    g_array_append_val (out, sp);
    return;
  }
  while (pos < len) {
    guchar c = (guchar) s[pos];
    const AddedPattern *hit = NULL;
    for (guint k = set->first[c]; k < set->first[c + 1]; k++) {
      const AddedPattern *p = &set->items[k];
      if (p->len <= len - pos && memcmp (s + pos, p->content, p->len) == 0) {
        hit = p;
        break;
      }
    }
    if (hit == NULL) {
      pos++;
      continue;
    }
    gsize start = pos, stop = pos + hit->len;
    /* Like the aho-corasick iterator HF uses, a rejected match still
     * consumes its bytes. */
    pos = stop;
    if (hit->single_word) {
      gboolean left_ok = start == 0 || !is_word_char (utf8_prev_char (s, start, NULL));
      gunichar next = 0;
      gboolean right_ok = stop == len ||
          (utf8_len ((const guchar *) s + stop, len - stop, &next), !is_word_char (next));
      if (!left_ok || !right_ok)
        continue;
    }
    if (hit->lstrip) {
      gsize ns = start;
      while (ns > done) {
        gsize cs;
        if (!g_unichar_isspace (utf8_prev_char (s, ns, &cs)))
          break;
        ns = cs;
      }
      start = ns;
    }
    if (hit->rstrip) {
      stop += leading_space (s + stop, len - stop);
      pos = stop;
    }
    if (done < start) {
      Split sp = { -1, done, start };
      g_array_append_val (out, sp);
    }
    Split tok = { hit->id, start, stop };
    g_array_append_val (out, tok);
    done = stop;
  }
  if (done < len || len == 0) {
    Split sp = { -1, done, len };
    g_array_append_val (out, sp);
  }
}

typedef struct {
  gint32 id;
  gint32 prev, next;
  guint32 len; /* 0 once merged into its left neighbour */
} Sym;

typedef struct {
  guint32 rank;
  guint32 pos;
  gint32 new_id;
} Cand;

typedef struct {
  Sym *syms;
  gsize n_syms, cap_syms;
  Cand *heap;
  gsize n_heap, cap_heap;
} Scratch;

static inline gboolean
cand_less (const Cand *a, const Cand *b)
{
  /* Lowest rank first; equal ranks (same pair) leftmost first. */
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void
heap_push (Scratch *s, guint32 rank, guint32 pos, gint32 new_id)
{
  if (s->n_heap == s->cap_heap) {
    s->cap_heap = MAX (64, s->cap_heap * 2);
    s->heap = g_renew (Cand, s->heap, s->cap_heap);
  }
  gsize i = s->n_heap++;
  Cand c = { rank, pos, new_id };
  while (i > 0) {
    gsize parent = (i - 1) / 2;
    if (!cand_less (&c, &s->heap[parent]))
      break;
    s->heap[i] = s->heap[parent];
    i = parent;
  }
  s->heap[i] = c;
}

static Cand
heap_pop (Scratch *s)
{
  Cand top = s->heap[0];
  Cand last = s->heap[--s->n_heap];
  gsize i = 0, n = s->n_heap;
  for (;;) {
    gsize l = 2 * i + 1;
    if (l >= n)
      break;
    gsize m = (l + 1 < n && cand_less (&s->heap[l + 1], &s->heap[l])) ? l + 1 : l;
    if (!cand_less (&s->heap[m], &last))
      break;
    s->heap[i] = s->heap[m];
    i = m;
  }
  if (n > 0)
    s->heap[i] = last;
  return top;
}

static void
sym_push (Scratch *s, gint32 id, guint32 len)
{
  if (s->n_syms == s->cap_syms) {
    s->cap_syms = MAX (64, s->cap_syms * 2);
    s->syms = g_renew (Sym, s->syms, s->cap_syms);
  }
  gsize i = s->n_syms++;
  s->syms[i] = (Sym) { id, (gint32) i - 1, -1, len };
  if (i > 0)
    s->syms[i - 1].next = (gint32) i;
}

/* HF BPE::merge_word + Word::merge_all on one pre-tokenized word. */
static void
bpe_chunk (const AvqTokenizer *t, const char *w, gsize len, Scratch *s, GArray *out)
{
  if (len == 0)
    return;
  if (t->ignore_merges) {
    gint32 id = id_index_lookup (t, &t->vocab, w, len);
    if (id >= 0) {
      g_array_append_val (out, id);
      return;
    }
  }
  s->n_syms = 0;
  s->n_heap = 0;
  gint32 unk = -1;
  guint32 unk_len = 0;
  for (gsize i = 0; i < len;) {
    guint clen = utf8_len ((const guchar *) w + i, len - i, NULL);
    if (clen == 0) /* unreachable: input was validated */
      clen = 1;
    gint32 id = id_index_lookup (t, &t->vocab, w + i, clen);
    if (id >= 0) {
      if (unk >= 0) {
        sym_push (s, unk, unk_len);
        unk = -1;
      }
      sym_push (s, id, clen);
    } else {
      gboolean bytes_ok = t->byte_fallback;
      for (guint k = 0; bytes_ok && k < clen; k++)
        bytes_ok = t->byte_ids[(guchar) w[i + k]] >= 0;
      if (bytes_ok) {
        /* HF leaves a pending <unk> pending across byte-fallback chars;
         * kept so the output order matches it. */
        for (guint k = 0; k < clen; k++)
          sym_push (s, t->byte_ids[(guchar) w[i + k]], 1);
      } else if (t->unk_id >= 0) {
        if (unk >= 0 && t->fuse_unk) {
          unk_len += clen;
        } else {
          if (unk >= 0)
            sym_push (s, unk, unk_len);
          unk = t->unk_id;
          unk_len = clen;
        }
      }
    }
    i += clen;
  }
  if (unk >= 0)
    sym_push (s, unk, unk_len);

  Sym *syms = s->syms;
  guint32 rank;
  gint32 new_id;
  for (gsize i = 0; i + 1 < s->n_syms; i++)
    if (merge_lookup (&t->merges, syms[i].id, syms[i + 1].id, &rank, &new_id))
      heap_push (s, rank, (guint32) i, new_id);

  while (s->n_heap > 0) {
    Cand top = heap_pop (s);
    syms = s->syms;
    Sym *cur = &syms[top.pos];
    if (cur->len == 0 || cur->next < 0)
      continue;
    Sym *right = &syms[cur->next];
    /* Entries go stale when a neighbour merged first; re-check the pair. */
    if (!merge_lookup (&t->merges, cur->id, right->id, &rank, &new_id) || new_id != top.new_id)
      continue;
    cur->id = top.new_id;
    cur->len += right->len;
    cur->next = right->next;
    right->len = 0;
    if (cur->next >= 0)
      syms[cur->next].prev = (gint32) top.pos;
    if (cur->prev >= 0 &&
        merge_lookup (&t->merges, syms[cur->prev].id, cur->id, &rank, &new_id))
      heap_push (s, rank, (guint32) cur->prev, new_id);
    syms = s->syms;
    cur = &syms[top.pos];
    if (cur->next >= 0 && merge_lookup (&t->merges, cur->id, syms[cur->next].id, &rank, &new_id))
      heap_push (s, rank, top.pos, new_id);
  }
  for (gsize i = 0; i < s->n_syms; i++)
    if (s->syms[i].len != 0)
      g_array_append_val (out, s->syms[i].id);
}

/* Without a pre-tokenizer the whole normalized text is one BPE word, and
 * its heap of candidate merges grows with the text. Cutting in front of
 * each word-boundary char that follows another char gives the same ids
 * (find_split_char checked that no merge can span such a cut: a merge is
 * only listed when its result is in the vocabulary, and no vocabulary token
 * has the boundary char after a different char) and keeps the work per
 * word small. */
static void
bpe_word (const AvqTokenizer *t, const char *w, gsize len, Scratch *s, GArray *out)
{
  if (t->split_char == NULL) {
    bpe_chunk (t, w, len, s, out);
    return;
  }
  const char *r = t->split_char;
  gsize rl = strlen (r), begin = 0;
  for (gsize i = 1; i + rl <= len; i++) {
    if (memcmp (w + i, r, rl) == 0 && !(i >= rl && memcmp (w + i - rl, r, rl) == 0)) {
      bpe_chunk (t, w + begin, i - begin, s, out);
      begin = i;
    }
  }
  bpe_chunk (t, w + begin, len - begin, s, out);
}

/* Pre-tokenizer + model on one normalized piece. `at_start`: the piece
 * begins the input (Metaspace's prepend_scheme "first"). */
static void
encode_piece (const AvqTokenizer *t, const char *p, gsize len, gboolean at_start, Scratch *s,
              GArray *out)
{
  if (!t->metaspace) {
    bpe_word (t, p, len, s, out);
    return;
  }
  GString *m = g_string_new_len (p, (gssize) len);
  string_replace (m, " ", t->meta_rep);
  gsize rl = strlen (t->meta_rep);
  gboolean starts = m->len >= rl && memcmp (m->str, t->meta_rep, rl) == 0;
  if (m->len > 0 && !starts &&
      (t->meta_scheme == PREPEND_ALWAYS || (t->meta_scheme == PREPEND_FIRST && at_start)))
    g_string_prepend (m, t->meta_rep);
  if (!t->meta_split) {
    bpe_word (t, m->str, m->len, s, out);
  } else {
    /* Split before every replacement char, which stays with the word it
     * precedes ("▁a▁▁b" -> "▁a", "▁", "▁b"). */
    gsize begin = 0;
    for (gsize i = 1; i <= m->len; i++) {
      if (i == m->len || (i + rl <= m->len && memcmp (m->str + i, t->meta_rep, rl) == 0)) {
        bpe_word (t, m->str + begin, i - begin, s, out);
        begin = i;
      }
    }
  }
  g_string_free (m, TRUE);
}

gint32 *
avq_tokenizer_encode (const AvqTokenizer *t, const char *text, gssize length,
                      gboolean add_special, gsize *n_ids, GError **error)
{
  g_return_val_if_fail (t != NULL && n_ids != NULL, NULL);
  *n_ids = 0;
  if (text == NULL)
    text = "";
  gsize len = length < 0 ? strlen (text) : (gsize) length;
  if (!utf8_valid (text, len)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT, "text is not valid UTF-8");
    return NULL;
  }

  GArray *ids = g_array_sized_new (FALSE, FALSE, sizeof (gint32), len / 3 + 8);
  Scratch scratch = { 0 };
  g_autoptr (GArray) splits = g_array_new (FALSE, FALSE, sizeof (Split));
  g_autoptr (GArray) nsplits = g_array_new (FALSE, FALSE, sizeof (Split));
  GString *norm = g_string_new (NULL);

  if (add_special)
    for (guint i = 0; i < t->n_tmpl && !t->tmpl[i].is_sequence; i++)
      g_array_append_vals (ids, t->tmpl[i].ids, t->tmpl[i].n_ids);

  split_added (&t->raw_patterns, text, len, splits);
  for (guint i = 0; i < splits->len; i++) {
    const Split *sp = &g_array_index (splits, Split, i);
    if (sp->id >= 0) {
      g_array_append_val (ids, sp->id);
      continue;
    }
    g_string_truncate (norm, 0);
    g_string_append_len (norm, text + sp->start, (gssize) (sp->end - sp->start));
    normalize (t, norm);
    g_array_set_size (nsplits, 0);
    split_added (&t->norm_patterns, norm->str, norm->len, nsplits);
    for (guint k = 0; k < nsplits->len; k++) {
      const Split *ns = &g_array_index (nsplits, Split, k);
      if (ns->id >= 0)
        g_array_append_val (ids, ns->id);
      else
        encode_piece (t, norm->str + ns->start, ns->end - ns->start,
                      sp->start == 0 && ns->start == 0, &scratch, ids);
    }
  }

  if (add_special) {
    guint i = 0;
    while (i < t->n_tmpl && !t->tmpl[i].is_sequence)
      i++;
    for (i = i + 1; i < t->n_tmpl; i++)
      if (!t->tmpl[i].is_sequence)
        g_array_append_vals (ids, t->tmpl[i].ids, t->tmpl[i].n_ids);
  }

  g_string_free (norm, TRUE);
  g_free (scratch.syms);
  g_free (scratch.heap);
  *n_ids = ids->len;
  return (gint32 *) g_array_free (ids, FALSE);
}

/* ------------------------------------------------------------ decoding */

static int
hex_value (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* "<0xNN>" -> byte, else -1; Rust's u8::from_str_radix, which HF uses,
 * also takes a '+' sign ("<0x+A>"). */
static int
byte_token (const char *tok)
{
  if (strlen (tok) != 6 || strncmp (tok, "<0x", 3) != 0 || tok[5] != '>')
    return -1;
  int lo = hex_value (tok[4]);
  if (lo < 0)
    return -1;
  if (tok[3] == '+')
    return lo;
  int hi = hex_value (tok[3]);
  return hi < 0 ? -1 : hi * 16 + lo;
}

static void
flush_bytes (GPtrArray *out, GByteArray *bytes)
{
  if (bytes->len == 0)
    return;
  if (utf8_valid ((const char *) bytes->data, bytes->len)) {
    g_ptr_array_add (out, g_strndup ((const char *) bytes->data, bytes->len));
  } else {
    for (guint i = 0; i < bytes->len; i++)
      g_ptr_array_add (out, g_strdup ("\xef\xbf\xbd"));
  }
  g_byte_array_set_size (bytes, 0);
}

static GPtrArray *
decode_step (const DecOp *op, GPtrArray *tokens)
{
  GPtrArray *out = g_ptr_array_new_full (tokens->len, g_free);
  switch (op->kind) {
  case DEC_REPLACE:
    for (guint i = 0; i < tokens->len; i++) {
      GString *s = g_string_new (tokens->pdata[i]);
      string_replace (s, op->a, op->b);
      g_ptr_array_add (out, g_string_free (s, FALSE));
    }
    break;
  case DEC_BYTE_FALLBACK: {
    GByteArray *bytes = g_byte_array_new ();
    for (guint i = 0; i < tokens->len; i++) {
      int b = byte_token (tokens->pdata[i]);
      if (b >= 0) {
        guint8 v = (guint8) b;
        g_byte_array_append (bytes, &v, 1);
      } else {
        flush_bytes (out, bytes);
        g_ptr_array_add (out, g_strdup (tokens->pdata[i]));
      }
    }
    flush_bytes (out, bytes);
    g_byte_array_free (bytes, TRUE);
    break;
  }
  case DEC_FUSE: {
    GString *s = g_string_new (NULL);
    for (guint i = 0; i < tokens->len; i++)
      g_string_append (s, tokens->pdata[i]);
    g_ptr_array_add (out, g_string_free (s, FALSE));
    break;
  }
  case DEC_STRIP:
    for (guint i = 0; i < tokens->len; i++) {
      const char *tok = tokens->pdata[i];
      gsize len = strlen (tok), begin = 0, end = len;
      gunichar u;
      guint n;
      for (guint k = 0; k < op->start && begin < end; k++) {
        n = utf8_len ((const guchar *) tok + begin, end - begin, &u);
        if (n == 0 || u != op->ch)
          break;
        begin += n;
      }
      for (guint k = 0; k < op->stop && end > begin; k++) {
        gsize cs;
        if (utf8_prev_char (tok, end, &cs) != op->ch)
          break;
        end = cs;
      }
      g_ptr_array_add (out, g_strndup (tok + begin, end - begin));
    }
    break;
  case DEC_METASPACE:
    for (guint i = 0; i < tokens->len; i++) {
      const char *tok = tokens->pdata[i];
      gsize len = strlen (tok);
      GString *s = g_string_sized_new (len);
      for (gsize k = 0; k < len;) {
        gunichar u = 0;
        guint n = utf8_len ((const guchar *) tok + k, len - k, &u);
        if (n == 0)
          n = 1;
        if (n && u == op->ch) {
          /* HF drops every replacement char of the first token here. */
          if (!(i == 0 && op->prepend))
            g_string_append_c (s, ' ');
        } else {
          g_string_append_len (s, tok + k, n);
        }
        k += n;
      }
      g_ptr_array_add (out, g_string_free (s, FALSE));
    }
    break;
  }
  return out;
}

char *
avq_tokenizer_decode (const AvqTokenizer *t, const gint32 *ids, gsize n_ids,
                      gboolean skip_special)
{
  g_return_val_if_fail (t != NULL, NULL);
  GPtrArray *tokens = g_ptr_array_new_full ((guint) MIN (n_ids, G_MAXUINT), g_free);
  for (gsize i = 0; i < n_ids; i++) {
    gint32 id = ids[i];
    if (id < 0 || (gsize) id >= t->n_ids || t->id_str[id] == NULL)
      continue;
    if (skip_special && (t->id_flags[id] & FLAG_SPECIAL))
      continue;
    g_ptr_array_add (tokens, g_strndup (t->id_str[id], t->id_len[id]));
  }
  if (!t->has_decoder) {
    g_ptr_array_add (tokens, NULL);
    char *joined = g_strjoinv (" ", (char **) tokens->pdata);
    g_ptr_array_free (tokens, TRUE);
    return joined;
  }
  for (guint k = 0; k < t->n_dec_ops; k++) {
    GPtrArray *next = decode_step (&t->dec_ops[k], tokens);
    g_ptr_array_free (tokens, TRUE);
    tokens = next;
  }
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < tokens->len; i++)
    g_string_append (s, tokens->pdata[i]);
  g_ptr_array_free (tokens, TRUE);
  return g_string_free (s, FALSE);
}

/* ---------------------------------------------------------- accessors */

const char *
avq_tokenizer_id_to_token (const AvqTokenizer *t, gint32 id)
{
  g_return_val_if_fail (t != NULL, NULL);
  if (id < 0 || (gsize) id >= t->n_ids)
    return NULL;
  return t->id_str[id];
}

gint32
avq_tokenizer_token_to_id (const AvqTokenizer *t, const char *token)
{
  g_return_val_if_fail (t != NULL && token != NULL, -1);
  gsize len = strlen (token);
  gint32 id = id_index_lookup (t, &t->added, token, len);
  return id >= 0 ? id : id_index_lookup (t, &t->vocab, token, len);
}

gboolean
avq_tokenizer_is_special (const AvqTokenizer *t, gint32 id)
{
  g_return_val_if_fail (t != NULL, FALSE);
  return id >= 0 && (gsize) id < t->n_ids && (t->id_flags[id] & FLAG_SPECIAL);
}

gint32
avq_tokenizer_bos_id (const AvqTokenizer *t)
{
  g_return_val_if_fail (t != NULL, -1);
  return t->bos_id;
}

gint32
avq_tokenizer_eos_id (const AvqTokenizer *t)
{
  g_return_val_if_fail (t != NULL, -1);
  return t->eos_id;
}

gint32
avq_tokenizer_unk_id (const AvqTokenizer *t)
{
  g_return_val_if_fail (t != NULL, -1);
  return t->unk_id;
}

gsize
avq_tokenizer_vocab_size (const AvqTokenizer *t)
{
  g_return_val_if_fail (t != NULL, 0);
  return t->n_ids;
}
