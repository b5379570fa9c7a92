#include "test-util.h"
#include <glib/gstdio.h>
#include <math.h>
#include <sys/wait.h>

char *
avq_test_data_path (const char *relative)
{
  /* The environment wins, so that binaries built here run from another
   * checkout (tests/bench/gpu-check.sh on the GPU machine). */
  const char *dir = g_getenv ("AVQ_TEST_DATA_DIR");
  return g_build_filename (dir && *dir ? dir : AVQ_TEST_DATA_DIR, relative, NULL);
}

const AvqSafetensors *
avq_test_reference (void)
{
  static AvqSafetensors *reference;
  if (reference == NULL) {
    g_autoptr (GError) error = NULL;
    g_autofree char *path = avq_test_data_path ("tiny-llava/reference.safetensors");
    reference = avq_safetensors_open (path, &error);
    g_assert_no_error (error);
  }
  return reference;
}

float *
avq_test_reference_f32 (const char *name, gsize *numel)
{
  const AvqTensor *t = avq_safetensors_find (avq_test_reference (), name);
  if (t == NULL)
    g_error ("reference tensor %s is missing", name);
  if (numel)
    *numel = avq_tensor_numel (t);
  return avq_tensor_dup_f32 (t);
}

double
avq_test_rel_error (const float *a, const float *b, gsize n)
{
  double num = 0, den = 0;
  for (gsize i = 0; i < n; i++) {
    double d = (double) a[i] - (double) b[i];
    num += d * d;
    den += (double) b[i] * (double) b[i];
  }
  return den > 0 ? sqrt (num / den) : sqrt (num);
}

double
avq_test_max_abs_diff (const float *a, const float *b, gsize n)
{
  double m = 0;
  for (gsize i = 0; i < n; i++) {
    double d = fabs ((double) a[i] - (double) b[i]);
    if (!(d <= m))
      m = d;   /* also catches NaN */
  }
  return m;
}

void
avq_test_assert_close (const char *what, const float *got, const float *want,
                       gsize n, double tol)
{
  double rel = avq_test_rel_error (got, want, n);
  g_test_message ("%s: relative error %.3g (tolerance %.3g)", what, rel, tol);
  if (!(rel <= tol))
    g_error ("%s: relative error %.3g exceeds %.3g", what, rel, tol);
}

AvqCliRun
avq_test_run_cli (const char *const *args)
{
  const char *cli = g_getenv ("AVQ_CLI");
  g_assert_nonnull (cli);
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (gpointer) cli);
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add (argv, (gpointer) *a);
  g_ptr_array_add (argv, NULL);

  AvqCliRun r = { 0 };
  int wait_status = 0;
  g_autoptr (GError) error = NULL;
  g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                &r.out, &r.err, &wait_status, &error);
  g_assert_no_error (error);
  r.status = WIFEXITED (wait_status) ? WEXITSTATUS (wait_status) : 128 + WTERMSIG (wait_status);
  return r;
}

void
avq_test_cli_run_clear (AvqCliRun *run)
{
  g_clear_pointer (&run->out, g_free);
  g_clear_pointer (&run->err, g_free);
}

char *
avq_test_tmp_path (const char *name)
{
  static char *dir;
  if (dir == NULL) {
    g_autoptr (GError) error = NULL;
    dir = g_dir_make_tmp ("avq-test-XXXXXX", &error);
    g_assert_no_error (error);
  }
  return g_build_filename (dir, name, NULL);
}

AvqModel *
avq_test_tiny_model (void)
{
  static AvqModel *model;
  if (model == NULL) {
    g_autoptr (GError) error = NULL;
    g_autofree char *dir = avq_test_data_path ("tiny-llava");
    model = avq_model_open (dir, &error);
    g_assert_no_error (error);
  }
  return model;
}

JsonObject *
avq_test_reference_json (void)
{
  static JsonParser *parser;
  if (parser == NULL) {
    g_autoptr (GError) error = NULL;
    g_autofree char *path = avq_test_data_path ("tiny-llava/reference.json");
    parser = json_parser_new ();
    json_parser_load_from_file (parser, path, &error);
    g_assert_no_error (error);
  }
  return json_node_get_object (json_parser_get_root (parser));
}

void
avq_test_remove_model_dir (const char *dir)
{
  g_autofree char *config = g_build_filename (dir, "config.json", NULL);
  g_autofree char *weights = g_build_filename (dir, "model.safetensors", NULL);
  g_unlink (config);
  g_unlink (weights);
  g_rmdir (dir);
}

void
avq_test_assert_sampling_as_rows (AvqLlama *llama, const int *prompt_ids, int n_ids,
                                  const float *features, int n_rows,
                                  const AvqGenerateOptions *options,
                                  AvqGenerateStats *stats)
{
  g_autoptr (GError) error = NULL;
  const int V = avq_llama_vocab_size (llama);
  const int eos = options->eos_token_id >= 0 ? options->eos_token_id
      : avq_llama_get_config (llama)->eos_token_id;
  AvqGenerateStats st;
  g_autoptr (GArray) got = g_array_new (FALSE, FALSE, sizeof (int));
  g_assert_true (avq_llava_generate (llama, prompt_ids, n_ids, features, n_rows,
                                     options, got, &st, &error));
  g_assert_no_error (error);

  g_autoptr (GArray) want = g_array_new (FALSE, FALSE, sizeof (int));
  g_autofree float *logits = g_new (float, V);
  g_assert_true (avq_llama_reserve (llama, n_ids + n_rows + options->max_new_tokens,
                                    &error));
  g_assert_true (avq_llava_prefill (llama, prompt_ids, n_ids, features, n_rows,
                                    logits, &error));
  g_assert_no_error (error);
  const AvqSamplingRule rule = { options->temperature, MIN (options->top_p, 1.0f),
                                 options->top_k };
  g_autoptr (GRand) draws = g_rand_new_with_seed (options->seed);
  for (int i = 0; i < options->max_new_tokens; i++) {
    double r = options->temperature > 0 ? g_rand_double (draws) : 0;
    int tok = avq_sample_logits (&rule, logits, V, r);
    if (tok == eos)
      break;
    g_array_append_val (want, tok);
    if (i + 1 < options->max_new_tokens) {
      g_assert_true (avq_llama_decode (llama, tok, logits, &error));
      g_assert_no_error (error);
    }
  }
  g_test_message ("T %g, top_p %g, top_k %d: %u tokens, %d of %d steps fetched whole rows",
                  options->temperature, options->top_p, options->top_k, got->len,
                  st.rows_fetched,
                  MAX (st.generated - 1, 0));
  g_assert_cmpmem (got->data, got->len * sizeof (int), want->data,
                   want->len * sizeof (int));
  if (stats != NULL)
    *stats = st;
}

int
avq_test_assert_sampling_rules_as_rows (AvqLlama *llama, const int *prompt_ids,
                                        int n_ids, const float *features, int n_rows,
                                        int max_new)
{
  const struct {
    float t, top_p;
    int top_k;
  } rules[] = { { 0, 1, 0 },    { 0.05f, 0.9f, 0 }, { 1, 1, 0 },  { 1, 0.5f, 0 },
                { 30, 0.95f, 0 }, { 30, 0.95f, 40 }, { 1, 1, 300 } };
  int fetched = 0;
  for (guint i = 0; i < G_N_ELEMENTS (rules); i++) {
    AvqGenerateOptions opts;
    avq_generate_options_init (&opts);
    opts.max_new_tokens = max_new;
    opts.temperature = rules[i].t;
    opts.top_p = rules[i].top_p;
    opts.top_k = rules[i].top_k;
    opts.seed = 11 + i;
    AvqGenerateStats st;
    avq_test_assert_sampling_as_rows (llama, prompt_ids, n_ids, features, n_rows,
                                      &opts, &st);
    /* greedy, and a top_k the candidates hold, never need the row */
    if (rules[i].t == 0 || (rules[i].top_k > 0 && rules[i].top_k <= AVQ_SAMPLING_CANDIDATES))
      g_assert_cmpint (st.rows_fetched, ==, 0);
    fetched += st.rows_fetched;
  }
  return fetched;
}
