/* Text <-> token ids for the LLaVA language model, from a Hugging Face
 * `tokenizer.json` (BPE model, SentencePiece style with byte fallback).
 *
 * The results are those of the HF `tokenizers` library for the same file:
 * added tokens are split out of the text first, each remaining piece goes
 * through the file's normalizer and pre-tokenizer, then BPE; the
 * post-processor (TemplateProcessing) adds BOS. Decoding runs the file's
 * decoder chain.
 *
 * An AvqTokenizer is immutable after loading: encode/decode may be called
 * from several threads at once. */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

typedef struct _AvqTokenizer AvqTokenizer;

/* `path_or_model_dir` is either a tokenizer.json file or a model directory
 * holding one. A `tokenizer_config.json` beside it, when present, names the
 * BOS/EOS tokens; otherwise "<s>" and "</s>" are used if the vocabulary has
 * them. Errors are in the AVQ_ERROR domain and name the file and field. */
AvqTokenizer *avq_tokenizer_load (const char *path_or_model_dir, GError **error);
void avq_tokenizer_free (AvqTokenizer *tokenizer);

/* Token ids of `text` (`length` bytes, or NUL-terminated if negative).
 * With `add_special` the post-processor runs (HF add_special_tokens=True:
 * BOS first for LLaVA). Returns a newly allocated array (g_free; never NULL
 * on success, even when *n_ids is 0), or NULL with `error` set when the
 * text is not valid UTF-8. */
gint32 *avq_tokenizer_encode (const AvqTokenizer *tokenizer, const char *text,
                              gssize length, gboolean add_special,
                              gsize *n_ids, GError **error);

/* Text of `ids` (g_free). Ids the tokenizer does not know are skipped, as
 * HF does; with `skip_special` so are special added tokens (<s>, <image>...).
 * Byte-fallback runs that are not valid UTF-8 become U+FFFD per byte. */
char *avq_tokenizer_decode (const AvqTokenizer *tokenizer, const gint32 *ids,
                            gsize n_ids, gboolean skip_special);

/* The token string of `id` (owned by the tokenizer), NULL if unknown. */
const char *avq_tokenizer_id_to_token (const AvqTokenizer *tokenizer, gint32 id);
/* The id of the exact token string, -1 if none. */
gint32 avq_tokenizer_token_to_id (const AvqTokenizer *tokenizer, const char *token);
/* TRUE for added tokens marked special. */
gboolean avq_tokenizer_is_special (const AvqTokenizer *tokenizer, gint32 id);

/* -1 when the tokenizer has no such token. */
gint32 avq_tokenizer_bos_id (const AvqTokenizer *tokenizer);
gint32 avq_tokenizer_eos_id (const AvqTokenizer *tokenizer);
gint32 avq_tokenizer_unk_id (const AvqTokenizer *tokenizer);
/* One more than the largest id of the model vocabulary and added tokens
 * (32002 for llava-1.5-hf; the embedding matrix may be larger). */
gsize avq_tokenizer_vocab_size (const AvqTokenizer *tokenizer);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqTokenizer, avq_tokenizer_free)

G_END_DECLS
