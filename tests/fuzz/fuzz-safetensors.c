/* libFuzzer target: the same bytes go to the safetensors parser and to the
 * config.json parser. Both must either succeed or return a GError; a crash,
 * a sanitizer report or a GLib critical (made fatal below) is a bug. */
#include <stdint.h>
#include <stddef.h>
#include <glib.h>

#include "avq-config.h"
#include "avq-safetensors.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  /* g_return_if_fail in the library means the parser let something
   * through that it promised to validate */
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  return 0;
}

/* Touches every byte a valid tensor claims, so ASan sees any range that
 * validation let slip outside the buffer. */
static void
exercise (const AvqSafetensors *st)
{
  float buf[64];
  volatile float sink = 0;
  for (guint i = 0; i < avq_safetensors_n_tensors (st); i++) {
    const AvqTensor *t = avq_safetensors_nth (st, i);
    if (avq_safetensors_find (st, t->name) != t)
      __builtin_trap ();
    gsize numel = avq_tensor_numel (t);
    if (numel * avq_dtype_size (t->dtype) != t->nbytes)
      __builtin_trap ();
    if (t->dtype == AVQ_DTYPE_F32 || t->dtype == AVQ_DTYPE_F16
        || t->dtype == AVQ_DTYPE_BF16) {
      for (gsize off = 0; off < numel; off += G_N_ELEMENTS (buf)) {
        gsize n = MIN (numel - off, G_N_ELEMENTS (buf));
        avq_tensor_read_f32 (t, off, n, buf);
        sink += buf[0];
      }
    } else {
      const volatile guint8 *p = t->data;
      for (gsize k = 0; k < t->nbytes; k++)
        sink += p[k];
    }
  }
  (void) avq_safetensors_metadata (st, "format");
  (void) sink;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  /* A private copy of exactly `size` bytes: ASan then flags any read past
   * the end, which libFuzzer's own buffer might not. */
  guint8 *copy = g_memdup2 (data, size);
  GError *error = NULL;

  AvqSafetensors *st = avq_safetensors_open_memory (copy, size, "fuzz", &error);
  if (st != NULL) {
    exercise (st);
    avq_safetensors_free (st);
  } else if (error == NULL) {
    __builtin_trap ();
  }
  g_clear_error (&error);

  AvqLlavaConfig config;
  if (avq_llava_config_parse ((const char *) copy, (gssize) size, "fuzz.json",
                              &config, &error)) {
    int run = avq_llava_config_vision_layers_run (&config);
    if (run < 0 || run > config.vision.num_layers)
      __builtin_trap ();
  } else if (error == NULL) {
    __builtin_trap ();
  }
  g_clear_error (&error);
  g_free (copy);
  return 0;
}
