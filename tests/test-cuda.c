/* The CUDA backend against the tiny fixture and against the CPU engine.
 *
 * Where CUDA is unavailable (no CUDA backend in this build, no driver, no
 * GPU) the test prints why and exits 77, which meson counts as skipped.
 *
 * Tolerances (AVQ-SPEC 9): fp16 GEMMs with fp32 accumulation, so 1e-2
 * relative error per image for every float stage; indices must equal the
 * reference where the reference's margin (squared-distance gap to the
 * runner-up) is clearly above what fp16 rounding of the DLP input can move.
 * Each stage starts from the fixture's own inputs (pixel_values for the
 * tower and the edge, the fixture's indices / side codes for the cloud). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "avq-build-config.h"
#include "avq-answerer.h"
#include "avq-engine.h"
#include "avq-error.h"
#include "avq-llama.h"
#include "avq-llava.h"
#include "avq-quantizer.h"
#include "avq-vision.h"
#include "test-util.h"
#if AVQ_HAVE_CUDA
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include "cuda/avq-cuda.h"
#endif

#define TOL 1e-2
#define B 3
#define T 577
#define D 64
#define S 336
/* Margins of the tiny fixture are squared distances between 64-wide vectors
 * (median 0.24, 90th percentile 13). The fp16 DLP GEMM perturbs u by about
 * |W z| 2^-11 per element, moving a distance gap by ~2 |u - e| |du|, a few
 * 1e-2 at most; 0.1 leaves a margin over that (an estimate: the first GPU
 * run tells, see docs/CUDA.md). */
#define CLEAR_MARGIN 0.1

#if AVQ_HAVE_CUDA

typedef struct {
  const char *name;
  int layer;
  guint side_bits;
} Case;

static const Case cases[] = {
  { "L0-derive", 0, 0 },
  { "L1-side8", 1, 8 },
};

static char *
case_path (const Case *c)
{
  g_autofree char *rel = g_strdup_printf ("tiny-llava/avq-%s.safetensors", c->name);
  return avq_test_data_path (rel);
}

static gint32 *
reference_i32 (const char *name)
{
  const AvqTensor *t = avq_safetensors_find (avq_test_reference (), name);
  if (t == NULL || t->dtype != AVQ_DTYPE_I32)
    g_error ("reference tensor %s missing or not I32", name);
  gint32 *v = g_new (gint32, avq_tensor_numel (t));
  memcpy (v, t->data, t->nbytes);
  return v;
}

static float *
reference_case (const Case *c, const char *what)
{
  g_autofree char *name = g_strdup_printf ("avq.%s.%s", c->name, what);
  return avq_test_reference_f32 (name, NULL);
}

static AvqEngine *
engine_on (AvqDevice device, const Case *c)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  g_autofree char *path = c ? case_path (c) : NULL;
  AvqEngineOptions opt = { .model_dir = dir, .avq_path = path, .device = device };
  AvqEngine *e = avq_engine_new (&opt, &error);
  g_assert_no_error (error);
  g_assert_cmpint (avq_engine_device (e), ==, device);
  return e;
}

/* hidden_states[0 .. layers_run] from pixel_values, stage by stage. */
static void
test_hidden (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  g_assert_no_error (error);
  g_autoptr (AvqVisionTower) tw = avq_vision_tower_new (model, 0, &error);
  g_assert_no_error (error);
  g_autoptr (AvqCudaVision) cv = avq_cuda_vision_new (model, tw, NULL, -1, -1, &error);
  g_assert_no_error (error);
  g_test_message ("device %s: %" G_GUINT64_FORMAT " bytes of weights in %.2f ms",
                  avq_cuda_vision_device_name (cv), avq_cuda_vision_weight_bytes (cv),
                  avq_cuda_vision_upload_ms (cv));
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  g_autofree float *hidden = g_new (float, T * D);
  for (int n = 0; n <= tw->layers_run; n++) {
    g_autofree char *name = g_strdup_printf ("vision.hidden.%d", n);
    g_autofree float *want = avq_test_reference_f32 (name, NULL);
    for (int b = 0; b < B; b++) {
      g_assert_true (avq_cuda_vision_hidden (cv, px + (gsize) b * 3 * S * S, n,
                                             hidden, &error));
      g_assert_no_error (error);
      char what[64];
      g_snprintf (what, sizeof what, "cuda hidden %d image %d", n, b);
      avq_test_assert_close (what, hidden, want + (gsize) b * T * D, T * D, TOL);
    }
  }
  /* More layers than uploaded: an error, not a crash. */
  g_assert_false (avq_cuda_vision_hidden (cv, px, tw->layers_run + 1, hidden, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
}

/* The unsplit path: projector output against HF and against the CPU. */
static void
test_features (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqEngine) gpu = engine_on (AVQ_DEVICE_CUDA, NULL);
  g_autoptr (AvqEngine) cpu = engine_on (AVQ_DEVICE_CPU, NULL);
  g_test_message ("%s", avq_engine_device_description (gpu));
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  g_autofree float *want = avq_test_reference_f32 ("projector.out", NULL);
  const gsize n = (gsize) (T - 1) * avq_engine_feature_dim (gpu);
  g_autofree float *got = g_new (float, n);
  g_autofree float *ref = g_new (float, n);
  for (int b = 0; b < B; b++) {
    const float *p = px + (gsize) b * 3 * S * S;
    g_assert_true (avq_engine_features_from_pixels (gpu, p, got, &error));
    g_assert_no_error (error);
    g_assert_true (avq_engine_features_from_pixels (cpu, p, ref, &error));
    char what[64];
    g_snprintf (what, sizeof what, "cuda features image %d vs HF", b);
    avq_test_assert_close (what, got, want + (gsize) b * n, n, TOL);
    g_snprintf (what, sizeof what, "cuda features image %d vs CPU", b);
    avq_test_assert_close (what, got, ref, n, TOL);
  }
}

/* The same through the fused attention kernel (AVQ_CUDA_ATTENTION=fused),
 * and a bad value of the variable refused. */
static void
test_features_fused (void)
{
  g_autoptr (GError) error = NULL;
  g_setenv ("AVQ_CUDA_ATTENTION", "fused", TRUE);
  g_autoptr (AvqEngine) gpu = engine_on (AVQ_DEVICE_CUDA, NULL);
  g_assert_nonnull (strstr (avq_engine_device_description (gpu), "fused attention"));
  g_autoptr (AvqEngine) cpu = engine_on (AVQ_DEVICE_CPU, NULL);
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  g_autofree float *want = avq_test_reference_f32 ("projector.out", NULL);
  const gsize n = (gsize) (T - 1) * avq_engine_feature_dim (gpu);
  g_autofree float *got = g_new (float, n);
  g_autofree float *ref = g_new (float, n);
  for (int b = 0; b < B; b++) {
    const float *p = px + (gsize) b * 3 * S * S;
    g_assert_true (avq_engine_features_from_pixels (gpu, p, got, &error));
    g_assert_no_error (error);
    g_assert_true (avq_engine_features_from_pixels (cpu, p, ref, &error));
    char what[64];
    g_snprintf (what, sizeof what, "fused features image %d vs HF", b);
    avq_test_assert_close (what, got, want + (gsize) b * n, n, TOL);
    g_snprintf (what, sizeof what, "fused features image %d vs CPU", b);
    avq_test_assert_close (what, got, ref, n, TOL);
  }
  g_setenv ("AVQ_CUDA_ATTENTION", "flash", TRUE);
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  AvqEngineOptions opt = { .model_dir = dir, .device = AVQ_DEVICE_CUDA };
  g_autoptr (AvqEngine) bad = avq_engine_new (&opt, &error);
  g_assert_null (bad);
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_unsetenv ("AVQ_CUDA_ATTENTION");
}

/* Edge half from pixel_values: indices against the fixture and the CPU
 * engine where the margin is clear; side codes within one step. */
static void
test_encode (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqEngine) gpu = engine_on (AVQ_DEVICE_CUDA, c);
  g_autoptr (AvqEngine) cpu = engine_on (AVQ_DEVICE_CPU, c);
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  g_autofree float *margin = reference_case (c, "margin");
  g_autofree char *iname = g_strdup_printf ("avq.%s.indices", c->name);
  g_autofree gint32 *want = reference_i32 (iname);
  int clear = 0, unclear_diff = 0;
  for (int b = 0; b < B; b++) {
    const float *p = px + (gsize) b * 3 * S * S;
    g_autoptr (AvqFrame) f = avq_engine_encode_pixels (gpu, p, &error);
    g_assert_no_error (error);
    g_autoptr (AvqFrame) fc = avq_engine_encode_pixels (cpu, p, &error);
    g_assert_no_error (error);
    g_assert_cmpmem (f->codebook_id, 8, fc->codebook_id, 8);
    g_assert_cmpuint (f->flags, ==, fc->flags);
    for (int t = 0; t < T; t++) {
      if (margin[b * T + t] > CLEAR_MARGIN) {
        clear++;
        if (f->indices[t] != want[b * T + t])
          g_error ("%s cuda image %d token %d: index %u, reference %d (margin %g)",
                   c->name, b, t, f->indices[t], want[b * T + t], margin[b * T + t]);
        g_assert_cmpuint (f->indices[t], ==, fc->indices[t]);
      } else if (f->indices[t] != want[b * T + t]) {
        unclear_diff++;
      }
    }
    if (c->side_bits > 0) {
      /* Ranges from fp32 statistics of an fp16-GEMM residual stream: close,
       * not equal; codes within two steps of the CPU's (one is expected;
       * the count is logged). */
      for (int i = 0; i < 4; i++)
        g_assert_cmpfloat_with_epsilon (f->side_range[i], fc->side_range[i],
                                        1e-2 * (1 + fabsf (fc->side_range[i])));
      int off = 0, worst = 0;
      for (int i = 0; i < 2 * T; i++) {
        int d = abs ((int) f->side_codes[i] - (int) fc->side_codes[i]);
        g_assert_cmpint (d, <=, 2);
        off += d;
        worst = MAX (worst, d);
      }
      g_test_message ("%s image %d: side codes differ from the CPU's by %d steps in all "
                      "(%d codes), at most %d", c->name, b, off, 2 * T, worst);
    }
  }
  g_test_message ("%s: %d tokens with a clear margin all equal; %d near-ties differ",
                  c->name, clear, unclear_diff);
  g_assert_cmpint (clear, >, B * T / 4);
}

static AvqFrame *
reference_frame (AvqEngine *e, const Case *c, int b)
{
  g_autofree char *iname = g_strdup_printf ("avq.%s.indices", c->name);
  g_autofree gint32 *idx = reference_i32 (iname);
  AvqFrame *f = avq_frame_new (T, avq_engine_index_bits (e),
                               avq_engine_side_bits (e), avq_engine_codebook_id (e));
  for (int t = 0; t < T; t++)
    f->indices[t] = (guint16) idx[b * T + t];
  if (c->side_bits > 0) {
    g_autofree gint32 *side_q = reference_i32 ("avq.L1-side8.side_q");
    g_autofree float *range = reference_case (c, "side_range");
    for (int i = 0; i < 2 * T; i++)
      f->side_codes[i] = (guint16) side_q[b * 2 * T + i];
    memcpy (f->side_range, range + b * 4, sizeof f->side_range);
  }
  return f;
}

/* Cloud half from the fixture's indices and side codes. */
static void
test_decode (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqEngine) gpu = engine_on (AVQ_DEVICE_CUDA, c);
  g_autoptr (AvqEngine) cpu = engine_on (AVQ_DEVICE_CPU, c);
  g_autofree float *want = reference_case (c, "projector");
  const gsize n = (gsize) (T - 1) * avq_engine_feature_dim (gpu);
  g_autofree float *got = g_new (float, n);
  g_autofree float *ref = g_new (float, n);
  for (int b = 0; b < B; b++) {
    g_autoptr (AvqFrame) f = reference_frame (gpu, c, b);
    g_assert_true (avq_engine_decode_frame (gpu, f, got, &error));
    g_assert_no_error (error);
    g_assert_true (avq_engine_decode_frame (cpu, f, ref, &error));
    char what[64];
    g_snprintf (what, sizeof what, "%s cuda decode image %d vs HF", c->name, b);
    avq_test_assert_close (what, got, want + (gsize) b * n, n, TOL);
    g_snprintf (what, sizeof what, "%s cuda decode image %d vs CPU", c->name, b);
    avq_test_assert_close (what, got, ref, n, TOL);
  }
  /* A frame of another codebook is still refused before the GPU runs. */
  g_autoptr (AvqFrame) f = reference_frame (gpu, c, 0);
  f->codebook_id[0] ^= 0xff;
  g_assert_false (avq_engine_decode_frame (gpu, f, got, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_MISMATCH);
}

/* Edge on the GPU, cloud on the CPU and the other way round: frames are
 * the same wire format whichever device made them. */
static void
test_cross (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqEngine) gpu = engine_on (AVQ_DEVICE_CUDA, c);
  g_autoptr (AvqEngine) cpu = engine_on (AVQ_DEVICE_CPU, c);
  g_autofree float *px = avq_test_reference_f32 ("pixel_values", NULL);
  const gsize n = (gsize) (T - 1) * avq_engine_feature_dim (gpu);
  g_autofree float *a = g_new (float, n);
  g_autofree float *b = g_new (float, n);
  g_autoptr (AvqFrame) f = avq_engine_encode_pixels (gpu, px, &error);
  g_assert_no_error (error);
  g_assert_true (avq_engine_decode_frame (cpu, f, a, &error));
  g_assert_no_error (error);
  g_assert_true (avq_engine_decode_frame (gpu, f, b, &error));
  g_assert_no_error (error);
  avq_test_assert_close ("cuda-encoded frame: cuda decode vs cpu decode", b, a, n, TOL);
}

/* ---- the LLaMA decoder on CUDA ------------------------------------------ */

/* Greedy steps are compared while the fixture's logit margin (top-1 minus
 * top-2) exceeds this: fp16 weights move tiny-fixture logits by ~1e-3. */
#define LOGIT_MARGIN 0.05

static JsonObject *
reference_object (void)
{
  static JsonParser *parser;
  if (parser == NULL) {
    g_autoptr (GError) error = NULL;
    g_autofree char *path = avq_test_data_path ("tiny-llava/reference.json");
    parser = json_parser_new ();
    json_parser_load_from_file (parser, path, &error);
    g_assert_no_error (error);
  }
  return json_node_get_object (json_parser_get_root (parser));
}

static void
append_ids (GArray *ids, JsonArray *array)
{
  for (guint i = 0; i < json_array_get_length (array); i++) {
    int id = (int) json_array_get_int_element (array, i);
    g_array_append_val (ids, id);
  }
}

/* prefix + 576 image tokens + suffix, as test-llama.c */
static GArray *
fixture_prompt (void)
{
  JsonObject *p = json_object_get_object_member (reference_object (), "llm.prompt_ids");
  GArray *ids = g_array_new (FALSE, FALSE, sizeof (int));
  append_ids (ids, json_object_get_array_member (p, "prefix"));
  int n_image = (int) json_object_get_int_member (p, "image_tokens");
  int image = (int) json_object_get_int_member (p, "image_token_id");
  for (int i = 0; i < n_image; i++)
    g_array_append_val (ids, image);
  append_ids (ids, json_object_get_array_member (p, "suffix"));
  return ids;
}

typedef struct {
  const char *tag;        /* llm.<tag>.* */
  const char *features;   /* reference tensor [3, 576, 64]; image 1 = chelsea */
} LlmCase;

static const LlmCase llm_cases[] = {
  { "hf", "projector.out" },
  { "avq.L0-derive", "avq.L0-derive.projector" },
  { "avq.L1-side8", "avq.L1-side8.projector" },
};

static AvqLlama *
cuda_llama (const AvqModel *model, int ctx)
{
  g_autoptr (GError) error = NULL;
  AvqLlama *llama = avq_llama_new (model, ctx, &error);
  g_assert_no_error (error);
  g_assert_true (avq_llama_use_cuda (llama, &error));
  g_assert_no_error (error);
  g_assert_true (avq_llama_on_cuda (llama));
  return llama;
}

/* First logits of the fixture prompt against HF within 1e-2, then greedy
 * generation against HF's ids while the margins are clear, and every
 * decode step's logits against the CPU decoder fed the same tokens. */
static void
test_llm_fixture (gconstpointer data)
{
  const LlmCase *c = data;
  AvqModel *model = avq_test_tiny_model ();
  g_autoptr (AvqLlama) gpu = cuda_llama (model, 1024);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqLlama) cpu = avq_llama_new (model, 1024, &error);
  g_assert_no_error (error);
  g_autofree char *desc = avq_llama_device_description (gpu);
  g_assert_true (g_str_has_prefix (desc, "cuda: "));
  const int V = avq_llama_vocab_size (gpu);

  gsize numel;
  g_autofree float *all = avq_test_reference_f32 (c->features, &numel);
  g_assert_cmpuint (numel, ==, 3 * 576 * 64);
  const float *features = all + 576 * 64;
  g_autofree char *logits_name = g_strdup_printf ("llm.%s.first_logits", c->tag);
  gsize n_ref;
  g_autofree float *want = avq_test_reference_f32 (logits_name, &n_ref);
  g_assert_cmpuint (n_ref, ==, (gsize) V);

  g_autoptr (GArray) prompt = fixture_prompt ();
  g_autofree float *lg = g_new (float, V), *lc = g_new (float, V);
  g_assert_true (avq_llava_prefill (gpu, (int *) prompt->data, prompt->len, features,
                                    576, lg, &error));
  g_assert_no_error (error);
  g_assert_true (avq_llava_prefill (cpu, (int *) prompt->data, prompt->len, features,
                                    576, lc, &error));
  g_assert_no_error (error);
  g_assert_cmpint (avq_llama_n_past (gpu), ==, avq_llama_n_past (cpu));
  double rel = avq_test_rel_error (lg, want, V);
  g_test_message ("%s: cuda first logits rel err %.3g vs HF, %.3g vs CPU", c->tag, rel,
                  avq_test_rel_error (lg, lc, V));
  avq_test_assert_close ("cuda first logits vs HF", lg, want, V, TOL);
  avq_test_assert_close ("cuda first logits vs CPU", lg, lc, V, TOL);

  /* Decode: both fed the CPU's greedy token. */
  double worst = 0;
  for (int step = 0; step < 8; step++) {
    int tok = 0;
    for (int k = 1; k < V; k++)
      if (lc[k] > lc[tok])
        tok = k;
    g_assert_true (avq_llama_decode (gpu, tok, lg, &error));
    g_assert_no_error (error);
    g_assert_true (avq_llama_decode (cpu, tok, lc, &error));
    g_assert_no_error (error);
    worst = MAX (worst, avq_test_rel_error (lg, lc, V));
    avq_test_assert_close ("cuda decode logits vs CPU", lg, lc, V, TOL);
  }
  g_test_message ("%s: 8 decode steps, worst rel err vs CPU %.3g", c->tag, worst);

  /* Greedy generation from scratch against HF's ids. */
  g_autofree char *greedy_name = g_strdup_printf ("llm.%s.greedy", c->tag);
  JsonArray *greedy = json_object_get_array_member (reference_object (), greedy_name);
  g_assert_nonnull (greedy);
  AvqGenerateOptions opts;
  avq_generate_options_init (&opts);
  opts.max_new_tokens = 8;
  AvqGenerateStats stats;
  g_autoptr (GArray) out = g_array_new (FALSE, FALSE, sizeof (int));
  g_assert_true (avq_llava_generate (gpu, (int *) prompt->data, prompt->len, features,
                                     576, &opts, out, &stats, &error));
  g_assert_no_error (error);
  int compared = 0;
  for (guint i = 0; i < out->len && i < json_array_get_length (greedy); i++) {
    JsonObject *st = json_array_get_object_element (greedy, i);
    if (json_object_get_double_member (st, "margin") <= LOGIT_MARGIN)
      break;   /* a near tie: later steps continue from another context */
    g_assert_cmpint (g_array_index (out, int, i), ==,
                     (int) json_object_get_int_member (st, "id"));
    compared++;
  }
  g_test_message ("%s: %d greedy ids equal to HF", c->tag, compared);
  g_assert_cmpint (compared, >=, 1);
}

/* A grouped-query model (4 heads over 2 kv heads, head size 8) built in a
 * temp dir: prefill in pieces (continuation at p0 > 0), decode across a
 * cache growth, a prefill without logits, tied embeddings, a prompt longer
 * than the CUDA prefill chunk; the CUDA decoder against the CPU one. */
#define G_VOCAB 50
#define G_HIDDEN 32
#define G_FFN 40

static void
add_random (AvqSafetensorsWriter *w, GRand *rng, AvqDType dtype, const char *name,
            int rows, int cols, double offset, double scale)
{
  gsize n = (gsize) rows * MAX (cols, 1);
  g_autofree guint16 *h = g_new (guint16, n);
  g_autofree float *f = g_new (float, n);
  for (gsize i = 0; i < n; i++) {
    f[i] = (float) (offset + scale * g_rand_double_range (rng, -1, 1));
    guint32 b;
    memcpy (&b, &f[i], sizeof b);
    h[i] = dtype == AVQ_DTYPE_F16 ? avq_float_to_half (f[i])
        : (guint16) ((b + 0x7fff + ((b >> 16) & 1)) >> 16);   /* bf16, nearest even */
  }
  gint64 shape[2] = { rows, cols };
  avq_safetensors_writer_add (w, name, dtype, cols > 0 ? 2 : 1, shape,
                              dtype == AVQ_DTYPE_F32 ? (const void *) f : (const void *) h);
}

static char *
gqa_model_dir (AvqDType dtype, gboolean tied)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("avq-cuda-gqa-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *cfg = g_strdup_printf (
      "{\"image_token_index\": 48, \"text_config\": {\"vocab_size\": 50, "
      "\"hidden_size\": 32, \"intermediate_size\": 40, \"num_hidden_layers\": 2, "
      "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8, "
      "\"rms_norm_eps\": 1e-5, \"rope_theta\": 500.0, "
      "\"max_position_embeddings\": 2048, \"tie_word_embeddings\": %s}}",
      tied ? "true" : "false");
  g_autofree char *cfg_path = g_build_filename (dir, "config.json", NULL);
  g_file_set_contents (cfg_path, cfg, -1, &error);
  g_assert_no_error (error);
  g_autoptr (GRand) rng = g_rand_new_with_seed (7);
  g_autoptr (AvqSafetensorsWriter) w = avq_safetensors_writer_new ();
  const char *P = "language_model.model";
  g_autofree char *emb = g_strdup_printf ("%s.embed_tokens.weight", P);
  add_random (w, rng, dtype, emb, G_VOCAB, G_HIDDEN, 0, 1.0);
  if (!tied)
    add_random (w, rng, dtype, "language_model.lm_head.weight", G_VOCAB, G_HIDDEN, 0, 0.3);
  g_autofree char *norm = g_strdup_printf ("%s.norm.weight", P);
  add_random (w, rng, dtype, norm, G_HIDDEN, 0, 1.0, 0.3);
  for (int l = 0; l < 2; l++) {
    static const struct { const char *name; int rows, cols; } m[] = {
      { "self_attn.q_proj", 32, G_HIDDEN }, { "self_attn.k_proj", 16, G_HIDDEN },
      { "self_attn.v_proj", 16, G_HIDDEN }, { "self_attn.o_proj", G_HIDDEN, 32 },
      { "mlp.gate_proj", G_FFN, G_HIDDEN }, { "mlp.up_proj", G_FFN, G_HIDDEN },
      { "mlp.down_proj", G_HIDDEN, G_FFN },
    };
    for (guint i = 0; i < G_N_ELEMENTS (m); i++) {
      g_autofree char *name = g_strdup_printf ("%s.layers.%d.%s.weight", P, l, m[i].name);
      add_random (w, rng, dtype, name, m[i].rows, m[i].cols, 0, i < 2 ? 0.6 : 0.3);
    }
    g_autofree char *n1 = g_strdup_printf ("%s.layers.%d.input_layernorm.weight", P, l);
    g_autofree char *n2 = g_strdup_printf ("%s.layers.%d.post_attention_layernorm.weight", P, l);
    add_random (w, rng, dtype, n1, G_HIDDEN, 0, 1.0, 0.3);
    add_random (w, rng, dtype, n2, G_HIDDEN, 0, 1.0, 0.3);
  }
  g_autofree char *path = g_build_filename (dir, "model.safetensors", NULL);
  avq_safetensors_writer_save (w, path, &error);
  g_assert_no_error (error);
  return dir;
}

static void
remove_model_dir (const char *dir)
{
  g_autofree char *a = g_build_filename (dir, "config.json", NULL);
  g_autofree char *b = g_build_filename (dir, "model.safetensors", NULL);
  g_unlink (a);
  g_unlink (b);
  g_rmdir (dir);
}

static void
assert_both (AvqLlama *gpu, AvqLlama *cpu, const float *lg, const float *lc,
             const char *what)
{
  g_assert_cmpint (avq_llama_n_past (gpu), ==, avq_llama_n_past (cpu));
  avq_test_assert_close (what, lg, lc, G_VOCAB, TOL);
}

typedef struct {
  AvqDType dtype;
  gboolean tied;
} GqaCase;

static void
test_llm_gqa (gconstpointer data)
{
  const GqaCase *c = data;
  g_autofree char *dir = gqa_model_dir (c->dtype, c->tied);
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqModel) model = avq_model_open (dir, &error);
  g_assert_no_error (error);
  g_autoptr (AvqLlama) gpu = cuda_llama (model, 8);
  g_autoptr (AvqLlama) cpu = avq_llama_new (model, 8, &error);
  g_assert_no_error (error);

  const int ids[] = { 3, 17, 42, 0, 49, 8, 8, 25, 31, 11 };
  float lg[G_VOCAB], lc[G_VOCAB], emb[10 * G_HIDDEN];
  g_assert_true (avq_llama_embed (cpu, ids, 10, emb, &error));

#define BOTH(call_g, call_c, what)                  \
  do {                                              \
    g_assert_true (call_g);                         \
    g_assert_no_error (error);                      \
    g_assert_true (call_c);                         \
    g_assert_no_error (error);                      \
    assert_both (gpu, cpu, lg, lc, what);           \
  } while (0)

  BOTH (avq_llama_prefill (gpu, emb, 7, lg, &error),
        avq_llama_prefill (cpu, emb, 7, lc, &error), "prefill 7");
  avq_llama_reset (gpu);
  avq_llama_reset (cpu);
  BOTH (avq_llama_prefill (gpu, emb, 2, lg, &error),
        avq_llama_prefill (cpu, emb, 2, lc, &error), "prefill 2");
  BOTH (avq_llama_prefill (gpu, emb + 2 * G_HIDDEN, 3, lg, &error),
        avq_llama_prefill (cpu, emb + 2 * G_HIDDEN, 3, lc, &error), "prefill 2+3");
  for (int n = 6; n <= 10; n++) {
    if (n == 9) {
      g_assert_false (avq_llama_decode (gpu, ids[n - 1], lg, &error));
      g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
      g_clear_error (&error);
      /* the device cache grows, keeping its 8 positions */
      g_assert_true (avq_llama_reserve (gpu, 16, &error));
      g_assert_true (avq_llama_reserve (cpu, 16, &error));
    }
    BOTH (avq_llama_decode (gpu, ids[n - 1], lg, &error),
          avq_llama_decode (cpu, ids[n - 1], lc, &error), "decode");
  }
  avq_llama_reset (gpu);
  avq_llama_reset (cpu);
  g_assert_true (avq_llama_prefill (gpu, emb, 5, NULL, &error));
  g_assert_true (avq_llama_prefill (cpu, emb, 5, NULL, &error));
  g_assert_no_error (error);
  BOTH (avq_llama_decode (gpu, ids[5], lg, &error),
        avq_llama_decode (cpu, ids[5], lc, &error), "decode after prefill without logits");
  g_assert_false (avq_llama_decode (gpu, G_VOCAB, lg, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);

  /* Longer than the 512-row prefill chunk: the second chunk attends to the
   * first through the device cache. */
  enum { N = 600 };
  g_assert_true (avq_llama_reserve (gpu, N + 1, &error));
  g_assert_true (avq_llama_reserve (cpu, N + 1, &error));
  g_autofree int *lid = g_new (int, N);
  for (int i = 0; i < N; i++)
    lid[i] = (i * 7 + i / 13) % G_VOCAB;
  g_autofree float *lemb = g_new (float, N * G_HIDDEN);
  g_assert_true (avq_llama_embed (cpu, lid, N, lemb, &error));
  avq_llama_reset (gpu);
  avq_llama_reset (cpu);
  BOTH (avq_llama_prefill (gpu, lemb, N, lg, &error),
        avq_llama_prefill (cpu, lemb, N, lc, &error), "long prefill");
  BOTH (avq_llama_decode (gpu, 5, lg, &error), avq_llama_decode (cpu, 5, lc, &error),
        "decode after long prefill");
#undef BOTH
  /* LoRA goes before the move to the device. */
  g_autofree char *st = g_build_filename (dir, "model.safetensors", NULL);
  g_autoptr (AvqSafetensors) f = avq_safetensors_open (st, &error);
  g_assert_no_error (error);
  g_assert_false (avq_llama_apply_lora (gpu, f, NULL, &error));
  g_assert_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT);
  remove_model_dir (dir);
}

/* The answerer on CUDA moves its language model there (its INFO line says
 * so) and answers; the first generated id equals the CPU answerer's (both
 * texts are logged; later ids may part at a near tie). */
static void
test_llm_answerer (void)
{
  g_autofree char *dir = avq_test_data_path ("tiny-llava");
  g_autofree char *png = avq_test_data_path ("tiny-llava/images/chelsea.png");
  g_autoptr (GError) error = NULL;
  g_autoptr (AvqImage) image = avq_image_load (png, &error);
  g_assert_no_error (error);
  AvqAskOptions ask;
  avq_ask_options_init (&ask);
  ask.max_new_tokens = 6;
  g_autoptr (AvqAnswer) cpu_answer = NULL;
  g_autoptr (AvqAnswer) cuda_answer = NULL;
  AvqAnswer **answers[2] = { &cpu_answer, &cuda_answer };
  for (int d = 0; d < 2; d++) {
    AvqAnswererOptions o = { .model_dir = dir,
                             .device = d ? AVQ_DEVICE_CUDA : AVQ_DEVICE_CPU };
    if (d)
      g_test_expect_message ("avq", G_LOG_LEVEL_INFO, "language model: cuda: *");
    g_autoptr (AvqAnswerer) a = avq_answerer_new (&o, &error);
    g_assert_no_error (error);
    if (d)
      g_test_assert_expected_messages ();
    *answers[d] = avq_answerer_ask_image (a, image, AVQ_PREPROCESS_CROP,
                                          "What is in the picture?", &ask, &error);
    g_assert_no_error (error);
    g_test_message ("%s answer: \"%s\" (%u ids)", d ? "cuda" : "cpu",
                    (*answers[d])->text, (*answers[d])->ids->len);
  }
  g_assert_cmpuint (cuda_answer->ids->len, >, 0);
  g_assert_cmpint (g_array_index (cuda_answer->ids, int, 0), ==,
                   g_array_index (cpu_answer->ids, int, 0));
}

#endif /* AVQ_HAVE_CUDA */

int
main (int argc, char **argv)
{
  g_autoptr (GError) why = NULL;
  /* The environment must not steer what this test compares. */
  g_unsetenv ("AVQ_DEVICE");
  g_unsetenv ("AVQ_CUDA_ATTENTION");
  if (!avq_cuda_available (&why)) {
    printf ("CUDA unavailable: %s; skipping\n", why->message);
    fprintf (stderr, "CUDA unavailable: %s; skipping\n", why->message);
    return 77;
  }
#if AVQ_HAVE_CUDA
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/cuda/hidden", test_hidden);
  g_test_add_func ("/cuda/features", test_features);
  g_test_add_func ("/cuda/features-fused", test_features_fused);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *p1 = g_strdup_printf ("/cuda/%s/encode", cases[i].name);
    g_autofree char *p2 = g_strdup_printf ("/cuda/%s/decode", cases[i].name);
    g_autofree char *p3 = g_strdup_printf ("/cuda/%s/cross", cases[i].name);
    g_test_add_data_func (p1, &cases[i], test_encode);
    g_test_add_data_func (p2, &cases[i], test_decode);
    g_test_add_data_func (p3, &cases[i], test_cross);
  }
  for (gsize i = 0; i < G_N_ELEMENTS (llm_cases); i++) {
    g_autofree char *p = g_strdup_printf ("/cuda/llm/fixture/%s", llm_cases[i].tag);
    g_test_add_data_func (p, &llm_cases[i], test_llm_fixture);
  }
  static const GqaCase gqa[] = {
    { AVQ_DTYPE_F16, FALSE }, { AVQ_DTYPE_F32, TRUE }, { AVQ_DTYPE_BF16, FALSE },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (gqa); i++) {
    g_autofree char *p = g_strdup_printf ("/cuda/llm/gqa/%s%s", avq_dtype_name (gqa[i].dtype),
                                          gqa[i].tied ? "-tied" : "");
    g_test_add_data_func (p, &gqa[i], test_llm_gqa);
  }
  g_test_add_func ("/cuda/llm/answerer", test_llm_answerer);
  return g_test_run ();
#else
  (void) argc;
  (void) argv;
  return 77; /* not reached: avq_cuda_available is FALSE without the backend */
#endif
}
