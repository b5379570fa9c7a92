/* Error domain shared by every part of the engine. */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

#define AVQ_ERROR (avq_error_quark ())

typedef enum {
  AVQ_ERROR_IO,               /* a file could not be opened, read or mapped */
  AVQ_ERROR_FORMAT,           /* a file or packet is malformed */
  AVQ_ERROR_MISSING,          /* a required tensor, key or file is absent */
  AVQ_ERROR_SHAPE,            /* a tensor has the wrong shape or dtype */
  AVQ_ERROR_INVALID_ARGUMENT, /* a caller-supplied value is out of range */
  AVQ_ERROR_UNSUPPORTED,      /* valid input that this version cannot handle */
  AVQ_ERROR_MISMATCH,         /* two inputs do not belong together (codebook id, sizes) */
  AVQ_ERROR_DEVICE,           /* a compute device is unavailable or one of its calls failed */
} AvqErrorCode;

GQuark avq_error_quark (void);

G_END_DECLS
