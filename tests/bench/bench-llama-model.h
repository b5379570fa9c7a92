/* A random F16 LLaMA of the Vicuna-7B shape (hidden 4096, MLP 11008, 32
 * heads, vocab 32064, separate lm_head) with `layers` layers, written as
 * model.safetensors + config.json into `dir` for the benchmarks and the GPU
 * check (bench-llama, check-cuda-llm). The weights stream to disk, so a
 * 32-layer model never has to fit in memory. */
#pragma once
#include <glib.h>

#define AVQ_BENCH_LLAMA_HIDDEN 4096
#define AVQ_BENCH_LLAMA_FFN 11008
#define AVQ_BENCH_LLAMA_HEADS 32
#define AVQ_BENCH_LLAMA_VOCAB 32064

gboolean avq_bench_write_llama_model (const char *dir, int layers, GError **error);
gboolean avq_bench_write_llama_config (const char *dir, int layers, GError **error);
/* The generator behind the weights (xorshift64; *s must not be 0). */
guint64 avq_bench_xorshift (guint64 *s);
