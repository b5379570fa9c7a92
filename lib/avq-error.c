#include "avq-error.h"

G_DEFINE_QUARK (avq-error-quark, avq_error)
