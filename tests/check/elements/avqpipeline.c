#include <gst/check/gstcheck.h>
static Suite *avqpipeline_suite (void) { Suite *s = suite_create ("avqpipeline"); return s; }
GST_CHECK_MAIN (avqpipeline);
