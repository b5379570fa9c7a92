/* LLaMA decoder throughput at the Vicuna-7B shape with random F16 weights.
 *
 * Writing and mapping all 32 layers (13.5 GB) fits this machine but makes a
 * run take many minutes, so by default the model has --layers layers
 * (4) and the figures are split into a per-layer part and a fixed part
 * (embedding, final norm, lm_head, minus what the decoder skips in the
 * final layer of a prefill) by also timing a model that runs only the first
 * layer of the same file. The 32-layer figures
 * printed are that extrapolation, labelled as such.
 *
 * With python3 (or $AVQ_BENCH_PYTHON) and PyTorch available,
 * tests/bench/bench_llama_peer.py runs the same computation on the same
 * file for comparison; otherwise the bench says "peer unavailable". */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "avq-llama.h"
#include "avq-model.h"
#include "bench-llama-model.h"
#include "bench-report.h"

#define HIDDEN 4096
#define FFN 11008
#define HEADS 32
#define VOCAB 32064
#define FULL_LAYERS 32

static int opt_layers = 4;
static int opt_threads = 2;
static int opt_prompt = 611;
static int opt_decode = 16;
static int opt_repeat = 3;
static int opt_rounds = 1;
static char *opt_dir;
static char *opt_peer;
static char *opt_peer_dtype;
static gboolean opt_no_peer;
static gboolean opt_keep;
static char *opt_batch;
static int opt_batch_prompt = 32;
static int opt_batch_steps = 5;
static gboolean opt_batch_only;
static gboolean opt_batch_sgemm;
static gboolean opt_cpu_time;

static GOptionEntry entries[] = {
  { "layers", 'l', 0, G_OPTION_ARG_INT, &opt_layers, "Decoder layers in the model (default 4; 32 = the real size)", "N" },
  { "threads", 't', 0, G_OPTION_ARG_INT, &opt_threads, "Threads (default 2)", "N" },
  { "prompt", 'p', 0, G_OPTION_ARG_INT, &opt_prompt, "Prompt positions to prefill (default 611: LLaVA-1.5 prompt with one image)", "N" },
  { "decode", 'd', 0, G_OPTION_ARG_INT, &opt_decode, "Tokens to decode after the prompt (default 16)", "N" },
  { "repeat", 'r', 0, G_OPTION_ARG_INT, &opt_repeat, "Timed prefills (default 3; the median is printed)", "N" },
  { "rounds", 0, 0, G_OPTION_ARG_INT, &opt_rounds, "Rounds of avq then peer (default 1); figures are medians over rounds", "N" },
  { "dir", 0, 0, G_OPTION_ARG_FILENAME, &opt_dir, "Where to write the random model (default: a new temp dir)", "DIR" },
  { "keep", 0, 0, G_OPTION_ARG_NONE, &opt_keep, "Keep the model files", NULL },
  { "peer", 0, 0, G_OPTION_ARG_FILENAME, &opt_peer, "PyTorch peer script (default tests/bench/bench_llama_peer.py next to the source)", "PATH" },
  { "peer-dtype", 0, 0, G_OPTION_ARG_STRING, &opt_peer_dtype, "Weight dtype in the peer: float32 (default, widened once), float16, bfloat16", "T" },
  { "no-peer", 0, 0, G_OPTION_ARG_NONE, &opt_no_peer, "Do not run the PyTorch peer", NULL },
  { "batch", 'b', 0, G_OPTION_ARG_STRING, &opt_batch, "Batched decode: sequences per step to compare (default 1,4,8; \"\" skips)", "N,N,.." },
  { "batch-prompt", 0, 0, G_OPTION_ARG_INT, &opt_batch_prompt, "Positions prefilled into each sequence before batched decode (default 32)", "N" },
  { "batch-steps", 0, 0, G_OPTION_ARG_INT, &opt_batch_steps, "Timed batched decode steps per batch size (default 5; the median is printed)", "N" },
  { "batch-only", 0, 0, G_OPTION_ARG_NONE, &opt_batch_only, "Only the batched decode figures (no prefill/decode split, no peer)", NULL },
  { "cpu-time", 0, 0, G_OPTION_ARG_NONE, &opt_cpu_time, "Time batched decode steps in process CPU time, not wall time (with --threads 1: a fairer comparison on a busy machine)", NULL },
  { "batch-sgemm", 0, 0, G_OPTION_ARG_NONE, &opt_batch_sgemm, "Also time batched decode through widened blocks + sgemm (AVQ_LLAMA_BATCH_GEMV_ROWS=0)", NULL },
  G_OPTION_ENTRY_NULL
};


typedef struct {
  double prefill_ms, decode_ms;   /* medians; decode per token */
} Figures;

static const char *loadavg (void);

static double
now_ms (void)
{
  return g_get_monotonic_time () / 1000.0;
}

/* --cpu-time: what the process itself spent, whatever else runs */
static double
step_clock_ms (void)
{
  struct timespec ts;
  if (opt_cpu_time && clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts) == 0)
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
  return now_ms ();
}

static gboolean
measure (const char *dir, Figures *out, GError **error)
{
  g_autoptr (AvqModel) model = avq_model_open (dir, error);
  if (model == NULL)
    return FALSE;
  g_autoptr (AvqLlama) llama = avq_llama_new (model, opt_prompt + opt_decode + 1, error);
  if (llama == NULL)
    return FALSE;
  avq_llama_set_threads (llama, opt_threads);

  int *ids = g_new (int, opt_prompt);
  guint64 seed = 12345;
  for (int i = 0; i < opt_prompt; i++)
    ids[i] = (int) (avq_bench_xorshift (&seed) % 32000);
  float *emb = g_new (float, (gsize) opt_prompt * HIDDEN);
  float *logits = g_new (float, VOCAB);
  gboolean ok = avq_llama_embed (llama, ids, opt_prompt, emb, error);

  /* warm-up: brings every weight page in (GEMV path) */
  if (ok)
    ok = avq_llama_prefill (llama, emb, 1, logits, error);

  double *pf = g_new (double, opt_repeat), *dc = g_new (double, MAX (opt_decode, 1));
  for (int r = 0; r < opt_repeat && ok; r++) {
    avq_llama_reset (llama);
    double t0 = now_ms ();
    ok = avq_llama_prefill (llama, emb, opt_prompt, logits, error);
    pf[r] = now_ms () - t0;
  }
  int tok = 0;
  for (int i = 0; i < opt_decode && ok; i++) {
    tok = (int) (avq_bench_xorshift (&seed) % 32000);
    double t0 = now_ms ();
    ok = avq_llama_decode (llama, tok, logits, error);
    dc[i] = now_ms () - t0;
  }
  if (ok) {
    out->prefill_ms = avq_bench_median (pf, opt_repeat);
    out->decode_ms = opt_decode > 0 ? avq_bench_median (dc, opt_decode) : 0;
  }
  g_free (pf);
  g_free (dc);
  g_free (ids);
  g_free (emb);
  g_free (logits);
  return ok;
}

/* Batched decode (avq_llama_decode_batch): every size in `sizes` advances
 * that many sequences, each holding --batch-prompt positions, by one token
 * a step. The sizes take turns step after step so that they see the same
 * machine load. Prints one JSON line per size: the step time, and the time
 * per generated token per sequence, which is what batching divides. With
 * --batch-sgemm a second decoder made with AVQ_LLAMA_BATCH_GEMV_ROWS=0
 * (widened weight blocks + sgemm for every batch) takes turns too. */
static gboolean
measure_batch (const char *dir, const int *sizes, int n_sizes, GError **error)
{
  int most = 0;
  for (int i = 0; i < n_sizes; i++)
    most = MAX (most, sizes[i]);
  g_autoptr (AvqModel) model = avq_model_open (dir, error);
  if (model == NULL)
    return FALSE;
  int n_paths = opt_batch_sgemm ? 2 : 1;
  static const char *const path_name[2] = { "default", "sgemm" };
  AvqLlama *llama[2] = { NULL, NULL };
  /* every step of every size advances its sequences by one position */
  int ctx = opt_batch_prompt + (opt_batch_steps + 1) * n_sizes + 1;
  gboolean ok = TRUE;
  g_autofree char *saved = g_strdup (g_getenv ("AVQ_LLAMA_BATCH_GEMV_ROWS"));
  for (int p = 0; p < n_paths && ok; p++) {
    if (p == 1)
      g_setenv ("AVQ_LLAMA_BATCH_GEMV_ROWS", "0", TRUE);
    llama[p] = avq_llama_new (model, ctx, error);
    ok = llama[p] != NULL && avq_llama_set_sequences (llama[p], most, error);
    if (ok)
      avq_llama_set_threads (llama[p], opt_threads);
  }
  if (saved)
    g_setenv ("AVQ_LLAMA_BATCH_GEMV_ROWS", saved, TRUE);
  else
    g_unsetenv ("AVQ_LLAMA_BATCH_GEMV_ROWS");

  guint64 seed = 777;
  g_autofree int *ids = g_new (int, MAX (opt_batch_prompt, most));
  g_autofree int *seqs = g_new (int, most);
  g_autofree float *emb = g_new (float, (gsize) opt_batch_prompt * HIDDEN);
  g_autofree float *logits = g_new (float, (gsize) most * VOCAB);
  for (int s = 0; s < most && ok; s++) {
    for (int i = 0; i < opt_batch_prompt; i++)
      ids[i] = (int) (avq_bench_xorshift (&seed) % 32000);
    ok = avq_llama_embed (llama[0], ids, opt_batch_prompt, emb, error);
    for (int p = 0; p < n_paths && ok; p++)
      ok = avq_llama_prefill_sequence (llama[p], s, emb, opt_batch_prompt, NULL, error);
    seqs[s] = s;
  }
  g_autofree double *ms = g_new (double, (gsize) n_paths * n_sizes * opt_batch_steps);
  /* step -1 warms up (every weight page in, threads started) */
  for (int step = -1; step < opt_batch_steps && ok; step++) {
    for (int b = 0; b < n_sizes && ok; b++) {
      for (int i = 0; i < sizes[b]; i++)
        ids[i] = (int) (avq_bench_xorshift (&seed) % 32000);
      for (int p = 0; p < n_paths && ok; p++) {
        double t0 = step_clock_ms ();
        ok = avq_llama_decode_batch (llama[p], seqs, ids, sizes[b], logits, error);
        if (step >= 0)
          ms[((gsize) p * n_sizes + b) * opt_batch_steps + step] = step_clock_ms () - t0;
      }
    }
  }
  for (int p = 0; p < n_paths && ok; p++) {
    double base = 0;
    for (int b = 0; b < n_sizes; b++) {
      double step_ms = avq_bench_median (ms + ((gsize) p * n_sizes + b) * opt_batch_steps,
                               opt_batch_steps);
      double per_seq = step_ms / sizes[b];
      if (b == 0)
        base = per_seq;
      g_print ("{\"bench\": \"llama-decode-batch\", \"path\": \"%s\", \"clock\": \"%s\", "
               "\"layers\": %d, \"threads\": %d, \"prompt\": %d, \"batch\": %d, \"step_ms\": %.1f, "
               "\"ms_per_token_per_seq\": %.1f, \"tokens_per_s\": %.2f, "
               "\"gain_vs_batch_%d\": %.2f, \"load\": %s}\n", path_name[p],
               opt_cpu_time ? "cpu" : "wall", opt_layers,
               opt_threads, opt_batch_prompt, sizes[b], step_ms, per_seq, 1000.0 / per_seq,
               sizes[0], base / per_seq, loadavg ());
    }
  }
  for (int p = 0; p < n_paths; p++)
    avq_llama_free (llama[p]);
  return ok;
}

/* Runs the peer on `dir` with `layers` layers; parses "prefill_ms X" and
 * "decode_ms X" lines. */
static gboolean
run_peer (const char *script, const char *dir, int layers, Figures *out, char **why)
{
  g_autofree char *l = g_strdup_printf ("%d", layers);
  g_autofree char *t = g_strdup_printf ("%d", opt_threads);
  g_autofree char *p = g_strdup_printf ("%d", opt_prompt);
  g_autofree char *d = g_strdup_printf ("%d", opt_decode);
  g_autofree char *r = g_strdup_printf ("%d", opt_repeat);
  /* same override as the other benches' peers */
  const char *python = g_getenv ("AVQ_BENCH_PYTHON") ? g_getenv ("AVQ_BENCH_PYTHON") : "python3";
  const char *argv[] = { python, script, "--dir", dir, "--layers", l, "--threads", t,
                         "--prompt", p, "--decode", d, "--repeat", r,
                         "--dtype", opt_peer_dtype ? opt_peer_dtype : "float32", NULL };
  g_autofree char *sout = NULL, *serr = NULL;
  int status;
  g_autoptr (GError) error = NULL;
  if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                     &sout, &serr, &status, &error)) {
    *why = g_strdup (error->message);
    return FALSE;
  }
  if (!g_spawn_check_wait_status (status, NULL)) {
    g_auto (GStrv) lines = g_strsplit (serr ? serr : "", "\n", -1);
    guint n = g_strv_length (lines);
    *why = g_strdup (n >= 2 ? lines[n - 2] : "peer failed");
    return FALSE;
  }
  out->prefill_ms = out->decode_ms = -1;
  g_auto (GStrv) lines = g_strsplit (sout, "\n", -1);
  for (char **s = lines; *s; s++) {
    if (g_str_has_prefix (*s, "prefill_ms "))
      out->prefill_ms = g_ascii_strtod (*s + 11, NULL);
    else if (g_str_has_prefix (*s, "decode_ms "))
      out->decode_ms = g_ascii_strtod (*s + 10, NULL);
    else if (g_str_has_prefix (*s, "peer "))
      g_print ("  %s\n", *s);
  }
  if (out->prefill_ms < 0 || out->decode_ms < 0) {
    *why = g_strdup ("peer printed no figures");
    return FALSE;
  }
  return TRUE;
}

static Figures
median_figures (const Figures *f, int n)
{
  g_autofree double *p = g_new (double, n), *d = g_new (double, n);
  for (int i = 0; i < n; i++) {
    p[i] = f[i].prefill_ms;
    d[i] = f[i].decode_ms;
  }
  Figures m = { avq_bench_median (p, n), avq_bench_median (d, n) };
  return m;
}

/* the machine may be shared: say how busy it was */
static const char *
loadavg (void)
{
  static char buf[64];
  g_autofree char *s = NULL;
  if (!g_file_get_contents ("/proc/loadavg", &s, NULL, NULL))
    return "?";
  g_strlcpy (buf, s, sizeof buf);
  char *sp = strchr (buf, ' ');
  if (sp)
    *sp = '\0';
  return buf;
}

static void
report (const char *who, const Figures *full, const Figures *one, int layers)
{
  int n1 = 1;
  double pl = (full->prefill_ms - one->prefill_ms) / (layers - n1);
  double dl = (full->decode_ms - one->decode_ms) / (layers - n1);
  double pfix = full->prefill_ms - layers * pl, dfix = full->decode_ms - layers * dl;
  g_print ("%s: measured %d layers: prefill %.0f ms, decode %.1f ms/token; "
           "1 layer: prefill %.0f ms, decode %.1f ms/token\n", who, layers,
           full->prefill_ms, full->decode_ms, one->prefill_ms, one->decode_ms);
  g_print ("%s: per layer: prefill %.1f ms, decode %.2f ms; fixed (embedding, final norm, "
           "lm_head, less the final layer's skipped rows): prefill %.1f ms, decode %.2f ms\n", who, pl, dl, pfix, dfix);
  /* what a layer must at least do: 2 flops a weight a prompt row, and read
   * its F16 weights once a decoded token */
  double params = 4.0 * HIDDEN * HIDDEN + 3.0 * HIDDEN * FFN;
  g_print ("%s: per layer that is %.1f GFLOP/s in prefill, %.2f G weights/s in decode "
           "(x2 bytes for F16, x4 for F32)\n", who, 2 * params * opt_prompt / (pl * 1e6),
           params / (dl * 1e6));
  double p32 = pfix + FULL_LAYERS * pl, d32 = dfix + FULL_LAYERS * dl;
  g_print ("%s: extrapolated to 32 layers (7B): prefill %.1f s (%.1f tokens/s), "
           "decode %.0f ms/token (%.2f tokens/s)\n", who, p32 / 1000,
           opt_prompt / (p32 / 1000), d32, 1000 / d32);
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- LLaMA decoder benchmark");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("%s\n", error->message);
    return 2;
  }
  if (opt_layers < 2 || opt_layers > FULL_LAYERS || opt_prompt < 1 || opt_repeat < 1 ||
      opt_decode < 1 || opt_threads < 1 || opt_rounds < 1 || opt_batch_prompt < 1 ||
      opt_batch_steps < 1) {
    g_printerr ("need 2 <= layers <= 32, prompt, repeat, rounds, decode, threads, "
                "batch-prompt, batch-steps >= 1\n");
    return 2;
  }
  g_auto (GStrv) batch_fields = g_strsplit (opt_batch ? opt_batch : "1,4,8", ",", -1);
  g_autofree int *batch = g_new0 (int, g_strv_length (batch_fields) + 1);
  int n_batch = 0;
  for (char **f = batch_fields; *f; f++) {
    if (**f == '\0')
      continue;
    char *end;
    long b = strtol (*f, &end, 10);
    if (*end != '\0' || b < 1 || b > 1024) {
      g_printerr ("--batch: '%s' is not a batch size (1 to 1024)\n", *f);
      return 2;
    }
    batch[n_batch++] = (int) b;
  }

  g_autofree char *dir = opt_dir ? g_strdup (opt_dir) : g_dir_make_tmp ("bench-llama-XXXXXX", &error);
  if (dir == NULL) {
    g_printerr ("%s\n", error->message);
    return 1;
  }
  g_mkdir_with_parents (dir, 0755);
  g_autofree char *one_dir = g_build_filename (dir, "one-layer", NULL);
  g_mkdir_with_parents (one_dir, 0755);
  g_autofree char *weights = g_build_filename (dir, "model.safetensors", NULL);
  g_autofree char *one_weights = g_build_filename (one_dir, "model.safetensors", NULL);

  double gib = 2.0 * ((double) opt_layers * (4.0 * HIDDEN * HIDDEN + 3.0 * HIDDEN * FFN) +
                      2.0 * VOCAB * HIDDEN) / (1 << 30);
  g_print ("bench-llama: Vicuna-7B shape (hidden %d, ffn %d, %d heads, vocab %d), "
           "%d of 32 layers, random F16 weights (%.2f GiB file), %d threads, "
           "prompt %d, decode %d tokens\n", HIDDEN, FFN, HEADS, VOCAB, opt_layers, gib,
           opt_threads, opt_prompt, opt_decode);
  double t0 = now_ms ();
  g_unlink (one_weights);
  if (!avq_bench_write_llama_config (dir, opt_layers, &error) ||
      !avq_bench_write_llama_model (dir, opt_layers, &error) ||
      !avq_bench_write_llama_config (one_dir, 1, &error)) {
    g_printerr ("%s\n", error->message);
    return 1;
  }
  /* the one-layer model reads the first layer of the same file */
  if (symlink (weights, one_weights) != 0) {
    g_printerr ("%s: %s\n", one_weights, g_strerror (errno));
    return 1;
  }
  g_print ("model written in %.1f s to %s\n", (now_ms () - t0) / 1000, dir);

  /* avq and the peer take turns, round after round, so that both see the
   * same share of a busy machine; each figure is the median over rounds */
  g_autofree char *script = opt_peer ? g_strdup (opt_peer)
      : g_build_filename (AVQ_SOURCE_DIR, "tests", "bench", "bench_llama_peer.py", NULL);
  gboolean peer = !opt_no_peer;
  g_autofree char *why = NULL;
  int R = opt_rounds;
  g_autofree Figures *af = g_new0 (Figures, R), *a1 = g_new0 (Figures, R);
  g_autofree Figures *pf = g_new0 (Figures, R), *p1 = g_new0 (Figures, R);
  for (int r = 0; r < R && !opt_batch_only; r++) {
    if (!measure (dir, &af[r], &error) || !measure (one_dir, &a1[r], &error)) {
      g_printerr ("%s\n", error->message);
      return 1;
    }
    g_print ("round %d: avq prefill %.0f ms, decode %.1f ms/token (load %s)\n", r + 1,
             af[r].prefill_ms, af[r].decode_ms, loadavg ());
    if (peer) {
      peer = run_peer (script, dir, opt_layers, &pf[r], &why) &&
          run_peer (script, dir, 1, &p1[r], &why);
      if (peer)
        g_print ("round %d: torch prefill %.0f ms, decode %.1f ms/token (load %s)\n", r + 1,
                 pf[r].prefill_ms, pf[r].decode_ms, loadavg ());
    }
  }
  if (!opt_batch_only) {
    Figures full = median_figures (af, R), one = median_figures (a1, R);
    report ("avq", &full, &one, opt_layers);
  }
  if (peer && !opt_batch_only) {
    Figures full = median_figures (af, R);
    Figures pfull = median_figures (pf, R), pone = median_figures (p1, R);
    report ("torch", &pfull, &pone, opt_layers);
    g_print ("ratio torch/avq (measured %d layers): prefill %.2f, decode %.2f "
             "(> 1: avq faster)\n", opt_layers, pfull.prefill_ms / full.prefill_ms,
             pfull.decode_ms / full.decode_ms);
  } else if (!opt_no_peer && !opt_batch_only) {
    g_print ("peer unavailable: %s\n", why ? why : "?");
  }
  if (n_batch > 0 && !measure_batch (dir, batch, n_batch, &error)) {
    g_printerr ("%s\n", error->message);
    return 1;
  }

  struct rusage ru;
  if (getrusage (RUSAGE_SELF, &ru) == 0)
    g_print ("avq peak RSS %.2f GiB (mapped weight pages included)\n", ru.ru_maxrss / 1048576.0);

  if (!opt_keep) {
    g_unlink (one_weights);
    g_autofree char *c1 = g_build_filename (dir, "config.json", NULL);
    g_autofree char *c2 = g_build_filename (one_dir, "config.json", NULL);
    g_unlink (c2);
    g_rmdir (one_dir);
    g_unlink (weights);
    g_unlink (c1);
    if (opt_dir == NULL)
      g_rmdir (dir);
  }
  return 0;
}
