#include <gst/check/gstcheck.h>
static Suite *avqanswer_suite (void) { Suite *s = suite_create ("avqanswer"); return s; }
GST_CHECK_MAIN (avqanswer);
