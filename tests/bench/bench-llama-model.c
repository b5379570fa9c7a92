/* A random F16 LLaMA of the Vicuna-7B shape on disk (bench-llama-model.h). */
#include "bench-llama-model.h"
#include <errno.h>
#include <stdio.h>
#include "avq-safetensors.h"

#define HIDDEN AVQ_BENCH_LLAMA_HIDDEN
#define FFN AVQ_BENCH_LLAMA_FFN
#define HEADS AVQ_BENCH_LLAMA_HEADS
#define VOCAB AVQ_BENCH_LLAMA_VOCAB

/* a streaming safetensors writer: the library's writer keeps every tensor
 * in memory, which a 13.5 GB model cannot afford */

typedef struct {
  char name[128];
  gint64 rows, cols;
} Entry;

static GArray *
model_entries (int layers)
{
  GArray *e = g_array_new (FALSE, TRUE, sizeof (Entry));
  Entry x;
#define ADD(r, c, ...) do { g_snprintf (x.name, sizeof x.name, __VA_ARGS__); \
    x.rows = r; x.cols = c; g_array_append_val (e, x); } while (0)
  ADD (VOCAB, HIDDEN, "language_model.model.embed_tokens.weight");
  for (int l = 0; l < layers; l++) {
    const char *p = "language_model.model.layers";
    ADD (HIDDEN, 0, "%s.%d.input_layernorm.weight", p, l);
    ADD (HIDDEN, HIDDEN, "%s.%d.self_attn.q_proj.weight", p, l);
    ADD (HIDDEN, HIDDEN, "%s.%d.self_attn.k_proj.weight", p, l);
    ADD (HIDDEN, HIDDEN, "%s.%d.self_attn.v_proj.weight", p, l);
    ADD (HIDDEN, HIDDEN, "%s.%d.self_attn.o_proj.weight", p, l);
    ADD (HIDDEN, 0, "%s.%d.post_attention_layernorm.weight", p, l);
    ADD (FFN, HIDDEN, "%s.%d.mlp.gate_proj.weight", p, l);
    ADD (FFN, HIDDEN, "%s.%d.mlp.up_proj.weight", p, l);
    ADD (HIDDEN, FFN, "%s.%d.mlp.down_proj.weight", p, l);
  }
  ADD (HIDDEN, 0, "language_model.model.norm.weight");
  ADD (VOCAB, HIDDEN, "language_model.lm_head.weight");
#undef ADD
  return e;
}

static gint64
entry_numel (const Entry *e)
{
  return e->rows * MAX (e->cols, 1);
}

guint64
avq_bench_xorshift (guint64 *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

gboolean
avq_bench_write_llama_model (const char *dir, int layers, GError **error)
{
  g_autoptr (GArray) entries_ = model_entries (layers);
  GString *hdr = g_string_new ("{\"__metadata__\":{\"format\":\"pt\"}");
  gint64 off = 0;
  for (guint i = 0; i < entries_->len; i++) {
    const Entry *e = &g_array_index (entries_, Entry, i);
    gint64 nb = entry_numel (e) * 2;
    if (e->cols > 0)
      g_string_append_printf (hdr, ",\"%s\":{\"dtype\":\"F16\",\"shape\":[%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "],\"data_offsets\":[%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "]}",
                              e->name, e->rows, e->cols, off, off + nb);
    else
      g_string_append_printf (hdr, ",\"%s\":{\"dtype\":\"F16\",\"shape\":[%" G_GINT64_FORMAT "],\"data_offsets\":[%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT "]}",
                              e->name, e->rows, off, off + nb);
    off += nb;
  }
  g_string_append_c (hdr, '}');
  while (hdr->len % 8 != 0)
    g_string_append_c (hdr, ' ');

  g_autofree char *path = g_build_filename (dir, "model.safetensors", NULL);
  FILE *f = fopen (path, "wb");
  if (f == NULL) {
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno), "%s: %s", path,
                 g_strerror (errno));
    g_string_free (hdr, TRUE);
    return FALSE;
  }
  guint64 hlen = GUINT64_TO_LE (hdr->len);
  gboolean ok = fwrite (&hlen, 8, 1, f) == 1 && fwrite (hdr->str, hdr->len, 1, f) == 1;
  g_string_free (hdr, TRUE);

  /* A pool of random halves, written again and again at shifting offsets:
   * the values do not matter for speed, only that they are ordinary
   * numbers (no NaN, inf or denormal inputs). Linear weights ~U(-s, s)
   * with s = 1/sqrt(fan_in) keep activations of order 1; norms ~1. */
  enum { POOL = 1 << 20 };
  guint16 *pool = g_new (guint16, POOL + 4096), *ones = g_new (guint16, HIDDEN);
  guint64 seed = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < POOL + 4096; i++) {
    double u = (double) (avq_bench_xorshift (&seed) >> 11) / 9007199254740992.0 * 2 - 1;
    pool[i] = avq_float_to_half ((float) (u * 1.7 / 64.0));   /* fan-in 4096: s ~ 1/37 */
  }
  for (int i = 0; i < HIDDEN; i++)
    ones[i] = avq_float_to_half (1.0f + 0.1f * (float) ((i % 7) - 3) / 3.0f);
  for (guint i = 0; i < entries_->len && ok; i++) {
    const Entry *e = &g_array_index (entries_, Entry, i);
    gint64 n = entry_numel (e);
    if (e->cols == 0) {
      ok = fwrite (ones, 2, n, f) == (size_t) n;
      continue;
    }
    for (gint64 done = 0; done < n && ok;) {
      gint64 chunk = MIN (n - done, POOL);
      ok = fwrite (pool + (avq_bench_xorshift (&seed) % 4096), 2, chunk, f) == (size_t) chunk;
      done += chunk;
    }
  }
  g_free (pool);
  g_free (ones);
  ok = (fclose (f) == 0) && ok;
  if (!ok)
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_IO, "%s: write failed", path);
  return ok;
}

gboolean
avq_bench_write_llama_config (const char *dir, int layers, GError **error)
{
  g_autofree char *cfg = g_strdup_printf (
      "{\"architectures\": [\"LlavaForConditionalGeneration\"], "
      "\"image_token_index\": 32000, \"text_config\": {\"model_type\": \"llama\", "
      "\"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, "
      "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
      "\"num_key_value_heads\": %d, \"max_position_embeddings\": 4096, "
      "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0}}",
      VOCAB, HIDDEN, FFN, layers, HEADS, HEADS);
  g_autofree char *path = g_build_filename (dir, "config.json", NULL);
  return g_file_set_contents (path, cfg, -1, error);
}

