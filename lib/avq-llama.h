/* The LLaMA decoder of LLaVA (HF LlamaForCausalLM semantics) on the CPU.
 *
 * Weights stay in the model's mapping in their file dtype (F16, BF16 or
 * F32): a 7B model must fit next to its own file in 24 GB, so linear layers
 * widen a block of weight rows at a time into a small scratch buffer (or,
 * for a single row, fuse the widening into the dot products). Activations,
 * norms, softmax and the KV cache are float32.
 *
 * An AvqLlama borrows the AvqModel it was made from: keep the model open
 * while the decoder lives. Not thread-safe: one per thread. */
#pragma once
#include <glib.h>
#include "avq-model.h"
#include "avq-sampling.h"

G_BEGIN_DECLS

typedef struct _AvqLlama AvqLlama;

/* Binds and checks every language-model tensor (shape and float dtype;
 * the GError names the tensor and its file). `max_context` is the number
 * of positions the KV cache holds at first (prompt + generated tokens);
 * <= 0 picks min(max_position_embeddings, 1024). avq_llama_reserve() can
 * grow it later. */
AvqLlama *avq_llama_new (const AvqModel *model, int max_context, GError **error);
void avq_llama_free (AvqLlama *llama);

const AvqModel *avq_llama_get_model (const AvqLlama *llama);
const AvqTextConfig *avq_llama_get_config (const AvqLlama *llama);
int avq_llama_hidden_size (const AvqLlama *llama);
int avq_llama_vocab_size (const AvqLlama *llama);
/* Positions already in the KV cache. */
int avq_llama_n_past (const AvqLlama *llama);
int avq_llama_max_context (const AvqLlama *llama);

/* Grows the KV cache to hold `max_context` positions, keeping what it
 * holds. Fails beyond max_position_embeddings. */
gboolean avq_llama_reserve (AvqLlama *llama, int max_context, GError **error);
/* Forgets the cached positions: the next prefill starts at position 0. */
void avq_llama_reset (AvqLlama *llama);

/* Threads for BLAS and for the decoder's own kernels (<= 0: the number of
 * CPUs). Process-wide for BLAS, per decoder for the rest. */
void avq_llama_set_threads (AvqLlama *llama, int threads);

/* Weight rows widened per GEMM call in prefill; 0 (default) sizes blocks
 * to a 16 MiB scratch. For tuning and tests. */
void avq_llama_set_block_rows (AvqLlama *llama, int rows);

/* FALSE: use the portable C kernels even where AVX2/FMA/F16C exist (the
 * default uses them when the CPU has them). For tests and comparisons. */
void avq_llama_set_simd (AvqLlama *llama, gboolean enable);

/* embed_tokens rows of `ids` into `out` [n, hidden]. Ids outside the vocab
 * are an AVQ_ERROR_INVALID_ARGUMENT. */
gboolean avq_llama_embed (const AvqLlama *llama, const int *ids, int n,
                          float *out, GError **error);

/* Runs `n` input embeddings [n, hidden] at positions n_past .. n_past+n-1
 * and appends them to the KV cache. `logits` (vocab floats, may be NULL)
 * receives the logits of the last of them. */
gboolean avq_llama_prefill (AvqLlama *llama, const float *embeddings, int n,
                            float *logits, GError **error);

/* One token at position n_past; `logits` receives its logits (vocab floats). */
gboolean avq_llama_decode (AvqLlama *llama, int token, float *logits,
                           GError **error);

/* ---- several sequences (batching) ----
 *
 * A decoder holds one KV cache per sequence (default: one). Sequence 0 is
 * the one avq_llama_prefill, avq_llama_decode, avq_llama_n_past and
 * avq_llama_reset use. Independent sequences (the questions of several
 * cameras) share the weights, and avq_llama_decode_batch advances several
 * of them in one pass: on the CPU one [n, hidden] x W^T GEMM per weight
 * instead of n matrix-vector products, on CUDA one captured graph.
 * Results equal those of decoding each sequence alone (up to float
 * summation order). */

/* Sets the number of sequences (>= 1), each with a cache of the current
 * max_context; forgets every cached position. On the CPU a cache costs
 * 2 x layers x kv_heads x head_dim floats a position (1 MiB for a 7B
 * model: 1 GiB per sequence at 1024 positions). Errors, naming the size,
 * when the caches cannot be allocated; the decoder is then unchanged. */
gboolean avq_llama_set_sequences (AvqLlama *llama, int n_sequences,
                                  GError **error);
int avq_llama_sequences (const AvqLlama *llama);
/* Positions cached in sequence `seq` (-1, with a critical warning, when
 * there is no such sequence). */
int avq_llama_sequence_n_past (const AvqLlama *llama, int seq);
void avq_llama_reset_sequence (AvqLlama *llama, int seq);

/* avq_llama_prefill on sequence `seq`. */
gboolean avq_llama_prefill_sequence (AvqLlama *llama, int seq,
                                     const float *embeddings, int n,
                                     float *logits, GError **error);

/* One token for each of n distinct sequences: tokens[i] at position
 * n_past of sequence seqs[i]. `logits` ([n, vocab], may be NULL) receives
 * row i's logits. Invalid sequence numbers, repeated sequences, ids
 * outside the vocabulary or a full cache are an AVQ_ERROR_INVALID_ARGUMENT
 * and change nothing. On the CPU each weight is read once per step: up to
 * 48 rows through fused widen + dot kernels (a pair of weight rows against
 * up to 4 inputs at a time), more through widened blocks and sgemm;
 * attention runs per row against its own cache. */
gboolean avq_llama_decode_batch (AvqLlama *llama, const int *seqs,
                                 const int *tokens, int n, float *logits,
                                 GError **error);

/* ---- sampling candidates instead of logits ----
 *
 * avq_llama_decode and avq_llama_decode_batch, handing back each row's
 * sampling candidates (avq-sampling.h) instead of its logits: its first
 * min(k, out[i].capacity, vocab) tokens and the row's softmax sum at
 * `temperature` (0 for greedy: k = 1 is then the argmax). On CUDA they are
 * computed on the device, so that a step copies a few KiB back instead of
 * vocab floats a row; on the CPU they come from the logits. When the
 * candidates cannot decide, avq_llama_step_logits gives the step's whole
 * row. Same checks and errors as the plain calls. */
gboolean avq_llama_decode_candidates (AvqLlama *llama, int token, int k,
                                      float temperature,
                                      AvqTokenCandidates *out, GError **error);
gboolean avq_llama_decode_batch_candidates (AvqLlama *llama, const int *seqs,
                                            const int *tokens, int n, int k,
                                            float temperature,
                                            AvqTokenCandidates *out,
                                            GError **error);

/* Row `row` of the logits of the last *_candidates step (vocab floats);
 * valid until the decoder's next prefill, decode, reserve or change of
 * sequences or device, an AVQ_ERROR_INVALID_ARGUMENT afterwards or for a
 * row the step did not have. */
gboolean avq_llama_step_logits (AvqLlama *llama, int row, float *logits,
                                GError **error);

/* Merges the LoRA adapters of an AVQ file (tensors lora.<base>.lora_A
 * [r, in] and lora.<base>.lora_B [out, r], metadata lora.alpha and
 * lora.rank; AVQ-SPEC section 2) into private F32 copies of the adapted
 * matrices: W' = W + (alpha / r) B A. A file without lora.* tensors changes
 * nothing. Errors name the file and the adapter. *n_merged (may be NULL)
 * receives the number of adapted matrices. */
gboolean avq_llama_apply_lora (AvqLlama *llama, const AvqSafetensors *file,
                               guint *n_merged, GError **error);

/* Moves prefill and decode to the CUDA backend (lib/cuda/avq-cuda-llama.h):
 * every weight is uploaded once as fp16 (after any LoRA merge: apply
 * adapters first; avq_llama_apply_lora fails afterwards), GEMMs run fp16 in,
 * fp32 accumulate, and the KV cache (fp16) lives on the device. Forgets the
 * cached positions. Errors (AVQ_ERROR_DEVICE) name the failing CUDA call, or
 * say that the build has no CUDA backend; on failure the decoder stays on
 * the CPU, unchanged. */
gboolean avq_llama_use_cuda (AvqLlama *llama, GError **error);
gboolean avq_llama_on_cuda (const AvqLlama *llama);
/* "cpu" or "cuda: <GPU>, <N> MiB of LLM weights uploaded in <T> ms"; free it. */
char *avq_llama_device_description (const AvqLlama *llama);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqLlama, avq_llama_free)

G_END_DECLS
