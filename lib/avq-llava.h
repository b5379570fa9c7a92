/* LLaVA prompt assembly and answer generation (AVQ-SPEC section 8) on top
 * of the LLaMA decoder.
 *
 * A prompt is a list of token ids in which the image token
 * (config image_token_index, 32000) marks where the projected image
 * features go. Two forms are accepted:
 *  - expanded: the image token appears once per feature row (what the HF
 *    processor produces: 576 in a row for one LLaVA-1.5 image);
 *  - compact: each `<image>` is a single image token, which becomes
 *    image_seq_length positions.
 * Feature rows fill the image positions in order. */
#pragma once
#include <glib.h>
#include "avq-llama.h"

G_BEGIN_DECLS

/* Called after each generated token (EOS included); return FALSE to stop
 * generating. */
typedef gboolean (*AvqTokenFunc) (int token, gpointer user_data);

typedef struct {
  int max_new_tokens;     /* default 64 */
  /* temperature <= 0: greedy (argmax, lowest id on ties). Otherwise sample
   * from softmax(logits / temperature) restricted to the smallest set of
   * most likely tokens whose probability reaches top_p (the exact rule and
   * how the device's candidates serve it: avq-sampling.h). */
  float temperature;      /* default 0 */
  float top_p;            /* default 1 */
  int top_k;              /* > 0: sample among the top_k most likely only
                           * (HF's generate defaults to 50); default 0: all */
  guint32 seed;           /* for sampling; same seed, same tokens */
  int eos_token_id;       /* default -1: the model's eos_token_id */
  AvqTokenFunc on_token;  /* may be NULL */
  gpointer user_data;
} AvqGenerateOptions;

typedef struct {
  int prompt_positions;   /* after image expansion */
  int generated;          /* tokens in out_ids */
  gboolean hit_eos;
  /* decode steps whose sampling candidates could not decide, so that the
   * whole row of logits was fetched (avq-sampling.h); 0 when greedy */
  int rows_fetched;
  double prefill_ms, decode_ms;
} AvqGenerateStats;

void avq_generate_options_init (AvqGenerateOptions *options);

/* Input embeddings of the prompt: newly allocated [*n_positions, hidden]
 * (g_free). `image_features` is [n_image_rows, hidden]; NULL/0 for a
 * text-only prompt. The prompt's image tokens and the rows must match in
 * one of the two forms above (AVQ_ERROR_MISMATCH otherwise). */
float *avq_llava_embed_prompt (const AvqLlama *llama, const int *prompt_ids,
                               int n_ids, const float *image_features,
                               int n_image_rows, int *n_positions,
                               GError **error);

/* Resets the decoder and runs the prompt; `logits` (vocab floats) receives
 * the logits of the first generated token. */
gboolean avq_llava_prefill (AvqLlama *llama, const int *prompt_ids, int n_ids,
                            const float *image_features, int n_image_rows,
                            float *logits, GError **error);

/* Prefill + generation. Generated ids are appended to `out_ids` (GArray of
 * int); the EOS that stops generation is reported to on_token but not
 * appended. `options` and `stats` may be NULL. */
gboolean avq_llava_generate (AvqLlama *llama, const int *prompt_ids, int n_ids,
                             const float *image_features, int n_image_rows,
                             const AvqGenerateOptions *options, GArray *out_ids,
                             AvqGenerateStats *stats, GError **error);

/* One question about one image, for avq_llava_generate_batch. */
typedef struct {
  const int *prompt_ids;
  int n_ids;
  const float *image_features;   /* [n_image_rows, hidden] or NULL */
  int n_image_rows;
} AvqLlavaRequest;

/* Answers n requests together: request i runs in sequence i of the decoder
 * (avq_llama_set_sequences is called when it holds fewer than n), prompts
 * are prefilled one after another, then every unfinished request advances
 * one token per avq_llama_decode_batch step until it reaches EOS or
 * max_new_tokens. out_ids[i] (GArray of int) receives request i's tokens;
 * stats (may be NULL) is [n]: prefill_ms is the request's own prefill,
 * decode_ms the time from the end of the last prefill to its last token.
 * Every answer equals what avq_llava_generate gives for that request alone
 * with the same options: with sampling, each request draws from its own
 * random stream seeded with options->seed, so an answer does not depend on
 * the batch it met (the batched step sums in another order, so a near tie
 * of two logits, or a draw within ~1e-6 of a boundary between two tokens,
 * could go the other way). Every prompt is checked
 * before any sequence changes; errors name the request. on_token is not
 * called (use the per-request results). */
gboolean avq_llava_generate_batch (AvqLlama *llama,
                                   const AvqLlavaRequest *requests, int n,
                                   const AvqGenerateOptions *options,
                                   GArray **out_ids, AvqGenerateStats *stats,
                                   GError **error);

/* argmax with the lowest id on ties, NaN below every number (what greedy
 * generation picks: avq-logit-order.h). */
int avq_logits_argmax (const float *logits, int n);

G_END_DECLS
