/* Timing statistics and figure lines shared by the benchmarks
 * (bench-report.h). */
#include "bench-report.h"
#include <math.h>
#include <stdlib.h>

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

void
avq_bench_sort (double *v, gsize n)
{
  qsort (v, n, sizeof *v, cmp_double);
}

double
avq_bench_median (double *v, gsize n)
{
  avq_bench_sort (v, n);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double
avq_bench_upper_median (double *v, gsize n)
{
  avq_bench_sort (v, n);
  return v[n / 2];
}

void
avq_bench_report_ms (const char *figure, double *ms, gsize n, const char *extra)
{
  double med = avq_bench_upper_median (ms, n);
  g_print ("{\"figure\": \"%s\", \"median_ms\": %.3f, \"min_ms\": %.3f, "
           "\"max_ms\": %.3f, \"runs\": %" G_GSIZE_FORMAT "%s%s}\n", figure, med,
           ms[0], ms[n - 1], n, extra ? ", " : "", extra ? extra : "");
}

double
avq_bench_rel_error (const float *a, const float *b, gsize n)
{
  double num = 0, den = 0;
  for (gsize i = 0; i < n; i++) {
    double d = (double) a[i] - b[i];
    num += d * d;
    den += (double) b[i] * b[i];
  }
  return den > 0 ? sqrt (num / den) : sqrt (num);
}
