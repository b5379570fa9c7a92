#include "test-util.h"
#include <math.h>

char *
avq_test_data_path (const char *relative)
{
  return g_build_filename (AVQ_TEST_DATA_DIR, relative, NULL);
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
