/* The LLaMA decoder on CUDA: memory, uploads, cuBLAS calls and the order of
 * prefill and decode. Kernels live in avq-cuda-llama-kernels.cu.
 *
 * Row-major matrices as everywhere in the project; Y[n, out] = X[n, in] W^T
 * (W [out, in]) is the column-major Y^T = op_T(W) X^T (see avq-cuda.c).
 *
 * Per layer (n rows):
 *   h16 = RMSNorm(x)                      (fp32 math, fp16 out)
 *   qkv32 = h16 Wqkv^T                    (q, k, v stacked: one GEMM)
 *   q16, cache <- RoPE(q), RoPE(k), v     (one kernel)
 *   prefill (one sequence, positions p0 ..):
 *            S = scale Q K^T (strided-batched GEMM, GQA via stride 0 on K),
 *            causal softmax, O = P V (strided-batched)
 *   decode (one row per sequence): one attention kernel over each row's
 *            own cache, its length read from device memory
 *   x += O Wo^T                           (GEMM with beta = 1)
 *   h16 = RMSNorm(x); gu32 = h16 [Wg; Wu]^T; g16 = silu(g) u
 *   x += g16 Wd^T                         (GEMM with beta = 1)
 * then logits = RMSNorm(x) Wlm^T in fp32 (the last prefill row, or every
 * decode row), and for decode an argmax per row on the device.
 *
 * The decode step is one pass for n sequences: its per-step inputs (token
 * ids, positions, sequence slots) go through a pinned host buffer copied to
 * the device inside the pass, so the pass is the same every step and runs
 * as a CUDA graph captured once per n (avq_cuda_context_run_graph). */
#include "avq-cuda-llama.h"
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <string.h>
#include "avq-cuda-context.h"
#include "avq-cuda-flash.h"
#include "avq-cuda-llama-kernels.h"
#include "avq-error.h"
#include "avq-sampling.h"

/* Prefill rows per pass: bounds the [heads, rows, context] score buffers.
 * The activation buffers hold this many rows, which is also the most
 * sequences a decode step can batch. */
#define CHUNK_ROWS 512
G_STATIC_ASSERT (AVQ_CUDA_LLAMA_MAX_SEQUENCES <= CHUNK_ROWS);
G_STATIC_ASSERT (AVQ_SAMPLING_CANDIDATES <= AVQ_CUK_TOP_MAX);

/* The step inputs in d_step and its pinned mirror h_step, for S sequences:
 * tokens [S] | positions [S] | sequence slots [S] | the temperature (one
 * float's bits), copied to the device as the step's first operation; h_step
 * then holds the argmax [S] copied back. */
#define STEP_INPUTS(S) (3 * (S) + 1)
#define STEP_TEMPERATURE(S) (3 * (S))
#define STEP_ARGMAX(S) STEP_INPUTS (S)

/* Floats of the candidate buffers for S sequences: a step of n rows and k
 * candidates writes logits [n k], ids [n k] (int32), stats [2 n] one after
 * another from the start, so that one copy brings them back. */
#define CAND_FLOATS(S) ((gsize) 2 * (S) * AVQ_SAMPLING_CANDIDATES + 2 * (S))

typedef struct {
  float *attn_norm, *mlp_norm;   /* fp32 [H] */
  guint16 *qkv_w;                /* fp16 [(nh + 2 nkv) hd, H] */
  guint16 *o_w;                  /* [H, nh hd] */
  guint16 *gu_w;                 /* [2 ffn, H]: gate rows, then up rows */
  guint16 *down_w;               /* [H, ffn] */
} CudaLLayer;

struct _AvqCudaLlama {
  int H, nh, nkv, hd, ffn, vocab, n_layers, q_dim, kv_dim, qkv_dim;
  float eps, theta, scale;
  gboolean flash;        /* prefill attention: AVQ_CUDA_ATTENTION=flash */

  AvqCudaContext *ctx;   /* device, allocations, staging, upload stats */
  cudaStream_t stream;   /* the context's */
  cublasHandle_t blas;   /* the context's, bound to stream */

  guint16 *embed16, *lm16;   /* [vocab, H]; the same when tied */
  float *final_norm;
  CudaLLayer *layers;
  guint64 random_seed, random_bytes;   /* benchmark weights (desc) */
  int random_tensors;

  /* KV cache, fp16: [layer][seq][kvh][max_ctx][hd]; one sequence's slice
   * of a layer is laid out as a single-sequence cache, so prefill and the
   * attention GEMMs see no difference. */
  int max_ctx, n_seq;
  guint16 *k_cache, *v_cache;
  float *rope_cos, *rope_sin;   /* device [max_ctx][hd/2] */
  /* prefill [nh, CHUNK_ROWS, ctx_pad]; decode AVQ_CUK_DECODE_SCRATCH */
  float *scores;
  guint16 *probs;

  /* activations for up to CHUNK_ROWS rows */
  float *x, *qkv32, *gu32;
  guint16 *h16, *q16, *att16, *g16;
  float *logits;     /* [n_seq, vocab] */
  gint32 *d_step;    /* [STEP_INPUTS (n_seq)] */
  gint32 *d_argmax;  /* [n_seq] */
  float *d_cand;     /* [CAND_FLOATS (n_seq)] */

  /* pinned host buffers; h_logits and h_step change size with n_seq and
   * are freed here, not by the context */
  float *h_emb;      /* [CHUNK_ROWS, H] */
  float *h_logits;   /* [n_seq, vocab] */
  gint32 *h_step;    /* [STEP_INPUTS (n_seq) + n_seq]: d_step's mirror, then
                      * the argmax */
  float *h_cand;     /* [CAND_FLOATS (n_seq)]: d_cand's */
  int step_n;        /* rows of the last decode step (step_logits) */

  /* Work may be queued that reads the pinned buffers (a call failed
   * midway): synchronise before writing them again. */
  gboolean dirty;
};

#define DEV_ALLOC(field, type, count)                                     \
  avq_cuda_context_dev_alloc (cl->ctx, (void **) &(field),                \
                              sizeof (type) * (gsize) (count), error)

static int
ctx_pad (int ctx)
{
  return (ctx + 7) & ~7;
}

void
avq_cuda_llama_free (AvqCudaLlama *cl)
{
  if (cl == NULL)
    return;
  /* The context synchronises and frees every device allocation and the
   * pinned buffers it keeps; the resizable pinned buffers are ours. */
  avq_cuda_context_free (cl->ctx);
  if (cl->h_logits != NULL)
    (void) cudaFreeHost (cl->h_logits);
  if (cl->h_step != NULL)
    (void) cudaFreeHost (cl->h_step);
  if (cl->h_cand != NULL)
    (void) cudaFreeHost (cl->h_cand);
  g_free (cl->layers);
  g_free (cl);
}

/* Copies elements [0, n) of `m` (or host floats when m is NULL) to dst on
 * the device, fp16 when to_half (avq_cuda_context_upload). */
static gboolean
upload (AvqCudaLlama *cl, const AvqCudaMatrix *m, const float *host, gsize n,
        void *dst, gboolean to_half, GError **error)
{
  AvqTensor t = { 0 };
  if (m != NULL) {
    t.dtype = m->dtype;
    t.ndim = 1;
    t.shape[0] = (gint64) n;
    t.data = m->data;
  }
  return avq_cuda_context_upload (cl->ctx, m != NULL ? &t : NULL, host, n, dst,
                                  to_half, error);
}

static gboolean
check_matrix (const AvqCudaMatrix *m, int rows, int cols, gboolean random,
              const char *what, GError **error)
{
  if ((m->data == NULL && !random) || m->rows != rows || m->cols != cols ||
      (m->data != NULL && m->dtype != AVQ_DTYPE_F32 &&
       m->dtype != AVQ_DTYPE_F16 && m->dtype != AVQ_DTYPE_BF16)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: %s is [%d, %d] of dtype %d%s, expected a float [%d, %d]",
                 what, m->rows, m->cols, (int) m->dtype,
                 m->data == NULL ? " without data" : "", rows, cols);
    return FALSE;
  }
  return TRUE;
}

/* Benchmark weights: n values offset + scale u, u uniform in [-1, 1), each
 * tensor from its own seed. */
static gboolean
fill_random (AvqCudaLlama *cl, void *dst, gboolean half, gsize n, float scale,
             float offset, GError **error)
{
  const guint64 seed = cl->random_seed ^
                       ((guint64) ++cl->random_tensors * 0xd1b54a32d192ed03ull);
  CK (avq_cuk_fill_random (cl->stream, dst, half, n, seed, scale, offset));
  cl->random_bytes += n * (half ? 2 : 4);
  return TRUE;
}

/* Stacks matrices (same column count) into one fp16 [sum rows, cols]. */
static gboolean
upload_stacked (AvqCudaLlama *cl, const AvqCudaMatrix *const *mats, int count,
                guint16 **dst, GError **error)
{
  gsize rows = 0;
  for (int i = 0; i < count; i++)
    rows += (gsize) mats[i]->rows;
  if (!avq_cuda_context_dev_alloc (cl->ctx, (void **) dst,
                                   rows * mats[0]->cols * 2, error))
    return FALSE;
  gsize off = 0;
  for (int i = 0; i < count; i++) {
    gsize n = (gsize) mats[i]->rows * mats[i]->cols;
    /* Standard deviation 1 / sqrt(in): activations keep their scale. */
    if (mats[i]->data == NULL) {
      if (!fill_random (cl, *dst + off, TRUE, n,
                        sqrtf (3.0f / (float) mats[i]->cols), 0.0f, error))
        return FALSE;
    } else if (!upload (cl, mats[i], NULL, n, *dst + off, TRUE, error)) {
      return FALSE;
    }
    off += n;
  }
  return TRUE;
}

static gboolean
upload_vector (AvqCudaLlama *cl, const float *v, int n, float **dst,
               GError **error)
{
  if (!avq_cuda_context_dev_alloc (cl->ctx, (void **) dst,
                                   sizeof (float) * n, error))
    return FALSE;
  if (v == NULL)
    return fill_random (cl, *dst, FALSE, n, 0.1f, 1.0f, error);
  return upload (cl, NULL, v, n, *dst, FALSE, error);
}

static gboolean
init_context (AvqCudaLlama *cl, int device_ordinal, GError **error)
{
  int count = 0;
  CK (cudaGetDeviceCount (&count));
  cl->ctx = avq_cuda_context_new (device_ordinal,
                                  cl->flash ? ", flash attention" : "", error);
  if (cl->ctx == NULL)
    return FALSE;
  cl->stream = avq_cuda_context_stream (cl->ctx);
  cl->blas = avq_cuda_context_blas (cl->ctx);
  return TRUE;
}

/* The rotary tables exactly as the CPU decoder computes them (float32
 * inverse frequencies and angles like HF, cos/sin in double). */
static gboolean
upload_rope (AvqCudaLlama *cl, int max_ctx, GError **error)
{
  const int half = cl->hd / 2;
  g_autofree float *c = g_new (float, (gsize) max_ctx * half);
  g_autofree float *s = g_new (float, (gsize) max_ctx * half);
  for (int p = 0; p < max_ctx; p++)
    for (int i = 0; i < half; i++) {
      float inv = 1.0f / powf (cl->theta, (float) (2 * i) / (float) cl->hd);
      float ang = (float) p * inv;
      c[(gsize) p * half + i] = (float) cos ((double) ang);
      s[(gsize) p * half + i] = (float) sin ((double) ang);
    }
  float *dc = NULL, *ds = NULL;
  if (!DEV_ALLOC (dc, float, (gsize) max_ctx * half) ||
      !DEV_ALLOC (ds, float, (gsize) max_ctx * half))
    return FALSE;
  /* Pageable copies, synchronised: the tables are freed on return. */
  CK (cudaMemcpyAsync (dc, c, sizeof (float) * max_ctx * half,
                       cudaMemcpyHostToDevice, cl->stream));
  CK (cudaMemcpyAsync (ds, s, sizeof (float) * max_ctx * half,
                       cudaMemcpyHostToDevice, cl->stream));
  CK (cudaStreamSynchronize (cl->stream));
  avq_cuda_context_dev_release (cl->ctx, cl->rope_cos);
  avq_cuda_context_dev_release (cl->ctx, cl->rope_sin);
  cl->rope_cos = dc;
  cl->rope_sin = ds;
  return TRUE;
}

/* Everything whose size depends on the context or the number of
 * sequences, for the geometry being switched to. */
typedef struct {
  guint16 *k, *v, *probs;
  float *scores;
} Caches;

static void
release_caches (AvqCudaLlama *cl, Caches *c)
{
  avq_cuda_context_dev_release (cl->ctx, c->k);
  avq_cuda_context_dev_release (cl->ctx, c->v);
  avq_cuda_context_dev_release (cl->ctx, c->scores);
  avq_cuda_context_dev_release (cl->ctx, c->probs);
  memset (c, 0, sizeof *c);
}

static gboolean
alloc_caches (AvqCudaLlama *cl, int n_seq, int max_ctx, Caches *c,
              GError **error)
{
  const gsize slices = (gsize) cl->n_layers * n_seq * cl->nkv;
  /* prefill scores and probs [nh, CHUNK_ROWS, ctx_pad]; the decode
   * attention's split partials for n_seq rows share `scores`. */
  const gsize np = (gsize) cl->nh * MIN (CHUNK_ROWS, max_ctx) * ctx_pad (max_ctx);
  const gsize ns = MAX (np, AVQ_CUK_DECODE_SCRATCH (n_seq, cl->nh, cl->hd, max_ctx));
  memset (c, 0, sizeof *c);
  if (!DEV_ALLOC (c->k, guint16, slices * max_ctx * cl->hd) ||
      !DEV_ALLOC (c->v, guint16, slices * max_ctx * cl->hd) ||
      !DEV_ALLOC (c->scores, float, ns) || !DEV_ALLOC (c->probs, guint16, np)) {
    release_caches (cl, c);
    return FALSE;
  }
  return TRUE;
}

/* Installs new caches (the stream must be idle: the old ones are freed). */
static void
swap_caches (AvqCudaLlama *cl, Caches *c)
{
  Caches old = { cl->k_cache, cl->v_cache, cl->probs, cl->scores };
  release_caches (cl, &old);
  cl->k_cache = c->k;
  cl->v_cache = c->v;
  cl->scores = c->scores;
  cl->probs = c->probs;
}

/* Before anything reads or rewrites the pinned buffers or frees memory that
 * queued work may still use. */
static gboolean
settle (AvqCudaLlama *cl, GError **error)
{
  if (cl->dirty)
    CK (cudaStreamSynchronize (cl->stream));
  cl->dirty = FALSE;
  return TRUE;
}

gboolean
avq_cuda_llama_reserve (AvqCudaLlama *cl, int max_context, int n_past,
                        GError **error)
{
  if (max_context <= cl->max_ctx)
    return TRUE;
  if (n_past < 0 || n_past > cl->max_ctx) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: %d cached positions of %d reserved", n_past,
                 cl->max_ctx);
    return FALSE;
  }
  if (!avq_cuda_context_enter (cl->ctx, error) || !settle (cl, error))
    return FALSE;
  Caches c;
  if (!alloc_caches (cl, cl->n_seq, max_context, &c, error))
    return FALSE;
  /* Every position of every sequence: each may hold a different length. */
  if (cl->max_ctx > 0) {
    const gsize row = (gsize) cl->hd * 2;
    const gsize slices = (gsize) cl->n_layers * cl->n_seq * cl->nkv;
    cudaError_t e = cudaMemcpy2DAsync (c.k, row * max_context, cl->k_cache,
                                       row * cl->max_ctx, row * cl->max_ctx,
                                       slices, cudaMemcpyDeviceToDevice,
                                       cl->stream);
    if (e == cudaSuccess)
      e = cudaMemcpy2DAsync (c.v, row * max_context, cl->v_cache,
                             row * cl->max_ctx, row * cl->max_ctx, slices,
                             cudaMemcpyDeviceToDevice, cl->stream);
    if (e != cudaSuccess) {
      (void) cudaStreamSynchronize (cl->stream);
      release_caches (cl, &c);
      return avq_cuda_failed (e, "cudaMemcpy2DAsync (cache growth)", error);
    }
  }
  /* upload_rope synchronises the stream: the old buffers are idle after it. */
  if (!upload_rope (cl, max_context, error)) {
    (void) cudaStreamSynchronize (cl->stream);
    release_caches (cl, &c);
    return FALSE;
  }
  /* Graphs hold the old addresses (caches, scores, rope tables). */
  avq_cuda_context_drop_graphs (cl->ctx);
  swap_caches (cl, &c);
  cl->max_ctx = max_context;
  return TRUE;
}

/* The buffers sized by the number of sequences besides the caches. */
typedef struct {
  float *logits, *h_logits;
  gint32 *d_step, *d_argmax, *h_step;
  float *d_cand, *h_cand;
} SeqBuffers;

static void
release_seq_buffers (AvqCudaLlama *cl, SeqBuffers *b)
{
  avq_cuda_context_dev_release (cl->ctx, b->logits);
  avq_cuda_context_dev_release (cl->ctx, b->d_step);
  avq_cuda_context_dev_release (cl->ctx, b->d_argmax);
  avq_cuda_context_dev_release (cl->ctx, b->d_cand);
  if (b->h_logits != NULL)
    (void) cudaFreeHost (b->h_logits);
  if (b->h_step != NULL)
    (void) cudaFreeHost (b->h_step);
  if (b->h_cand != NULL)
    (void) cudaFreeHost (b->h_cand);
  memset (b, 0, sizeof *b);
}

/* A pinned host buffer that is ours to free (cudaFreeHost), unlike the
 * context's; *p stays NULL on failure. */
static gboolean
pinned_alloc (void **p, gsize bytes, const char *what, GError **error)
{
  cudaError_t e = cudaMallocHost (p, bytes);
  if (e == cudaSuccess)
    return TRUE;
  *p = NULL;
  g_autofree char *call = g_strdup_printf ("cudaMallocHost (%s, %" G_GSIZE_FORMAT ")",
                                           what, bytes);
  avq_cuda_failed (e, call, error);
  return FALSE;
}

static gboolean
alloc_seq_buffers (AvqCudaLlama *cl, int n_seq, SeqBuffers *b, GError **error)
{
  memset (b, 0, sizeof *b);
  if (DEV_ALLOC (b->logits, float, (gsize) n_seq * cl->vocab) &&
      DEV_ALLOC (b->d_step, gint32, STEP_INPUTS (n_seq)) &&
      DEV_ALLOC (b->d_argmax, gint32, n_seq) &&
      DEV_ALLOC (b->d_cand, float, CAND_FLOATS (n_seq)) &&
      pinned_alloc ((void **) &b->h_logits, sizeof (float) * n_seq * cl->vocab,
                    "h_logits", error) &&
      pinned_alloc ((void **) &b->h_step,
                    sizeof (gint32) * (STEP_INPUTS (n_seq) + n_seq), "h_step", error) &&
      pinned_alloc ((void **) &b->h_cand, sizeof (float) * CAND_FLOATS (n_seq),
                    "h_cand", error))
    return TRUE;
  release_seq_buffers (cl, b);
  return FALSE;
}

gboolean
avq_cuda_llama_set_sequences (AvqCudaLlama *cl, int n_sequences,
                              GError **error)
{
  if (n_sequences < 1 || n_sequences > AVQ_CUDA_LLAMA_MAX_SEQUENCES) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: %d sequences (1 .. %d)", n_sequences,
                 AVQ_CUDA_LLAMA_MAX_SEQUENCES);
    return FALSE;
  }
  if (!avq_cuda_context_enter (cl->ctx, error) || !settle (cl, error))
    return FALSE;
  Caches c = { 0 };
  SeqBuffers b;
  if (cl->max_ctx > 0 && !alloc_caches (cl, n_sequences, cl->max_ctx, &c, error))
    return FALSE;
  if (!alloc_seq_buffers (cl, n_sequences, &b, error)) {
    release_caches (cl, &c);
    return FALSE;
  }
  /* Nothing is queued (settled, and every call ends synchronised). */
  avq_cuda_context_drop_graphs (cl->ctx);
  if (cl->max_ctx > 0)
    swap_caches (cl, &c);
  SeqBuffers old = { cl->logits, cl->h_logits, cl->d_step, cl->d_argmax,
                     cl->h_step, cl->d_cand, cl->h_cand };
  release_seq_buffers (cl, &old);
  cl->logits = b.logits;
  cl->h_logits = b.h_logits;
  cl->d_step = b.d_step;
  cl->d_argmax = b.d_argmax;
  cl->h_step = b.h_step;
  cl->d_cand = b.d_cand;
  cl->h_cand = b.h_cand;
  cl->step_n = 0;
  cl->n_seq = n_sequences;
  return TRUE;
}

int
avq_cuda_llama_sequences (const AvqCudaLlama *cl)
{
  return cl->n_seq;
}

void
avq_cuda_llama_set_graphs (AvqCudaLlama *cl, gboolean enabled)
{
  avq_cuda_context_set_graphs (cl->ctx, enabled);
}

guint
avq_cuda_llama_graphs_captured (const AvqCudaLlama *cl)
{
  return avq_cuda_context_graphs_captured (cl->ctx);
}

static gboolean
alloc_activations (AvqCudaLlama *cl, GError **error)
{
  const gsize R = CHUNK_ROWS, H = cl->H;
  if (!DEV_ALLOC (cl->x, float, R * H) || !DEV_ALLOC (cl->h16, guint16, R * H) ||
      !DEV_ALLOC (cl->qkv32, float, R * cl->qkv_dim) ||
      !DEV_ALLOC (cl->q16, guint16, R * cl->q_dim) ||
      !DEV_ALLOC (cl->att16, guint16, R * cl->q_dim) ||
      !DEV_ALLOC (cl->gu32, float, R * 2 * cl->ffn) ||
      !DEV_ALLOC (cl->g16, guint16, R * cl->ffn))
    return FALSE;
  CK (cudaMallocHost ((void **) &cl->h_emb, sizeof (float) * R * H));
  avq_cuda_context_keep_host (cl->ctx, cl->h_emb);
  return TRUE;
}

AvqCudaLlama *
avq_cuda_llama_new (const AvqCudaLlamaDesc *d, int max_context,
                    int device_ordinal, GError **error)
{
  g_return_val_if_fail (d != NULL && d->layers != NULL, NULL);
  g_autoptr (AvqCudaLlama) cl = g_new0 (AvqCudaLlama, 1);
  cl->H = d->hidden;
  cl->nh = d->heads;
  cl->nkv = d->kv_heads;
  cl->hd = d->head_dim;
  cl->ffn = d->ffn;
  cl->vocab = d->vocab;
  cl->n_layers = d->n_layers;
  cl->q_dim = cl->nh * cl->hd;
  cl->kv_dim = cl->nkv * cl->hd;
  cl->qkv_dim = cl->q_dim + 2 * cl->kv_dim;
  cl->eps = d->eps;
  cl->theta = d->rope_theta;
  cl->scale = 1.0f / sqrtf ((float) cl->hd);
  cl->random_seed = d->random_seed;
  /* The prefill attention: cuBLAS GEMMs around a causal softmax (default),
   * or the tensor-core flash kernel with AVQ_CUDA_ATTENTION=flash (the
   * vision tower's "fused" kernel has no causal form: the decoder keeps the
   * GEMMs then). */
  const char *attn = g_getenv ("AVQ_CUDA_ATTENTION");
  cl->flash = g_strcmp0 (attn, "flash") == 0;
  if (cl->flash && cl->hd > AVQ_CUK_FLASH_MAX_HD) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "AVQ_CUDA_ATTENTION=flash: head size %d exceeds the kernel's %d",
                 cl->hd, AVQ_CUK_FLASH_MAX_HD);
    return NULL;
  }
  if (cl->nkv <= 0 || cl->nh % cl->nkv != 0 || cl->hd <= 0 || cl->hd % 2 != 0 ||
      cl->hd > AVQ_CUK_DECODE_MAX_HD || max_context <= 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "CUDA LLaMA: unsupported geometry (%d heads, %d kv heads, "
                 "head size %d; at most %d) or context %d", cl->nh, cl->nkv,
                 cl->hd, AVQ_CUK_DECODE_MAX_HD, max_context);
    return NULL;
  }
  const int H = cl->H;
  const gboolean random = d->random_seed != 0;
  if (!check_matrix (&d->embed, cl->vocab, H, random, "embed_tokens", error) ||
      !check_matrix (&d->lm_head, cl->vocab, H, random, "lm_head", error))
    return NULL;
  gboolean norms = d->final_norm != NULL;
  for (int l = 0; l < cl->n_layers; l++) {
    const AvqCudaLlamaLayer *y = &d->layers[l];
    norms &= y->attn_norm != NULL && y->mlp_norm != NULL;
    if (!check_matrix (&y->q, cl->q_dim, H, random, "q_proj", error) ||
        !check_matrix (&y->k, cl->kv_dim, H, random, "k_proj", error) ||
        !check_matrix (&y->v, cl->kv_dim, H, random, "v_proj", error) ||
        !check_matrix (&y->o, H, cl->q_dim, random, "o_proj", error) ||
        !check_matrix (&y->gate, cl->ffn, H, random, "gate_proj", error) ||
        !check_matrix (&y->up, cl->ffn, H, random, "up_proj", error) ||
        !check_matrix (&y->down, H, cl->ffn, random, "down_proj", error))
      return NULL;
  }
  if (!norms && !random) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: a norm weight is missing");
    return NULL;
  }
  if (!init_context (cl, device_ordinal, error) ||
      !alloc_activations (cl, error) ||
      !avq_cuda_llama_set_sequences (cl, 1, error))
    return NULL;

  const AvqCudaMatrix *e[1] = { &d->embed };
  if (!upload_stacked (cl, e, 1, &cl->embed16, error))
    return NULL;
  if (d->lm_head.data != NULL && d->lm_head.data == d->embed.data &&
      d->lm_head.dtype == d->embed.dtype) {
    cl->lm16 = cl->embed16;
  } else {
    const AvqCudaMatrix *lm[1] = { &d->lm_head };
    if (!upload_stacked (cl, lm, 1, &cl->lm16, error))
      return NULL;
  }
  if (!upload_vector (cl, d->final_norm, H, &cl->final_norm, error))
    return NULL;
  cl->layers = g_new0 (CudaLLayer, cl->n_layers);
  for (int l = 0; l < cl->n_layers; l++) {
    const AvqCudaLlamaLayer *y = &d->layers[l];
    CudaLLayer *c = &cl->layers[l];
    const AvqCudaMatrix *qkv[3] = { &y->q, &y->k, &y->v };
    const AvqCudaMatrix *o[1] = { &y->o };
    const AvqCudaMatrix *gu[2] = { &y->gate, &y->up };
    const AvqCudaMatrix *dn[1] = { &y->down };
    if (!upload_vector (cl, y->attn_norm, H, &c->attn_norm, error) ||
        !upload_vector (cl, y->mlp_norm, H, &c->mlp_norm, error) ||
        !upload_stacked (cl, qkv, 3, &c->qkv_w, error) ||
        !upload_stacked (cl, o, 1, &c->o_w, error) ||
        !upload_stacked (cl, gu, 2, &c->gu_w, error) ||
        !upload_stacked (cl, dn, 1, &c->down_w, error))
      return NULL;
  }
  if (!avq_cuda_llama_reserve (cl, max_context, 0, error))
    return NULL;
  gint64 t0 = g_get_monotonic_time ();
  cudaError_t ce = cudaStreamSynchronize (cl->stream);
  if (ce != cudaSuccess) {
    avq_cuda_failed (ce, "cudaStreamSynchronize (cl->stream)", error);
    return NULL;
  }
  avq_cuda_context_add_upload_us (cl->ctx, g_get_monotonic_time () - t0);
  return g_steal_pointer (&cl);
}

/* ---- forward ------------------------------------------------------------ */

/* Y[n, out] (stride ldy) = X[n, in] (fp16) W^T (fp16 [out, in]) + beta Y. */
static gboolean
linear16 (AvqCudaLlama *cl, int n, int in, int out, const guint16 *x,
          const guint16 *w, float beta, void *y, cudaDataType ytype,
          GError **error)
{
  const float alpha = 1.0f;
  CKB (cublasGemmEx (cl->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha,
                     w, CUDA_R_16F, in, x, CUDA_R_16F, in, &beta, y, ytype,
                     out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return TRUE;
}

/* The cache of sequence `seq` in layer `layer`. */
static gsize
cache_offset (const AvqCudaLlama *cl, int layer, int seq)
{
  return ((gsize) layer * cl->n_seq + seq) * cl->nkv * cl->max_ctx * cl->hd;
}

/* Causal attention of n query rows (q16 [n, nh hd]) at positions p0 .. over
 * the layer's cache (keys 0 .. p0+n-1) -> out16 [n, nh hd]. Per query head
 * h (kv head g = h / group): S_h [n, Tp] = scale Q_h K_g^T, whose
 * column-major view is S_h^T = K_g Q_h^T; O_h^T [hd, n] = V_g^T P_h^T. With
 * GQA the group's heads form one batch that shares K_g and V_g (stride 0). */
gboolean
avq_cuda_causal_attention (cublasHandle_t blas, cudaStream_t stream,
                           const guint16 *q16, int n, int p0, int nh, int nkv,
                           int hd, const guint16 *K, const guint16 *V,
                           int max_ctx, float scale, float *scores,
                           guint16 *probs, guint16 *out16, GError **error)
{
  const int T = p0 + n, Tp = ctx_pad (T), group = nh / nkv, q_dim = nh * hd;
  const float zero = 0.0f, one = 1.0f;
  const long long kv_slice = (long long) max_ctx * hd;
  /* MHA: one call over every head; GQA: one call per kv head. */
  const int calls = group == 1 ? 1 : nkv, batch = group == 1 ? nh : group;
  const long long kv_stride = group == 1 ? kv_slice : 0;
  for (int g = 0; g < calls; g++) {
    const int h0 = g * batch;
    CKB (cublasGemmStridedBatchedEx (
        blas, CUBLAS_OP_T, CUBLAS_OP_N, T, n, hd, &scale,
        K + g * kv_slice, CUDA_R_16F, hd, kv_stride,
        q16 + (gsize) h0 * hd, CUDA_R_16F, q_dim, hd, &zero,
        scores + (gsize) h0 * n * Tp, CUDA_R_32F, Tp, (long long) n * Tp,
        batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  CK (avq_cuk_causal_softmax (stream, scores, nh * n, n, p0, Tp, probs));
  for (int g = 0; g < calls; g++) {
    const int h0 = g * batch;
    CKB (cublasGemmStridedBatchedEx (
        blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, n, T, &one,
        V + g * kv_slice, CUDA_R_16F, hd, kv_stride,
        probs + (gsize) h0 * n * Tp, CUDA_R_16F, Tp, (long long) n * Tp,
        &zero, out16 + (gsize) h0 * hd, CUDA_R_16F, q_dim, hd,
        batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return TRUE;
}

/* Where the rows of a pass go: prefill of one sequence at positions p0 ..
 * (host values), or decode rows whose positions and sequence slots are
 * device arrays. */
typedef struct {
  int p0, seq;
  const gint32 *positions, *slots;   /* decode; NULL for prefill */
} Rows;

/* Every layer over the n rows in cl->x. */
static gboolean
forward (AvqCudaLlama *cl, int n, const Rows *w, GError **error)
{
  const int H = cl->H;
  const gboolean decode = w->positions != NULL;
  /* Decode rows address their caches through slots; prefill passes the
   * sequence's own cache. */
  const size_t slot_stride = (size_t) cl->nkv * cl->max_ctx * cl->hd;
  for (int l = 0; l < cl->n_layers; l++) {
    const CudaLLayer *y = &cl->layers[l];
    guint16 *K = cl->k_cache + cache_offset (cl, l, decode ? 0 : w->seq);
    guint16 *V = cl->v_cache + cache_offset (cl, l, decode ? 0 : w->seq);
    CK (avq_cuk_rmsnorm (cl->stream, cl->x, n, H, y->attn_norm, cl->eps, NULL,
                         cl->h16));
    if (!linear16 (cl, n, H, cl->qkv_dim, cl->h16, y->qkv_w, 0.0f, cl->qkv32,
                   CUDA_R_32F, error))
      return FALSE;
    CK (avq_cuk_rope_kv (cl->stream, cl->qkv32, n, cl->nh, cl->nkv, cl->hd,
                         cl->rope_cos, cl->rope_sin, w->p0, w->positions,
                         w->slots, slot_stride, cl->q16, K, V, cl->max_ctx, 1));
    if (decode) {
      CK (avq_cuk_decode_attention (cl->stream, cl->q16, K, V, 1, n, cl->nh,
                                    cl->nkv, cl->hd, 0, w->positions, w->slots,
                                    slot_stride, cl->max_ctx, cl->scale,
                                    cl->scores, cl->att16));
    } else if (cl->flash) {
      CK (avq_cuk_flash_attention_cache (cl->stream, cl->q16, n, w->p0, cl->nh,
                                         cl->nkv, cl->hd, K, V, cl->max_ctx,
                                         cl->scale, cl->att16));
    } else if (!avq_cuda_causal_attention (cl->blas, cl->stream, cl->q16, n,
                                           w->p0, cl->nh, cl->nkv, cl->hd, K, V,
                                           cl->max_ctx, cl->scale, cl->scores,
                                           cl->probs, cl->att16, error)) {
      return FALSE;
    }
    if (!linear16 (cl, n, cl->q_dim, H, cl->att16, y->o_w, 1.0f, cl->x,
                   CUDA_R_32F, error))
      return FALSE;
    CK (avq_cuk_rmsnorm (cl->stream, cl->x, n, H, y->mlp_norm, cl->eps, NULL,
                         cl->h16));
    if (!linear16 (cl, n, H, 2 * cl->ffn, cl->h16, y->gu_w, 0.0f, cl->gu32,
                   CUDA_R_32F, error))
      return FALSE;
    CK (avq_cuk_silu_mul (cl->stream, cl->gu32, n, cl->ffn, cl->g16));
    if (!linear16 (cl, n, cl->ffn, H, cl->g16, y->down_w, 1.0f, cl->x,
                   CUDA_R_32F, error))
      return FALSE;
  }
  return TRUE;
}

/* logits of rows first .. first+n-1 of cl->x -> cl->logits [n, vocab]. */
static gboolean
final_logits (AvqCudaLlama *cl, int first, int n, GError **error)
{
  CK (avq_cuk_rmsnorm (cl->stream, cl->x + (gsize) first * cl->H, n, cl->H,
                       cl->final_norm, cl->eps, NULL, cl->h16));
  return linear16 (cl, n, cl->H, cl->vocab, cl->h16, cl->lm16, 0.0f,
                   cl->logits, CUDA_R_32F, error);
}

static gboolean
check_positions (AvqCudaLlama *cl, int n, int p0, GError **error)
{
  if (n <= 0 || p0 < 0 || p0 + n > cl->max_ctx) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: positions %d .. %d outside the %d reserved", p0,
                 p0 + n - 1, cl->max_ctx);
    return FALSE;
  }
  return TRUE;
}

static gboolean
check_sequence (AvqCudaLlama *cl, int seq, GError **error)
{
  if (seq < 0 || seq >= cl->n_seq) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: sequence %d outside 0 .. %d", seq, cl->n_seq - 1);
    return FALSE;
  }
  return TRUE;
}

gboolean
avq_cuda_llama_prefill_sequence (AvqCudaLlama *cl, int seq, const float *emb,
                                 int n, int p0, float *logits, GError **error)
{
  if (!check_sequence (cl, seq, error) || !check_positions (cl, n, p0, error) ||
      !avq_cuda_context_enter (cl->ctx, error) || !settle (cl, error))
    return FALSE;
  const int H = cl->H;
  cl->dirty = TRUE;
  cl->step_n = 0;
  for (int done = 0; done < n;) {
    const int rows = MIN (CHUNK_ROWS, n - done);
    /* The pinned mirror is reused: the previous chunk's copy must be done.
     * (The stream is in order; waiting here keeps the host from
     * overwriting it early.) */
    CK (cudaStreamSynchronize (cl->stream));
    memcpy (cl->h_emb, emb + (gsize) done * H, sizeof (float) * rows * H);
    CK (cudaMemcpyAsync (cl->x, cl->h_emb, sizeof (float) * rows * H,
                         cudaMemcpyHostToDevice, cl->stream));
    const Rows w = { p0 + done, seq, NULL, NULL };
    if (!forward (cl, rows, &w, error))
      return FALSE;
    done += rows;
    if (done == n && logits != NULL && !final_logits (cl, rows - 1, 1, error))
      return FALSE;
  }
  if (logits != NULL)
    CK (cudaMemcpyAsync (cl->h_logits, cl->logits, sizeof (float) * cl->vocab,
                         cudaMemcpyDeviceToHost, cl->stream));
  CK (cudaStreamSynchronize (cl->stream));
  cl->dirty = FALSE;
  if (logits != NULL)
    memcpy (logits, cl->h_logits, sizeof (float) * cl->vocab);
  return TRUE;
}

gboolean
avq_cuda_llama_prefill (AvqCudaLlama *cl, const float *emb, int n, int p0,
                        float *logits, GError **error)
{
  return avq_cuda_llama_prefill_sequence (cl, 0, emb, n, p0, logits, error);
}

/* One decode step, as captured: everything it reads that changes from step
 * to step comes from h_step through the copy at its start. */
typedef struct {
  AvqCudaLlama *cl;
  int n;
  gboolean logits, argmax;
  int k;   /* > 0: sampling candidates */
} Step;

static gboolean
issue_step (gpointer data, GError **error)
{
  const Step *st = data;
  AvqCudaLlama *cl = st->cl;
  const int n = st->n, S = cl->n_seq;
  CK (cudaMemcpyAsync (cl->d_step, cl->h_step, sizeof (gint32) * STEP_INPUTS (S),
                       cudaMemcpyHostToDevice, cl->stream));
  const Rows w = { 0, 0, cl->d_step + S, cl->d_step + 2 * S };
  CK (avq_cuk_embed_rows (cl->stream, cl->embed16, cl->d_step, n, cl->H, cl->x));
  if (!forward (cl, n, &w, error) || !final_logits (cl, 0, n, error))
    return FALSE;
  if (st->argmax) {
    CK (avq_cuk_argmax (cl->stream, cl->logits, n, cl->vocab, cl->vocab,
                        cl->d_argmax));
    CK (cudaMemcpyAsync (cl->h_step + STEP_ARGMAX (S), cl->d_argmax,
                         sizeof (gint32) * n, cudaMemcpyDeviceToHost, cl->stream));
  }
  if (st->k > 0) {
    const gsize nk = (gsize) n * st->k;
    CK (avq_cuk_top_candidates (
        cl->stream, cl->logits, n, cl->vocab, cl->vocab, st->k,
        (const float *) (cl->d_step + STEP_TEMPERATURE (S)), cl->d_cand,
        (gint32 *) (cl->d_cand + nk), cl->d_cand + 2 * nk));
    CK (cudaMemcpyAsync (cl->h_cand, cl->d_cand, sizeof (float) * (2 * nk + 2 * n),
                         cudaMemcpyDeviceToHost, cl->stream));
  }
  if (st->logits)
    CK (cudaMemcpyAsync (cl->h_logits, cl->logits,
                         sizeof (float) * n * cl->vocab,
                         cudaMemcpyDeviceToHost, cl->stream));
  return TRUE;
}

/* What a step hands back: any of logits, argmax, candidates (k > 0). */
typedef struct {
  float *logits;
  int *argmax;
  int k;
  float temperature;
  AvqTokenCandidates *out;   /* [n] when k > 0 */
} StepResults;

static gboolean
run_step (AvqCudaLlama *cl, int n, const int *seqs, const int *tokens,
          const int *positions, const StepResults *r, GError **error)
{
  if (n < 1 || n > cl->n_seq) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: a decode step of %d rows for %d sequences", n,
                 cl->n_seq);
    return FALSE;
  }
  g_autofree gboolean *seen = g_new0 (gboolean, cl->n_seq);
  for (int i = 0; i < n; i++) {
    if (!check_sequence (cl, seqs[i], error) ||
        !check_positions (cl, 1, positions[i], error))
      return FALSE;
    if (seen[seqs[i]]) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "CUDA LLaMA: sequence %d twice in one decode step", seqs[i]);
      return FALSE;
    }
    seen[seqs[i]] = TRUE;
    if (tokens[i] < 0 || tokens[i] >= cl->vocab) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "token id %d is outside the vocabulary (%d entries)",
                   tokens[i], cl->vocab);
      return FALSE;
    }
  }
  if (!avq_cuda_context_enter (cl->ctx, error) || !settle (cl, error))
    return FALSE;
  const int S = cl->n_seq;
  for (int i = 0; i < n; i++) {
    cl->h_step[i] = tokens[i];
    cl->h_step[S + i] = positions[i];
    cl->h_step[2 * S + i] = seqs[i];
  }
  memcpy (cl->h_step + STEP_TEMPERATURE (S), &r->temperature, sizeof (float));
  Step st = { cl, n, r->logits != NULL, r->argmax != NULL, r->k };
  const guint64 key = (guint64) n | (guint64) st.logits << 32 |
                      (guint64) st.argmax << 33 | (guint64) st.k << 34;
  cl->dirty = TRUE;
  cl->step_n = 0;
  if (!avq_cuda_context_run_graph (cl->ctx, key, issue_step, &st, error))
    return FALSE;
  CK (cudaStreamSynchronize (cl->stream));
  cl->dirty = FALSE;
  cl->step_n = n;
  if (r->logits != NULL)
    memcpy (r->logits, cl->h_logits, sizeof (float) * n * cl->vocab);
  if (r->argmax != NULL)
    for (int i = 0; i < n; i++)
      r->argmax[i] = cl->h_step[STEP_ARGMAX (S) + i];
  if (r->k > 0) {
    const int k = r->k;
    const gsize nk = (gsize) n * k;
    const gint32 *ids = (const gint32 *) (cl->h_cand + nk);
    const float *stats = cl->h_cand + 2 * nk;
    for (int i = 0; i < n; i++) {
      AvqTokenCandidates *c = &r->out[i];
      memcpy (c->logit, cl->h_cand + (gsize) i * k, sizeof (float) * k);
      memcpy (c->id, ids + (gsize) i * k, sizeof (gint32) * k);
      c->n = k;
      c->complete = k == cl->vocab;
      c->max = stats[2 * i];
      c->sum = stats[2 * i + 1];
    }
  }
  return TRUE;
}

gboolean
avq_cuda_llama_decode_batch (AvqCudaLlama *cl, int n, const int *seqs,
                             const int *tokens, const int *positions,
                             float *logits, int *argmax, GError **error)
{
  const StepResults r = { .logits = logits, .argmax = argmax };
  return run_step (cl, n, seqs, tokens, positions, &r, error);
}

gboolean
avq_cuda_llama_decode_batch_candidates (AvqCudaLlama *cl, int n,
                                        const int *seqs, const int *tokens,
                                        const int *positions, int k,
                                        float temperature,
                                        AvqTokenCandidates *out, GError **error)
{
  if (k < 1 || k > AVQ_SAMPLING_CANDIDATES || k > cl->vocab) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: %d sampling candidates (1 .. %d)", k,
                 MIN (AVQ_SAMPLING_CANDIDATES, cl->vocab));
    return FALSE;
  }
  for (int i = 0; i < n; i++)
    if (out[i].capacity < k) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "CUDA LLaMA: room for %d candidates in row %d, %d asked for",
                   out[i].capacity, i, k);
      return FALSE;
    }
  const StepResults r = { .k = k, .temperature = temperature, .out = out };
  return run_step (cl, n, seqs, tokens, positions, &r, error);
}

gboolean
avq_cuda_llama_step_logits (AvqCudaLlama *cl, int row, float *logits,
                            GError **error)
{
  if (row < 0 || row >= cl->step_n) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: row %d of a decode step of %d", row, cl->step_n);
    return FALSE;
  }
  if (!avq_cuda_context_enter (cl->ctx, error) || !settle (cl, error))
    return FALSE;
  /* Through the pinned buffer: the next step's graph copies into it, and
   * nothing is queued now (every call ends synchronised). */
  CK (cudaMemcpyAsync (cl->h_logits, cl->logits + (gsize) row * cl->vocab,
                       sizeof (float) * cl->vocab, cudaMemcpyDeviceToHost,
                       cl->stream));
  CK (cudaStreamSynchronize (cl->stream));
  memcpy (logits, cl->h_logits, sizeof (float) * cl->vocab);
  return TRUE;
}

gboolean
avq_cuda_llama_decode (AvqCudaLlama *cl, int token, int p0, float *logits,
                       int *argmax, GError **error)
{
  const int seq = 0;
  return avq_cuda_llama_decode_batch (cl, 1, &seq, &token, &p0, logits, argmax,
                                      error);
}

guint64
avq_cuda_llama_weight_bytes (const AvqCudaLlama *cl)
{
  return avq_cuda_context_weight_bytes (cl->ctx) + cl->random_bytes;
}

double
avq_cuda_llama_upload_ms (const AvqCudaLlama *cl)
{
  return avq_cuda_context_upload_ms (cl->ctx);
}

const char *
avq_cuda_llama_device_name (const AvqCudaLlama *cl)
{
  return avq_cuda_context_device_name (cl->ctx);
}
