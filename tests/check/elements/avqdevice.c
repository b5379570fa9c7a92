/* The `device` property of avqencode and avqanswer: an enum (auto, cpu,
 * cuda) defaulting to auto, and a clear start-up error when cuda is asked
 * for where CUDA is unavailable. Where CUDA is available the failure case is
 * skipped (test-cuda covers the GPU). */
#include <gst/check/gstcheck.h>
#include <string.h>

#include "avq-engine.h"

#define MODEL_DIR AVQ_TEST_DATA_DIR "/tiny-llava"
#define AVQ_FILE MODEL_DIR "/avq-L0-derive.safetensors"

static void
check_property (const gchar * factory)
{
  GstElement *e = gst_element_factory_make (factory, NULL);
  fail_unless (e != NULL, "no %s", factory);
  GParamSpec *spec = g_object_class_find_property (G_OBJECT_GET_CLASS (e), "device");
  fail_unless (spec != NULL && G_IS_PARAM_SPEC_ENUM (spec));
  gint value = -1;
  g_object_get (e, "device", &value, NULL);
  fail_unless_equals_int (value, AVQ_DEVICE_AUTO);
  gst_util_set_object_arg (G_OBJECT (e), "device", "cpu");
  g_object_get (e, "device", &value, NULL);
  fail_unless_equals_int (value, AVQ_DEVICE_CPU);
  gst_util_set_object_arg (G_OBJECT (e), "device", "cuda");
  g_object_get (e, "device", &value, NULL);
  fail_unless_equals_int (value, AVQ_DEVICE_CUDA);
  gst_object_unref (e);
}

GST_START_TEST (test_property)
{
  check_property ("avqencode");
  check_property ("avqanswer");
}
GST_END_TEST;

/* device=cuda without CUDA: READY->PAUSED fails, the error names CUDA. */
static void
check_cuda_refused (const gchar * factory)
{
  GstElement *e = gst_element_factory_make (factory, NULL);
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  g_object_set (e, "model", MODEL_DIR, "avq", AVQ_FILE, NULL);
  gst_util_set_object_arg (G_OBJECT (e), "device", "cuda");
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "%s posted no error", factory);
  GError *err = NULL;
  gchar *debug = NULL;
  gst_message_parse_error (msg, &err, &debug);
  fail_unless (debug != NULL && strstr (debug, "CUDA") != NULL,
      "%s: error details do not name CUDA: %s", factory, debug);
  g_clear_error (&err);
  g_free (debug);
  gst_message_unref (msg);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
}

GST_START_TEST (test_cuda_refused)
{
  GError *why = NULL;
  if (avq_cuda_available (&why)) {
    GST_INFO ("CUDA available: the refusal case does not apply");
    return;
  }
  GST_INFO ("CUDA unavailable: %s", why->message);
  g_clear_error (&why);
  check_cuda_refused ("avqencode");
  check_cuda_refused ("avqanswer");
}
GST_END_TEST;

static Suite *
avqdevice_suite (void)
{
  Suite *s = suite_create ("avqdevice");
  TCase *tc = tcase_create ("general");
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_property);
  tcase_add_test (tc, test_cuda_refused);
  return s;
}

GST_CHECK_MAIN (avqdevice);
