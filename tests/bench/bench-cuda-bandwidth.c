/* The device's memory bandwidth as a copy measures it: the floor a decode
 * step cannot beat is (bytes of weights it reads) / (this bandwidth). One
 * JSON line, like the other benchmarks:
 *
 *   bench-cuda-bandwidth [--mib M] [--runs N]
 *
 * A device-to-device cudaMemcpyAsync of M MiB (default 2048) moves 2 M MiB
 * (read + write); timed with CUDA events, median of N (default 20). Exits 77
 * without a CUDA device. */
#include <glib.h>
#include <stdlib.h>
#include <cuda_runtime_api.h>

static int
cmp_float (const void *a, const void *b)
{
  float x = *(const float *) a, y = *(const float *) b;
  return x < y ? -1 : x > y;
}

static void
check (cudaError_t e, const char *what)
{
  if (e != cudaSuccess) {
    g_printerr ("bench-cuda-bandwidth: %s: %s\n", what, cudaGetErrorString (e));
    exit (1);
  }
}

int
main (int argc, char **argv)
{
  int mib = 2048, runs = 20;
  GOptionEntry entries[] = {
    { "mib", 0, 0, G_OPTION_ARG_INT, &mib, "MiB copied per run (default 2048)", "M" },
    { "runs", 'n', 0, G_OPTION_ARG_INT, &runs, "Timed runs (default 20)", "N" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- device copy bandwidth");
  g_option_context_add_main_entries (ctx, entries, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || mib < 1 || runs < 1) {
    g_printerr ("bench-cuda-bandwidth: %s\n", error ? error->message : "--mib >= 1, --runs >= 1");
    return 2;
  }
  int count = 0;
  if (cudaGetDeviceCount (&count) != cudaSuccess || count == 0) {
    g_print ("CUDA unavailable; skipping\n");
    return 77;
  }
  const size_t bytes = (size_t) mib << 20;
  void *a = NULL, *b = NULL;
  check (cudaMalloc (&a, bytes), "cudaMalloc");
  check (cudaMalloc (&b, bytes), "cudaMalloc");
  check (cudaMemset (a, 1, bytes), "cudaMemset");
  cudaEvent_t start, stop;
  check (cudaEventCreate (&start), "cudaEventCreate");
  check (cudaEventCreate (&stop), "cudaEventCreate");
  g_autofree float *ms = g_new (float, runs);
  for (int i = -3; i < runs; i++) {
    check (cudaEventRecord (start, 0), "cudaEventRecord");
    check (cudaMemcpyAsync (b, a, bytes, cudaMemcpyDeviceToDevice, 0), "cudaMemcpyAsync");
    check (cudaEventRecord (stop, 0), "cudaEventRecord");
    check (cudaEventSynchronize (stop), "cudaEventSynchronize");
    if (i >= 0)
      check (cudaEventElapsedTime (&ms[i], start, stop), "cudaEventElapsedTime");
  }
  qsort (ms, runs, sizeof (float), cmp_float);
  const double med = ms[runs / 2];
  g_print ("{\"figure\": \"cuda_copy_bandwidth\", \"median_ms\": %.3f, \"mib\": %d, "
           "\"gb_per_s\": %.1f, \"runs\": %d}\n", med, mib,
           2.0 * bytes / (med / 1000.0) / 1e9, runs);
  cudaFree (a);
  cudaFree (b);
  return 0;
}
