/* Batched answers: avq_answerer_ask_frames against one question at a time,
 * and AvqAnswerPool (several threads asking one shared model) forming
 * batches whose answers equal the single ones. Tiny fixture model, CPU. */
#include <glib.h>
#include "avq-answer-pool.h"
#include "avq-answerer.h"
#include "avq-error.h"
#include "test-util.h"

#define N_IMAGES 3
static const char *const images[N_IMAGES] = { "astronaut", "chelsea", "coffee" };
static const char *const questions[N_IMAGES] = {
  "What is in the picture?",
  "Describe the animal.",
  "What colour is the cup?",
};

static AvqAnswererOptions
options_for (const char *avq_name)
{
  static char *model, *avq[2];
  if (model == NULL) {
    model = avq_test_data_path ("tiny-llava");
    avq[0] = avq_test_data_path ("tiny-llava/avq-L0-derive.safetensors");
    avq[1] = avq_test_data_path ("tiny-llava/avq-L1-side8.safetensors");
  }
  AvqAnswererOptions o = { .model_dir = model, .threads = 1, .device = AVQ_DEVICE_CPU };
  o.avq_path = g_str_has_prefix (avq_name, "L0") ? avq[0] : avq[1];
  return o;
}

/* Frames of the fixture images, encoded by `answerer`'s engine. */
static void
encode_images (AvqAnswerer *answerer, AvqFrame **frames)
{
  for (int i = 0; i < N_IMAGES; i++) {
    g_autoptr (GError) error = NULL;
    g_autofree char *rel = g_strdup_printf ("tiny-llava/images/%s.png", images[i]);
    g_autofree char *path = avq_test_data_path (rel);
    g_autoptr (AvqImage) image = avq_image_load (path, &error);
    g_assert_no_error (error);
    frames[i] = avq_engine_encode_image (avq_answerer_get_engine (answerer), image,
                                         AVQ_PREPROCESS_CROP, &error);
    g_assert_no_error (error);
  }
}

static void
assert_same_answer (const AvqAnswer *got, const AvqAnswer *want, const char *what)
{
  g_assert_nonnull (got);
  if (got->ids->len != want->ids->len || g_strcmp0 (got->text, want->text) != 0)
    g_error ("%s: \"%s\" (%u ids) differs from the single answer \"%s\" (%u ids)", what,
             got->text, got->ids->len, want->text, want->ids->len);
  for (guint t = 0; t < got->ids->len; t++)
    g_assert_cmpint (g_array_index (got->ids, int, t), ==, g_array_index (want->ids, int, t));
}

static void
single_answers (AvqAnswerer *answerer, AvqFrame **frames, const AvqAskOptions *ask,
                AvqAnswer **out)
{
  for (int i = 0; i < N_IMAGES; i++) {
    g_autoptr (GError) error = NULL;
    out[i] = avq_answerer_ask_frame (answerer, frames[i], questions[i], ask, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (out[i]->ids->len, >, 0);
  }
}

static void
test_ask_frames (gconstpointer data)
{
  AvqAnswererOptions o = options_for (data);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqAnswerer) answerer = avq_answerer_new (&o, &error);
  g_assert_no_error (error);
  AvqFrame *frames[N_IMAGES];
  encode_images (answerer, frames);
  AvqAskOptions ask;
  avq_ask_options_init (&ask);
  ask.max_new_tokens = 8;
  AvqAnswer *single[N_IMAGES];
  single_answers (answerer, frames, &ask, single);

  /* All three at once, then a batch with a repeated frame and a different
   * question order, then a smaller batch after the bigger one. */
  AvqAnswer *batch[N_IMAGES] = { 0 };
  g_assert_true (avq_answerer_ask_frames (answerer, (const AvqFrame *const *) frames,
                                          questions, N_IMAGES, &ask, batch, &error));
  g_assert_no_error (error);
  for (int i = 0; i < N_IMAGES; i++) {
    g_autofree char *what = g_strdup_printf ("batch of 3, pair %d", i);
    assert_same_answer (batch[i], single[i], what);
    g_test_message ("%s: \"%s\"", images[i], batch[i]->text);
    g_clear_pointer (&batch[i], avq_answer_free);
  }
  const AvqFrame *twice[2] = { frames[1], frames[1] };
  const char *two_questions[2] = { questions[1], questions[1] };
  g_assert_true (avq_answerer_ask_frames (answerer, twice, two_questions, 2, &ask, batch,
                                          &error));
  g_assert_no_error (error);
  assert_same_answer (batch[0], single[1], "same frame twice, first");
  assert_same_answer (batch[1], single[1], "same frame twice, second");
  g_clear_pointer (&batch[0], avq_answer_free);
  g_clear_pointer (&batch[1], avq_answer_free);

  /* Sampled answers too: every pair samples from the seed as it would
   * alone, whatever its place in the batch (the same frame twice gives the
   * same sampled answer twice). */
  AvqAskOptions sampled = ask;
  sampled.temperature = 1.0f;
  sampled.top_p = 0.9f;
  sampled.top_k = 300;
  sampled.seed = 21;
  AvqAnswer *sampled_single[N_IMAGES];
  single_answers (answerer, frames, &sampled, sampled_single);
  g_assert_true (avq_answerer_ask_frames (answerer, (const AvqFrame *const *) frames,
                                          questions, N_IMAGES, &sampled, batch, &error));
  g_assert_no_error (error);
  for (int i = 0; i < N_IMAGES; i++) {
    g_autofree char *what = g_strdup_printf ("sampled batch of 3, pair %d", i);
    assert_same_answer (batch[i], sampled_single[i], what);
    g_clear_pointer (&batch[i], avq_answer_free);
  }
  const AvqFrame *reordered[2] = { frames[2], frames[1] };
  const char *reordered_questions[2] = { questions[2], questions[1] };
  g_assert_true (avq_answerer_ask_frames (answerer, reordered, reordered_questions, 2,
                                          &sampled, batch, &error));
  g_assert_no_error (error);
  assert_same_answer (batch[0], sampled_single[2], "sampled, pair 2 first");
  assert_same_answer (batch[1], sampled_single[1], "sampled, pair 1 second");
  g_clear_pointer (&batch[0], avq_answer_free);
  g_clear_pointer (&batch[1], avq_answer_free);
  for (int i = 0; i < N_IMAGES; i++)
    avq_answer_free (sampled_single[i]);

  /* The single path still works after batches (sequence 0 reused). */
  g_autoptr (AvqAnswer) again = avq_answerer_ask_frame (answerer, frames[2], questions[2],
                                                        &ask, &error);
  g_assert_no_error (error);
  assert_same_answer (again, single[2], "single after batches");

  /* Errors name the problem and return nothing. */
  const char *with_null[2] = { questions[0], NULL };
  g_assert_false (avq_answerer_ask_frames (answerer, (const AvqFrame *const *) frames,
                                           with_null, 2, &ask, batch, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_null (batch[0]);
  g_clear_error (&error);
  g_assert_false (avq_answerer_ask_frames (answerer, (const AvqFrame *const *) frames,
                                           questions, 0, &ask, batch, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);

  for (int i = 0; i < N_IMAGES; i++) {
    avq_answer_free (single[i]);
    avq_frame_free (frames[i]);
  }
}

typedef struct {
  AvqAnswerPool *pool;
  const AvqFrame *frame;
  const char *question;
  const AvqAskOptions *ask;
  AvqAnswer *answer;
  GError *error;
} Asker;

static gpointer
ask_in_thread (gpointer data)
{
  Asker *a = data;
  a->answer = avq_answer_pool_ask_frame (a->pool, a->frame, a->question, a->ask, &a->error);
  return NULL;
}

static void
test_pool (gconstpointer data)
{
  AvqAnswererOptions o = options_for (data);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqAnswerer) reference = avq_answerer_new (&o, &error);
  g_assert_no_error (error);
  AvqFrame *frames[N_IMAGES];
  encode_images (reference, frames);
  AvqAskOptions ask;
  avq_ask_options_init (&ask);
  ask.max_new_tokens = 8;
  AvqAnswer *single[N_IMAGES];
  single_answers (reference, frames, &ask, single);

  g_autoptr (AvqAnswerPool) pool = avq_answer_pool_new (&o, 8, &error);
  g_assert_no_error (error);
  g_assert_true (g_str_has_suffix (avq_answer_pool_key (pool), "|cpu"));
  g_assert_cmpuint (avq_engine_tokens (avq_answer_pool_get_engine (pool)), ==,
                    avq_engine_tokens (avq_answerer_get_engine (reference)));

  /* Paused, the three questions queue; resumed, they go as one batch. */
  avq_answer_pool_pause (pool);
  Asker askers[N_IMAGES];
  GThread *threads[N_IMAGES];
  for (int i = 0; i < N_IMAGES; i++) {
    askers[i] = (Asker) { pool, frames[i], questions[i], &ask, NULL, NULL };
    threads[i] = g_thread_new ("asker", ask_in_thread, &askers[i]);
  }
  while (avq_answer_pool_pending (pool) < N_IMAGES)
    g_usleep (1000);
  avq_answer_pool_resume (pool);
  for (int i = 0; i < N_IMAGES; i++) {
    g_thread_join (threads[i]);
    g_assert_no_error (askers[i].error);
    g_autofree char *what = g_strdup_printf ("pool, thread %d", i);
    assert_same_answer (askers[i].answer, single[i], what);
    avq_answer_free (askers[i].answer);
  }
  guint64 batches = 0, answered = 0;
  guint largest = 0;
  avq_answer_pool_stats (pool, &batches, &answered, &largest);
  g_assert_cmpuint (batches, ==, 1);
  g_assert_cmpuint (answered, ==, N_IMAGES);
  g_assert_cmpuint (largest, ==, N_IMAGES);

  /* Questions with other generation settings never share a batch: the
   * queued four form two batches of two. */
  AvqAskOptions longer = ask;
  longer.max_new_tokens = 4;
  avq_answer_pool_pause (pool);
  Asker mixed[4];
  GThread *mixed_threads[4];
  for (int i = 0; i < 4; i++) {
    mixed[i] = (Asker) { pool, frames[i % 2], questions[i % 2], i < 2 ? &ask : &longer,
                         NULL, NULL };
    mixed_threads[i] = g_thread_new ("asker", ask_in_thread, &mixed[i]);
  }
  while (avq_answer_pool_pending (pool) < 4)
    g_usleep (1000);
  avq_answer_pool_resume (pool);
  for (int i = 0; i < 4; i++) {
    g_thread_join (mixed_threads[i]);
    g_assert_no_error (mixed[i].error);
    if (i < 2) {
      assert_same_answer (mixed[i].answer, single[i], "mixed settings");
    } else {
      /* Greedy with fewer tokens: a prefix of the longer answer. */
      g_assert_cmpuint (mixed[i].answer->ids->len, <=, 4);
      for (guint t = 0; t < mixed[i].answer->ids->len; t++)
        g_assert_cmpint (g_array_index (mixed[i].answer->ids, int, t), ==,
                         g_array_index (single[i - 2]->ids, int, t));
    }
    avq_answer_free (mixed[i].answer);
  }
  avq_answer_pool_stats (pool, &batches, &answered, &largest);
  g_assert_cmpuint (batches, ==, 3);
  g_assert_cmpuint (answered, ==, N_IMAGES + 4);

  /* A failing question fails its batch, reported to every asker in it, and
   * the pool keeps working. */
  g_autoptr (AvqFrame) foreign = avq_frame_copy (frames[0]);
  foreign->codebook_id[0] ^= 0xff;
  g_autoptr (AvqAnswer) failed = avq_answer_pool_ask_frame (pool, foreign, questions[0],
                                                            &ask, &error);
  g_assert_null (failed);
  g_assert_nonnull (error);
  g_test_message ("foreign frame: %s", error->message);
  g_clear_error (&error);
  g_autoptr (AvqAnswer) after = avq_answer_pool_ask_frame (pool, frames[2], questions[2], &ask,
                                                           &error);
  g_assert_no_error (error);
  assert_same_answer (after, single[2], "after a failed batch");

  for (int i = 0; i < N_IMAGES; i++) {
    avq_answer_free (single[i]);
    avq_frame_free (frames[i]);
  }
}

static void
test_pool_bad_batch (void)
{
  AvqAnswererOptions o = options_for ("L0");
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqAnswerPool) pool = avq_answer_pool_new (&o, 0, &error);
  g_assert_null (pool);
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_data_func ("/answer/ask-frames/L0-derive", "L0", test_ask_frames);
  g_test_add_data_func ("/answer/ask-frames/L1-side8", "L1", test_ask_frames);
  g_test_add_data_func ("/answer/pool/L0-derive", "L0", test_pool);
  g_test_add_data_func ("/answer/pool/L1-side8", "L1", test_pool);
  g_test_add_func ("/answer/pool/bad-batch", test_pool_bad_batch);
  return g_test_run ();
}
