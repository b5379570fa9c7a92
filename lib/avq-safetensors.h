/* Read-only, memory-mapped safetensors files (single file or sharded with
 * model.safetensors.index.json) and a small writer.
 *
 * Every offset and size in a file is validated at open time, so a tensor
 * returned by avq_safetensors_find() can be read in full without further
 * checks. */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  AVQ_DTYPE_F32,
  AVQ_DTYPE_F16,
  AVQ_DTYPE_BF16,
  AVQ_DTYPE_F64,
  AVQ_DTYPE_I64,
  AVQ_DTYPE_I32,
  AVQ_DTYPE_I16,
  AVQ_DTYPE_I8,
  AVQ_DTYPE_U8,
  AVQ_DTYPE_BOOL,
} AvqDType;

#define AVQ_TENSOR_MAX_DIMS 8

typedef struct {
  char *name;
  AvqDType dtype;
  int ndim;
  gint64 shape[AVQ_TENSOR_MAX_DIMS];
  const void *data;   /* points into the mapping; valid while the file is open */
  gsize nbytes;
  const char *file;   /* path of the file (shard) holding the tensor */
} AvqTensor;

typedef struct _AvqSafetensors AvqSafetensors;

/* path: a .safetensors file, a model.safetensors.index.json, or a directory
 * holding either model.safetensors or model.safetensors.index.json. */
AvqSafetensors *avq_safetensors_open (const char *path, GError **error);
void avq_safetensors_free (AvqSafetensors *st);

/* Parse a safetensors image held in memory (used by the fuzz target and
 * tests; the buffer must outlive the returned object). */
AvqSafetensors *avq_safetensors_open_memory (const guint8 *data, gsize size,
                                             const char *display_name,
                                             GError **error);

const AvqTensor *avq_safetensors_find (const AvqSafetensors *st, const char *name);
guint avq_safetensors_n_tensors (const AvqSafetensors *st);
const AvqTensor *avq_safetensors_nth (const AvqSafetensors *st, guint i);
/* __metadata__ value (of the first file holding metadata) or NULL. */
const char *avq_safetensors_metadata (const AvqSafetensors *st, const char *key);
const char *avq_safetensors_path (const AvqSafetensors *st);

const char *avq_dtype_name (AvqDType dtype);
gsize avq_dtype_size (AvqDType dtype);
gsize avq_tensor_numel (const AvqTensor *t);

/* Checks ndim and each dimension (a dimension of -1 in `shape` matches any
 * size) and that the dtype is a float type (F32/F16/BF16). The GError names
 * the tensor and its file. */
gboolean avq_tensor_check_float (const AvqTensor *t, int ndim,
                                 const gint64 *shape, GError **error);

/* Converts `n` elements starting at element `offset` to float32. The range
 * must lie inside the tensor (checked with g_return_val_if_fail). Works for
 * F32, F16, BF16. */
void avq_tensor_read_f32 (const AvqTensor *t, gsize offset, gsize n, float *dst);
/* Newly allocated float32 copy of the whole tensor (g_free it). */
float *avq_tensor_dup_f32 (const AvqTensor *t);

float avq_half_to_float (guint16 h);
guint16 avq_float_to_half (float f);   /* round to nearest even */
float avq_bf16_to_float (guint16 b);

/* Writer: collects tensors (data is copied) and writes one file. */
typedef struct _AvqSafetensorsWriter AvqSafetensorsWriter;
AvqSafetensorsWriter *avq_safetensors_writer_new (void);
void avq_safetensors_writer_free (AvqSafetensorsWriter *w);
void avq_safetensors_writer_add (AvqSafetensorsWriter *w, const char *name,
                                 AvqDType dtype, int ndim, const gint64 *shape,
                                 const void *data);
void avq_safetensors_writer_set_metadata (AvqSafetensorsWriter *w,
                                          const char *key, const char *value);
gboolean avq_safetensors_writer_save (AvqSafetensorsWriter *w,
                                      const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqSafetensors, avq_safetensors_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (AvqSafetensorsWriter, avq_safetensors_writer_free)

G_END_DECLS
