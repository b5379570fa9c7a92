/* Tokenizer: the llava-1.5-hf test vectors (made with HF transformers),
 * round trips, hostile tokenizer.json files and `avq tokenize`. */
#include "avq-error.h"
#include "avq-tokenizer.h"
#include "test-util.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <sys/wait.h>

static AvqTokenizer *shared_tokenizer;

static const AvqTokenizer *
llava_tokenizer (void)
{
  if (shared_tokenizer == NULL) {
    g_autoptr (GError) error = NULL;
    g_autofree char *dir = avq_test_data_path ("llava-1.5-7b-hf");
    shared_tokenizer = avq_tokenizer_load (dir, &error);
    g_assert_no_error (error);
    g_assert_nonnull (shared_tokenizer);
  }
  return shared_tokenizer;
}

static char *
ids_to_string (const gint32 *ids, gsize n)
{
  GString *s = g_string_new ("[");
  for (gsize i = 0; i < n; i++)
    g_string_append_printf (s, "%s%d", i ? ", " : "", ids[i]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

static void
assert_ids (const char *text, const gint32 *got, gsize n_got, const gint32 *want, gsize n_want)
{
  if (n_got == n_want && memcmp (got, want, n_got * sizeof (gint32)) == 0)
    return;
  g_autofree char *g = ids_to_string (got, n_got);
  g_autofree char *w = ids_to_string (want, n_want);
  g_error ("encode(\"%s\"): got %s, want %s", text, g, w);
}

static gint32 *
encode (const AvqTokenizer *tok, const char *text, gboolean add_special, gsize *n)
{
  g_autoptr (GError) error = NULL;
  gint32 *ids = avq_tokenizer_encode (tok, text, -1, add_special, n, &error);
  g_assert_no_error (error);
  g_assert_nonnull (ids);
  return ids;
}

static void
test_basics (void)
{
  const AvqTokenizer *tok = llava_tokenizer ();
  g_assert_cmpuint (avq_tokenizer_vocab_size (tok), ==, 32002);
  g_assert_cmpint (avq_tokenizer_bos_id (tok), ==, 1);
  g_assert_cmpint (avq_tokenizer_eos_id (tok), ==, 2);
  g_assert_cmpint (avq_tokenizer_unk_id (tok), ==, 0);
  g_assert_cmpint (avq_tokenizer_token_to_id (tok, "<image>"), ==, 32000);
  g_assert_cmpint (avq_tokenizer_token_to_id (tok, "<pad>"), ==, 32001);
  g_assert_cmpint (avq_tokenizer_token_to_id (tok, "\xe2\x96\x81the"), ==, 278);
  g_assert_cmpint (avq_tokenizer_token_to_id (tok, "no such token"), ==, -1);
  g_assert_cmpstr (avq_tokenizer_id_to_token (tok, 32000), ==, "<image>");
  g_assert_cmpstr (avq_tokenizer_id_to_token (tok, 13), ==, "<0x0A>");
  g_assert_cmpstr (avq_tokenizer_id_to_token (tok, 1), ==, "<s>");
  g_assert_null (avq_tokenizer_id_to_token (tok, 32002));
  g_assert_null (avq_tokenizer_id_to_token (tok, -1));
  g_assert_true (avq_tokenizer_is_special (tok, 32000));
  g_assert_true (avq_tokenizer_is_special (tok, 1));
  g_assert_false (avq_tokenizer_is_special (tok, 278));

  /* The file itself, not only its directory, can be given. */
  g_autoptr (GError) error = NULL;
  g_autofree char *file = avq_test_data_path ("llava-1.5-7b-hf/tokenizer.json");
  g_autoptr (AvqTokenizer) again = avq_tokenizer_load (file, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (avq_tokenizer_vocab_size (again), ==, 32002);
}

static void
test_vectors (void)
{
  const AvqTokenizer *tok = llava_tokenizer ();
  g_autofree char *path = avq_test_data_path ("tokenizer/llava-1.5-hf-vectors.json");
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  json_parser_load_from_file (parser, path, &error);
  g_assert_no_error (error);
  JsonObject *root = json_node_get_object (json_parser_get_root (parser));
  g_assert_true (json_object_get_boolean_member (root, "add_special_tokens"));
  JsonArray *cases = json_object_get_array_member (root, "cases");
  guint n_cases = json_array_get_length (cases);
  g_assert_cmpuint (n_cases, >=, 26);

  for (guint c = 0; c < n_cases; c++) {
    JsonObject *tc = json_array_get_object_element (cases, c);
    const char *text = json_object_get_string_member (tc, "text");
    const char *decoded = json_object_get_string_member (tc, "decoded");
    JsonArray *want_arr = json_object_get_array_member (tc, "ids");
    gsize n_want = json_array_get_length (want_arr);
    g_autofree gint32 *want = g_new (gint32, n_want + 1);
    for (gsize i = 0; i < n_want; i++)
      want[i] = (gint32) json_array_get_int_element (want_arr, (guint) i);

    gsize n;
    g_autofree gint32 *ids = encode (tok, text, TRUE, &n);
    assert_ids (text, ids, n, want, n_want);

    /* Without specials only the BOS of the template goes. */
    g_assert_cmpint (want[0], ==, 1);
    gsize n_plain;
    g_autofree gint32 *plain = encode (tok, text, FALSE, &n_plain);
    assert_ids (text, plain, n_plain, want + 1, n_want - 1);

    g_autofree char *got = avq_tokenizer_decode (tok, want, n_want, TRUE);
    if (g_strcmp0 (got, decoded) != 0)
      g_error ("decode(ids of \"%s\"): got \"%s\", want \"%s\"", text, got, decoded);
  }
}

static void
test_chat_prompt (void)
{
  const AvqTokenizer *tok = llava_tokenizer ();
  /* tiny-llava/reference.json holds the prompt ids the HF pipeline used for
   * the LLM figures: prefix, one <image> (expanded to 576 later), suffix. */
  JsonObject *prompt = json_object_get_object_member (avq_test_reference_json (),
                                                     "llm.prompt_ids");
  g_assert_nonnull (prompt);
  GArray *want = g_array_new (FALSE, FALSE, sizeof (gint32));
  JsonArray *prefix = json_object_get_array_member (prompt, "prefix");
  JsonArray *suffix = json_object_get_array_member (prompt, "suffix");
  for (guint i = 0; i < json_array_get_length (prefix); i++) {
    gint32 id = (gint32) json_array_get_int_element (prefix, i);
    g_array_append_val (want, id);
  }
  gint32 image = (gint32) json_object_get_int_member (prompt, "image_token_id");
  g_assert_cmpint (image, ==, 32000);
  g_array_append_val (want, image);
  for (guint i = 0; i < json_array_get_length (suffix); i++) {
    gint32 id = (gint32) json_array_get_int_element (suffix, i);
    g_array_append_val (want, id);
  }

  const char *text = "USER: <image>\nWhat is the cat doing? ASSISTANT:";
  gsize n;
  g_autofree gint32 *ids = encode (tok, text, TRUE, &n);
  assert_ids (text, ids, n, (const gint32 *) want->data, want->len);
  g_array_free (want, TRUE);
  g_autofree char *back = avq_tokenizer_decode (tok, ids, n, TRUE);
  g_assert_cmpstr (back, ==, "USER:  \nWhat is the cat doing? ASSISTANT:");
}

/* Deterministic pseudo-random text over ASCII, Latin, CJK, emoji, controls
 * and spaces: decode(encode(s)) must give s back. Not in the alphabet:
 * U+2581, which the decoder turns into a space (as HF does), and added
 * tokens. */
static void
test_round_trip (void)
{
  const AvqTokenizer *tok = llava_tokenizer ();
  static const gunichar extra[] = { ' ', ' ', ' ', '\n', '\t', 0xe9, 0xdf, 0x410, 0x44f,
                                    0x65e5, 0x672c, 0x1f999, 0x1f680, 0x200b, 0xa0, 0x7f, 0x1, 0xfffd, 0x10ffff, 0xe000, '<', '>' };
  GRand *rng = g_rand_new_with_seed (20261128);
  for (guint round = 0; round < 400; round++) {
    GString *s = g_string_new (NULL);
    guint len = g_rand_int_range (rng, 0, 60);
    for (guint i = 0; i < len; i++) {
      if (g_rand_boolean (rng))
        g_string_append_c (s, (char) g_rand_int_range (rng, 'a', 'z' + 1));
      else
        g_string_append_unichar (s, extra[g_rand_int_range (rng, 0, G_N_ELEMENTS (extra))]);
    }
    gsize n;
    g_autofree gint32 *ids = encode (tok, s->str, TRUE, &n);
    g_assert_cmpuint (n, >=, 1);
    for (gsize i = 1; i < n; i++) {
      g_assert_cmpint (ids[i], >=, 3);
      g_assert_cmpint (ids[i], <, 32000);
    }
    g_autofree char *back = avq_tokenizer_decode (tok, ids, n, TRUE);
    if (strcmp (back, s->str) != 0)
      g_error ("round trip of \"%s\" gave \"%s\"", s->str, back);
    g_string_free (s, TRUE);
  }
  g_rand_free (rng);

  /* An embedded NUL is text like any other (byte fallback <0x00>). */
  gsize n;
  g_autoptr (GError) error = NULL;
  g_autofree gint32 *ids = avq_tokenizer_encode (tok, "a\0b", 3, FALSE, &n, &error);
  g_assert_no_error (error);
  gboolean has_nul = FALSE;
  for (gsize i = 0; i < n; i++)
    has_nul |= ids[i] == 3;
  g_assert_true (has_nul);
}

static void
test_decode_edges (void)
{
  const AvqTokenizer *tok = llava_tokenizer ();
  /* Unknown ids are dropped, as in HF. */
  const gint32 unknown[] = { -5, 15043, 999999, 3186, 32002 };
  g_autofree char *a = avq_tokenizer_decode (tok, unknown, G_N_ELEMENTS (unknown), TRUE);
  g_assert_cmpstr (a, ==, "Hello world");
  /* Specials stay when not skipped. */
  const gint32 with_special[] = { 1, 15043, 32000, 2 };
  g_autofree char *b = avq_tokenizer_decode (tok, with_special, 4, FALSE);
  g_assert_cmpstr (b, ==, "<s> Hello<image></s>");
  /* A broken UTF-8 byte run becomes one U+FFFD per byte. */
  const gint32 broken[] = { 243, 162, 15043 };
  g_autofree char *c = avq_tokenizer_decode (tok, broken, 3, TRUE);
  g_assert_cmpstr (c, ==, "\xef\xbf\xbd\xef\xbf\xbd Hello");
  g_autofree char *d = avq_tokenizer_decode (tok, NULL, 0, TRUE);
  g_assert_cmpstr (d, ==, "");

  /* Invalid UTF-8 input is refused, not guessed at. */
  g_autoptr (GError) error = NULL;
  gsize n = 99;
  gint32 *ids = avq_tokenizer_encode (tok, "bad \xff byte", -1, TRUE, &n, &error);
  g_assert_null (ids);
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_cmpuint (n, ==, 0);
}

/* ------------------------------------------------ small synthetic files */

static char *tmp_dir;

static char *
write_tokenizer (const char *name, const char *json)
{
  g_autofree char *dir = g_build_filename (tmp_dir, name, NULL);
  g_mkdir_with_parents (dir, 0700);
  char *path = g_build_filename (dir, "tokenizer.json", NULL);
  g_autoptr (GError) error = NULL;
  g_file_set_contents (path, json, -1, &error);
  g_assert_no_error (error);
  return path;
}

/* A tiny but complete SentencePiece-style BPE with byte fallback. */
#define TINY_VOCAB                                                               \
  "{\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"\xe2\x96\x81\": 3, \"a\": 4, \"b\": 5,"   \
  " \"ab\": 6, \"\xe2\x96\x81" "ab\": 7, \"<0x41>\": 8, \"<0xC3>\": 9, \"<0xA9>\": 10}"
#define TINY_MERGES "[[\"a\", \"b\"], [\"\xe2\x96\x81\", \"ab\"]]"
#define TINY_NORMALIZER                                                          \
  "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": "  \
  "\"\xe2\x96\x81\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "     \
  "\"content\": \"\xe2\x96\x81\"}]}"

static char *
tiny_json (const char *model_extra, const char *added)
{
  return g_strdup_printf (
      "{\"added_tokens\": %s, \"normalizer\": " TINY_NORMALIZER ", \"pre_tokenizer\": null,"
      " \"post_processor\": null, \"decoder\": null,"
      " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": " TINY_VOCAB ","
      " \"merges\": " TINY_MERGES "%s}}",
      added, model_extra);
}

static void
expect_ids (const AvqTokenizer *tok, const char *text, const gint32 *want, gsize n_want)
{
  gsize n;
  g_autofree gint32 *ids = encode (tok, text, TRUE, &n);
  assert_ids (text, ids, n, want, n_want);
}

static void
test_tiny_models (void)
{
  g_autoptr (GError) error = NULL;
  /* fuse_unk joins a run of unknown characters into one <unk>. */
  g_autofree char *j1 = tiny_json (", \"fuse_unk\": true", "[]");
  g_autofree char *p1 = write_tokenizer ("fuse", j1);
  g_autoptr (AvqTokenizer) fuse = avq_tokenizer_load (p1, &error);
  g_assert_no_error (error);
  const gint32 w1[] = { 7, 0, 4 };
  expect_ids (fuse, "abxyza", w1, 3);
  g_assert_cmpint (avq_tokenizer_bos_id (fuse), ==, 1);

  g_autofree char *j2 = tiny_json (", \"fuse_unk\": false", "[]");
  g_autofree char *p2 = write_tokenizer ("nofuse", j2);
  g_autoptr (AvqTokenizer) nofuse = avq_tokenizer_load (p2, &error);
  g_assert_no_error (error);
  const gint32 w2[] = { 7, 0, 0, 0, 4 };
  expect_ids (nofuse, "abxyza", w2, 5);

  /* Byte fallback is taken only when every byte of the char has a token. */
  g_autofree char *j3 = tiny_json (", \"byte_fallback\": true, \"fuse_unk\": true", "[]");
  g_autofree char *p3 = write_tokenizer ("bytes", j3);
  g_autoptr (AvqTokenizer) bytes = avq_tokenizer_load (p3, &error);
  g_assert_no_error (error);
  const gint32 w3[] = { 3, 8, 9, 10, 0, 5 };
  expect_ids (bytes, "A\xc3\xa9" "xyb", w3, 6);

  /* Added-token flags: rstrip eats the spaces after, lstrip those before,
   * single_word refuses matches inside words. */
  g_autofree char *j4 = tiny_json (
      "", "[{\"id\": 11, \"content\": \"[R]\", \"rstrip\": true, \"normalized\": false,"
          " \"special\": true}, {\"id\": 12, \"content\": \"[L]\", \"lstrip\": true,"
          " \"normalized\": false, \"special\": false}, {\"id\": 13, \"content\": \"[W]\","
          " \"single_word\": true, \"normalized\": false}]");
  g_autofree char *p4 = write_tokenizer ("flags", j4);
  g_autoptr (AvqTokenizer) flags = avq_tokenizer_load (p4, &error);
  g_assert_no_error (error);
  const gint32 w4[] = { 7, 11, 7, 12, 3, 4 };
  expect_ids (flags, "ab[R]   ab  [L]a", w4, 6);
  const gint32 w5[] = { 7, 3, 13, 3, 3, 5 };
  expect_ids (flags, "ab [W] b", w5, 6);
  /* Inside a word "[W]" is plain text: '[' 'W' ']' are each <unk>. */
  const gint32 w6[] = { 7, 0, 0, 0, 5 };
  expect_ids (flags, "ab[W]b", w6, 5);
  /* Without a decoder HF joins the tokens with spaces. */
  g_autofree char *d4 = avq_tokenizer_decode (flags, w4, 6, TRUE);
  g_assert_cmpstr (d4, ==, "\xe2\x96\x81" "ab \xe2\x96\x81" "ab [L] \xe2\x96\x81 a");

  /* Metaspace pre-tokenizer (the newer Llama layout) with split words. */
  g_autofree char *j5 = g_strdup_printf (
      "{\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2,"
      " \"content\": \"</s>\", \"special\": true}], \"normalizer\": null,"
      " \"pre_tokenizer\": {\"type\": \"Metaspace\","
      " \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"first\", \"split\": true},"
      " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\":"
      " {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}},"
      " {\"SpecialToken\": {\"id\": \"</s>\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\":"
      " {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}, \"</s>\": {\"id\": \"</s>\","
      " \"ids\": [2], \"tokens\": [\"</s>\"]}}},"
      " \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\","
      " \"prepend_scheme\": \"first\", \"split\": true},"
      " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": " TINY_VOCAB ","
      " \"merges\": " TINY_MERGES "}}");
  g_autofree char *p5 = write_tokenizer ("metaspace", j5);
  g_autoptr (AvqTokenizer) meta = avq_tokenizer_load (p5, &error);
  g_assert_no_error (error);
  const gint32 w7[] = { 1, 7, 3, 7, 2 };
  expect_ids (meta, "ab  ab", w7, 5);
  g_autofree char *d7 = avq_tokenizer_decode (meta, w7, 5, TRUE);
  g_assert_cmpstr (d7, ==, "ab  ab");
  /* Kept specials take the first-token role, so the ▁ after <s> is a space. */
  g_autofree char *d8 = avq_tokenizer_decode (meta, w7, 5, FALSE);
  g_assert_cmpstr (d8, ==, "<s> ab  ab</s>");
  /* Added special tokens in the text are matched before the pre-tokenizer;
   * with prepend_scheme "first" only the piece at offset 0 gets a ▁. */
  const gint32 w9[] = { 1, 7, 2, 6, 2 };
  expect_ids (meta, "ab</s>ab", w9, 5);
}

typedef struct {
  const char *name;
  const char *json;
  AvqErrorCode code;
  const char *field; /* must appear in the message */
} BadCase;

static void
test_malformed (void)
{
  static const BadCase cases[] = {
    { "empty", "", AVQ_ERROR_FORMAT, "not valid JSON" },
    { "garbage", "{\"model\": [1, 2", AVQ_ERROR_FORMAT, "not valid JSON" },
    { "array", "[1, 2, 3]", AVQ_ERROR_FORMAT, "top level" },
    { "no-model", "{\"added_tokens\": []}", AVQ_ERROR_MISSING, "model" },
    { "model-string", "{\"model\": \"BPE\"}", AVQ_ERROR_FORMAT, "model" },
    { "unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", AVQ_ERROR_UNSUPPORTED,
      "model.type" },
    { "no-vocab", "{\"model\": {\"type\": \"BPE\", \"merges\": []}}", AVQ_ERROR_MISSING,
      "model.vocab" },
    { "no-merges", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", AVQ_ERROR_MISSING,
      "model.merges" },
    { "vocab-array", "{\"model\": {\"vocab\": [\"a\"], \"merges\": []}}", AVQ_ERROR_FORMAT,
      "model.vocab" },
    { "vocab-empty", "{\"model\": {\"vocab\": {}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "model.vocab" },
    { "merges-object", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": {}}}", AVQ_ERROR_FORMAT,
      "model.merges" },
    { "id-string", "{\"model\": {\"vocab\": {\"a\": \"0\"}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "model.vocab" },
    { "id-float", "{\"model\": {\"vocab\": {\"a\": 0.5}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "model.vocab" },
    { "id-negative", "{\"model\": {\"vocab\": {\"a\": -1}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "model.vocab" },
    { "id-huge", "{\"model\": {\"vocab\": {\"a\": 4000000000}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "model.vocab" },
    { "id-sparse", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 9000000}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "model.vocab" },
    { "nul-escape", "{\"model\": {\"vocab\": {\"a\\u0000b\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "not valid JSON" },
    { "lone-surrogate", "{\"model\": {\"vocab\": {\"\\ud800\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "not valid JSON" },
    /* json-glib makes non-UTF-8 bytes of this one instead of refusing it. */
    { "lone-surrogate-text", "{\"model\": {\"vocab\": {\"\\ud800x\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "model.vocab" },
    { "not-utf8", "{\"model\": {\"vocab\": {\"\xff\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "not valid JSON" },
    { "trailing", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}} x",
      AVQ_ERROR_FORMAT, "not valid JSON" },
    { "trailing-comma", "{\"model\": {\"vocab\": {\"a\": 0,}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "not valid JSON" },
    /* json-glib reads "01" as 1, so a number it refuses stands in. */
    { "bad-number", "{\"model\": {\"vocab\": {\"a\": 1e}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "not valid JSON" },
    { "id-duplicate", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "model.vocab" },
    { "merge-unknown", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", \"b\"]]}}",
      AVQ_ERROR_FORMAT, "model.merges[0]" },
    { "merge-shape", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}",
      AVQ_ERROR_FORMAT, "model.merges[0]" },
    { "merge-string", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}",
      AVQ_ERROR_FORMAT, "model.merges[0]" },
    { "merge-number", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [7]}}", AVQ_ERROR_FORMAT,
      "model.merges[0]" },
    { "unk-missing", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": \"<u>\"}}",
      AVQ_ERROR_FORMAT, "model.unk_token" },
    { "unk-type", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": 3}}",
      AVQ_ERROR_FORMAT, "model.unk_token" },
    { "fuse-type", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [], \"fuse_unk\": \"yes\"}}",
      AVQ_ERROR_FORMAT, "model.fuse_unk" },
    { "dropout", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.1}}",
      AVQ_ERROR_UNSUPPORTED, "model.dropout" },
    { "added-type", "{\"added_tokens\": {}, \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "added_tokens" },
    { "added-entry", "{\"added_tokens\": [5], \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "added_tokens[0]" },
    { "added-no-id", "{\"added_tokens\": [{\"content\": \"<x>\"}], \"model\": {\"vocab\":"
      " {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_MISSING, "added_tokens[0].id" },
    { "added-id-range", "{\"added_tokens\": [{\"id\": -3, \"content\": \"<x>\"}], \"model\":"
      " {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT, "added_tokens[0].id" },
    { "added-empty", "{\"added_tokens\": [{\"id\": 1, \"content\": \"\"}], \"model\":"
      " {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT, "added_tokens[0].content" },
    { "added-clash", "{\"added_tokens\": [{\"id\": 0, \"content\": \"<x>\"}], \"model\":"
      " {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT, "added_tokens[0]" },
    { "added-moved", "{\"added_tokens\": [{\"id\": 1, \"content\": \"a\"}], \"model\":"
      " {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT, "added_tokens[0]" },
    { "added-twice", "{\"added_tokens\": [{\"id\": 1, \"content\": \"<x>\"}, {\"id\": 1,"
      " \"content\": \"<y>\"}], \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "added_tokens[1]" },
    { "added-flag", "{\"added_tokens\": [{\"id\": 1, \"content\": \"<x>\", \"lstrip\": 1}],"
      " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "added_tokens[0].lstrip" },
    { "normalizer-type", "{\"normalizer\": {\"type\": \"Precompiled\"}, \"model\": {\"vocab\":"
      " {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_UNSUPPORTED, "normalizer.type" },
    { "normalizer-list", "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": 3},"
      " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "normalizer.normalizers" },
    { "replace-regex", "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"},"
      " \"content\": \"x\"}, \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}",
      AVQ_ERROR_UNSUPPORTED, "normalizer.pattern" },
    { "replace-empty", "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"\"},"
      " \"content\": \"x\"}, \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "normalizer.pattern.String" },
    { "prepend-missing", "{\"normalizer\": {\"type\": \"Prepend\"}, \"model\": {\"vocab\":"
      " {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_MISSING, "normalizer.prepend" },
    { "pretok-type", "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"vocab\":"
      " {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_UNSUPPORTED, "pre_tokenizer.type" },
    { "metaspace-rep", "{\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"ab\"},"
      " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "pre_tokenizer.replacement" },
    { "post-type", "{\"post_processor\": {\"type\": \"BertProcessing\"}, \"model\": {\"vocab\":"
      " {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_UNSUPPORTED, "post_processor.type" },
    { "post-special", "{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\":"
      " [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}], \"special_tokens\": {}},"
      " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_MISSING,
      "post_processor.special_tokens.<s>" },
    { "post-ids", "{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\":"
      " [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\":"
      " {\"ids\": [77]}}}, \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}",
      AVQ_ERROR_FORMAT, "post_processor.special_tokens.<s>.ids" },
    { "post-single", "{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": 1},"
      " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "post_processor.single" },
    { "decoder-type", "{\"decoder\": {\"type\": \"WordPiece\"}, \"model\": {\"vocab\":"
      " {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_UNSUPPORTED, "decoder.type" },
    { "decoder-strip", "{\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\":"
      " \"Strip\", \"content\": \" \", \"start\": -1, \"stop\": 0}]}, \"model\": {\"vocab\":"
      " {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT, "decoder.decoders[0].start" },
    { "decoder-entry", "{\"decoder\": {\"type\": \"Sequence\", \"decoders\": [null]},"
      " \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}", AVQ_ERROR_FORMAT,
      "decoder.decoders[0]" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *path = write_tokenizer (cases[i].name, cases[i].json);
    g_autoptr (GError) error = NULL;
    AvqTokenizer *tok = avq_tokenizer_load (path, &error);
    if (tok != NULL)
      g_error ("case %s: loaded a malformed file", cases[i].name);
    g_assert_nonnull (error);
    if (!g_error_matches (error, AVQ_ERROR, cases[i].code) ||
        strstr (error->message, path) == NULL || strstr (error->message, cases[i].field) == NULL)
      g_error ("case %s: unexpected error (code %d, want %d): %s", cases[i].name, error->code,
               cases[i].code, error->message);
  }

  /* Nesting far deeper than any tokenizer.json must not exhaust the stack,
   * also when a comment or a single-quoted string (which json-glib takes)
   * holds a '"' that could hide the brackets from a depth count. */
  static const char *const deep_prefix[] = { "", "/* \" */ ", "['\"', " };
  for (guint d = 0; d < G_N_ELEMENTS (deep_prefix) * 2; d++) {
    GString *deep = g_string_new ("{\"model\": ");
    g_string_append (deep, deep_prefix[d / 2]);
    for (guint k = 0; k < 200000; k++)
      g_string_append (deep, d % 2 ? "{\"a\": " : "[");
    g_autofree char *path = write_tokenizer ("deep", deep->str);
    g_string_free (deep, TRUE);
    g_autoptr (GError) error = NULL;
    g_assert_null (avq_tokenizer_load (path, &error));
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  }

  /* A truncated copy of the real file, at many cut points. */
  g_autofree char *real_path = avq_test_data_path ("llava-1.5-7b-hf/tokenizer.json");
  g_autofree char *real = NULL;
  gsize real_len;
  g_assert_true (g_file_get_contents (real_path, &real, &real_len, NULL));
  for (guint k = 1; k < 12; k++) {
    gsize cut = real_len * k / 12;
    g_autofree char *name = g_strdup_printf ("cut%u", k);
    g_autofree char *trunc = g_strndup (real, cut);
    g_autofree char *path = write_tokenizer (name, trunc);
    g_autoptr (GError) error = NULL;
    g_assert_null (avq_tokenizer_load (path, &error));
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_FORMAT);
  }

  /* A broken tokenizer_config.json beside a good tokenizer.json. */
  g_autofree char *good = tiny_json ("", "[]");
  g_autofree char *gpath = write_tokenizer ("badconfig", good);
  g_autofree char *gdir = g_path_get_dirname (gpath);
  g_autofree char *cfg = g_build_filename (gdir, "tokenizer_config.json", NULL);
  g_assert_true (g_file_set_contents (cfg, "{\"bos_token\": ", -1, NULL));
  g_autoptr (GError) cerr = NULL;
  g_assert_null (avq_tokenizer_load (gdir, &cerr));
  g_assert_error (cerr, AVQ_ERROR, AVQ_ERROR_FORMAT);
  g_assert_nonnull (strstr (cerr->message, "tokenizer_config.json"));
}

/* Random damage to a small valid file: loading must fail cleanly or give a
 * tokenizer that encodes and decodes without crashing. */
static void
test_mutations (void)
{
  g_autofree char *good = g_strdup_printf (
      "{\"added_tokens\": [{\"id\": 11, \"content\": \"<x>\", \"special\": true,"
      " \"normalized\": false, \"lstrip\": true, \"rstrip\": true}, {\"id\": 12,"
      " \"content\": \"y\", \"single_word\": true}], \"normalizer\": " TINY_NORMALIZER ","
      " \"pre_tokenizer\": null, \"post_processor\": {\"type\": \"TemplateProcessing\","
      " \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\":"
      " {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\","
      " \"ids\": [1], \"tokens\": [\"<s>\"]}}}, \"decoder\": {\"type\": \"Sequence\","
      " \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\xe2\x96\x81\"},"
      " \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
      " {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
      " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
      " \"byte_fallback\": true, \"vocab\": " TINY_VOCAB ", \"merges\": " TINY_MERGES "}}");
  g_autofree char *path = write_tokenizer ("mutant", good);
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqTokenizer) tok = avq_tokenizer_load (path, &error);
    g_assert_no_error (error);
    /* "y" is a normalized added token: it is matched as its normalized
     * form "▁y" in the normalized text, so the ▁ goes with it. */
    const gint32 want[] = { 1, 7, 11, 12, 3, 4, 8, 0 };
    expect_ids (tok, "ab <x>  y a" "A?", want, G_N_ELEMENTS (want));
  }
  static const char pool[] = "{}[]\":,0123456789-+.eE \\/ntfu\xe2\x96\x81\xff";
  GRand *rng = g_rand_new_with_seed (42);
  gsize good_len = strlen (good);
  guint loaded = 0;
  for (guint round = 0; round < 3000; round++) {
    GString *m = g_string_new_len (good, (gssize) good_len);
    guint edits = g_rand_int_range (rng, 1, 4);
    for (guint e = 0; e < edits; e++) {
      if (m->len == 0)
        break;
      gsize at = (gsize) g_rand_int_range (rng, 0, (gint32) m->len);
      char c = pool[g_rand_int_range (rng, 0, sizeof pool - 1)];
      switch (g_rand_int_range (rng, 0, 4)) {
      case 0: m->str[at] = c; break;
      case 1: g_string_insert_c (m, (gssize) at, c); break;
      case 2: {
        gsize cut = (gsize) g_rand_int_range (rng, 1, 8);
        g_string_erase (m, (gssize) at, (gssize) MIN (m->len - at, cut));
        break;
      }
      default: g_string_truncate (m, at); break;
      }
    }
    g_assert_true (g_file_set_contents (path, m->str, (gssize) m->len, NULL));
    g_string_free (m, TRUE);
    g_autoptr (GError) error = NULL;
    g_autoptr (AvqTokenizer) tok = avq_tokenizer_load (path, &error);
    if (tok == NULL) {
      g_assert_nonnull (error);
      g_assert_true (error->domain == AVQ_ERROR);
      continue;
    }
    loaded++;
    gsize n;
    g_autofree gint32 *ids = avq_tokenizer_encode (tok, "ab <x> \xc3\xa9y  ba", -1, TRUE, &n, NULL);
    g_assert_nonnull (ids);
    g_autofree char *text = avq_tokenizer_decode (tok, ids, n, FALSE);
    g_assert_nonnull (text);
  }
  g_rand_free (rng);
  g_test_message ("%u of 3000 mutants still loaded", loaded);
}

static void
test_missing (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = g_build_filename (tmp_dir, "nowhere", "tokenizer.json", NULL);
  g_assert_null (avq_tokenizer_load (path, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISSING);
  g_assert_nonnull (strstr (error->message, path));

  /* A directory without tokenizer.json names the file it looked for. */
  g_autoptr (GError) error2 = NULL;
  g_autofree char *expect = g_build_filename (tmp_dir, "tokenizer.json", NULL);
  g_assert_null (avq_tokenizer_load (tmp_dir, &error2));
  g_assert_error (error2, AVQ_ERROR, AVQ_ERROR_MISSING);
  g_assert_nonnull (strstr (error2->message, expect));
}

/* ----------------------------------------------------------- the CLI */

static int
run_cli (char **argv_tail, char **out, char **err)
{
  const char *cli = g_getenv ("AVQ_CLI");
  if (cli == NULL)
    return -1;
  GPtrArray *argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (char *) cli);
  for (char **p = argv_tail; *p; p++)
    g_ptr_array_add (argv, *p);
  g_ptr_array_add (argv, NULL);
  int status = 0;
  g_autoptr (GError) error = NULL;
  g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, out, err,
                &status, &error);
  g_assert_no_error (error);
  g_ptr_array_free (argv, TRUE);
  return WIFEXITED (status) ? WEXITSTATUS (status) : 128;
}

static const char *
last_line (char *out)
{
  g_strchomp (out);
  const char *nl = strrchr (out, '\n');
  return nl ? nl + 1 : out;
}

static void
test_cli (void)
{
  if (g_getenv ("AVQ_CLI") == NULL) {
    g_test_skip ("AVQ_CLI is not set (run through meson test)");
    return;
  }
  g_autofree char *dir = avq_test_data_path ("llava-1.5-7b-hf");
  {
    char *args[] = { "tokenize", "--model", dir, "USER: <image>\nWhat is shown? ASSISTANT:",
                     NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 0);
    g_assert_cmpstr (last_line (out), ==,
                     "1 3148 1001 29901 29871 32000 29871 13 5618 338 4318 29973 319 1799 9047 "
                     "13566 29901");
  }
  {
    /* Non-ASCII text must get through whatever the locale is. */
    char *args[] = { "tokenize", "--model", dir, "F\xc3\xbc\xc3\x9f" "e \xc3\xbc" "ber Stra\xc3\x9f" "e",
                     NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 0);
    g_assert_cmpstr (last_line (out), ==, "1 383 29993 5831 2939 22667");
  }
  {
    char *args[] = { "tokenize", "--model", dir, "--no-bos", "--", "-5 \xff", NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 1);
    g_assert_nonnull (strstr (err, "UTF-8"));
  }
  {
    char *args[] = { "tokenize", "--model", dir, "--no-bos", "--", "-5", NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 0);
    g_assert_cmpstr (last_line (out), ==, "448 29945");
  }
  {
    char *args[] = { "tokenize", "--model", dir, "", NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 0);
    g_assert_cmpstr (last_line (out), ==, "1");
  }
  {
    char *args[] = { "tokenize", dir, NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 2);
  }
  {
    char *args[] = { "tokenize", "--model", dir, NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 2);
  }
  {
    char *args[] = { "tokenize", "--model", dir, "a", "b", NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 2);
  }
  {
    char *args[] = { "tokenize", "--bogus", NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 2);
  }
  {
    g_autofree char *missing = g_build_filename (tmp_dir, "no-model", NULL);
    char *args[] = { "tokenize", "--model", missing, "hi", NULL };
    g_autofree char *out = NULL, *err = NULL;
    g_assert_cmpint (run_cli (args, &out, &err), ==, 1);
    g_assert_nonnull (strstr (err, "no-model"));
    g_assert_cmpstr (out, ==, "");
  }
}

static void
remove_tree (const char *path)
{
  GDir *dir = g_dir_open (path, 0, NULL);
  if (dir) {
    const char *name;
    while ((name = g_dir_read_name (dir)) != NULL) {
      g_autofree char *child = g_build_filename (path, name, NULL);
      remove_tree (child);
    }
    g_dir_close (dir);
  }
  g_remove (path);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autoptr (GError) error = NULL;
  tmp_dir = g_dir_make_tmp ("avq-tokenizer-XXXXXX", &error);
  g_assert_no_error (error);

  g_test_add_func ("/tokenizer/basics", test_basics);
  g_test_add_func ("/tokenizer/vectors", test_vectors);
  g_test_add_func ("/tokenizer/chat-prompt", test_chat_prompt);
  g_test_add_func ("/tokenizer/round-trip", test_round_trip);
  g_test_add_func ("/tokenizer/decode-edges", test_decode_edges);
  g_test_add_func ("/tokenizer/tiny-models", test_tiny_models);
  g_test_add_func ("/tokenizer/malformed", test_malformed);
  g_test_add_func ("/tokenizer/mutations", test_mutations);
  g_test_add_func ("/tokenizer/missing", test_missing);
  g_test_add_func ("/tokenizer/cli", test_cli);
  int rc = g_test_run ();

  avq_tokenizer_free (shared_tokenizer);
  remove_tree (tmp_dir);
  g_free (tmp_dir);
  return rc;
}
