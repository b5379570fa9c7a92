/* Edge-encode benchmark at the real size (CLIP ViT-L/14-336 front, 4096-entry
 * codebook) with random weights, against the same computation in PyTorch
 * (bench_encode_peer.py) when a Python with torch is around.
 *
 * The model and AVQ files are written to a temporary directory and loaded
 * through the normal loaders (F16, as the hub ships them), so the timed code
 * is exactly what avq_engine_encode_pixels runs: embed -> layers < L ->
 * LN1 -> DLP -> codebook GEMM -> argmin (-> side information).
 *
 *   bench-encode [--runs N] [--threads T] [--layers 0,1] [--no-peer]
 */
#include <cblas.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include "avq-model.h"
#include "avq-quantizer.h"
#include "avq-safetensors.h"
#include "avq-vision.h"
#include "bench-vit-model.h"
#include "bench-report.h"

#define D 1024
#define MLP 4096
#define HEADS 16
#define IMAGE 336
#define K 4096

#ifndef AVQ_BENCH_PEER
#define AVQ_BENCH_PEER "bench_encode_peer.py"
#endif

/* Other work on the machine shows up in every figure: say how much. */
static void
print_load (const char *when)
{
  g_autofree char *load = NULL;
  if (g_file_get_contents ("/proc/loadavg", &load, NULL, NULL))
    g_print ("load average %s: %s", when, load);
}

/* Runs the PyTorch peer; returns its median ms or a negative value, and
 * the torch version it ran with in `version`. */
static double
run_peer (int layer, int runs, int threads, char **version)
{
  const char *candidates[] = { g_getenv ("AVQ_BENCH_PYTHON"), "python3",
                               "/usr/bin/python3" };
  g_autofree char *l = g_strdup_printf ("%d", layer);
  g_autofree char *n = g_strdup_printf ("%d", runs);
  g_autofree char *t = g_strdup_printf ("%d", threads);
  for (guint i = 0; i < G_N_ELEMENTS (candidates); i++) {
    if (candidates[i] == NULL)
      continue;
    const char *argv[] = { candidates[i], AVQ_BENCH_PEER, "--layer", l,
                           "--runs", n, "--threads", t, NULL };
    g_autofree char *out = NULL;
    gint status = 0;
    if (!g_spawn_sync (NULL, (char **) argv, NULL,
                       G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL, NULL,
                       NULL, &out, NULL, &status, NULL) ||
        !g_spawn_check_wait_status (status, NULL))
      continue;
    const char *m = strstr (out, "median_ms=");
    const char *v = strstr (out, "torch=");
    if (m != NULL) {
      if (v != NULL) {
        v += strlen ("torch=");
        g_free (*version);
        *version = g_strndup (v, strcspn (v, " \n"));
      }
      return g_ascii_strtod (m + strlen ("median_ms="), NULL);
    }
  }
  return -1.0;
}

int
main (int argc, char **argv)
{
  int runs = 20, threads = 2;
  gboolean no_peer = FALSE;
  g_autofree char *layers_arg = NULL;
  g_autofree char *torch_version = NULL;
  GOptionEntry entries[] = {
    { "runs", 'n', 0, G_OPTION_ARG_INT, &runs, "timed runs per split", "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "BLAS threads", "T" },
    { "layers", 'l', 0, G_OPTION_ARG_STRING, &layers_arg, "split layers (0,1)", "LIST" },
    { "no-peer", 0, 0, G_OPTION_ARG_NONE, &no_peer, "skip the PyTorch peer", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GError) error = NULL;
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- AVQ edge encode benchmark");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("%s\n", error->message);
    return 2;
  }
  if (runs < 1 || threads < 1) {
    g_printerr ("--runs and --threads must be positive\n");
    return 2;
  }
  g_auto (GStrv) split = g_strsplit (layers_arg ? layers_arg : "0,1", ",", -1);
  int max_layer = 0;
  for (int i = 0; split[i]; i++)
    max_layer = MAX (max_layer, atoi (split[i]));
  if (max_layer > 22) {
    g_printerr ("split layers must be 0..22\n");
    return 2;
  }

  openblas_set_num_threads (threads);
  g_autofree char *dir = g_dir_make_tmp ("avq-bench-XXXXXX", &error);
  if (dir == NULL)
    g_error ("%s", error->message);
  AvqBenchRng rng = { G_GUINT64_CONSTANT (0x9e3779b97f4a7c15) };
  AvqBenchVitOptions model_options = {
    .layers = max_layer, .next_ln1 = TRUE, .projector = FALSE, .fc2_spread = 0.035f,
  };
  avq_bench_write_vit_model (dir, &model_options, &rng);
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  if (model == NULL)
    g_error ("%s", error->message);
  g_autoptr (AvqVisionTower) tower = avq_vision_tower_new (model, max_layer, &error);
  if (tower == NULL)
    g_error ("%s", error->message);
  g_autoptr (AvqVisionScratch) vs = avq_vision_scratch_new (tower);
  gsize npx = 3 * (gsize) IMAGE * IMAGE;
  g_autofree float *px = g_new (float, npx);
  for (gsize i = 0; i < npx; i++)
    px[i] = 0.15f + 1.9f * avq_bench_rng_uniform (&rng);
  g_autofree float *x = g_new (float, (gsize) tower->tokens * D);

  g_print ("bench-encode: edge encode at ViT-L/14-336 size (D=%d, %d heads, "
           "MLP %d, %d tokens, K=%d), random F16 weights\n", D, HEADS, MLP,
           tower->tokens, K);
  g_print ("threads=%d runs=%d (median of runs after 2 warm-up frames); "
           "OpenBLAS: %s\n\n", threads, runs, openblas_get_config ());
  print_load ("before");
  g_print ("%-6s %10s %10s %10s %10s %12s %8s\n", "split", "embed", "layers",
           "quantize", "total", "pytorch", "C/torch");

  for (int si = 0; split[si]; si++) {
    int layer = atoi (split[si]);
    g_autofree char *avq = avq_bench_write_avq (dir, layer, &rng);
    g_autoptr (AvqQuantizer) q = avq_quantizer_load (avq, model, &error);
    if (q == NULL)
      g_error ("%s", error->message);
    g_autoptr (AvqQuantizerScratch) qs = avq_quantizer_scratch_new (q);
    double *te = g_new (double, runs), *tl = g_new (double, runs),
           *tq = g_new (double, runs), *tt = g_new (double, runs);
    guint checksum = 0;
    for (int r = -2; r < runs; r++) {
      gint64 t0 = g_get_monotonic_time ();
      avq_vision_embed (tower, px, x, vs);
      gint64 t1 = g_get_monotonic_time ();
      avq_vision_run_layers (tower, 0, layer, x, vs);
      gint64 t2 = g_get_monotonic_time ();
      AvqFrame *f = avq_quantizer_encode (q, x, qs, NULL);
      gint64 t3 = g_get_monotonic_time ();
      checksum += f->indices[0] + f->indices[f->tokens - 1];
      avq_frame_free (f);
      if (r >= 0) {
        te[r] = (t1 - t0) / 1000.0;
        tl[r] = (t2 - t1) / 1000.0;
        tq[r] = (t3 - t2) / 1000.0;
        tt[r] = (t3 - t0) / 1000.0;
      }
    }
    double me = avq_bench_median (te, runs), ml = avq_bench_median (tl, runs),
           mq = avq_bench_median (tq, runs), mt = avq_bench_median (tt, runs);
    double peer = no_peer ? -1 : run_peer (layer, runs, threads, &torch_version);
    if (peer > 0)
      g_print ("L=%-4d %8.1fms %8.1fms %8.1fms %8.1fms %10.1fms %8.2f\n",
               layer, me, ml, mq, mt, peer, mt / peer);
    else
      g_print ("L=%-4d %8.1fms %8.1fms %8.1fms %8.1fms   peer unavailable\n",
               layer, me, ml, mq, mt);
    (void) checksum;
    g_free (te);
    g_free (tl);
    g_free (tq);
    g_free (tt);
    g_unlink (avq);
  }

  if (torch_version)
    g_print ("peer: PyTorch %s, %d threads (%s)\n", torch_version, threads,
             AVQ_BENCH_PEER);
  print_load ("after");
  g_autofree char *m = g_build_filename (dir, "model.safetensors", NULL);
  g_autofree char *c = g_build_filename (dir, "config.json", NULL);
  g_unlink (m);
  g_unlink (c);
  g_rmdir (dir);
  return 0;
}
