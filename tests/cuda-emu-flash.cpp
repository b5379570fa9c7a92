/* A CPU stand-in for the tensor-core flash attention launcher
 * (lib/cuda/avq-cuda-flash.h): attention from the definition (fp32 scores
 * and sums, fp16 in and out), so that test-cuda-emu checks the strides and
 * pointers the host code passes for the vision tower and the LLM prefill
 * (through the header's inline layout wrappers).
 * The kernel's own code is tested by test-cuda-flash. See cuda-emu.cpp. */
#include <math.h>
#include <string.h>
#include <vector>
#include <glib.h>
#include "avq-safetensors.h"
#include "cuda/avq-cuda-flash.h"
#include "cuda-emu.h"

static bool
valid (const AvqCukFlashParams *p)
{
  return p != nullptr && p->q && p->k && p->v && p->out && p->head_dim >= 1 &&
         p->head_dim <= AVQ_CUK_FLASH_MAX_HD && p->n_q >= 1 && p->n_k >= 1 &&
         p->heads >= 1 && p->kv_heads >= 1 && p->batch >= 1 &&
         p->heads % p->kv_heads == 0 && p->heads <= 65535 && p->batch <= 65535 &&
         p->scale > 0 && isfinite (p->scale) && p->q_pos >= 0;
}

cudaError_t
avq_cuk_flash_attention (cudaStream_t stream, const AvqCukFlashParams *params)
{
  if (!valid (params))
    return cudaErrorInvalidValue;
  /* A launch copies its parameters; so does a recorded graph node. */
  const AvqCukFlashParams c = *params;
  AVQ_EMU_DEFER (stream, avq_cuk_flash_attention (stream, &c));
  const int group = c.heads / c.kv_heads, hd = c.head_dim;
  std::vector<float> s (c.n_k), acc (hd);
  for (int b = 0; b < c.batch; b++)
    for (int h = 0; h < c.heads; h++) {
      const int g = h / group;
      for (int i = 0; i < c.n_q; i++) {
        const int limit = c.causal ? MIN (c.n_k, c.q_pos + i + 1) : c.n_k;
        const uint16_t *q = c.q + b * c.q_batch + h * c.q_head + i * c.q_row;
        float mx = -INFINITY;
        for (int j = 0; j < limit; j++) {
          const uint16_t *k = c.k + b * c.k_batch + g * c.k_head + j * c.k_row;
          float dot = 0;
          for (int d = 0; d < hd; d++)
            dot += avq_half_to_float (q[d]) * avq_half_to_float (k[d]);
          s[j] = c.scale * dot;
          mx = MAX (mx, s[j]);
        }
        float sum = 0;
        std::fill (acc.begin (), acc.end (), 0.0f);
        for (int j = 0; j < limit; j++) {
          const float pj = expf (s[j] - mx);
          sum += pj;
          const uint16_t *v = c.v + b * c.v_batch + g * c.v_head + j * c.v_row;
          for (int d = 0; d < hd; d++)
            acc[d] += pj * avq_half_to_float (v[d]);
        }
        uint16_t *o = c.out + b * c.o_batch + h * c.o_head + i * c.o_row;
        for (int d = 0; d < hd; d++)
          o[d] = avq_float_to_half (acc[d] / sum);
      }
    }
  return cudaSuccess;
}
