/* Device selection (auto / cpu / cuda) through the engine API and the `avq`
 * tool. Runs on every machine: where CUDA is unavailable (no CUDA backend
 * built, no driver, no GPU) it checks that AUTO quietly means the CPU and
 * that an explicit CUDA request fails with an error naming CUDA; where CUDA
 * is available it checks that AUTO picks it. Numerics on the GPU are
 * test-cuda's business. */
#include <string.h>
#include "avq-answerer.h"
#include "avq-engine.h"
#include "avq-error.h"
#include "test-util.h"

static gboolean cuda_ok;

static void
test_names (void)
{
  AvqDevice d = AVQ_DEVICE_CPU;
  g_assert_true (avq_device_from_string ("auto", &d));
  g_assert_cmpint (d, ==, AVQ_DEVICE_AUTO);
  g_assert_true (avq_device_from_string ("CPU", &d));
  g_assert_cmpint (d, ==, AVQ_DEVICE_CPU);
  g_assert_true (avq_device_from_string ("cuda", &d));
  g_assert_cmpint (d, ==, AVQ_DEVICE_CUDA);
  g_assert_false (avq_device_from_string ("gpu", &d));
  g_assert_false (avq_device_from_string ("", &d));
  g_assert_false (avq_device_from_string (NULL, &d));
  g_assert_cmpint (d, ==, AVQ_DEVICE_CUDA);   /* untouched on failure */
  g_assert_cmpstr (avq_device_to_string (AVQ_DEVICE_AUTO), ==, "auto");
  g_assert_cmpstr (avq_device_to_string (AVQ_DEVICE_CPU), ==, "cpu");
  g_assert_cmpstr (avq_device_to_string (AVQ_DEVICE_CUDA), ==, "cuda");
  /* The zero value of the options is AUTO. */
  AvqEngineOptions zero = { 0 };
  g_assert_cmpint (zero.device, ==, AVQ_DEVICE_AUTO);
}

static void
test_resolve (void)
{
  g_autoptr (GError) error = NULL;
  AvqDevice d;
  g_unsetenv ("AVQ_DEVICE");

  g_assert_true (avq_device_resolve (AVQ_DEVICE_AUTO, &d, &error));
  g_assert_no_error (error);
  g_assert_cmpint (d, ==, cuda_ok ? AVQ_DEVICE_CUDA : AVQ_DEVICE_CPU);
  g_assert_true (avq_device_resolve (AVQ_DEVICE_CPU, &d, &error));
  g_assert_cmpint (d, ==, AVQ_DEVICE_CPU);

  gboolean ok = avq_device_resolve (AVQ_DEVICE_CUDA, &d, &error);
  if (cuda_ok) {
    g_assert_true (ok);
    g_assert_cmpint (d, ==, AVQ_DEVICE_CUDA);
  } else {
    g_assert_false (ok);
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE);
    g_assert_nonnull (strstr (error->message, "cuda"));
    g_assert_nonnull (strstr (error->message, "CUDA"));
    g_clear_error (&error);
  }

  /* AVQ_DEVICE changes what AUTO means, never an explicit choice. */
  g_setenv ("AVQ_DEVICE", "cpu", TRUE);
  g_assert_true (avq_device_resolve (AVQ_DEVICE_AUTO, &d, &error));
  g_assert_cmpint (d, ==, AVQ_DEVICE_CPU);
  g_setenv ("AVQ_DEVICE", "bogus", TRUE);
  g_assert_false (avq_device_resolve (AVQ_DEVICE_AUTO, &d, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "AVQ_DEVICE"));
  g_clear_error (&error);
  g_assert_true (avq_device_resolve (AVQ_DEVICE_CPU, &d, &error));
  g_assert_cmpint (d, ==, AVQ_DEVICE_CPU);
  g_setenv ("AVQ_DEVICE", "cuda", TRUE);
  ok = avq_device_resolve (AVQ_DEVICE_AUTO, &d, &error);
  g_assert_cmpint (ok, ==, cuda_ok);
  if (!ok) {
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE);
    g_assert_nonnull (strstr (error->message, "AVQ_DEVICE"));
    g_clear_error (&error);
  }
  g_unsetenv ("AVQ_DEVICE");
}

static void
test_engine (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  g_autofree char *avq = avq_test_data_path ("tiny-llava/avq-L0-derive.safetensors");
  g_unsetenv ("AVQ_DEVICE");

  AvqEngineOptions opt = { .model_dir = dir, .avq_path = avq };
  g_autoptr (AvqEngine) e = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  g_assert_cmpint (avq_engine_device (e), ==,
                   cuda_ok ? AVQ_DEVICE_CUDA : AVQ_DEVICE_CPU);
  if (!cuda_ok)
    g_assert_cmpstr (avq_engine_device_description (e), ==, "cpu");
  else
    g_assert_true (g_str_has_prefix (avq_engine_device_description (e), "cuda: "));

  opt.device = AVQ_DEVICE_CPU;
  g_autoptr (AvqEngine) cpu = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  g_assert_cmpint (avq_engine_device (cpu), ==, AVQ_DEVICE_CPU);

  opt.device = AVQ_DEVICE_CUDA;
  g_autoptr (AvqEngine) gpu = avq_engine_new (&opt, &error);
  if (cuda_ok) {
    g_assert_no_error (error);
    g_assert_cmpint (avq_engine_device (gpu), ==, AVQ_DEVICE_CUDA);
  } else {
    g_assert_null (gpu);
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE);
    g_assert_nonnull (strstr (error->message, "CUDA"));
    g_clear_error (&error);
  }

  /* The answerer passes its device on to its engine. */
  if (!cuda_ok) {
    AvqAnswererOptions aopt = { .model_dir = dir, .device = AVQ_DEVICE_CUDA };
    g_autoptr (AvqAnswerer) a = avq_answerer_new (&aopt, &error);
    g_assert_null (a);
    g_assert_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE);
  }
}

static AvqCliRun
run_avq (const char *first, ...)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  va_list ap;
  va_start (ap, first);
  for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (args, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (args, NULL);
  return avq_test_run_cli ((const char *const *) args->pdata);
}

static void
test_cli (void)
{
  g_unsetenv ("AVQ_DEVICE");
  g_autofree char *model = avq_test_data_path ("tiny-llava");
  g_autofree char *avq = avq_test_data_path ("tiny-llava/avq-L0-derive.safetensors");
  g_autofree char *image = avq_test_data_path ("tiny-llava/images/chelsea.png");
  g_autofree char *out = avq_test_tmp_path ("device.avq");
  g_autofree char *feat = avq_test_tmp_path ("device.safetensors");

  struct { int status; const char *needle; AvqCliRun r; } checks[] = {
    { 2, "--device must be auto, cpu or cuda", run_avq ("encode", "--model", model, "--avq", avq, "-o", out, "--device", "bogus", image, NULL) },
    { 2, "--device must be", run_avq ("features", "--model", model, "-o", feat, "--device", "gpu", image, NULL) },
    { 2, "--device must be", run_avq ("eval", "--model", model, "--avq", avq, "--device", "gpu", image, NULL) },
    { 2, "--device must be", run_avq ("ask", "--model", model, "-q", "what?", "--device", "gpu", image, NULL) },
    { 2, "--device must be", run_avq ("train-codebook", "--model", model, "-l", "0", "-o", out, "--device", "gpu", image, NULL) },
    /* Training has no CUDA path: refused either way, naming CUDA. */
    { 1, "cuda", run_avq ("train-codebook", "--model", model, "-l", "0", "-o", out, "--device", "cuda", image, NULL) },
    { 0, "1 frame(s)", run_avq ("encode", "--model", model, "--avq", avq, "-o", out, "--device", "cpu", image, NULL) },
    { 0, "1 frame(s)", run_avq ("encode", "--model", model, "--avq", avq, "-o", out, "--device", "auto", image, NULL) },
    { 0, "1 tensor(s)", run_avq ("features", "--model", model, "-o", feat, "--device", "cpu", image, NULL) },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (checks); i++) {
    if (checks[i].r.status != checks[i].status || strstr (checks[i].r.err, checks[i].needle) == NULL)
      g_error ("check %" G_GSIZE_FORMAT ": exit %d (want %d), stderr: %s", i,
               checks[i].r.status, checks[i].status, checks[i].r.err);
    avq_test_cli_run_clear (&checks[i].r);
  }

  AvqCliRun r = run_avq ("encode", "--model", model, "--avq", avq, "-o", out,
                         "--device", "cuda", image, NULL);
  if (cuda_ok) {
    if (r.status != 0 || strstr (r.err, "cuda: ") == NULL)
      g_error ("encode --device cuda: exit %d, stderr: %s", r.status, r.err);
  } else if (r.status != 1 || strstr (r.err, "CUDA") == NULL) {
    g_error ("encode --device cuda without CUDA: exit %d (want 1), stderr: %s",
             r.status, r.err);
  }
  avq_test_cli_run_clear (&r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_autoptr (GError) why = NULL;
  g_unsetenv ("AVQ_DEVICE");
  cuda_ok = avq_cuda_available (&why);
  if (!cuda_ok) {
    /* The reason must name CUDA and say something. */
    g_assert_error (why, AVQ_ERROR, AVQ_ERROR_DEVICE);
    g_assert_nonnull (strstr (why->message, "CUDA"));
    g_test_message ("CUDA unavailable here (%s): checking the CPU fallbacks", why->message);
  }
  g_test_add_func ("/device/names", test_names);
  g_test_add_func ("/device/resolve", test_resolve);
  g_test_add_func ("/device/engine", test_engine);
  g_test_add_func ("/device/cli", test_cli);
  return g_test_run ();
}
