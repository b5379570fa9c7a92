/* Element registration for the avq plugin: each element file defines its
 * GST_ELEMENT_REGISTER, plugin.c calls them all. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

/* One-time setup shared by every element of the plugin; each element's
 * registration calls it, so registering a single element statically works
 * as well as loading the whole plugin. */
void avq_element_init (GstPlugin *plugin);

GST_ELEMENT_REGISTER_DECLARE (avqpay);
GST_ELEMENT_REGISTER_DECLARE (avqdepay);
GST_ELEMENT_REGISTER_DECLARE (avqencode);
GST_ELEMENT_REGISTER_DECLARE (avqanswer);

G_END_DECLS
