/* The device plumbing shared by the CUDA backends (avq-cuda-context.h). */
#include "avq-cuda-context.h"
#include <string.h>
#include "avq-error.h"

/* Pinned staging for weight uploads: two buffers, so that converting the
 * next chunk overlaps the copy of the previous one. */
#define STAGING_BYTES (8u << 20)

/* cuBLAS workspace owned by the context: without one, cuBLAS allocates its
 * own per captured graph. */
#define BLAS_WORKSPACE_BYTES (32u << 20)

struct _AvqCudaContext {
  int device;
  char *device_name;
  cudaStream_t stream;
  cublasHandle_t blas;
  GPtrArray *allocations;   /* device pointers to cudaFree */
  GPtrArray *host;          /* pinned host pointers to cudaFreeHost */

  void *staging[2];         /* pinned */
  cudaEvent_t staged[2];
  int next_staging;
  float *convert;           /* host scratch for dtype conversion */
  void *blas_workspace;     /* device */
  GHashTable *graphs;       /* guint64 key -> cudaGraphExec_t */
  GHashTable *warmed;       /* guint64 keys run once uncaptured */
  gboolean graphs_enabled;
  guint graphs_captured;
  guint64 weight_bytes;
  gint64 upload_us;
};

gboolean
avq_cuda_failed (cudaError_t e, const char *call, GError **error)
{
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE, "CUDA: %s failed: %s (%s)",
               call, cudaGetErrorName (e), cudaGetErrorString (e));
  return FALSE;
}

gboolean
avq_cublas_failed (cublasStatus_t s, const char *call, GError **error)
{
  g_set_error (error, AVQ_ERROR, AVQ_ERROR_DEVICE, "cuBLAS: %s failed: %s",
               call, cublasGetStatusString (s));
  return FALSE;
}

void
avq_cuda_context_free (AvqCudaContext *ctx)
{
  if (ctx == NULL)
    return;
  /* Teardown errors cannot be reported; a failed stream sync here only
   * means the frees below wait in the driver instead. */
  if (ctx->stream)
    (void) cudaStreamSynchronize (ctx->stream);
  if (ctx->graphs != NULL) {
    avq_cuda_context_drop_graphs (ctx);
    g_hash_table_destroy (ctx->graphs);
    g_hash_table_destroy (ctx->warmed);
  }
  if (ctx->blas_workspace)
    (void) cudaFree (ctx->blas_workspace);
  for (guint i = 0; i < ctx->allocations->len; i++)
    (void) cudaFree (g_ptr_array_index (ctx->allocations, i));
  g_ptr_array_free (ctx->allocations, TRUE);
  for (int i = 0; i < 2; i++) {
    if (ctx->staging[i])
      (void) cudaFreeHost (ctx->staging[i]);
    if (ctx->staged[i])
      (void) cudaEventDestroy (ctx->staged[i]);
  }
  for (guint i = 0; i < ctx->host->len; i++)
    (void) cudaFreeHost (g_ptr_array_index (ctx->host, i));
  g_ptr_array_free (ctx->host, TRUE);
  if (ctx->blas)
    (void) cublasDestroy (ctx->blas);
  if (ctx->stream)
    (void) cudaStreamDestroy (ctx->stream);
  g_free (ctx->convert);
  g_free (ctx->device_name);
  g_free (ctx);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqCudaContext, avq_cuda_context_free)

static gboolean
init (AvqCudaContext *ctx, int device_ordinal, const char *name_suffix,
      GError **error)
{
  if (device_ordinal < 0)
    CK (cudaGetDevice (&device_ordinal));
  CK (cudaSetDevice (device_ordinal));
  ctx->device = device_ordinal;
  struct cudaDeviceProp prop;
  CK (cudaGetDeviceProperties (&prop, device_ordinal));
  ctx->device_name = g_strdup_printf ("%s (sm_%d%d, %.1f GiB)%s", prop.name,
                                      prop.major, prop.minor,
                                      prop.totalGlobalMem / (1024.0 * 1024 * 1024),
                                      name_suffix != NULL ? name_suffix : "");
  CK (cudaStreamCreateWithFlags (&ctx->stream, cudaStreamNonBlocking));
  CKB (cublasCreate (&ctx->blas));
  CKB (cublasSetStream (ctx->blas, ctx->stream));
  /* After cublasSetStream, which resets the workspace to cuBLAS's pool. */
  CK (cudaMalloc (&ctx->blas_workspace, BLAS_WORKSPACE_BYTES));
  CKB (cublasSetWorkspace (ctx->blas, ctx->blas_workspace,
                           BLAS_WORKSPACE_BYTES));
  for (int i = 0; i < 2; i++) {
    CK (cudaMallocHost (&ctx->staging[i], STAGING_BYTES));
    CK (cudaEventCreateWithFlags (&ctx->staged[i], cudaEventDisableTiming));
    /* Recorded once so that the first wait on it returns at once. */
    CK (cudaEventRecord (ctx->staged[i], ctx->stream));
  }
  ctx->convert = g_new (float, STAGING_BYTES / 4);
  return TRUE;
}

AvqCudaContext *
avq_cuda_context_new (int device_ordinal, const char *name_suffix,
                      GError **error)
{
  g_autoptr (AvqCudaContext) ctx = g_new0 (AvqCudaContext, 1);
  ctx->allocations = g_ptr_array_new ();
  ctx->host = g_ptr_array_new ();
  ctx->graphs = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free,
                                       NULL);
  ctx->warmed = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free,
                                       NULL);
  const char *env = g_getenv ("AVQ_CUDA_GRAPHS");
  ctx->graphs_enabled = env == NULL || g_strcmp0 (env, "0") != 0;
  if (!init (ctx, device_ordinal, name_suffix, error))
    return NULL;
  return g_steal_pointer (&ctx);
}

gboolean
avq_cuda_context_enter (AvqCudaContext *ctx, GError **error)
{
  CK (cudaSetDevice (ctx->device));
  return TRUE;
}

cudaStream_t
avq_cuda_context_stream (const AvqCudaContext *ctx)
{
  return ctx->stream;
}

cublasHandle_t
avq_cuda_context_blas (const AvqCudaContext *ctx)
{
  return ctx->blas;
}

const char *
avq_cuda_context_device_name (const AvqCudaContext *ctx)
{
  return ctx->device_name;
}

gboolean
avq_cuda_context_dev_alloc (AvqCudaContext *ctx, void **ptr, gsize bytes,
                            GError **error)
{
  *ptr = NULL;
  const cudaError_t e = cudaMalloc (ptr, MAX (bytes, 16));
  if (e != cudaSuccess) {
    *ptr = NULL;   /* never released, whatever the runtime left there */
    g_autofree char *call = g_strdup_printf ("cudaMalloc (%" G_GSIZE_FORMAT " bytes)",
                                             MAX (bytes, 16));
    return avq_cuda_failed (e, call, error);
  }
  g_ptr_array_add (ctx->allocations, *ptr);
  return TRUE;
}

void
avq_cuda_context_dev_release (AvqCudaContext *ctx, void *ptr)
{
  if (ptr != NULL && g_ptr_array_remove_fast (ctx->allocations, ptr))
    (void) cudaFree (ptr);
}

void
avq_cuda_context_keep_host (AvqCudaContext *ctx, void *ptr)
{
  if (ptr != NULL)
    g_ptr_array_add (ctx->host, ptr);
}

gboolean
avq_cuda_context_upload (AvqCudaContext *ctx, const AvqTensor *t,
                         const float *host, gsize n, void *dst,
                         gboolean to_half, GError **error)
{
  const gsize esize = to_half ? 2 : 4;
  const gsize chunk = STAGING_BYTES / 4;   /* elements per chunk (fp32 worst) */
  gint64 t0 = g_get_monotonic_time ();
  for (gsize off = 0; off < n; off += chunk) {
    gsize m = MIN (chunk, n - off);
    int b = ctx->next_staging;
    ctx->next_staging ^= 1;
    CK (cudaEventSynchronize (ctx->staged[b]));
    void *stage = ctx->staging[b];
    if (t != NULL && to_half && t->dtype == AVQ_DTYPE_F16) {
      memcpy (stage, (const guint8 *) t->data + off * 2, m * 2);
    } else if (t != NULL && !to_half && t->dtype == AVQ_DTYPE_F32) {
      memcpy (stage, (const guint8 *) t->data + off * 4, m * 4);
    } else {
      const float *src;
      if (t != NULL) {
        float *f = to_half ? ctx->convert : stage;
        avq_tensor_read_f32 (t, off, m, f);
        src = f;
      } else {
        src = host + off;
      }
      if (to_half) {
        guint16 *h = stage;
        for (gsize i = 0; i < m; i++)
          h[i] = avq_float_to_half (src[i]);
      } else if (src != stage) {
        memcpy (stage, src, m * 4);
      }
    }
    CK (cudaMemcpyAsync ((guint8 *) dst + off * esize, stage, m * esize,
                         cudaMemcpyHostToDevice, ctx->stream));
    CK (cudaEventRecord (ctx->staged[b], ctx->stream));
  }
  ctx->weight_bytes += n * esize;
  ctx->upload_us += g_get_monotonic_time () - t0;
  return TRUE;
}

void
avq_cuda_context_add_upload_us (AvqCudaContext *ctx, gint64 us)
{
  ctx->upload_us += us;
}

guint64
avq_cuda_context_weight_bytes (const AvqCudaContext *ctx)
{
  return ctx->weight_bytes;
}

double
avq_cuda_context_upload_ms (const AvqCudaContext *ctx)
{
  return ctx->upload_us / 1000.0;
}

/* ---- graphs ---- */

void
avq_cuda_context_drop_graphs (AvqCudaContext *ctx)
{
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init (&it, ctx->graphs);
  while (g_hash_table_iter_next (&it, NULL, &value))
    (void) cudaGraphExecDestroy ((cudaGraphExec_t) value);
  g_hash_table_remove_all (ctx->graphs);
  /* `warmed` stays: the warm-up is about kernels and shapes, not about the
   * buffers whose move dropped the graphs. */
}

void
avq_cuda_context_set_graphs (AvqCudaContext *ctx, gboolean enabled)
{
  if (!enabled)
    avq_cuda_context_drop_graphs (ctx);
  ctx->graphs_enabled = enabled;
}

gboolean
avq_cuda_context_graphs_enabled (const AvqCudaContext *ctx)
{
  return ctx->graphs_enabled;
}

guint
avq_cuda_context_graphs_captured (const AvqCudaContext *ctx)
{
  return ctx->graphs_captured;
}

/* Captures `issue` into an executable graph. The capture is always ended,
 * also when `issue` fails, so that the stream leaves capture mode. */
static gboolean
capture (AvqCudaContext *ctx, AvqCudaIssueFunc issue, gpointer data,
         cudaGraphExec_t *exec, GError **error)
{
  CK (cudaStreamBeginCapture (ctx->stream, cudaStreamCaptureModeThreadLocal));
  g_autoptr (GError) issue_error = NULL;
  gboolean issued = issue (data, &issue_error);
  cudaGraph_t graph = NULL;
  cudaError_t ended = cudaStreamEndCapture (ctx->stream, &graph);
  if (!issued) {
    if (graph != NULL)
      (void) cudaGraphDestroy (graph);
    g_propagate_prefixed_error (error, g_steal_pointer (&issue_error),
                                "while capturing a CUDA graph: ");
    return FALSE;
  }
  if (ended != cudaSuccess)
    return avq_cuda_failed (ended, "cudaStreamEndCapture (ctx->stream, &graph)",
                            error);
  cudaError_t made = cudaGraphInstantiate (exec, graph, 0);
  (void) cudaGraphDestroy (graph);
  if (made != cudaSuccess)
    return avq_cuda_failed (made, "cudaGraphInstantiate (exec, graph, 0)", error);
  ctx->graphs_captured++;
  return TRUE;
}

gboolean
avq_cuda_context_run_graph (AvqCudaContext *ctx, guint64 key,
                            AvqCudaIssueFunc issue, gpointer data,
                            GError **error)
{
  if (!ctx->graphs_enabled)
    return issue (data, error);
  /* The first run of a key is not captured: it loads the kernels it needs
   * (lazy module loading is not allowed while a stream captures) and lets
   * cuBLAS set up for these shapes outside capture, the warm-up PyTorch
   * also requires before torch.cuda.graph. The second run captures. */
  if (!g_hash_table_contains (ctx->warmed, &key)) {
    if (!issue (data, error))
      return FALSE;
    g_hash_table_add (ctx->warmed, g_memdup2 (&key, sizeof key));
    return TRUE;
  }
  cudaGraphExec_t exec = g_hash_table_lookup (ctx->graphs, &key);
  if (exec == NULL) {
    if (!capture (ctx, issue, data, &exec, error))
      return FALSE;
    g_hash_table_insert (ctx->graphs, g_memdup2 (&key, sizeof key), exec);
  }
  CK (cudaGraphLaunch (exec, ctx->stream));
  return TRUE;
}
