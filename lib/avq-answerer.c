#include "avq-answerer.h"
#include "avq-error.h"
#include <string.h>

struct _AvqAnswerer {
  AvqEngine *engine;
  AvqTokenizer *tokenizer;
  AvqLlama *llama;
  float *features;          /* [feature_tokens, hidden] */
  float *batch_features;    /* [batch_capacity, feature_tokens, hidden] */
  guint batch_capacity;
};

void
avq_ask_options_init (AvqAskOptions *options)
{
  memset (options, 0, sizeof *options);
  options->max_new_tokens = 64;
  options->top_p = 1.0f;
}

void
avq_answerer_free (AvqAnswerer *answerer)
{
  if (answerer == NULL)
    return;
  /* The decoder borrows the engine's model: free it first. */
  g_clear_pointer (&answerer->llama, avq_llama_free);
  g_clear_pointer (&answerer->engine, avq_engine_free);
  g_clear_pointer (&answerer->tokenizer, avq_tokenizer_free);
  g_free (answerer->features);
  g_free (answerer->batch_features);
  g_free (answerer);
}

AvqAnswerer *
avq_answerer_new (const AvqAnswererOptions *options, GError **error)
{
  g_return_val_if_fail (options != NULL && options->model_dir != NULL, NULL);
  g_autoptr (AvqAnswerer) self = g_new0 (AvqAnswerer, 1);

  AvqEngineOptions engine_options = {
    .model_dir = options->model_dir,
    .avq_path = options->avq_path,
    .threads = options->threads,
    .load_language_model = TRUE,
    .device = options->device,
  };
  self->engine = avq_engine_new (&engine_options, error);
  if (self->engine == NULL)
    return NULL;
  self->tokenizer = avq_tokenizer_load (options->model_dir, error);
  if (self->tokenizer == NULL)
    return NULL;
  self->llama = avq_llama_new (avq_engine_get_model (self->engine), 0, error);
  if (self->llama == NULL)
    return NULL;
  if (options->threads > 0)
    avq_llama_set_threads (self->llama, options->threads);
  if (options->avq_path != NULL) {
    /* A fine-tuned AVQ file carries LoRA adapters for the LLM. */
    g_autoptr (AvqSafetensors) avq_file = avq_safetensors_open (options->avq_path, error);
    guint merged = 0;
    if (avq_file == NULL || !avq_llama_apply_lora (self->llama, avq_file, &merged, error))
      return NULL;
    if (merged > 0)
      g_debug ("%s: merged %u LoRA adapters", options->avq_path, merged);
  }

  guint dim = avq_engine_feature_dim (self->engine);
  if ((int) dim != avq_llama_hidden_size (self->llama)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH,
                 "%s: the projector gives %u-wide features but the language model is %d wide",
                 options->model_dir, dim, avq_llama_hidden_size (self->llama));
    return NULL;
  }
  /* The language model follows the engine: on CUDA when the engine
   * resolved to it (after the LoRA merge above, which is host-side). Under
   * auto a failure here falls back to the CPU with a warning, as the
   * engine does. */
  if (avq_engine_device (self->engine) == AVQ_DEVICE_CUDA) {
    g_autoptr (GError) cuda_error = NULL;
    if (!avq_llama_use_cuda (self->llama, &cuda_error)) {
      if (options->device == AVQ_DEVICE_CUDA) {
        g_propagate_error (error, g_steal_pointer (&cuda_error));
        return NULL;
      }
      g_warning ("%s: the language model stays on the CPU: %s", options->model_dir,
                 cuda_error->message);
    } else {
      g_autofree char *what = avq_llama_device_description (self->llama);
      g_info ("language model: %s", what);
    }
  }
  self->features = g_new (float, (gsize) avq_engine_feature_tokens (self->engine) * dim);
  return g_steal_pointer (&self);
}

AvqEngine *
avq_answerer_get_engine (AvqAnswerer *answerer)
{
  return answerer->engine;
}

gint32 *
avq_answerer_prompt_ids (AvqAnswerer *answerer, const char *question,
                         const char *system_prompt, gsize *n_ids, GError **error)
{
  g_autofree char *prompt = system_prompt && *system_prompt
      ? g_strdup_printf ("%s USER: <image>\n%s ASSISTANT:", system_prompt, question)
      : g_strdup_printf ("USER: <image>\n%s ASSISTANT:", question);
  return avq_tokenizer_encode (answerer->tokenizer, prompt, -1, TRUE, n_ids, error);
}

void
avq_answer_free (AvqAnswer *answer)
{
  if (answer == NULL)
    return;
  g_free (answer->text);
  if (answer->ids)
    g_array_unref (answer->ids);
  g_free (answer);
}

/* The prompt of `question` as the int ids the decoder takes. */
static int *
prompt_of (AvqAnswerer *self, const char *question, const AvqAskOptions *options,
           int *n_prompt, GError **error)
{
  gsize n_ids = 0;
  g_autofree gint32 *ids = avq_answerer_prompt_ids (self, question, options->system_prompt,
                                                    &n_ids, error);
  if (ids == NULL)
    return NULL;
  int *prompt = g_new (int, n_ids);
  for (gsize i = 0; i < n_ids; i++)
    prompt[i] = ids[i];
  *n_prompt = (int) n_ids;
  return prompt;
}

static void
generate_options_of (const AvqAskOptions *options, AvqGenerateOptions *gen)
{
  avq_generate_options_init (gen);
  gen->max_new_tokens = options->max_new_tokens;
  gen->temperature = options->temperature;
  gen->top_p = options->top_p;
  gen->top_k = options->top_k;
  gen->seed = options->seed;
}

/* Takes `ids` (the generated tokens) into a new answer with its text. */
static AvqAnswer *
answer_of (AvqAnswerer *self, GArray *ids, double vision_ms,
           const AvqGenerateStats *stats)
{
  AvqAnswer *answer = g_new0 (AvqAnswer, 1);
  answer->ids = ids;
  g_autofree gint32 *out = g_new (gint32, ids->len + 1);
  for (guint i = 0; i < ids->len; i++)
    out[i] = g_array_index (ids, int, i);
  answer->text = avq_tokenizer_decode (self->tokenizer, out, ids->len, TRUE);
  answer->vision_ms = vision_ms;
  answer->prefill_ms = stats->prefill_ms;
  answer->decode_ms = stats->decode_ms;
  return answer;
}

static AvqAnswer *
generate (AvqAnswerer *self, const char *question, const AvqAskOptions *options,
          double vision_ms, GError **error)
{
  AvqAskOptions defaults;
  if (options == NULL) {
    avq_ask_options_init (&defaults);
    options = &defaults;
  }
  int n_ids = 0;
  g_autofree int *prompt = prompt_of (self, question, options, &n_ids, error);
  if (prompt == NULL)
    return NULL;
  AvqGenerateOptions gen;
  generate_options_of (options, &gen);

  int positions = avq_engine_feature_tokens (self->engine);
  if (!avq_llama_reserve (self->llama, n_ids + positions + gen.max_new_tokens, error))
    return NULL;

  g_autoptr (GArray) ids = g_array_new (FALSE, FALSE, sizeof (int));
  AvqGenerateStats stats = { 0 };
  if (!avq_llava_generate (self->llama, prompt, n_ids, self->features, positions,
                           &gen, ids, &stats, error))
    return NULL;
  return answer_of (self, g_steal_pointer (&ids), vision_ms, &stats);
}

AvqAnswer *
avq_answerer_ask_frame (AvqAnswerer *self, const AvqFrame *frame,
                        const char *question, const AvqAskOptions *options,
                        GError **error)
{
  gint64 start = g_get_monotonic_time ();
  if (!avq_engine_decode_frame (self->engine, frame, self->features, error))
    return NULL;
  return generate (self, question, options, (g_get_monotonic_time () - start) / 1000.0, error);
}

AvqAnswer *
avq_answerer_ask_image (AvqAnswerer *self, const AvqImage *image,
                        AvqPreprocessMode mode, const char *question,
                        const AvqAskOptions *options, GError **error)
{
  gint64 start = g_get_monotonic_time ();
  if (avq_engine_has_avq (self->engine)) {
    /* Edge and cloud halves in one process: the answer sees exactly what a
     * receiver of this frame would. */
    g_autoptr (AvqFrame) frame = avq_engine_encode_image (self->engine, image, mode, error);
    if (frame == NULL || !avq_engine_decode_frame (self->engine, frame, self->features, error))
      return NULL;
  } else if (!avq_engine_features_from_image (self->engine, image, mode, self->features, error)) {
    return NULL;
  }
  return generate (self, question, options, (g_get_monotonic_time () - start) / 1000.0, error);
}

gboolean
avq_answerer_ask_frames (AvqAnswerer *self, const AvqFrame *const *frames,
                         const char *const *questions, guint n,
                         const AvqAskOptions *options, AvqAnswer **answers,
                         GError **error)
{
  g_return_val_if_fail (answers != NULL, FALSE);
  for (guint i = 0; i < n; i++)
    answers[i] = NULL;
  if (n == 0 || frames == NULL || questions == NULL) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "ask_frames: %s", n == 0 ? "no frames" : "NULL frames or questions");
    return FALSE;
  }
  for (guint i = 0; i < n; i++)
    if (questions[i] == NULL) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "ask_frames: question %u is NULL", i);
      return FALSE;
    }
  AvqAskOptions defaults;
  if (options == NULL) {
    avq_ask_options_init (&defaults);
    options = &defaults;
  }
  const int positions = avq_engine_feature_tokens (self->engine);
  const gsize per_frame = (gsize) positions * avq_engine_feature_dim (self->engine);
  if (n > self->batch_capacity) {
    g_free (self->batch_features);
    self->batch_features = g_try_new (float, per_frame * n);
    self->batch_capacity = self->batch_features != NULL ? n : 0;
    if (self->batch_features == NULL) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "ask_frames: cannot allocate the features of %u frames", n);
      return FALSE;
    }
  }

  gint64 start = g_get_monotonic_time ();
  if (!avq_engine_decode_frames (self->engine, frames, n, self->batch_features, error))
    return FALSE;
  const double vision_ms = (g_get_monotonic_time () - start) / 1000.0;

  AvqGenerateOptions gen;
  generate_options_of (options, &gen);
  g_autofree AvqLlavaRequest *requests = g_new0 (AvqLlavaRequest, n);
  g_autofree int **prompts = g_new0 (int *, n);
  g_autofree GArray **ids = g_new0 (GArray *, n);
  g_autofree AvqGenerateStats *stats = g_new0 (AvqGenerateStats, n);
  gboolean ok = TRUE;
  int longest = 0;
  for (guint i = 0; i < n && ok; i++) {
    int n_ids = 0;
    prompts[i] = prompt_of (self, questions[i], options, &n_ids, error);
    ok = prompts[i] != NULL;
    requests[i] = (AvqLlavaRequest) { prompts[i], n_ids,
                                      self->batch_features + per_frame * i, positions };
    longest = MAX (longest, n_ids);
  }
  ok = ok && avq_llama_reserve (self->llama, longest + positions + gen.max_new_tokens, error);
  for (guint i = 0; i < n; i++)
    ids[i] = g_array_new (FALSE, FALSE, sizeof (int));
  ok = ok && avq_llava_generate_batch (self->llama, requests, (int) n, &gen, ids, stats,
                                       error);
  for (guint i = 0; i < n; i++) {
    if (ok)
      answers[i] = answer_of (self, g_steal_pointer (&ids[i]), vision_ms, &stats[i]);
    else
      g_array_unref (ids[i]);
    g_free (prompts[i]);
  }
  return ok;
}
