#include "gstavqdevice.h"

GType
gst_avq_device_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    { AVQ_DEVICE_AUTO, "CUDA when this build has it and a GPU is present, else the CPU", "auto" },
    { AVQ_DEVICE_CPU, "The CPU (fp32)", "cpu" },
    { AVQ_DEVICE_CUDA, "An NVIDIA GPU through CUDA (fp16 GEMMs); an error if unavailable", "cuda" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstAvqDevice", values);
    g_once_init_leave (&type, t);
  }
  return (GType) type;
}
