/* Helpers shared by the engine tests: fixture paths, reference tensors,
 * error measures. */
#pragma once
#include <glib.h>
#include <json-glib/json-glib.h>
#include "avq-llava.h"
#include "avq-model.h"
#include "avq-safetensors.h"

/* Absolute path of a file under tests/data (newly allocated). */
char *avq_test_data_path (const char *relative);
/* tests/data/tiny-llava/reference.safetensors, opened once per process. */
const AvqSafetensors *avq_test_reference (void);
/* tests/data/tiny-llava/reference.json (the HF figures that are not
 * tensors: prompt ids, greedy ids and margins), parsed once per process. */
JsonObject *avq_test_reference_json (void);
/* A reference tensor as float32 (g_free); aborts the test if missing. */
float *avq_test_reference_f32 (const char *name, gsize *numel);
/* ||a - b||_2 / ||b||_2 */
double avq_test_rel_error (const float *a, const float *b, gsize n);
double avq_test_max_abs_diff (const float *a, const float *b, gsize n);
/* Asserts rel error <= tol with a message naming `what`. */
void avq_test_assert_close (const char *what, const float *got,
                            const float *want, gsize n, double tol);

/* Output of one run of the built `avq` tool (path in $AVQ_CLI). */
typedef struct {
  char *out;
  char *err;
  int status;   /* exit code; 128 + signal when killed */
} AvqCliRun;

/* Runs `avq` with a NULL-terminated argument vector. */
AvqCliRun avq_test_run_cli (const char *const *args);
void avq_test_cli_run_clear (AvqCliRun *run);
/* Removes a model directory a test wrote: its config.json and
 * model.safetensors, then the (then empty) directory. */
void avq_test_remove_model_dir (const char *dir);
/* A path in a per-process temporary directory (newly allocated). */
char *avq_test_tmp_path (const char *name);

/* tests/data/tiny-llava opened once per process (owned by test-util). */
AvqModel *avq_test_tiny_model (void);

/* Generation with sampling as the rule of avq-sampling.h defines it:
 * avq_llava_generate with `options` (its candidates path: device
 * candidates on CUDA, whole rows fetched when they cannot decide) against
 * a loop written here that decodes with whole rows of logits
 * (avq_llama_decode) and applies avq_sample_logits to the same draws. The
 * tokens must be equal. *stats (may be NULL) receives generate's. */
void avq_test_assert_sampling_as_rows (AvqLlama *llama, const int *prompt_ids,
                                       int n_ids, const float *features,
                                       int n_rows,
                                       const AvqGenerateOptions *options,
                                       AvqGenerateStats *stats);
/* avq_test_assert_sampling_as_rows over a fixed set of rules (greedy, a
 * sharp nucleus that the candidates decide, flat rows that fetch whole
 * rows, top-k within and past the candidates), `max_new` tokens each;
 * returns the steps that fetched whole rows (asserting none when greedy
 * or when the top_k is within the candidates). */
int avq_test_assert_sampling_rules_as_rows (AvqLlama *llama, const int *prompt_ids,
                                            int n_ids, const float *features,
                                            int n_rows, int max_new);
