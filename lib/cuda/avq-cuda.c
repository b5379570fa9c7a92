/* The CUDA backend of the vision half: memory, uploads, cuBLAS calls and the
 * order of each forward pass. Kernels live in avq-cuda-kernels.cu.
 *
 * Matrices are row-major as everywhere in the project. cuBLAS is
 * column-major, so Y[n, out] = X[n, in] W^T (W stored [out, in]) is issued
 * as the column-major product Y^T = op_T(W) X^T: m = out, n = n, k = in,
 * A = W (lda = in), B = X (ldb = ldx), C = Y (ldc = ldy). */
#include "avq-cuda.h"
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <string.h>
#include "avq-cuda-context.h"
#include "avq-cuda-flash.h"
#include "avq-cuda-kernels.h"
#include "avq-error.h"

#define VM "vision_tower.vision_model."

gboolean
avq_cuda_probe (GError **error)
{
  int n = 0;
  cudaError_t e = cudaGetDeviceCount (&n);
  if (e != cudaSuccess) {
    const char *why = "";
    if (e == cudaErrorInsufficientDriver)
      why = "; no usable NVIDIA driver (libcuda.so.1) is installed, or it is "
            "older than this CUDA runtime";
    else if (e == cudaErrorNoDevice)
      why = "; the driver sees no GPU";
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE,
                 "CUDA: cudaGetDeviceCount failed: %s (%s)%s",
                 cudaGetErrorName (e), cudaGetErrorString (e), why);
    return FALSE;
  }
  if (n < 1) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE,
                 "CUDA: cudaGetDeviceCount found no CUDA device");
    return FALSE;
  }
  return TRUE;
}

typedef struct {
  float *ln1_w, *ln1_b, *ln2_w, *ln2_b;   /* fp32 [D] */
  guint16 *qkv_w;                         /* fp16 [3D, D] */
  float *qkv_b;                           /* [3D] */
  guint16 *out_w;                         /* [D, D] */
  float *out_b;
  guint16 *fc1_w;                         /* [I, D] */
  float *fc1_b;                           /* [I] */
  guint16 *fc2_w;                         /* [D, I] */
  float *fc2_b;
} CudaLayer;

struct _AvqCudaVision {
  /* geometry (copied from the tower / quantiser) */
  int D, I, H, C, S, P, G, T, Tp, patch_dim, F, layers_run;
  float eps;
  int act;
  gboolean select_cls;
  int proj_out, proj_act;
  gboolean proj_bias;
  gboolean fused_attention;   /* AVQ_CUDA_ATTENTION=fused */
  gboolean flash_attention;   /* AVQ_CUDA_ATTENTION=flash */

  AvqCudaContext *ctx;      /* device, allocations, staging, upload stats */
  cudaStream_t stream;      /* the context's */
  cublasHandle_t blas;      /* the context's, bound to stream */

  /* weights */
  guint16 *patch_w;         /* [D, patch_dim] */
  float *pos, *cls, *pre_w, *pre_b;
  int n_layers;
  CudaLayer *layers;
  gboolean have_projector;
  guint16 *p_w1, *p_w2;     /* [O, D], [O, O] */
  float *p_b1, *p_b2;

  /* quantiser */
  gboolean have_q;
  int q_layer, K, side_bits;
  gboolean q_derive;
  float in_scale, out_scale;
  float *codebook, *sqnorm;        /* fp32 [K, D], [K] */
  guint16 *in_w, *out_w;           /* fp16 [D, D] */
  float *in_b, *out_b, *q_ln1_w, *q_ln1_b, *q_pre_w;
  double *qq;                      /* [D] */
  double dB, dC, dR;

  /* Activations, sized for `cap` inputs run as one forward (n * T rows):
   * they grow to the largest batch seen, and the captured graphs, which
   * hold their addresses, are dropped when they move. The attention scores
   * are one input's: the inputs take turns through them. */
  int cap;
  float *d_pixels;
  guint16 *patches;
  float *x, *z32, *tmp32;
  guint16 *z16;
  float *qkv32;
  guint16 *qkv16;
  float *scores;
  guint16 *probs;
  guint16 *attn16;
  float *mlp32;
  guint16 *mlp16;
  float *mean, *sigma, *qscores, *margin, *range;
  gint32 *idx, *codes;
  guint16 *sel16, *ptmp16;
  float *ptmp32, *pout;

  /* Pinned host mirrors for the per-call transfers, at fixed addresses
   * while `cap` holds (a captured pass copies from and to them). Owned
   * here, not by the context, because they are reallocated on growth. */
  float *h_pixels;
  gint32 *h_idx, *h_codes;
  float *h_margin, *h_range, *h_out;
};

#define DEV_ALLOC(field, type, count)                                     \
  avq_cuda_context_dev_alloc (cv->ctx, (void **) &(field),                \
                              sizeof (type) * (gsize) (count), error)

void
avq_cuda_vision_free (AvqCudaVision *cv)
{
  if (cv == NULL)
    return;
  /* The context synchronises, then frees every device allocation. */
  avq_cuda_context_free (cv->ctx);
  void *host[] = { cv->h_pixels, cv->h_idx, cv->h_codes, cv->h_margin,
                   cv->h_range, cv->h_out };
  for (gsize i = 0; i < G_N_ELEMENTS (host); i++)
    if (host[i] != NULL)
      (void) cudaFreeHost (host[i]);
  g_free (cv->layers);
  g_free (cv);
}

/* A model tensor of the given shape (already validated by the CPU loader's
 * checks, looked up again here for its data). */
static const AvqTensor *
model_tensor (const AvqModel *model, int ndim, const gint64 *shape,
              GError **error, const char *name)
{
  return avq_model_require (model, ndim, shape, error, "%s", name);
}

static gboolean
upload_model (AvqCudaVision *cv, const AvqModel *model, const char *name,
              int ndim, const gint64 *shape, void **dst, gboolean to_half,
              GError **error)
{
  const AvqTensor *t = model_tensor (model, ndim, shape, error, name);
  if (t == NULL)
    return FALSE;
  gsize n = avq_tensor_numel (t);
  if (!avq_cuda_context_dev_alloc (cv->ctx, dst, n * (to_half ? 2 : 4),
                                   error))
    return FALSE;
  return avq_cuda_context_upload (cv->ctx, t, NULL, n, *dst, to_half, error);
}

static gboolean
upload_layer (AvqCudaVision *cv, const AvqModel *model, int i, CudaLayer *l,
              GError **error)
{
  const gint64 D = cv->D, I = cv->I;
  const gint64 vd[1] = { D }, vi[1] = { I };
  const gint64 dd[2] = { D, D }, id[2] = { I, D }, di[2] = { D, I };
  char name[160];

#define UP(field, nd, shape, half, suffix)                                   \
  do {                                                                       \
    g_snprintf (name, sizeof name, VM "encoder.layers.%d." suffix, i);       \
    if (!upload_model (cv, model, name, nd, shape, (void **) &(field), half, \
                       error))                                               \
      return FALSE;                                                          \
  } while (0)

  UP (l->ln1_w, 1, vd, FALSE, "layer_norm1.weight");
  UP (l->ln1_b, 1, vd, FALSE, "layer_norm1.bias");
  UP (l->ln2_w, 1, vd, FALSE, "layer_norm2.weight");
  UP (l->ln2_b, 1, vd, FALSE, "layer_norm2.bias");
  UP (l->out_w, 2, dd, TRUE, "self_attn.out_proj.weight");
  UP (l->out_b, 1, vd, FALSE, "self_attn.out_proj.bias");
  UP (l->fc1_w, 2, id, TRUE, "mlp.fc1.weight");
  UP (l->fc1_b, 1, vi, FALSE, "mlp.fc1.bias");
  UP (l->fc2_w, 2, di, TRUE, "mlp.fc2.weight");
  UP (l->fc2_b, 1, vd, FALSE, "mlp.fc2.bias");
#undef UP

  /* q, k and v stacked into one [3D, D] weight: one GEMM per layer. */
  if (!DEV_ALLOC (l->qkv_w, guint16, 3 * D * D) ||
      !DEV_ALLOC (l->qkv_b, float, 3 * D))
    return FALSE;
  static const char *const parts[3] = { "q_proj", "k_proj", "v_proj" };
  for (int p = 0; p < 3; p++) {
    g_snprintf (name, sizeof name, VM "encoder.layers.%d.self_attn.%s.weight",
                i, parts[p]);
    const AvqTensor *w = model_tensor (model, 2, dd, error, name);
    if (w == NULL ||
        !avq_cuda_context_upload (cv->ctx, w, NULL, (gsize) (D * D),
                                  l->qkv_w + (gsize) p * D * D, TRUE, error))
      return FALSE;
    g_snprintf (name, sizeof name, VM "encoder.layers.%d.self_attn.%s.bias",
                i, parts[p]);
    const AvqTensor *b = model_tensor (model, 1, vd, error, name);
    if (b == NULL ||
        !avq_cuda_context_upload (cv->ctx, b, NULL, (gsize) D, l->qkv_b + p * D,
                                  FALSE, error))
      return FALSE;
  }
  return TRUE;
}

static gboolean
upload_layers (AvqCudaVision *cv, const AvqModel *model, int n_layers,
               GError **error)
{
  if (n_layers <= cv->n_layers)
    return TRUE;
  cv->layers = g_renew (CudaLayer, cv->layers, n_layers);
  memset (cv->layers + cv->n_layers, 0,
          sizeof (CudaLayer) * (n_layers - cv->n_layers));
  for (int i = cv->n_layers; i < n_layers; i++) {
    /* Device memory of a half-uploaded layer stays in the context's
     * allocations and is freed with it. */
    if (!upload_layer (cv, model, i, &cv->layers[i], error))
      return FALSE;
    cv->n_layers = i + 1;
  }
  return TRUE;
}

static gboolean
upload_quantizer (AvqCudaVision *cv, const AvqQuantizer *q, GError **error)
{
  const gsize D = q->dim, K = q->codebook_size;
  cv->have_q = TRUE;
  cv->q_layer = q->layer;
  cv->K = q->codebook_size;
  cv->side_bits = (int) q->side_bits;
  cv->q_derive = q->residual == AVQ_RESIDUAL_DERIVE;
  cv->in_scale = q->in_scale;
  cv->out_scale = q->out_scale;
  if (!DEV_ALLOC (cv->codebook, float, K * D) ||
      !DEV_ALLOC (cv->sqnorm, float, K) ||
      !DEV_ALLOC (cv->in_w, guint16, D * D) ||
      !DEV_ALLOC (cv->out_w, guint16, D * D) ||
      !DEV_ALLOC (cv->in_b, float, D) || !DEV_ALLOC (cv->out_b, float, D) ||
      !DEV_ALLOC (cv->q_ln1_w, float, D) || !DEV_ALLOC (cv->q_ln1_b, float, D))
    return FALSE;
  AvqCudaContext *ctx = cv->ctx;
  if (!avq_cuda_context_upload (ctx, NULL, q->codebook, K * D, cv->codebook,
                                FALSE, error) ||
      !avq_cuda_context_upload (ctx, NULL, q->codebook_sqnorm, K, cv->sqnorm,
                                FALSE, error) ||
      !avq_cuda_context_upload (ctx, NULL, q->in_w, D * D, cv->in_w, TRUE,
                                error) ||
      !avq_cuda_context_upload (ctx, NULL, q->out_w, D * D, cv->out_w, TRUE,
                                error) ||
      !avq_cuda_context_upload (ctx, NULL, q->in_b, D, cv->in_b, FALSE,
                                error) ||
      !avq_cuda_context_upload (ctx, NULL, q->out_b, D, cv->out_b, FALSE,
                                error) ||
      !avq_cuda_context_upload (ctx, NULL, q->ln1_w, D, cv->q_ln1_w, FALSE,
                                error) ||
      !avq_cuda_context_upload (ctx, NULL, q->ln1_b, D, cv->q_ln1_b, FALSE,
                                error))
    return FALSE;
  if (cv->q_derive) {
    /* The per-model constants of the closed form, exactly as the CPU's
     * derive_residual computes them. */
    g_autofree double *qq = g_new (double, D);
    double B = 0, C = 0, R = 0;
    for (gsize c = 0; c < D; c++) {
      B += 1.0 / q->pre_w[c];
      C += (double) q->pre_b[c] / q->pre_w[c];
    }
    B /= (double) D;
    C /= (double) D;
    for (gsize c = 0; c < D; c++) {
      double b = 1.0 / q->pre_w[c], cc = (double) q->pre_b[c] / q->pre_w[c];
      qq[c] = (C / B) * b - cc;
      R += qq[c] * qq[c];
    }
    R = R / (double) D - 1.0;
    cv->dB = B;
    cv->dC = C;
    cv->dR = R;
    if (!DEV_ALLOC (cv->qq, double, D) || !DEV_ALLOC (cv->q_pre_w, float, D) ||
        !avq_cuda_context_upload (ctx, NULL, q->pre_w, D, cv->q_pre_w, FALSE,
                                  error))
      return FALSE;
    /* Doubles do not go through the float staging path. */
    CK (cudaMemcpy (cv->qq, qq, sizeof (double) * D, cudaMemcpyHostToDevice));
  }
  return TRUE;
}

static gboolean
init_context (AvqCudaVision *cv, int device_ordinal, GError **error)
{
  if (!avq_cuda_probe (error))
    return FALSE;
  cv->ctx = avq_cuda_context_new (device_ordinal,
                                  cv->fused_attention ? ", fused attention"
                                  : cv->flash_attention ? ", flash attention" : "",
                                  error);
  if (cv->ctx == NULL)
    return FALSE;
  cv->stream = avq_cuda_context_stream (cv->ctx);
  cv->blas = avq_cuda_context_blas (cv->ctx);
  return TRUE;
}

/* Device buffer `*field` (re)allocated to `bytes`; the old one is freed. */
static gboolean
regrow (AvqCudaVision *cv, void **field, gsize bytes, GError **error)
{
  avq_cuda_context_dev_release (cv->ctx, *field);
  *field = NULL;
  return avq_cuda_context_dev_alloc (cv->ctx, field, bytes, error);
}

static gboolean
regrow_host (void **field, gsize bytes, GError **error)
{
  if (*field != NULL)
    CK (cudaFreeHost (*field));
  *field = NULL;
  CK (cudaMallocHost (field, MAX (bytes, 16)));
  return TRUE;
}

#define REGROW(field, type, count)                                         \
  regrow (cv, (void **) &(field), sizeof (type) * (gsize) (count), error)
#define REGROW_HOST(field, type, count)                                    \
  regrow_host ((void **) &(field), sizeof (type) * (gsize) (count), error)

/* The projector's activations for `n` inputs (only once it is uploaded). */
static gboolean
alloc_projector_batch (AvqCudaVision *cv, int n, GError **error)
{
  const gsize N = n, F = cv->F, D = cv->D, O = cv->proj_out;
  return REGROW (cv->sel16, guint16, N * F * D) &&
         REGROW (cv->ptmp32, float, N * F * O) &&
         REGROW (cv->ptmp16, guint16, N * F * O) &&
         REGROW (cv->pout, float, N * F * O) &&
         REGROW_HOST (cv->h_out, float, N * F * O);
}

/* Every activation and pinned mirror sized for `n` inputs. The graphs
 * captured so far hold the old addresses: they go first. On failure `cap`
 * stays 0, so that the next call allocates again. */
static gboolean
alloc_batch (AvqCudaVision *cv, int n, GError **error)
{
  const gsize N = n, T = cv->T, D = cv->D, I = cv->I, H = cv->H, Tp = cv->Tp;
  const gsize px = (gsize) cv->C * cv->S * cv->S;
  const gsize NP = (gsize) cv->G * cv->G;
  avq_cuda_context_drop_graphs (cv->ctx);
  cv->cap = 0;
  if (!REGROW (cv->d_pixels, float, N * px) ||
      !REGROW (cv->patches, guint16, N * NP * cv->patch_dim) ||
      !REGROW (cv->x, float, N * T * D) || !REGROW (cv->z32, float, N * T * D) ||
      !REGROW (cv->tmp32, float, N * T * D) ||
      !REGROW (cv->z16, guint16, N * T * D) ||
      !REGROW (cv->qkv32, float, N * T * 3 * D) ||
      !REGROW (cv->qkv16, guint16, N * T * 3 * D) ||
      !REGROW (cv->attn16, guint16, N * T * D) ||
      !REGROW (cv->mlp32, float, N * T * I) ||
      !REGROW (cv->mlp16, guint16, N * T * I) ||
      !REGROW_HOST (cv->h_pixels, float, N * px))
    return FALSE;
  /* The unfused attention materialises one input's scores, every head. */
  if (!cv->fused_attention && !cv->flash_attention && cv->scores == NULL &&
      (!REGROW (cv->scores, float, H * T * Tp) ||
       !REGROW (cv->probs, guint16, H * T * Tp)))
    return FALSE;
  if (cv->have_q) {
    const gsize K = cv->K;
    if (!REGROW (cv->mean, float, N * T) || !REGROW (cv->sigma, float, N * T) ||
        !REGROW (cv->qscores, float, N * T * K) ||
        !REGROW (cv->margin, float, N * T) ||
        !REGROW (cv->range, float, 4 * N) ||
        !REGROW (cv->idx, gint32, N * T) ||
        !REGROW (cv->codes, gint32, 2 * N * T) ||
        !REGROW_HOST (cv->h_idx, gint32, N * T) ||
        !REGROW_HOST (cv->h_codes, gint32, 2 * N * T) ||
        !REGROW_HOST (cv->h_margin, float, N * T) ||
        !REGROW_HOST (cv->h_range, float, 4 * N))
      return FALSE;
  }
  if (cv->have_projector && !alloc_projector_batch (cv, n, error))
    return FALSE;
  cv->cap = n;
  return TRUE;
}

/* Room for `n` inputs; a no-op when there is already. */
static gboolean
ensure_batch (AvqCudaVision *cv, int n, GError **error)
{
  return n <= cv->cap || alloc_batch (cv, n, error);
}

AvqCudaVision *
avq_cuda_vision_new (const AvqModel *model, const AvqVisionTower *tw,
                     const AvqQuantizer *q, int n_layers, int device_ordinal,
                     GError **error)
{
  g_return_val_if_fail (model != NULL && tw != NULL, NULL);
  g_autoptr (AvqCudaVision) cv = g_new0 (AvqCudaVision, 1);
  cv->D = tw->hidden;
  cv->I = tw->intermediate;
  cv->H = tw->heads;
  cv->C = tw->channels;
  cv->S = tw->image_size;
  cv->P = tw->patch_size;
  cv->G = tw->grid;
  cv->T = tw->tokens;
  /* Score rows padded to a multiple of 8 halves: tensor-core GEMMs want
   * 16-byte aligned leading dimensions. */
  cv->Tp = (tw->tokens + 7) & ~7;
  cv->patch_dim = tw->patch_dim;
  cv->F = avq_vision_feature_tokens (tw);
  cv->layers_run = tw->layers_run;
  cv->eps = tw->eps;
  cv->act = (int) tw->act;
  cv->select_cls = tw->select_cls;
  cv->proj_out = model->config.text.hidden_size;
  cv->proj_act = (int) model->config.projector_act;
  cv->proj_bias = model->config.projector_bias;
  if (n_layers < 0)
    n_layers = tw->layers_run;
  /* Attention: "gemm" (default: cuBLAS batched GEMMs around a softmax
   * kernel), "fused" (one flash-style kernel on CUDA cores) or "flash" (the
   * tensor-core flash kernel, avq-cuda-flash.cu), until the GPU benchmark
   * (tests/bench/bench-cuda) decides which should be the default. */
  const char *attn = g_getenv ("AVQ_CUDA_ATTENTION");
  if (attn != NULL && *attn != '\0' && strcmp (attn, "gemm") != 0) {
    const gboolean fused = strcmp (attn, "fused") == 0;
    if (!fused && strcmp (attn, "flash") != 0) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                   "AVQ_CUDA_ATTENTION=%s: not gemm, fused or flash", attn);
      return NULL;
    }
    const int max_hd = fused ? AVQ_CUK_ATTN_MAX_HD : AVQ_CUK_FLASH_MAX_HD;
    if (cv->D / cv->H > max_hd) {
      g_set_error (error, AVQ_ERROR, AVQ_ERROR_UNSUPPORTED,
                   "AVQ_CUDA_ATTENTION=%s: head size %d exceeds the kernel's %d",
                   attn, cv->D / cv->H, max_hd);
      return NULL;
    }
    cv->fused_attention = fused;
    cv->flash_attention = !fused;
  }

  if (!init_context (cv, device_ordinal, error))
    return NULL;

  const gint64 D = cv->D;
  const gint64 vd[1] = { D };
  const gint64 conv[4] = { D, cv->C, cv->P, cv->P };
  const gint64 pos[2] = { cv->T, D };
  if (!upload_model (cv, model, VM "embeddings.patch_embedding.weight", 4, conv,
                     (void **) &cv->patch_w, TRUE, error) ||
      !upload_model (cv, model, VM "embeddings.class_embedding", 1, vd,
                     (void **) &cv->cls, FALSE, error) ||
      !upload_model (cv, model, VM "embeddings.position_embedding.weight", 2,
                     pos, (void **) &cv->pos, FALSE, error) ||
      !upload_model (cv, model, VM "pre_layrnorm.weight", 1, vd,
                     (void **) &cv->pre_w, FALSE, error) ||
      !upload_model (cv, model, VM "pre_layrnorm.bias", 1, vd,
                     (void **) &cv->pre_b, FALSE, error))
    return NULL;
  if (!upload_layers (cv, model, n_layers, error))
    return NULL;
  if (q != NULL && !upload_quantizer (cv, q, error))
    return NULL;
  if (!alloc_batch (cv, 1, error))
    return NULL;
  /* Uploads are asynchronous: the load time counts until they land. */
  gint64 t0 = g_get_monotonic_time ();
  if (cv->stream) {
    cudaError_t e = cudaStreamSynchronize (cv->stream);
    if (e != cudaSuccess) {
      avq_cuda_failed (e, "cudaStreamSynchronize (stream)", error);
      return NULL;
    }
  }
  avq_cuda_context_add_upload_us (cv->ctx, g_get_monotonic_time () - t0);
  return g_steal_pointer (&cv);
}

gboolean
avq_cuda_vision_ensure_full (AvqCudaVision *cv, const AvqModel *model,
                             GError **error)
{
  if (cv->have_projector && cv->n_layers >= cv->layers_run)
    return TRUE;
  if (!avq_cuda_context_enter (cv->ctx, error) ||
      !upload_layers (cv, model, cv->layers_run, error))
    return FALSE;
  if (!cv->have_projector) {
    const gint64 O = cv->proj_out, D = cv->D;
    const gint64 s1[2] = { O, D }, s2[2] = { O, O }, sb[1] = { O };
    if (!upload_model (cv, model, "multi_modal_projector.linear_1.weight", 2,
                       s1, (void **) &cv->p_w1, TRUE, error) ||
        !upload_model (cv, model, "multi_modal_projector.linear_2.weight", 2,
                       s2, (void **) &cv->p_w2, TRUE, error))
      return FALSE;
    if (cv->proj_bias &&
        (!upload_model (cv, model, "multi_modal_projector.linear_1.bias", 1, sb,
                        (void **) &cv->p_b1, FALSE, error) ||
         !upload_model (cv, model, "multi_modal_projector.linear_2.bias", 1, sb,
                        (void **) &cv->p_b2, FALSE, error)))
      return FALSE;
    /* The pinned output mirror and the projector's activations, at the
     * batch size reached so far. */
    if (!alloc_projector_batch (cv, MAX (cv->cap, 1), error))
      return FALSE;
    gint64 t0 = g_get_monotonic_time ();
    CK (cudaStreamSynchronize (cv->stream));
    avq_cuda_context_add_upload_us (cv->ctx, g_get_monotonic_time () - t0);
    cv->have_projector = TRUE;
  }
  return TRUE;
}

/* ---- GEMMs ------------------------------------------------------------ */

/* Y[n, out] (row stride ldy, fp32 or fp16) = X[n, in] (fp16, stride ldx)
 * W^T (fp16 [out, in]) + beta Y; fp32 accumulation. */
static gboolean
linear16 (AvqCudaVision *cv, int n, int in, int out, const guint16 *x, int ldx,
          const guint16 *w, float beta, void *y, cudaDataType ytype, int ldy,
          GError **error)
{
  const float alpha = 1.0f;
  CKB (cublasGemmEx (cv->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha,
                     w, CUDA_R_16F, in, x, CUDA_R_16F, ldx, &beta, y, ytype,
                     ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return TRUE;
}

/* Multi-head attention on qkv16 [n T, 3D] -> attn16 [n T, D], input by
 * input (an input's tokens attend only to its own). Per head h:
 * S = scale Q_h K_h^T (strided-batched over heads), row softmax, O_h = P V_h.
 * Row-major S [T, Tp] is the column-major S^T = K_h Q_h^T. The inputs take
 * turns through one input's score buffers (stream order keeps them apart). */
static gboolean
attention (AvqCudaVision *cv, int n, GError **error)
{
  const int T = cv->T, D = cv->D, H = cv->H, hd = D / H, Tp = cv->Tp;
  const float scale = 1.0f / sqrtf ((float) hd), zero = 0.0f, one = 1.0f;
  if (cv->flash_attention) {
    /* One launch for every input: the kernel has a frame dimension. */
    CK (avq_cuk_flash_attention_qkv (cv->stream, cv->qkv16, T, D, H, n, scale,
                                     cv->attn16));
    return TRUE;
  }
  for (int f = 0; f < n; f++) {
    const guint16 *qkv = cv->qkv16 + (gsize) f * T * 3 * D;
    guint16 *out = cv->attn16 + (gsize) f * T * D;
    if (cv->fused_attention) {
      CK (avq_cuk_attention (cv->stream, qkv, T, D, H, scale, out));
      continue;
    }
    const guint16 *q = qkv, *k = qkv + D, *v = qkv + 2 * D;
    CKB (cublasGemmStridedBatchedEx (
        cv->blas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, &scale,
        k, CUDA_R_16F, 3 * D, hd,
        q, CUDA_R_16F, 3 * D, hd, &zero,
        cv->scores, CUDA_R_32F, Tp, (long long) T * Tp, H,
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CK (avq_cuk_softmax_rows (cv->stream, cv->scores, H * T, T, Tp, cv->probs));
    /* O^T [hd, T] (ld D, column offset h*hd) = V_h^T [hd, T] P^T [T, T]. */
    CKB (cublasGemmStridedBatchedEx (
        cv->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, &one,
        v, CUDA_R_16F, 3 * D, hd,
        cv->probs, CUDA_R_16F, Tp, (long long) T * Tp, &zero,
        out, CUDA_R_16F, D, hd, H,
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return TRUE;
}

/* ---- forward pieces ----------------------------------------------------- *
 *
 * Each piece enqueues work for n inputs (n T rows, input f at rows
 * f T .. f T + T - 1) and nothing else: no host reads, no synchronisation,
 * only device buffers and the pinned mirrors, so that a whole pass can be
 * captured into a graph (avq_cuda_context_run_graph). */

/* The pinned pixels [n, C, S, S] -> x [n T, D] after pre_layrnorm. */
static gboolean
embed (AvqCudaVision *cv, int n, GError **error)
{
  const gsize px = (gsize) cv->C * cv->S * cv->S;
  const int D = cv->D, T = cv->T, NP = cv->G * cv->G, pd = cv->patch_dim;
  CK (cudaMemcpyAsync (cv->d_pixels, cv->h_pixels, sizeof (float) * px * n,
                       cudaMemcpyHostToDevice, cv->stream));
  for (int f = 0; f < n; f++) {
    guint16 *patches = cv->patches + (gsize) f * NP * pd;
    float *x = cv->x + (gsize) f * T * D;
    CK (avq_cuk_im2col (cv->stream, cv->d_pixels + f * px, cv->C, cv->S, cv->P,
                        cv->G, patches));
    CK (avq_cuk_embed_init (cv->stream, cv->pos, cv->cls, T, D, x));
    /* The patch GEMM accumulates onto the position embeddings of rows 1..
     * of each input (row 0 is its CLS token). */
    if (!linear16 (cv, NP, pd, D, patches, pd, cv->patch_w, 1.0f, x + D,
                   CUDA_R_32F, D, error))
      return FALSE;
  }
  CK (avq_cuk_layernorm (cv->stream, cv->x, n * T, D, cv->pre_w, cv->pre_b,
                         cv->eps, cv->x, NULL, NULL, NULL));
  return TRUE;
}

/* x <- x + Attn(z16); x <- x + FC2(act(FC1(LN2(x)))), over n T rows. */
static gboolean
layer_from_ln1 (AvqCudaVision *cv, int i, int n, GError **error)
{
  const CudaLayer *l = &cv->layers[i];
  const int R = n * cv->T, D = cv->D, I = cv->I;
  if (!linear16 (cv, R, D, 3 * D, cv->z16, D, l->qkv_w, 0.0f, cv->qkv32,
                 CUDA_R_32F, 3 * D, error))
    return FALSE;
  CK (avq_cuk_bias_act (cv->stream, cv->qkv32, 3 * D, R, 3 * D, l->qkv_b,
                        AVQ_CUK_ACT_NONE, NULL, cv->qkv16, 3 * D));
  if (!attention (cv, n, error))
    return FALSE;
  if (!linear16 (cv, R, D, D, cv->attn16, D, l->out_w, 1.0f, cv->x, CUDA_R_32F,
                 D, error))
    return FALSE;
  CK (avq_cuk_bias_act (cv->stream, cv->x, D, R, D, l->out_b, AVQ_CUK_ACT_NONE,
                        cv->x, NULL, D));
  CK (avq_cuk_layernorm (cv->stream, cv->x, R, D, l->ln2_w, l->ln2_b, cv->eps,
                         NULL, cv->z16, NULL, NULL));
  if (!linear16 (cv, R, D, I, cv->z16, D, l->fc1_w, 0.0f, cv->mlp32, CUDA_R_32F,
                 I, error))
    return FALSE;
  CK (avq_cuk_bias_act (cv->stream, cv->mlp32, I, R, I, l->fc1_b, cv->act, NULL,
                        cv->mlp16, I));
  if (!linear16 (cv, R, I, D, cv->mlp16, I, l->fc2_w, 1.0f, cv->x, CUDA_R_32F,
                 D, error))
    return FALSE;
  CK (avq_cuk_bias_act (cv->stream, cv->x, D, R, D, l->fc2_b, AVQ_CUK_ACT_NONE,
                        cv->x, NULL, D));
  return TRUE;
}

static gboolean
run_layers (AvqCudaVision *cv, int first, int last, int n, GError **error)
{
  for (int i = first; i < last; i++) {
    const CudaLayer *l = &cv->layers[i];
    CK (avq_cuk_layernorm (cv->stream, cv->x, n * cv->T, cv->D, l->ln1_w,
                           l->ln1_b, cv->eps, NULL, cv->z16, NULL, NULL));
    if (!layer_from_ln1 (cv, i, n, error))
      return FALSE;
  }
  return TRUE;
}

/* Each input's selected rows of x -> projector over n F rows -> the pinned
 * h_out [n, F, O]. */
static gboolean
project (AvqCudaVision *cv, int n, GError **error)
{
  const int D = cv->D, O = cv->proj_out, F = cv->F, T = cv->T, R = n * F;
  for (int f = 0; f < n; f++) {
    const float *x = cv->x + (gsize) f * T * D;
    CK (avq_cuk_to_half (cv->stream, cv->select_cls ? x : x + D,
                         (size_t) F * D, cv->sel16 + (gsize) f * F * D));
  }
  if (!linear16 (cv, R, D, O, cv->sel16, D, cv->p_w1, 0.0f, cv->ptmp32,
                 CUDA_R_32F, O, error))
    return FALSE;
  CK (avq_cuk_bias_act (cv->stream, cv->ptmp32, O, R, O, cv->p_b1, cv->proj_act,
                        NULL, cv->ptmp16, O));
  if (!linear16 (cv, R, O, O, cv->ptmp16, O, cv->p_w2, 0.0f, cv->pout,
                 CUDA_R_32F, O, error))
    return FALSE;
  if (cv->p_b2 != NULL)
    CK (avq_cuk_bias_act (cv->stream, cv->pout, O, R, O, cv->p_b2,
                          AVQ_CUK_ACT_NONE, cv->pout, NULL, O));
  CK (cudaMemcpyAsync (cv->h_out, cv->pout, sizeof (float) * R * O,
                       cudaMemcpyDeviceToHost, cv->stream));
  return TRUE;
}

static gboolean
need_layers (AvqCudaVision *cv, int n, GError **error)
{
  if (n > cv->n_layers) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA backend: %d vision layers needed, %d uploaded", n,
                 cv->n_layers);
    return FALSE;
  }
  return TRUE;
}

static gboolean
need_projector (AvqCudaVision *cv, GError **error)
{
  if (!cv->have_projector) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA backend: the projector is not uploaded");
    return FALSE;
  }
  return need_layers (cv, cv->layers_run, error);
}

/* ---- the three passes, as graphs ---------------------------------------- */

typedef enum {
  PASS_ENCODE = 1,
  PASS_DECODE = 2,
  PASS_FEATURES = 3,
} PassKind;

typedef struct {
  AvqCudaVision *cv;
  int n;
} Pass;

/* Edge: pinned pixels -> pinned indices, margins, side codes and ranges. */
static gboolean
issue_encode (gpointer data, GError **error)
{
  const Pass *p = data;
  AvqCudaVision *cv = p->cv;
  const int n = p->n, T = cv->T, R = n * T, D = cv->D, K = cv->K;
  if (!embed (cv, n, error) || !run_layers (cv, 0, cv->q_layer, n, error))
    return FALSE;
  /* z = LN1_L(x_L) with its statistics; u = z + s (z W_in^T + b_in). */
  CK (avq_cuk_layernorm (cv->stream, cv->x, R, D, cv->q_ln1_w, cv->q_ln1_b,
                         cv->eps, cv->z32, cv->z16, cv->mean, cv->sigma));
  if (!linear16 (cv, R, D, D, cv->z16, D, cv->in_w, 0.0f, cv->tmp32, CUDA_R_32F,
                 D, error))
    return FALSE;
  CK (avq_cuk_dlp (cv->stream, cv->z32, cv->tmp32, cv->in_b, cv->in_scale, R, D,
                   cv->tmp32, NULL));
  /* scores = u E^T in fp32 (no tensor-core rounding of the inputs), then
   * the row argmin of ||e||^2 - 2 u.e. */
  const float one = 1.0f, zero = 0.0f;
  CKB (cublasGemmEx (cv->blas, CUBLAS_OP_T, CUBLAS_OP_N, K, R, D, &one,
                     cv->codebook, CUDA_R_32F, D, cv->tmp32, CUDA_R_32F, D,
                     &zero, cv->qscores, CUDA_R_32F, K, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT));
  CK (avq_cuk_argmin (cv->stream, cv->qscores, cv->sqnorm, R, K, cv->idx,
                      cv->margin));
  CK (cudaMemcpyAsync (cv->h_idx, cv->idx, sizeof (gint32) * R,
                       cudaMemcpyDeviceToHost, cv->stream));
  CK (cudaMemcpyAsync (cv->h_margin, cv->margin, sizeof (float) * R,
                       cudaMemcpyDeviceToHost, cv->stream));
  if (cv->side_bits > 0) {
    /* Side ranges are per frame: one launch per input. */
    for (int f = 0; f < n; f++)
      CK (avq_cuk_side_encode (cv->stream, cv->mean + f * T, cv->sigma + f * T,
                               T, cv->side_bits, cv->range + 4 * f,
                               cv->codes + 2 * f * T));
    CK (cudaMemcpyAsync (cv->h_codes, cv->codes, sizeof (gint32) * 2 * R,
                         cudaMemcpyDeviceToHost, cv->stream));
    CK (cudaMemcpyAsync (cv->h_range, cv->range, sizeof (float) * 4 * n,
                         cudaMemcpyDeviceToHost, cv->stream));
  }
  return TRUE;
}

/* Cloud: pinned indices, side codes and ranges -> pinned features. Every
 * per-frame value reaches the kernels through device memory (uploaded in
 * the pass), never through launch arguments, so a replay sees this call's
 * frames. */
static gboolean
issue_decode (gpointer data, GError **error)
{
  const Pass *p = data;
  AvqCudaVision *cv = p->cv;
  const int n = p->n, T = cv->T, R = n * T, D = cv->D, L = cv->q_layer;
  CK (cudaMemcpyAsync (cv->idx, cv->h_idx, sizeof (gint32) * R,
                       cudaMemcpyHostToDevice, cv->stream));
  /* q = e_i; zhat = q + s (q W_out^T + b_out). */
  CK (avq_cuk_gather (cv->stream, cv->codebook, cv->idx, R, D, cv->z32,
                      cv->z16));
  if (!linear16 (cv, R, D, D, cv->z16, D, cv->out_w, 0.0f, cv->tmp32,
                 CUDA_R_32F, D, error))
    return FALSE;
  CK (avq_cuk_dlp (cv->stream, cv->z32, cv->tmp32, cv->out_b, cv->out_scale, R,
                   D, cv->z32, cv->z16));
  if (cv->q_derive) {
    CK (avq_cuk_derive_residual (cv->stream, cv->z32, cv->q_ln1_w, cv->q_ln1_b,
                                 cv->q_pre_w, cv->qq, cv->dB, cv->dC, cv->dR,
                                 R, D, cv->x));
  } else {
    CK (cudaMemcpyAsync (cv->codes, cv->h_codes, sizeof (gint32) * 2 * R,
                         cudaMemcpyHostToDevice, cv->stream));
    CK (cudaMemcpyAsync (cv->range, cv->h_range, sizeof (float) * 4 * n,
                         cudaMemcpyHostToDevice, cv->stream));
    for (int f = 0; f < n; f++) {
      const gsize o = (gsize) f * T * D;
      CK (avq_cuk_side_residual (cv->stream, cv->z32 + o, cv->codes + 2 * f * T,
                                 cv->range + 4 * f, cv->side_bits, cv->q_ln1_w,
                                 cv->q_ln1_b, T, D, cv->x + o));
    }
  }
  return layer_from_ln1 (cv, L, n, error) &&
         run_layers (cv, L + 1, cv->layers_run, n, error) &&
         project (cv, n, error);
}

/* Unsplit: pinned pixels -> pinned features. */
static gboolean
issue_features (gpointer data, GError **error)
{
  const Pass *p = data;
  AvqCudaVision *cv = p->cv;
  return embed (cv, p->n, error) &&
         run_layers (cv, 0, cv->layers_run, p->n, error) &&
         project (cv, p->n, error);
}

/* Runs pass `kind` for n inputs (staged in the pinned mirrors) as the graph
 * cached for (kind, n), then waits for it: the outputs are in the pinned
 * mirrors, and the mirrors may be refilled by the next call.
 * (The context runs the first call of a key uncaptured, as a warm-up.) */
static gboolean
run_pass (AvqCudaVision *cv, PassKind kind, int n, AvqCudaIssueFunc issue,
          GError **error)
{
  Pass p = { cv, n };
  const guint64 key = ((guint64) kind << 32) | (guint32) n;
  if (!avq_cuda_context_run_graph (cv->ctx, key, issue, &p, error))
    return FALSE;
  CK (cudaStreamSynchronize (cv->stream));
  return TRUE;
}

/* Checks shared by the batch entry points; makes room for n inputs. */
static gboolean
begin_batch (AvqCudaVision *cv, guint n, GError **error)
{
  if (n < 1 || n > G_MAXINT / (guint) (cv->T * 4)) {
    g_set_error (error, AVQ_ERROR, AVQ_ERROR_INVALID_ARGUMENT,
                 "CUDA backend: batch of %u inputs", n);
    return FALSE;
  }
  return avq_cuda_context_enter (cv->ctx, error) &&
         ensure_batch (cv, (int) n, error);
}

static void
stage_pixels (AvqCudaVision *cv, const float *const *pixels, guint n)
{
  const gsize px = (gsize) cv->C * cv->S * cv->S;
  for (guint f = 0; f < n; f++)
    memcpy (cv->h_pixels + f * px, pixels[f], sizeof (float) * px);
}

gboolean
avq_cuda_vision_encode_batch (AvqCudaVision *cv, const float *const *pixels,
                              guint n, AvqFrame *const *frames, float *margins,
                              GError **error)
{
  g_return_val_if_fail (cv->have_q, FALSE);
  const int T = cv->T;
  for (guint f = 0; f < n; f++)
    g_return_val_if_fail (frames[f]->tokens == (guint) T, FALSE);
  if (!need_layers (cv, cv->q_layer, error) || !begin_batch (cv, n, error))
    return FALSE;
  stage_pixels (cv, pixels, n);
  if (!run_pass (cv, PASS_ENCODE, (int) n, issue_encode, error))
    return FALSE;
  for (guint f = 0; f < n; f++) {
    AvqFrame *frame = frames[f];
    const gint32 *idx = cv->h_idx + (gsize) f * T;
    for (int t = 0; t < T; t++)
      frame->indices[t] = (guint16) idx[t];
    if (cv->side_bits > 0) {
      const gint32 *codes = cv->h_codes + (gsize) f * 2 * T;
      memcpy (frame->side_range, cv->h_range + 4 * f, sizeof (float) * 4);
      for (int i = 0; i < 2 * T; i++)
        frame->side_codes[i] = (guint16) codes[i];
    }
  }
  if (margins != NULL)
    memcpy (margins, cv->h_margin, sizeof (float) * T * n);
  return TRUE;
}

gboolean
avq_cuda_vision_encode (AvqCudaVision *cv, const float *pixels,
                        AvqFrame *frame, float *margins, GError **error)
{
  return avq_cuda_vision_encode_batch (cv, &pixels, 1, &frame, margins, error);
}

gboolean
avq_cuda_vision_decode_batch (AvqCudaVision *cv, const AvqFrame *const *frames,
                              guint n, float *features, GError **error)
{
  g_return_val_if_fail (cv->have_q, FALSE);
  const int T = cv->T;
  for (guint f = 0; f < n; f++)
    g_return_val_if_fail (frames[f]->tokens == (guint) T, FALSE);
  if (!need_projector (cv, error) || !begin_batch (cv, n, error))
    return FALSE;
  for (guint f = 0; f < n; f++) {
    const AvqFrame *frame = frames[f];
    gint32 *idx = cv->h_idx + (gsize) f * T;
    for (int t = 0; t < T; t++)
      idx[t] = frame->indices[t];
    if (!cv->q_derive) {
      gint32 *codes = cv->h_codes + (gsize) f * 2 * T;
      for (int i = 0; i < 2 * T; i++)
        codes[i] = frame->side_codes[i];
      memcpy (cv->h_range + 4 * f, frame->side_range, sizeof (float) * 4);
    }
  }
  if (!run_pass (cv, PASS_DECODE, (int) n, issue_decode, error))
    return FALSE;
  memcpy (features, cv->h_out, sizeof (float) * cv->F * cv->proj_out * n);
  return TRUE;
}

gboolean
avq_cuda_vision_decode (AvqCudaVision *cv, const AvqFrame *frame,
                        float *features, GError **error)
{
  return avq_cuda_vision_decode_batch (cv, &frame, 1, features, error);
}

gboolean
avq_cuda_vision_features_batch (AvqCudaVision *cv, const float *const *pixels,
                                guint n, float *features, GError **error)
{
  if (!need_projector (cv, error) || !begin_batch (cv, n, error))
    return FALSE;
  stage_pixels (cv, pixels, n);
  if (!run_pass (cv, PASS_FEATURES, (int) n, issue_features, error))
    return FALSE;
  memcpy (features, cv->h_out, sizeof (float) * cv->F * cv->proj_out * n);
  return TRUE;
}

gboolean
avq_cuda_vision_features (AvqCudaVision *cv, const float *pixels,
                          float *features, GError **error)
{
  return avq_cuda_vision_features_batch (cv, &pixels, 1, features, error);
}

gboolean
avq_cuda_vision_hidden (AvqCudaVision *cv, const float *pixels, int n_layers,
                        float *hidden, GError **error)
{
  if (n_layers < 0 || !need_layers (cv, n_layers, error) ||
      !begin_batch (cv, 1, error))
    return FALSE;
  /* Tests only: not captured (n_layers varies, the copy out is pageable). */
  stage_pixels (cv, &pixels, 1);
  if (!embed (cv, 1, error) || !run_layers (cv, 0, n_layers, 1, error))
    return FALSE;
  CK (cudaMemcpyAsync (hidden, cv->x, sizeof (float) * cv->T * cv->D,
                       cudaMemcpyDeviceToHost, cv->stream));
  CK (cudaStreamSynchronize (cv->stream));
  return TRUE;
}

void
avq_cuda_vision_set_graphs (AvqCudaVision *cv, gboolean enabled)
{
  avq_cuda_context_set_graphs (cv->ctx, enabled);
}

guint
avq_cuda_vision_graphs_captured (const AvqCudaVision *cv)
{
  return avq_cuda_context_graphs_captured (cv->ctx);
}

int
avq_cuda_vision_batch_capacity (const AvqCudaVision *cv)
{
  return cv->cap;
}

guint64
avq_cuda_vision_weight_bytes (const AvqCudaVision *cv)
{
  return avq_cuda_context_weight_bytes (cv->ctx);
}

double
avq_cuda_vision_upload_ms (const AvqCudaVision *cv)
{
  return avq_cuda_context_upload_ms (cv->ctx);
}

const char *
avq_cuda_vision_device_name (const AvqCudaVision *cv)
{
  return avq_cuda_context_device_name (cv->ctx);
}
