/* libFuzzer target for avqdepay (gst/gstavqdepay.c): the RTP packets a
 * network peer can send to the depayloader, with the events a jitterbuffer
 * adds (GstRTPPacketLost) and flushes, driven through a GstHarness.
 *
 * The element is registered statically (GST_ELEMENT_REGISTER with a NULL
 * plugin) and no plugin is loaded from disk, so the code under test is only
 * the sources compiled into this target (instrumented) plus the GStreamer
 * libraries.
 *
 * Besides "no crash, no sanitizer report, no leak", it checks:
 *  - every buffer that comes out is exactly one frame of the size the caps
 *    imply, parses with the strict avq_frame_parse and matches the caps'
 *    tokens / index-bits / side-bits / codebook;
 *  - the "stats" property reads back and agrees with what was seen:
 *    frames-out and bytes-out with the buffers pulled, packets-lost with the
 *    loss events pushed, key-unit-requests with the force-key-unit events
 *    that went upstream, packets-received at most the packets pushed.
 *
 * Input format
 * ------------
 * byte 0: stream config. bit 0: side-bits "8" (else "0"); bit 1: tokens
 *   "3" (else "40"); index-bits is always "12", codebook 0123456789abcdef,
 *   layer "0". Frames are 16 + 60 = 76 bytes (40 tokens), 16 + 5 = 21 (3
 *   tokens, with 4 padding bits), plus 16 + 2*tokens bytes with side info.
 * then records until the input runs out; the first byte F says which:
 *   F & 0x80: an event, by F & 7:
 *     0, 1  GstRTPPacketLost custom event
 *     2     flush (flush-start, flush-stop, new segment)
 *     3     new caps with side-bits toggled (another frame size)
 *     4..7  the next packets come from another SSRC
 *   else a packet; F bits: 0 marker flip, 1-3 seqnum step (+1 +1 +2 0 -1
 *   -2 +1000 -30000), 4-5 timestamp step (0 +3000 -3000 +1), 6 raw.
 *   raw (bit 6 set): L, then L bytes that are the whole RTP payload
 *     (X-AVQ header included); the marker bit is F bit 0.
 *   built (bit 6 clear): C O L S: an X-AVQ header version 1 with the
 *     stream's frame length, frame count C, fragment offset O, and L data
 *     bytes: the next L input bytes when S == 0, else bytes O..O+L of a
 *     valid frame generated from seed S & 0x7f (canonical_frame()) — so
 *     that the fuzzer reaches complete valid frames in any fragmentation;
 *     when S & 0x80, one more byte X follows and the fragment's first data
 *     byte is XORed with it (a frame valid but for one byte: padding bits,
 *     side ranges, header fields). The marker is set on the fragment that
 *     ends at the frame's end, unless F bit 0.
 * At the end, EOS is pushed.
 *
 * Seeds (tests/fuzz/corpus-depay) were written with:
 *   python3 - <<'EOF'
 *   import struct
 *   def frame(tokens, side):            # a valid 12-bit frame, see AVQ-SPEC 6
 *       flags = 1 | (2 if side else 0)
 *       h = struct.pack('<BBHBBH', 1, flags, tokens, 12, side, 0) \
 *           + bytes.fromhex('0123456789abcdef')
 *       acc = bits = 0; out = bytearray()
 *       for i in range(tokens):
 *           acc |= ((i * 37 + 5) & 0xfff) << bits; bits += 12
 *           while bits >= 8: out.append(acc & 0xff); acc >>= 8; bits -= 8
 *       if bits: out.append(acc & 0xff)
 *       if side:
 *           out += struct.pack('<4f', -1, 1, -2, 2) + bytes((i * 7) & 0xff
 *                                                     for i in range(2 * tokens))
 *       return h + bytes(out)
 *   def raw(f, m, off, data, count=0):   # raw packet record, step +1/+3000
 *       p = bytes([0x10, len(f) >> 16, (len(f) >> 8) & 255, len(f) & 255,
 *                  count, off >> 16, (off >> 8) & 255, off & 255]) + data
 *       return bytes([0x42 | 0x10 * (count > 0) | m, len(p)]) + p
 *   def built(c, o, l, s, data=b'', new=False):  # built packet record,
 *       return bytes([0x12 if new else 0x02, c, o, l, s]) + data  # seq +1
 *   f = frame(40, 0)
 *   seeds = {
 *     'raw-2frag.bin': b'\0' + raw(f, 0, 0, f[:40]) + raw(f, 1, 40, f[40:]),
 *     'raw-3frag-reorder.bin': b'\0' + raw(f, 0, 0, f[:30])
 *         + raw(f, 1, 60, f[60:]) + raw(f, 0, 30, f[30:60]),
 *     'built-side-3frag.bin': b'\x01' + built(0, 0, 60, 1)
 *         + built(0, 60, 60, 1) + built(0, 120, 52, 1),
 *     'built-2frames-loss.bin': b'\x02' + built(0, 0, 10, 2)
 *         + built(0, 10, 11, 2) + built(1, 0, 10, 3, new=True) + b'\x80'
 *         + built(2, 0, 21, 4, new=True),
 *     'built-inline-flush.bin': b'\0' + built(5, 0, 40, 0, f[:40])
 *         + b'\x82' + built(6, 0, 40, 0, f[:40], new=True)
 *         + built(6, 40, 36, 0, f[40:]),
 *     'built-caps-ssrc.bin': b'\0' + built(0, 0, 76, 7) + b'\x83'
 *         + built(1, 0, 100, 7, new=True) + built(1, 100, 72, 7) + b'\x84'
 *         + built(0, 0, 172, 9, new=True),
 *   }
 *   g, t = frame(3, 8), frame(3, 0)     # 3 tokens: 4 padding bits
 *   seeds['raw-3tok-side-whole.bin'] = b'\x03' + raw(g, 1, 0, g)
 *   seeds['raw-3tok-2frag.bin'] = b'\x02' + raw(t, 0, 0, t[:16]) \
 *       + raw(t, 1, 16, t[16:])
 *   seeds['built-xor-padding.bin'] = b'\x02' + built(0, 0, 20, 1) \
 *       + built(0, 20, 1, 0x81) + b'\x10'
 *   for n, b in seeds.items(): open('tests/fuzz/corpus-depay/' + n, 'wb').write(b)
 *   EOF
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gst/gst.h>
#include <gst/check/gstharness.h>
#include <gst/rtp/gstrtpbuffer.h>
#include <gst/video/video-event.h>

#include "avq-frame.h"
#include "gstavqelements.h"

#define CODEBOOK_HEX "0123456789abcdef"
#define INDEX_BITS 12
/* X-AVQ header plus up to 255 data bytes. */
#define GST_AVQ_FUZZ_MAX_PAYLOAD (8 + 256)

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

typedef struct
{
  const guint8 *p;
  gsize left;
} Reader;

static gboolean
take_byte (Reader * r, guint8 * out)
{
  if (r->left == 0)
    return FALSE;
  *out = *r->p++;
  r->left--;
  return TRUE;
}

typedef struct
{
  guint tokens;
  guint side_bits;
  gsize frame_size;
  guint8 codebook[AVQ_CODEBOOK_ID_SIZE];
} Params;

typedef struct
{
  GstHarness *h;
  Params params;
  guint16 seqnum;
  guint32 rtptime;
  guint32 ssrc;
  guint n_packets;
  guint64 packets_pushed;
  guint64 lost_pushed;
  guint64 frames_pulled;
  guint64 bytes_pulled;
  guint64 key_unit_events;
  GstClockTime pts;
} State;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  /* Nothing from disk: no registry, no plugin scan. Core's static elements
   * and our statically registered avqdepay are all there is. */
  g_setenv ("GST_REGISTRY_DISABLE", "yes", TRUE);
  g_setenv ("GST_REGISTRY_UPDATE", "no", TRUE);
  g_setenv ("GST_PLUGIN_SYSTEM_PATH_1_0", "", TRUE);
  g_setenv ("GST_PLUGIN_PATH_1_0", "", TRUE);
  g_setenv ("GST_PLUGIN_SCANNER_1_0", "/nonexistent", TRUE);
  gst_registry_fork_set_enabled (FALSE);
  gst_init (NULL, NULL);
  if (!GST_ELEMENT_REGISTER (avqdepay, NULL))
    abort ();
  /* A critical from GLib/GStreamer means the element misused an API: treat
   * it as a crash. */
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
  return 0;
}

static void
params_init (Params * p, guint tokens, guint side_bits)
{
  p->tokens = tokens;
  p->side_bits = side_bits;
  p->frame_size = avq_frame_serialized_size (tokens, INDEX_BITS, side_bits);
  if (!avq_codebook_id_from_hex (CODEBOOK_HEX, p->codebook))
    abort ();
}

static GstCaps *
params_rtp_caps (const Params * p)
{
  gchar tokens[16], side[16];

  g_snprintf (tokens, sizeof tokens, "%u", p->tokens);
  g_snprintf (side, sizeof side, "%u", p->side_bits);
  return gst_caps_new_simple ("application/x-rtp",
      "media", G_TYPE_STRING, "application",
      "payload", G_TYPE_INT, 96,
      "clock-rate", G_TYPE_INT, 90000,
      "encoding-name", G_TYPE_STRING, "X-AVQ",
      "version", G_TYPE_STRING, "1",
      "tokens", G_TYPE_STRING, tokens,
      "index-bits", G_TYPE_STRING, "12",
      "side-bits", G_TYPE_STRING, side,
      "codebook", G_TYPE_STRING, CODEBOOK_HEX,
      "layer", G_TYPE_STRING, "0", NULL);
}

/* A valid frame of the stream, different for every seed. */
static guint8 *
canonical_frame (const Params * p, guint seed)
{
  g_autoptr (AvqFrame) frame =
      avq_frame_new (p->tokens, INDEX_BITS, p->side_bits, p->codebook);
  guint8 *bytes;
  gsize len = 0;

  for (guint i = 0; i < p->tokens; i++)
    frame->indices[i] = (guint16) ((i * 37 + seed * 101) & 0xfff);
  if (p->side_bits > 0) {
    guint mask = (1u << p->side_bits) - 1;

    frame->side_range[0] = -1.0f;
    frame->side_range[1] = 1.0f + seed;
    frame->side_range[2] = -2.0f;
    frame->side_range[3] = 2.0f;
    for (guint i = 0; i < 2 * p->tokens; i++)
      frame->side_codes[i] = (guint16) ((i * 7 + seed) & mask);
  }
  bytes = avq_frame_serialize (frame, &len);
  if (bytes == NULL || len != p->frame_size)
    abort ();
  return bytes;
}

static void
check_output (State * s, GstBuffer * buf)
{
  GstMapInfo map;
  g_autoptr (GError) err = NULL;
  g_autoptr (AvqFrame) frame = NULL;

  if (!gst_buffer_map (buf, &map, GST_MAP_READ))
    abort ();
  if (map.size != s->params.frame_size)
    abort ();
  frame = avq_frame_parse (map.data, map.size, &err);
  if (frame == NULL)
    abort ();
  if (frame->tokens != s->params.tokens || frame->index_bits != INDEX_BITS
      || frame->side_bits != s->params.side_bits
      || memcmp (frame->codebook_id, s->params.codebook,
          AVQ_CODEBOOK_ID_SIZE) != 0)
    abort ();
  s->frames_pulled++;
  s->bytes_pulled += map.size;
  gst_buffer_unmap (buf, &map);
}

/* Everything the element produced so far, checked and freed. */
static void
drain (State * s)
{
  GstBuffer *buf;
  GstEvent *ev;

  while ((buf = gst_harness_try_pull (s->h)) != NULL) {
    check_output (s, buf);
    gst_buffer_unref (buf);
  }
  while ((ev = gst_harness_try_pull_event (s->h)) != NULL)
    gst_event_unref (ev);
  while ((ev = gst_harness_try_pull_upstream_event (s->h)) != NULL) {
    if (gst_video_event_is_force_key_unit (ev))
      s->key_unit_events++;
    gst_event_unref (ev);
  }
}

static void
push_packet (State * s, const guint8 * payload, guint payload_len,
    gboolean marker)
{
  GstBuffer *buf = gst_buffer_new ();
  GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;

  gst_rtp_buffer_allocate_data (buf, payload_len, 0, 0);
  if (!gst_rtp_buffer_map (buf, GST_MAP_WRITE, &rtp))
    abort ();
  gst_rtp_buffer_set_payload_type (&rtp, 96);
  gst_rtp_buffer_set_seq (&rtp, s->seqnum);
  gst_rtp_buffer_set_timestamp (&rtp, s->rtptime);
  gst_rtp_buffer_set_ssrc (&rtp, s->ssrc);
  gst_rtp_buffer_set_marker (&rtp, marker);
  if (payload_len > 0)
    memcpy (gst_rtp_buffer_get_payload (&rtp), payload, payload_len);
  gst_rtp_buffer_unmap (&rtp);
  GST_BUFFER_PTS (buf) = s->pts;
  s->pts += GST_MSECOND;
  s->packets_pushed++;
  /* The flow return is not interesting: a refused packet is fine, a crash
   * is not. */
  (void) gst_harness_push (s->h, buf);
}

static const gint seq_steps[8] = { 1, 1, 2, 0, -1, -2, 1000, -30000 };
static const gint32 ts_steps[4] = { 0, 3000, -3000, 1 };

/* Returns FALSE when the input ran out. */
static gboolean
do_packet (State * s, Reader * r, guint8 f)
{
  guint8 buf[GST_AVQ_FUZZ_MAX_PAYLOAD];
  guint8 c, o, l, seed;
  guint len;
  gboolean marker;

  s->seqnum = (guint16) (s->seqnum + seq_steps[(f >> 1) & 7]);
  s->rtptime += (guint32) ts_steps[(f >> 4) & 3];

  if (f & 0x40) {
    /* raw: the whole payload from the input */
    if (!take_byte (r, &l))
      return FALSE;
    len = MIN (l, r->left);
    memcpy (buf, r->p, len);
    r->p += len;
    r->left -= len;
    push_packet (s, buf, len, f & 1);
    return TRUE;
  }

  /* built: a well-formed X-AVQ header around the data */
  if (!take_byte (r, &c) || !take_byte (r, &o) || !take_byte (r, &l)
      || !take_byte (r, &seed))
    return FALSE;
  buf[0] = 0x10;
  buf[1] = (guint8) (s->params.frame_size >> 16);
  buf[2] = (guint8) (s->params.frame_size >> 8);
  buf[3] = (guint8) s->params.frame_size;
  buf[4] = c;
  buf[5] = 0;
  buf[6] = 0;
  buf[7] = o;
  if (seed == 0) {
    len = MIN (l, r->left);
    memcpy (buf + 8, r->p, len);
    r->p += len;
    r->left -= len;
  } else {
    g_autofree guint8 *frame = canonical_frame (&s->params, seed & 0x7f);
    guint8 x = 0;

    if ((seed & 0x80) && !take_byte (r, &x))
      return FALSE;
    /* Past the frame's end the bytes are zeros. */
    len = l;
    memset (buf + 8, 0, len);
    if (o < s->params.frame_size)
      memcpy (buf + 8, frame + o, MIN (len, s->params.frame_size - o));
    if (len > 0)
      buf[8] ^= x;
  }
  marker = (o + len == s->params.frame_size);
  if (f & 1)
    marker = !marker;
  push_packet (s, buf, 8 + len, marker);
  return TRUE;
}

static void
push_lost (State * s)
{
  GstEvent *ev = gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM,
      gst_structure_new ("GstRTPPacketLost",
          "seqnum", G_TYPE_UINT, (guint) (guint16) (s->seqnum + 1),
          "timestamp", G_TYPE_UINT64, (guint64) s->pts,
          "duration", G_TYPE_UINT64, (guint64) GST_MSECOND,
          NULL));

  s->lost_pushed++;
  s->pts += GST_MSECOND;
  (void) gst_harness_push_event (s->h, ev);
}

static void
push_flush (State * s)
{
  GstSegment segment;

  (void) gst_harness_push_event (s->h, gst_event_new_flush_start ());
  (void) gst_harness_push_event (s->h, gst_event_new_flush_stop (TRUE));
  /* A source sends a new segment after a flush that resets time. */
  gst_segment_init (&segment, GST_FORMAT_TIME);
  (void) gst_harness_push_event (s->h, gst_event_new_segment (&segment));
}

static guint64
stats_get (const GstStructure * st, const char *name)
{
  guint64 v = 0;

  if (!gst_structure_get_uint64 (st, name, &v))
    abort ();
  return v;
}

static void
check_stats (State * s)
{
  GstStructure *st = NULL;

  g_object_get (s->h->element, "stats", &st, NULL);
  if (st == NULL)
    abort ();
  if (stats_get (st, "frames-out") != s->frames_pulled
      || stats_get (st, "bytes-out") != s->bytes_pulled
      || stats_get (st, "packets-lost") != s->lost_pushed
      || stats_get (st, "key-unit-requests") != s->key_unit_events
      || stats_get (st, "packets-received") > s->packets_pushed
      || stats_get (st, "packets-invalid") > s->packets_pushed
      || stats_get (st, "packets-late") > s->packets_pushed
      || stats_get (st, "duplicates") > s->packets_pushed
      || stats_get (st, "frames-out") + stats_get (st, "frames-invalid")
      > s->packets_pushed)
    abort ();
  /* The base class's fields are still there (a superset of its stats). */
  if (!gst_structure_has_field (st, "seqnum")
      || !gst_structure_has_field (st, "timestamp"))
    abort ();
  gst_structure_free (st);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  Reader r = { data, size };
  State s = { 0, };
  guint8 cfg, f;

  if (!take_byte (&r, &cfg))
    return 0;
  params_init (&s.params, (cfg & 2) ? 3 : 40, (cfg & 1) ? 8 : 0);
  s.seqnum = 1000;
  s.rtptime = 90000;
  s.ssrc = 0x12345678;
  s.pts = 0;

  s.h = gst_harness_new ("avqdepay");
  gst_harness_set_src_caps (s.h, params_rtp_caps (&s.params));

  while (take_byte (&r, &f)) {
    if (f & 0x80) {
      switch (f & 7) {
        case 0:
        case 1:
          push_lost (&s);
          break;
        case 2:
          push_flush (&s);
          break;
        case 3:
          drain (&s);
          params_init (&s.params, s.params.tokens,
              s.params.side_bits ? 0 : 8);
          gst_harness_set_src_caps (s.h, params_rtp_caps (&s.params));
          break;
        default:
          s.ssrc += 0x01010101;
          break;
      }
    } else if (!do_packet (&s, &r, f)) {
      break;
    }
    drain (&s);
  }
  (void) gst_harness_push_event (s.h, gst_event_new_eos ());
  drain (&s);
  check_stats (&s);
  if (g_getenv ("AVQ_FUZZ_DEPAY_VERBOSE") != NULL) {
    GstStructure *st = NULL;
    gchar *str;

    g_object_get (s.h->element, "stats", &st, NULL);
    str = gst_structure_to_string (st);
    g_printerr ("%s\n", str);
    g_free (str);
    gst_structure_free (st);
  }
  gst_harness_teardown (s.h);
  return 0;
}
