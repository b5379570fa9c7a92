/* What every benchmark program does with its timings: sort them, take the
 * median, print a figure as one JSON line; and the relative error the GPU
 * benchmarks report next to their timings. GLib only. */
#pragma once
#include <glib.h>

/* Sorts v ascending. */
void avq_bench_sort (double *v, gsize n);
/* Sorts v and returns its median (the mean of the middle two for even n). */
double avq_bench_median (double *v, gsize n);
/* Sorts v and returns v[n / 2] (the upper of the middle two for even n),
 * the value the JSON figures print as median_ms. */
double avq_bench_upper_median (double *v, gsize n);
/* Sorts ms and prints {"figure": figure, "median_ms": upper median,
 * "min_ms", "max_ms", "runs", then `extra` (JSON members, may be NULL)}. */
void avq_bench_report_ms (const char *figure, double *ms, gsize n,
                          const char *extra);
/* ||a - b||_2 / ||b||_2 (||a - b||_2 when b is zero), in double. */
double avq_bench_rel_error (const float *a, const float *b, gsize n);
