/* Shared element initialisation for the avq plugin. */
#include "gstavqelements.h"
#include "gstavqstream.h"

GST_DEBUG_CATEGORY (gst_avq_debug);

void
avq_element_init (GstPlugin *plugin)
{
  static gsize done = 0;

  (void) plugin;
  if (g_once_init_enter (&done)) {
    /* The stream helpers log into a plugin-wide category rather than into an
     * element's, since pay and depay share them. */
    GST_DEBUG_CATEGORY_INIT (gst_avq_debug, "avq", 0,
        "AVQ plugin shared helpers");
    g_once_init_leave (&done, 1);
  }
}
