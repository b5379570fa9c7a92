/* The avq plugin: AlignedVQ frames for edge-cloud VQA (AVQ-SPEC). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstavqelements.h"

static gboolean
plugin_init (GstPlugin *plugin)
{
  gboolean ret = FALSE;

  /* |= so that one element failing to register leaves the others usable. */
  ret |= GST_ELEMENT_REGISTER (avqpay, plugin);
  ret |= GST_ELEMENT_REGISTER (avqdepay, plugin);
  ret |= GST_ELEMENT_REGISTER (avqencode, plugin);
  ret |= GST_ELEMENT_REGISTER (avqanswer, plugin);

  return ret;
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR,
    avq,
    "AlignedVQ edge-cloud visual question answering: quantised vision "
    "features, their RTP transport and LLaVA answers",
    plugin_init, VERSION, GST_LICENSE, GST_PACKAGE_NAME, GST_PACKAGE_ORIGIN)
