/* libFuzzer target for the AVQ frame parser: the bytes a network peer can
 * put in front of avq_frame_parse / avq_frame_peek_size.
 *
 * Besides "no crash, no out-of-bounds read", it checks two invariants that a
 * lenient parser would break: whatever parses re-serialises to exactly the
 * input (the format has one encoding per frame), and peek_size agrees with
 * parse about a frame's length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "avq-frame.h"

static void
check_one (const guint8 *data, gsize size)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (AvqFrame) frame = avq_frame_parse (data, size, &err);
  gsize peek = 0;
  gboolean peek_ok = avq_frame_peek_size (data, size, &peek, NULL);

  if (frame == NULL) {
    if (err == NULL)
      abort ();
    return;
  }
  if (!peek_ok || peek != size)
    abort ();
  {
    gsize len = 0;
    g_autofree guint8 *again = avq_frame_serialize (frame, &len);
    if (again == NULL || len != size || memcmp (again, data, size) != 0)
      abort ();
  }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  gsize off = 0;

  check_one (data, size);

  /* The same bytes as a concatenated stream of frames, split by peek_size
   * the way a file reader would. */
  while (off < size) {
    gsize frame_size = 0;

    if (!avq_frame_peek_size (data + off, size - off, &frame_size, NULL))
      break;
    if (frame_size < AVQ_FRAME_HEADER_SIZE)
      abort ();
    if (frame_size > size - off)
      break;
    check_one (data + off, frame_size);
    off += frame_size;
  }
  return 0;
}
