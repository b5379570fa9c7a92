/* Question answering on top of the engine: AVQ frame (or image) ->
 * projected image features -> LLaVA prompt -> generated answer text.
 * Used by `avq ask` and the avqanswer element. Not thread-safe: one per
 * thread. */
#pragma once
#include <glib.h>
#include "avq-engine.h"
#include "avq-llava.h"
#include "avq-tokenizer.h"

G_BEGIN_DECLS

typedef struct _AvqAnswerer AvqAnswerer;

typedef struct {
  const char *model_dir;   /* required: weights + tokenizer.json */
  const char *avq_path;    /* NULL: only images (unsplit path) can be asked about */
  int threads;             /* 0: automatic */
  AvqDevice device;        /* AUTO (0) by default; the vision half and the LLM follow it */
} AvqAnswererOptions;

typedef struct {
  int max_new_tokens;      /* default 64 */
  float temperature;       /* <= 0: greedy (default) */
  float top_p;             /* default 1 */
  int top_k;               /* > 0: sample among the top_k most likely; default 0: all */
  guint32 seed;
  const char *system_prompt; /* NULL: the llava-hf template without one */
} AvqAskOptions;

typedef struct {
  char *text;              /* decoded answer, special tokens skipped */
  GArray *ids;             /* generated ids (int), EOS excluded */
  double vision_ms, prefill_ms, decode_ms;
} AvqAnswer;

void avq_ask_options_init (AvqAskOptions *options);

AvqAnswerer *avq_answerer_new (const AvqAnswererOptions *options, GError **error);
void avq_answerer_free (AvqAnswerer *answerer);
AvqEngine *avq_answerer_get_engine (AvqAnswerer *answerer);

/* The prompt ids for `question` (llava-hf chat template, AVQ-SPEC section 8):
 * "USER: <image>\n{question} ASSISTANT:" with BOS, the <image> token kept
 * as one id (expanded at prefill). The question is used verbatim. */
gint32 *avq_answerer_prompt_ids (AvqAnswerer *answerer, const char *question,
                                 const char *system_prompt, gsize *n_ids,
                                 GError **error);

AvqAnswer *avq_answerer_ask_frame (AvqAnswerer *answerer, const AvqFrame *frame,
                                   const char *question, const AvqAskOptions *options,
                                   GError **error);
AvqAnswer *avq_answerer_ask_image (AvqAnswerer *answerer, const AvqImage *image,
                                   AvqPreprocessMode mode, const char *question,
                                   const AvqAskOptions *options, GError **error);
/* Answers n (frame, question) pairs together: every frame's features in one
 * batched vision pass (avq_engine_decode_frames), then the questions as the
 * sequences of one batched generation (avq_llava_generate_batch). Greedy
 * and sampled answers equal avq_answerer_ask_frame's for each pair with the
 * same options (every pair samples from options->seed, whatever its place
 * in the batch). answers[i] receives pair i's answer (all NULL on
 * error); each answer's vision_ms is the batch's vision pass, prefill_ms
 * and decode_ms its own sequence's. */
gboolean avq_answerer_ask_frames (AvqAnswerer *answerer,
                                  const AvqFrame *const *frames,
                                  const char *const *questions, guint n,
                                  const AvqAskOptions *options,
                                  AvqAnswer **answers, GError **error);
void avq_answer_free (AvqAnswer *answer);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqAnswerer, avq_answerer_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqAnswer, avq_answer_free)

G_END_DECLS
