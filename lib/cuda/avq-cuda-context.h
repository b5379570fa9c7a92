/* The device plumbing shared by the CUDA backends (avq-cuda.c, the vision
 * half; avq-cuda-llama.c, the LLaMA decoder): one device, one non-blocking
 * stream with a cuBLAS handle bound to it, the device allocations and pinned
 * host buffers freed together with it, and weight uploads through two pinned
 * staging buffers. Internal to lib/cuda. */
#pragma once

#include <glib.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include "avq-safetensors.h"

G_BEGIN_DECLS

/* Sets `error` (AVQ_ERROR_DEVICE) naming the failing call; returns FALSE. */
gboolean avq_cuda_failed (cudaError_t e, const char *call, GError **error);
gboolean avq_cublas_failed (cublasStatus_t s, const char *call, GError **error);

/* Every CUDA and cuBLAS call goes through one of these, in a function
 * returning gboolean with a `GError **error` in scope; the GError names the
 * call as written. */
#define CK(call)                                                        \
  do {                                                                  \
    cudaError_t ck_e_ = (call);                                         \
    if (ck_e_ != cudaSuccess)                                           \
      return avq_cuda_failed (ck_e_, #call, error);                     \
  } while (0)
#define CKB(call)                                                       \
  do {                                                                  \
    cublasStatus_t ck_s_ = (call);                                      \
    if (ck_s_ != CUBLAS_STATUS_SUCCESS)                                 \
      return avq_cublas_failed (ck_s_, #call, error);                   \
  } while (0)

typedef struct _AvqCudaContext AvqCudaContext;

/* Selects `device_ordinal` (the current device when negative), names it
 * "<GPU> (sm_XY, <memory> GiB)<name_suffix>", creates the stream, the cuBLAS
 * handle bound to it and the staging buffers. The caller checks beforehand
 * that a device exists. */
AvqCudaContext *avq_cuda_context_new (int device_ordinal,
                                      const char *name_suffix,
                                      GError **error);
/* Synchronises the stream, then frees every device allocation, the staging
 * buffers, the kept pinned host buffers (in the order kept), the cuBLAS
 * handle and the stream. NULL is a no-op. */
void avq_cuda_context_free (AvqCudaContext *ctx);

/* Makes the context's device current on the calling thread (the current
 * device is per host thread, and a backend may be created on one thread and
 * run on another). */
gboolean avq_cuda_context_enter (AvqCudaContext *ctx, GError **error);

cudaStream_t avq_cuda_context_stream (const AvqCudaContext *ctx);
cublasHandle_t avq_cuda_context_blas (const AvqCudaContext *ctx);
const char *avq_cuda_context_device_name (const AvqCudaContext *ctx);

/* cudaMalloc of at least 16 bytes, freed with the context. */
gboolean avq_cuda_context_dev_alloc (AvqCudaContext *ctx, void **ptr,
                                     gsize bytes, GError **error);
/* Frees one allocation made by dev_alloc now (for buffers that grow). */
void avq_cuda_context_dev_release (AvqCudaContext *ctx, void *ptr);
/* Takes a pinned host buffer (from cudaMallocHost) to cudaFreeHost with the
 * context. */
void avq_cuda_context_keep_host (AvqCudaContext *ctx, void *ptr);

/* Copies `n` elements to `dst` on the device, as fp16 when `to_half`, else
 * fp32. The source is elements [0, n) of a tensor (any float dtype) or,
 * when `t` is NULL, host floats. Goes through the pinned staging buffers in
 * chunks; a staging buffer is refilled only after its previous copy has
 * completed (its event). Asynchronous on the context's stream; counts in
 * the weight bytes and upload time. */
gboolean avq_cuda_context_upload (AvqCudaContext *ctx, const AvqTensor *t,
                                  const float *host, gsize n, void *dst,
                                  gboolean to_half, GError **error);

/* ---- CUDA graphs ----
 *
 * A pass that runs again and again with the same shape (a decode step, a
 * vision forward at one batch size) is captured once into a CUDA graph and
 * replayed, which removes the per-launch CPU cost of dozens of kernels and
 * GEMMs. `issue` enqueues the pass on the context's stream; for its graph
 * to stay valid it must
 *  - touch only device memory whose addresses do not change while the graph
 *    is cached (drop the graphs when a buffer is reallocated),
 *  - read every value that changes from call to call (positions, lengths,
 *    token ids) from device memory, never bake it into launch arguments,
 *  - not synchronise, allocate or free (illegal while capturing).
 * Host<->device copies through pinned buffers at fixed addresses may be
 * part of the pass. */
typedef gboolean (*AvqCudaIssueFunc) (gpointer data, GError **error);

/* Runs the pass cached under `key` (one graph per key: use the batch size or
 * a shape code): the first call runs `issue` directly (a warm-up: kernels
 * load and cuBLAS sets up outside capture), the second captures it into a
 * graph and launches that, later calls replay it; `issue` and `data` must describe the same pass every time for a
 * key. Enqueued on the stream, not synchronised. With graphs disabled
 * (avq_cuda_context_set_graphs, or AVQ_CUDA_GRAPHS=0 in the environment at
 * context creation) calls `issue` directly. A failed capture is discarded
 * and reported; nothing is cached for the key then. */
gboolean avq_cuda_context_run_graph (AvqCudaContext *ctx, guint64 key,
                                     AvqCudaIssueFunc issue, gpointer data,
                                     GError **error);
/* Destroys every cached graph (after reallocating a buffer a graph uses). */
void avq_cuda_context_drop_graphs (AvqCudaContext *ctx);
void avq_cuda_context_set_graphs (AvqCudaContext *ctx, gboolean enabled);
gboolean avq_cuda_context_graphs_enabled (const AvqCudaContext *ctx);
/* Graphs captured since creation (for tests and logs). */
guint avq_cuda_context_graphs_captured (const AvqCudaContext *ctx);

/* Adds time spent waiting for uploads to land to the upload time. */
void avq_cuda_context_add_upload_us (AvqCudaContext *ctx, gint64 us);
guint64 avq_cuda_context_weight_bytes (const AvqCudaContext *ctx);
double avq_cuda_context_upload_ms (const AvqCudaContext *ctx);

G_END_DECLS
