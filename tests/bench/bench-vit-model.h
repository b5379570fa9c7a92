/* Random-weight model files of the real LLaVA-1.5 vision size (CLIP
 * ViT-L/14-336, K = 4096 AVQ files) for the benchmarks: one writer shared by
 * bench-encode (CPU) and bench-cuda (GPU against CPU). */
#pragma once
#include <glib.h>
#include "avq-safetensors.h"

#define AVQ_BENCH_D 1024
#define AVQ_BENCH_MLP 4096
#define AVQ_BENCH_TEXT 4096
#define AVQ_BENCH_IMAGE 336
#define AVQ_BENCH_PATCH 14
#define AVQ_BENCH_K 4096

/* xorshift64*: the same stream on every machine and compiler. */
typedef struct {
  guint64 s;
} AvqBenchRng;

/* Uniform in [-1, 1). */
float avq_bench_rng_uniform (AvqBenchRng *r);

/* Adds an F16 tensor of values center + spread * uniform. */
void avq_bench_put_random (AvqSafetensorsWriter *w, const char *name, int ndim,
                           const gint64 *shape, float center, float spread,
                           AvqBenchRng *r);

typedef struct {
  int layers;              /* full encoder layers written: 0 .. layers-1 */
  gboolean next_ln1;       /* also layer_norm1 of layer `layers` (the split's LN1) */
  gboolean projector;      /* multi_modal_projector.* */
  float fc2_spread;        /* uniform spread of mlp.fc2.weight */
} AvqBenchVitOptions;

/* config.json + model.safetensors in `dir`; g_error on I/O failure. */
void avq_bench_write_vit_model (const char *dir, const AvqBenchVitOptions *options,
                                AvqBenchRng *r);
/* An AVQ file for split `layer` (derive at 0, side 8 bits above); the path
 * is newly allocated. */
char *avq_bench_write_avq (const char *dir, int layer, AvqBenchRng *r);
