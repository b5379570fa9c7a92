/* The LLaMA decoder on CUDA: memory, uploads, cuBLAS calls and the order of
 * prefill and decode. Kernels live in avq-cuda-kernels.cu.
 *
 * Row-major matrices as everywhere in the project; Y[n, out] = X[n, in] W^T
 * (W [out, in]) is the column-major Y^T = op_T(W) X^T (see avq-cuda.c).
 *
 * Per layer (n rows at positions p0 ..):
 *   h16 = RMSNorm(x)                      (fp32 math, fp16 out)
 *   qkv32 = h16 Wqkv^T                    (q, k, v stacked: one GEMM)
 *   q16, cache <- RoPE(q), RoPE(k), v     (one kernel)
 *   prefill: S = scale Q K^T (strided-batched GEMM, GQA via stride 0 on K),
 *            causal softmax, O = P V (strided-batched)
 *   decode:  one attention kernel over the cache
 *   x += O Wo^T                           (GEMM with beta = 1)
 *   h16 = RMSNorm(x); gu32 = h16 [Wg; Wu]^T; g16 = silu(g) u
 *   x += g16 Wd^T                         (GEMM with beta = 1)
 * then logits = RMSNorm(x_last) Wlm^T in fp32. */
#include "avq-cuda-llama.h"
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <string.h>
#include "avq-cuda-context.h"
#include "avq-cuda-llama-kernels.h"
#include "avq-error.h"

/* Prefill rows per pass: bounds the [heads, rows, context] score buffers. */
#define CHUNK_ROWS 512

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

  AvqCudaContext *ctx;   /* device, allocations, staging, upload stats */
  cudaStream_t stream;   /* the context's */
  cublasHandle_t blas;   /* the context's, bound to stream */

  guint16 *embed16, *lm16;   /* [vocab, H]; the same when tied */
  float *final_norm;
  CudaLLayer *layers;

  /* KV cache, fp16: [layer][kvh][max_ctx][hd] */
  int max_ctx;
  guint16 *k_cache, *v_cache;
  float *rope_cos, *rope_sin;   /* device [max_ctx][hd/2] */
  float *scores;                /* prefill [nh, CHUNK_ROWS, ctx_pad]; decode [nh, max_ctx] */
  guint16 *probs;

  /* activations for up to CHUNK_ROWS rows */
  float *x, *qkv32, *gu32, *logits;
  guint16 *h16, *q16, *att16, *g16;
  gint32 *d_ids, *d_argmax;

  /* pinned host mirrors */
  float *h_emb, *h_logits;
  gint32 *h_ids;
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
  /* The context frees every device allocation and pinned buffer. */
  avq_cuda_context_free (cl->ctx);
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
check_matrix (const AvqCudaMatrix *m, int rows, int cols, const char *what,
              GError **error)
{
  if (m->data == NULL || m->rows != rows || m->cols != cols ||
      (m->dtype != AVQ_DTYPE_F32 && m->dtype != AVQ_DTYPE_F16 &&
       m->dtype != AVQ_DTYPE_BF16)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA LLaMA: %s is [%d, %d] of dtype %d, expected a float [%d, %d]",
                 what, m->rows, m->cols, (int) m->dtype, rows, cols);
    return FALSE;
  }
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
    if (!upload (cl, mats[i], NULL, n, *dst + off, TRUE, error))
      return FALSE;
    off += n;
  }
  return TRUE;
}

static gboolean
upload_vector (AvqCudaLlama *cl, const float *v, int n, float **dst,
               GError **error)
{
  return avq_cuda_context_dev_alloc (cl->ctx, (void **) dst,
                                     sizeof (float) * n, error) &&
         upload (cl, NULL, v, n, *dst, FALSE, error);
}

static gboolean
init_context (AvqCudaLlama *cl, int device_ordinal, GError **error)
{
  int count = 0;
  CK (cudaGetDeviceCount (&count));
  cl->ctx = avq_cuda_context_new (device_ordinal, "", error);
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

gboolean
avq_cuda_llama_reserve (AvqCudaLlama *cl, int max_context, int n_past,
                        GError **error)
{
  if (max_context <= cl->max_ctx)
    return TRUE;
  if (!avq_cuda_context_enter (cl->ctx, error))
    return FALSE;
  const gsize slices = (gsize) cl->n_layers * cl->nkv;
  guint16 *k = NULL, *v = NULL;
  if (!DEV_ALLOC (k, guint16, slices * max_context * cl->hd) ||
      !DEV_ALLOC (v, guint16, slices * max_context * cl->hd))
    return FALSE;
  if (n_past > 0) {
    const gsize row = (gsize) cl->hd * 2;
    CK (cudaMemcpy2DAsync (k, row * max_context, cl->k_cache, row * cl->max_ctx,
                           row * n_past, slices, cudaMemcpyDeviceToDevice,
                           cl->stream));
    CK (cudaMemcpy2DAsync (v, row * max_context, cl->v_cache, row * cl->max_ctx,
                           row * n_past, slices, cudaMemcpyDeviceToDevice,
                           cl->stream));
  }
  float *scores = NULL;
  guint16 *probs = NULL;
  const gsize ns = (gsize) cl->nh *
                   MAX ((gsize) MIN (CHUNK_ROWS, max_context) * ctx_pad (max_context),
                        (gsize) max_context);
  if (!DEV_ALLOC (scores, float, ns) || !DEV_ALLOC (probs, guint16, ns))
    return FALSE;
  if (!upload_rope (cl, max_context, error))
    return FALSE;
  /* upload_rope synchronised the stream: the old buffers are idle. */
  avq_cuda_context_dev_release (cl->ctx, cl->k_cache);
  avq_cuda_context_dev_release (cl->ctx, cl->v_cache);
  avq_cuda_context_dev_release (cl->ctx, cl->scores);
  avq_cuda_context_dev_release (cl->ctx, cl->probs);
  cl->k_cache = k;
  cl->v_cache = v;
  cl->scores = scores;
  cl->probs = probs;
  cl->max_ctx = max_context;
  return TRUE;
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
      !DEV_ALLOC (cl->g16, guint16, R * cl->ffn) ||
      !DEV_ALLOC (cl->logits, float, cl->vocab) ||
      !DEV_ALLOC (cl->d_ids, gint32, 1) || !DEV_ALLOC (cl->d_argmax, gint32, 1))
    return FALSE;
  CK (cudaMallocHost ((void **) &cl->h_emb, sizeof (float) * R * H));
  avq_cuda_context_keep_host (cl->ctx, cl->h_emb);
  CK (cudaMallocHost ((void **) &cl->h_logits, sizeof (float) * (cl->vocab + 1)));
  avq_cuda_context_keep_host (cl->ctx, cl->h_logits);
  CK (cudaMallocHost ((void **) &cl->h_ids, sizeof (gint32) * 2));
  avq_cuda_context_keep_host (cl->ctx, cl->h_ids);
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
  if (cl->nkv <= 0 || cl->nh % cl->nkv != 0 || cl->hd <= 0 || cl->hd % 2 != 0 ||
      cl->hd > AVQ_CUK_DECODE_MAX_HD || max_context <= 0) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                 "CUDA LLaMA: unsupported geometry (%d heads, %d kv heads, "
                 "head size %d; at most %d) or context %d", cl->nh, cl->nkv,
                 cl->hd, AVQ_CUK_DECODE_MAX_HD, max_context);
    return NULL;
  }
  const int H = cl->H;
  if (!check_matrix (&d->embed, cl->vocab, H, "embed_tokens", error) ||
      !check_matrix (&d->lm_head, cl->vocab, H, "lm_head", error))
    return NULL;
  for (int l = 0; l < cl->n_layers; l++) {
    const AvqCudaLlamaLayer *y = &d->layers[l];
    if (!check_matrix (&y->q, cl->q_dim, H, "q_proj", error) ||
        !check_matrix (&y->k, cl->kv_dim, H, "k_proj", error) ||
        !check_matrix (&y->v, cl->kv_dim, H, "v_proj", error) ||
        !check_matrix (&y->o, H, cl->q_dim, "o_proj", error) ||
        !check_matrix (&y->gate, cl->ffn, H, "gate_proj", error) ||
        !check_matrix (&y->up, cl->ffn, H, "up_proj", error) ||
        !check_matrix (&y->down, H, cl->ffn, "down_proj", error))
      return NULL;
  }
  if (!init_context (cl, device_ordinal, error) ||
      !alloc_activations (cl, error))
    return NULL;

  const AvqCudaMatrix *e[1] = { &d->embed };
  if (!upload_stacked (cl, e, 1, &cl->embed16, error))
    return NULL;
  if (d->lm_head.data == d->embed.data && d->lm_head.dtype == d->embed.dtype) {
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

static guint16 *
cache_k (AvqCudaLlama *cl, int layer)
{
  return cl->k_cache + (gsize) layer * cl->nkv * cl->max_ctx * cl->hd;
}

static guint16 *
cache_v (AvqCudaLlama *cl, int layer)
{
  return cl->v_cache + (gsize) layer * cl->nkv * cl->max_ctx * cl->hd;
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

/* Every layer over the n rows in cl->x at positions p0 .. p0+n-1. */
static gboolean
forward (AvqCudaLlama *cl, int n, int p0, GError **error)
{
  const int H = cl->H;
  for (int l = 0; l < cl->n_layers; l++) {
    const CudaLLayer *y = &cl->layers[l];
    CK (avq_cuk_rmsnorm (cl->stream, cl->x, n, H, y->attn_norm, cl->eps, NULL,
                         cl->h16));
    if (!linear16 (cl, n, H, cl->qkv_dim, cl->h16, y->qkv_w, 0.0f, cl->qkv32,
                   CUDA_R_32F, error))
      return FALSE;
    CK (avq_cuk_rope_kv (cl->stream, cl->qkv32, n, cl->nh, cl->nkv, cl->hd,
                         cl->rope_cos, cl->rope_sin, p0, cl->q16,
                         cache_k (cl, l), cache_v (cl, l), cl->max_ctx, 1));
    if (n == 1) {
      CK (avq_cuk_decode_attention (cl->stream, cl->q16, cache_k (cl, l),
                                    cache_v (cl, l), 1, cl->nh, cl->nkv, cl->hd,
                                    p0 + 1, cl->max_ctx, cl->scale, cl->scores,
                                    cl->att16));
    } else if (!avq_cuda_causal_attention (cl->blas, cl->stream, cl->q16, n, p0,
                                           cl->nh, cl->nkv, cl->hd,
                                           cache_k (cl, l), cache_v (cl, l),
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

/* logits of row `row` of cl->x -> cl->logits (device). */
static gboolean
final_logits (AvqCudaLlama *cl, int row, GError **error)
{
  CK (avq_cuk_rmsnorm (cl->stream, cl->x + (gsize) row * cl->H, 1, cl->H,
                       cl->final_norm, cl->eps, NULL, cl->h16));
  return linear16 (cl, 1, cl->H, cl->vocab, cl->h16, cl->lm16, 0.0f,
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

gboolean
avq_cuda_llama_prefill (AvqCudaLlama *cl, const float *emb, int n, int p0,
                        float *logits, GError **error)
{
  if (!check_positions (cl, n, p0, error) ||
      !avq_cuda_context_enter (cl->ctx, error))
    return FALSE;
  const int H = cl->H;
  for (int done = 0; done < n;) {
    const int rows = MIN (CHUNK_ROWS, n - done);
    /* The pinned mirror is reused: the previous chunk's copy must be done.
     * (The stream is in order; waiting here keeps the host from
     * overwriting it early.) */
    CK (cudaStreamSynchronize (cl->stream));
    memcpy (cl->h_emb, emb + (gsize) done * H, sizeof (float) * rows * H);
    CK (cudaMemcpyAsync (cl->x, cl->h_emb, sizeof (float) * rows * H,
                         cudaMemcpyHostToDevice, cl->stream));
    if (!forward (cl, rows, p0 + done, error))
      return FALSE;
    done += rows;
    if (done == n && logits != NULL && !final_logits (cl, rows - 1, error))
      return FALSE;
  }
  if (logits != NULL)
    CK (cudaMemcpyAsync (cl->h_logits, cl->logits, sizeof (float) * cl->vocab,
                         cudaMemcpyDeviceToHost, cl->stream));
  CK (cudaStreamSynchronize (cl->stream));
  if (logits != NULL)
    memcpy (logits, cl->h_logits, sizeof (float) * cl->vocab);
  return TRUE;
}

gboolean
avq_cuda_llama_decode (AvqCudaLlama *cl, int token, int p0, float *logits,
                       int *argmax, GError **error)
{
  if (!check_positions (cl, 1, p0, error) ||
      !avq_cuda_context_enter (cl->ctx, error))
    return FALSE;
  if (token < 0 || token >= cl->vocab) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "token id %d is outside the vocabulary (%d entries)", token,
                 cl->vocab);
    return FALSE;
  }
  /* h_ids may still feed the previous step's copy only if that step
   * failed midway; every successful call ends synchronised. */
  cl->h_ids[0] = token;
  CK (cudaMemcpyAsync (cl->d_ids, cl->h_ids, sizeof (gint32),
                       cudaMemcpyHostToDevice, cl->stream));
  CK (avq_cuk_embed_rows (cl->stream, cl->embed16, cl->d_ids, 1, cl->H, cl->x));
  if (!forward (cl, 1, p0, error) || !final_logits (cl, 0, error))
    return FALSE;
  if (argmax != NULL) {
    CK (avq_cuk_argmax (cl->stream, cl->logits, cl->vocab, cl->d_argmax));
    CK (cudaMemcpyAsync (cl->h_ids + 1, cl->d_argmax, sizeof (gint32),
                         cudaMemcpyDeviceToHost, cl->stream));
  }
  if (logits != NULL)
    CK (cudaMemcpyAsync (cl->h_logits, cl->logits, sizeof (float) * cl->vocab,
                         cudaMemcpyDeviceToHost, cl->stream));
  CK (cudaStreamSynchronize (cl->stream));
  if (logits != NULL)
    memcpy (logits, cl->h_logits, sizeof (float) * cl->vocab);
  if (argmax != NULL)
    *argmax = cl->h_ids[1];
  return TRUE;
}

guint64
avq_cuda_llama_weight_bytes (const AvqCudaLlama *cl)
{
  return avq_cuda_context_weight_bytes (cl->ctx);
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
