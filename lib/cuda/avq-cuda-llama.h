/* The LLaMA decoder of LLaVA on one GPU: the CUDA backend of AvqLlama
 * (lib/avq-llama.c dispatches here after avq_llama_use_cuda; only built
 * when AVQ_HAVE_CUDA). Same semantics as the CPU decoder, which stays the
 * numerical reference.
 *
 * Precision: weights (and the token embedding table) fp16 on the device,
 * uploaded once through pinned staging buffers; cuBLAS GEMMs take fp16
 * inputs and accumulate in fp32; the residual stream, RMSNorm, rotary
 * embeddings, softmax and SiLU are fp32; the KV cache is fp16. Logits come
 * back to the host as fp32. See docs/CUDA.md.
 *
 * One AvqCudaLlama owns one CUDA stream and one cuBLAS handle; not
 * thread-safe. It keeps no notion of the cached length: the caller
 * (AvqLlama) passes the position of every call. */
#pragma once
#include <glib.h>
#include "avq-safetensors.h"
#include "avq-sampling.h"

G_BEGIN_DECLS

/* A weight matrix [rows, cols] in host memory (the model's mapping or a
 * LoRA-merged copy) in any float dtype. */
typedef struct {
  const void *data;
  AvqDType dtype;
  int rows, cols;
} AvqCudaMatrix;

typedef struct {
  const float *attn_norm, *mlp_norm;   /* [hidden] */
  AvqCudaMatrix q, k, v, o, gate, up, down;
} AvqCudaLlamaLayer;

typedef struct {
  int hidden, heads, kv_heads, head_dim, ffn, vocab, n_layers;
  float eps, rope_theta;
  AvqCudaMatrix embed, lm_head;   /* lm_head.data == embed.data: tied */
  const float *final_norm;
  const AvqCudaLlamaLayer *layers;   /* n_layers */
  /* Benchmark facility, 0 for a real model: when non-zero, every matrix
   * whose data is NULL is filled on the device with uniform values of
   * standard deviation 1 / sqrt(cols) (fp16, from a hash of this seed and
   * the element index: avq_cuk_fill_random), and every NULL norm with 1 +-
   * 0.1, so that a 7B-shape decoder exists in seconds without 13 GB of host
   * weights and their upload. A NULL lm_head is then its own matrix (not
   * tied). Counted in avq_cuda_llama_weight_bytes, not in the upload time. */
  guint64 random_seed;
} AvqCudaLlamaDesc;

/* Uploads every weight and allocates a KV cache of `max_context`
 * positions. `device_ordinal` < 0 picks the current device. */
typedef struct _AvqCudaLlama AvqCudaLlama;
AvqCudaLlama *avq_cuda_llama_new (const AvqCudaLlamaDesc *desc, int max_context,
                                  int device_ordinal, GError **error);
void avq_cuda_llama_free (AvqCudaLlama *cl);

/* Grows the KV cache to `max_context` positions (every sequence's), keeping
 * every cached position (`n_past` is no longer needed: each sequence may
 * hold a different length; it is only checked against the old size). */
gboolean avq_cuda_llama_reserve (AvqCudaLlama *cl, int max_context, int n_past,
                                 GError **error);

/* n input embeddings [n, hidden] (host fp32) at positions p0 .. p0+n-1
 * appended to the cache of sequence 0; `logits` (vocab floats, may be NULL)
 * receives the last one's. p0 + n must not exceed the reserved context.
 * Never captured into a graph (its shape changes with every prompt). */
gboolean avq_cuda_llama_prefill (AvqCudaLlama *cl, const float *embeddings,
                                 int n, int p0, float *logits, GError **error);

/* One token of sequence 0 at position p0 (avq_cuda_llama_decode_batch with
 * n = 1, so a captured graph too); logits to the host (may be NULL).
 * `argmax` (may be NULL) receives the greedy id computed on the device
 * (lowest id on ties). Ids outside the vocabulary are refused. */
gboolean avq_cuda_llama_decode (AvqCudaLlama *cl, int token, int p0,
                                float *logits, int *argmax, GError **error);

/* The prefill attention on its own (exposed for tests/test-cuda-kernels.c):
 * n query rows q16 [n, nh hd] (fp16, device) at positions p0 .. p0+n-1
 * over the fp16 cache of one layer ([nkv][max_ctx][hd], positions 0 ..
 * p0+n-1 filled) -> out16 [n, nh hd]. scores (fp32) and probs (fp16) hold
 * nh n Tp elements, Tp = p0 + n rounded up to a multiple of 8. Enqueued on
 * `stream` (the cuBLAS handle must be bound to it). */
struct cublasContext;
struct CUstream_st;
gboolean avq_cuda_causal_attention (struct cublasContext *blas,
                                    struct CUstream_st *stream,
                                    const guint16 *q16, int n, int p0, int nh,
                                    int nkv, int hd, const guint16 *k_cache,
                                    const guint16 *v_cache, int max_ctx,
                                    float scale, float *scores, guint16 *probs,
                                    guint16 *out16, GError **error);

/* ---- several sequences (batching) ----
 *
 * The decoder holds `n_sequences` independent KV caches (sequence 0 is the
 * one avq_cuda_llama_prefill/decode use), so that the answers of several
 * cameras or questions share every weight read: a batched decode step
 * multiplies [n, hidden] by each weight instead of n matrix-vector
 * products. Changing the count reallocates the caches (forgets every
 * position) and drops the captured graphs; on failure (an invalid count:
 * 1 .. AVQ_CUDA_LLAMA_MAX_SEQUENCES, or out of device memory) nothing
 * changes. Each cache holds the reserved context (avq_cuda_llama_reserve
 * applies to all of them). */
#define AVQ_CUDA_LLAMA_MAX_SEQUENCES 512
gboolean avq_cuda_llama_set_sequences (AvqCudaLlama *cl, int n_sequences,
                                       GError **error);
int avq_cuda_llama_sequences (const AvqCudaLlama *cl);

/* avq_cuda_llama_prefill into the cache of sequence `seq`. */
gboolean avq_cuda_llama_prefill_sequence (AvqCudaLlama *cl, int seq,
                                          const float *embeddings, int n,
                                          int p0, float *logits,
                                          GError **error);

/* One decode step for n distinct sequences at once: token tokens[i]
 * (range-checked here) of sequence seqs[i] at position positions[i].
 * `logits` ([n, vocab], may be NULL) and `argmax` ([n], may be NULL)
 * receive row i's results. The step runs as a CUDA graph captured once per
 * n (positions, tokens and sequence slots are read from device memory), so
 * the host cost per step is a few copies and one graph launch; see
 * avq_cuda_context_run_graph. */
gboolean avq_cuda_llama_decode_batch (AvqCudaLlama *cl, int n, const int *seqs,
                                      const int *tokens, const int *positions,
                                      float *logits, int *argmax,
                                      GError **error);

/* avq_cuda_llama_decode_batch handing back sampling candidates
 * (lib/avq-sampling.h) made on the device (avq_cuk_top_candidates) instead
 * of logits: out[i] (capacity >= k) receives row i's first k tokens
 * (1 <= k <= AVQ_SAMPLING_CANDIDATES and <= vocab), the row's largest
 * logit and its softmax sum at `temperature` (0 when <= 0). The
 * temperature goes to the device with the step's other inputs, so one
 * graph per (n, k) serves every value. The step's logits stay on the
 * device for avq_cuda_llama_step_logits. */
gboolean avq_cuda_llama_decode_batch_candidates (AvqCudaLlama *cl, int n,
                                                 const int *seqs,
                                                 const int *tokens,
                                                 const int *positions, int k,
                                                 float temperature,
                                                 AvqTokenCandidates *out,
                                                 GError **error);

/* Row `row` (< the last decode step's n) of that step's logits, copied
 * from the device (vocab floats). Valid until the next prefill, decode
 * or set_sequences. */
gboolean avq_cuda_llama_step_logits (AvqCudaLlama *cl, int row, float *logits,
                                     GError **error);

/* FALSE: run the decode step without CUDA graphs (for comparisons); the
 * default follows AVQ_CUDA_GRAPHS (on unless "0"). */
void avq_cuda_llama_set_graphs (AvqCudaLlama *cl, gboolean enabled);
/* Decode-step graphs captured since creation (one per batch size and
 * output kind, again after every reserve or set_sequences). */
guint avq_cuda_llama_graphs_captured (const AvqCudaLlama *cl);

guint64 avq_cuda_llama_weight_bytes (const AvqCudaLlama *cl);
double avq_cuda_llama_upload_ms (const AvqCudaLlama *cl);
/* "NVIDIA H200 (sm_90, 139.8 GiB)" */
const char *avq_cuda_llama_device_name (const AvqCudaLlama *cl);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqCudaLlama, avq_cuda_llama_free)

G_END_DECLS
