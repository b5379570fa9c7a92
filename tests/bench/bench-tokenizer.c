/* Tokenizer speed: load time of tokenizer.json and encode time of a
 * ~1,000-word English text, as the median over many runs.
 *
 *   bench-tokenizer [MODEL_DIR] [RUNS]
 *
 * The text is generated from a fixed seed so runs are comparable. Load is
 * reported as wall and CPU time: on a shared machine the wall figure also
 * counts time spent waiting for a core. */
#include "avq-tokenizer.h"
#include "bench-report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const words[] = {
  "the", "a", "cat", "is", "sitting", "on", "table", "in", "front", "of", "window",
  "what", "color", "dog", "man", "holding", "umbrella", "street", "picture", "shows",
  "two", "people", "walking", "along", "beach", "near", "water", "there", "are", "several",
  "cars", "parked", "outside", "building", "astronaut", "wearing", "white", "suit",
  "coffee", "cup", "saucer", "wooden", "background", "image", "question", "answer",
  "single", "word", "phrase", "looking", "camera", "red", "blue", "green", "small", "large",
  "because", "however", "which", "photograph", "kitchen", "bicycle", "mountain", "river",
};

static char *
make_text (guint n_words)
{
  GRand *rng = g_rand_new_with_seed (1234);
  GString *s = g_string_new (NULL);
  for (guint i = 0; i < n_words; i++) {
    const char *w = words[g_rand_int_range (rng, 0, G_N_ELEMENTS (words))];
    if (i > 0)
      g_string_append_c (s, ' ');
    if (i == 0 || s->str[s->len - 2] == '.')
      g_string_append_printf (s, "%c%s", g_ascii_toupper (w[0]), w + 1);
    else
      g_string_append (s, w);
    guint32 r = g_rand_int_range (rng, 0, 100);
    if (r < 7)
      g_string_append_c (s, '.');
    else if (r < 12)
      g_string_append_c (s, ',');
    else if (r == 12)
      g_string_append_c (s, '?');
  }
  g_string_append_c (s, '.');
  g_rand_free (rng);
  return g_string_free (s, FALSE);
}

static double
cpu_us (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double) ts.tv_sec * 1e6 + (double) ts.tv_nsec / 1e3;
}

int
main (int argc, char **argv)
{
  const char *model = argc > 1 ? argv[1] : AVQ_TEST_DATA_DIR "/llava-1.5-7b-hf";
  guint runs = argc > 2 ? (guint) g_ascii_strtoull (argv[2], NULL, 10) : 200;
  if (runs == 0)
    runs = 1;

  double load_us[5], load_cpu[5];
  AvqTokenizer *tok = NULL;
  for (guint i = 0; i < G_N_ELEMENTS (load_us); i++) {
    GError *error = NULL;
    double c0 = cpu_us ();
    gint64 t0 = g_get_monotonic_time ();
    AvqTokenizer *t = avq_tokenizer_load (model, &error);
    load_us[i] = (double) (g_get_monotonic_time () - t0);
    load_cpu[i] = cpu_us () - c0;
    if (t == NULL) {
      fprintf (stderr, "bench-tokenizer: %s\n", error->message);
      g_error_free (error);
      return 1;
    }
    avq_tokenizer_free (tok);
    tok = t;
  }

  g_autofree char *text = make_text (1000);
  gsize n_ids = 0;
  g_autofree gint32 *ids = avq_tokenizer_encode (tok, text, -1, TRUE, &n_ids, NULL);
  double *enc_us = g_new (double, runs), *enc_cpu = g_new (double, runs);
  for (guint r = 0; r < runs; r++) {
    gsize n;
    double c0 = cpu_us ();
    gint64 t0 = g_get_monotonic_time ();
    gint32 *out = avq_tokenizer_encode (tok, text, -1, TRUE, &n, NULL);
    enc_us[r] = (double) (g_get_monotonic_time () - t0);
    enc_cpu[r] = cpu_us () - c0;
    g_free (out);
  }

  double *dec_us = g_new (double, runs);
  for (guint r = 0; r < runs; r++) {
    gint64 t0 = g_get_monotonic_time ();
    char *back = avq_tokenizer_decode (tok, ids, n_ids, TRUE);
    dec_us[r] = (double) (g_get_monotonic_time () - t0);
    g_free (back);
  }

  double enc = avq_bench_median (enc_us, runs), dec = avq_bench_median (dec_us, runs);
  double enc_c = avq_bench_median (enc_cpu, runs);
  double load = avq_bench_median (load_us, G_N_ELEMENTS (load_us));
  double load_c = avq_bench_median (load_cpu, G_N_ELEMENTS (load_cpu));
  printf ("tokenizer: %s\n", model);
  printf ("load: median %.1f ms wall (min %.1f ms), %.1f ms CPU, over %u loads\n",
          load / 1000.0, load_us[0] / 1000.0, load_c / 1000.0, (guint) G_N_ELEMENTS (load_us));
  printf ("text: 1000 words, %zu bytes, %zu tokens (BOS included)\n", strlen (text), n_ids);
  printf ("encode: median %.1f us per text, %.2f us per 100 tokens wall, %.2f CPU (%u runs)\n",
          enc, enc * 100.0 / (double) n_ids, enc_c * 100.0 / (double) n_ids, runs);
  printf ("decode: median %.1f us per text, %.2f us per 100 tokens\n", dec,
          dec * 100.0 / (double) n_ids);

  g_free (enc_us);
  g_free (enc_cpu);
  g_free (dec_us);
  avq_tokenizer_free (tok);
  return 0;
}
