/* Time per Lloyd iteration of the k-means engine, against a PyTorch CPU
 * peer doing the same iteration (tests/bench/bench_kmeans_peer.py), run
 * from here so both see the same machine state.
 *
 *   build/tests/bench/bench-kmeans [--n 100000] [--d 1024] [--k 4096]
 *       [--iters 3] [--threads 2] [--init-sample 0] [--python python3]
 *       [--no-peer]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "avq-kmeans.h"
#include "bench-report.h"

typedef struct {
  GArray *secs;
} Trace;

static void
on_iter (const AvqKmeansIterStats *st, gpointer data)
{
  Trace *t = data;
  g_array_append_val (t->secs, st->seconds);
  fprintf (stderr, "iter %u: %.3f s mse %.6g rel %.3g reseeded %u\n",
           st->iteration, st->seconds, st->mse, st->rel_change, st->reseeded);
}

/* Sorts v. */
/* Standard normal-ish (sum of four uniforms), from a splitmix64 stream:
 * the iteration cost does not depend on the values, only the generation
 * time of 10^8 numbers does. */
static void
fill (float *x, gsize n, guint64 seed)
{
  guint64 s = seed;
  for (gsize i = 0; i < n; i++) {
    float acc = 0.f;
    for (int r = 0; r < 4; r++) {
      guint64 z = (s += G_GUINT64_CONSTANT (0x9e3779b97f4a7c15));
      z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT (0xbf58476d1ce4e5b9);
      z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT (0x94d049bb133111eb);
      z ^= z >> 31;
      acc += (float) (z >> 40) * (1.0f / 16777216.0f);
    }
    x[i] = (acc - 2.0f) * 1.7320508f;
  }
}

int
main (int argc, char **argv)
{
  gint64 n = 100000, d = 1024, k = 4096, iters = 3, threads = 2, sample = 0;
  gchar *python = NULL;
  gboolean no_peer = FALSE;
  GOptionEntry entries[] = {
    { "n", 0, 0, G_OPTION_ARG_INT64, &n, "points", "N" },
    { "d", 0, 0, G_OPTION_ARG_INT64, &d, "dimension", "D" },
    { "k", 0, 0, G_OPTION_ARG_INT64, &k, "codebook size", "K" },
    { "iters", 0, 0, G_OPTION_ARG_INT64, &iters, "Lloyd iterations timed", "I" },
    { "threads", 0, 0, G_OPTION_ARG_INT64, &threads, "BLAS / torch threads", "T" },
    { "init-sample", 0, 0, G_OPTION_ARG_INT64, &sample,
      "k-means++ sample (0: K, the cheapest; the engine default is max(8K,16384))", "S" },
    { "python", 0, 0, G_OPTION_ARG_STRING, &python, "interpreter for the peer", "PY" },
    { "no-peer", 0, 0, G_OPTION_ARG_NONE, &no_peer, "skip the PyTorch peer", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  GError *err = NULL;
  GOptionContext *ctx = g_option_context_new ("- k-means iteration benchmark");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    fprintf (stderr, "%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  if (n < 1 || d < 1 || k < 1 || k > n || iters < 1 || threads < 1) {
    fprintf (stderr, "need 1 <= K <= N, D, iters, threads >= 1\n");
    return 2;
  }

  float *x = g_try_malloc_n ((gsize) n, (gsize) d * sizeof (float));
  float *cent = g_try_malloc_n ((gsize) k, (gsize) d * sizeof (float));
  if (!x || !cent) {
    fprintf (stderr, "out of memory\n");
    return 1;
  }
  fill (x, (gsize) (n * d), 1);

  Trace t = { g_array_new (FALSE, FALSE, sizeof (double)) };
  AvqKmeansOptions o;
  avq_kmeans_options_init (&o);
  o.k = (guint) k;
  o.max_iters = (guint) iters;
  o.tol = 0;
  o.threads = (guint) threads;
  o.init_sample = sample ? (gsize) sample : (gsize) k;
  o.progress = on_iter;
  o.progress_data = &t;
  AvqKmeansResult res;
  if (!avq_kmeans_fit (x, (gsize) n, (gsize) d, &o, cent, NULL, &res, &err)) {
    fprintf (stderr, "%s\n", err->message);
    return 1;
  }
  double c_med = avq_bench_median ((double *) t.secs->data, t.secs->len);
  /* The best run as well: on a shared host the median still carries other
   * jobs' load, the minimum is the closest to the code's own speed. */
  double c_min = ((double *) t.secs->data)[0];
  double gflop = 2.0 * (double) n * (double) k * (double) d / 1e9;
  printf ("k-means Lloyd iteration, N=%" G_GINT64_FORMAT " D=%" G_GINT64_FORMAT
          " K=%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT " threads\n",
          n, d, k, threads);
  printf ("  k-means++ init on %zu points: %.2f s\n", o.init_sample,
          res.init_seconds);
  printf ("  avq (OpenBLAS sgemm)     median %.3f s/iter  (%.1f GFLOP/s), "
          "best %.3f s\n", c_med, gflop / c_med, c_min);

  fflush (stdout);
  if (no_peer)
    return 0;
  char *peer = g_strdup (AVQ_BENCH_PEER);
  char *argv_peer[16];
  int a = 0;
  argv_peer[a++] = python ? python : (char *) "python3";
  argv_peer[a++] = peer;
  char *args[5];
  args[0] = g_strdup_printf ("--n=%" G_GINT64_FORMAT, n);
  args[1] = g_strdup_printf ("--d=%" G_GINT64_FORMAT, d);
  args[2] = g_strdup_printf ("--k=%" G_GINT64_FORMAT, k);
  args[3] = g_strdup_printf ("--iters=%" G_GINT64_FORMAT, iters);
  args[4] = g_strdup_printf ("--threads=%" G_GINT64_FORMAT, threads);
  for (int i = 0; i < 5; i++)
    argv_peer[a++] = args[i];
  argv_peer[a] = NULL;
  /* Free our copy of the data first: the peer makes its own. */
  g_free (x);
  x = NULL;

  gchar *out = NULL;
  gint status = 0;
  /* stderr is inherited: the peer's per-iteration lines interleave with
   * ours. */
  if (!g_spawn_sync (NULL, argv_peer, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                     &out, NULL, &status, &err)) {
    printf ("  peer unavailable: %s\n", err->message);
    return 0;
  }
  const char *line = out ? strstr (out, "PEER median_s=") : NULL;
  if (!line || !g_spawn_check_wait_status (status, NULL)) {
    const char *said = out ? strstr (out, "peer unavailable") : NULL;
    if (said)
      printf ("  %s", said);
    else
      printf ("  peer unavailable%s%s", out && *out ? ": " : "\n",
              out ? out : "");
    return 0;
  }
  double p_med = g_ascii_strtod (line + strlen ("PEER median_s="), NULL);
  const char *pm = strstr (line, "min_s=");
  double p_min = pm ? g_ascii_strtod (pm + strlen ("min_s="), NULL) : p_med;
  const char *ver = strstr (line, "torch=");
  g_autofree char *version = ver
      ? g_strndup (ver + 6, strcspn (ver + 6, " \n")) : g_strdup ("?");
  printf ("  torch %-18s median %.3f s/iter  (%.1f GFLOP/s), best %.3f s\n",
          version, p_med, gflop / p_med, p_min);
  printf ("  ratio avq / torch: median %.2f, best %.2f (below 1: avq faster)\n",
          c_med / p_med, c_min / p_min);
  g_free (out);
  g_free (peer);
  for (int i = 0; i < 5; i++)
    g_free (args[i]);
  g_array_free (t.secs, TRUE);
  g_free (cent);
  g_free (python);
  return 0;
}
