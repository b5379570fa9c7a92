/* The `device` property shared by avqencode and avqanswer: where the
 * engine's vision half runs (AvqDevice values). */
#pragma once
#include <glib-object.h>
#include "avq-engine.h"

G_BEGIN_DECLS

#define GST_TYPE_AVQ_DEVICE (gst_avq_device_get_type ())
GType gst_avq_device_get_type (void);

G_END_DECLS
