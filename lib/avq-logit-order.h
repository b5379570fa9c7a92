/* The order in which a row of logits ranks its tokens, shared by the host
 * (lib/avq-sampling.c) and the CUDA kernels (avq-cuda-llama-kernels.cu) so
 * that both pick the same candidates: larger logit first; equal logits
 * (-0 equals +0) lowest id first; NaN ranks as -infinity. Plain C with
 * stdint only; __host__ __device__ under nvcc. */
#ifndef AVQ_LOGIT_ORDER_H
#define AVQ_LOGIT_ORDER_H
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define AVQ_LOGIT_ORDER_FN __host__ __device__ static inline
#else
#define AVQ_LOGIT_ORDER_FN static inline
#endif

/* A logit as an unsigned key that compares as the logit does (larger
 * logit, larger key), with NaN mapped to -infinity's key and -0 to +0's.
 * Every key is > 0, so 0 can pad. */
AVQ_LOGIT_ORDER_FN uint32_t
avq_logit_order_key (float l)
{
  uint32_t u;
  memcpy (&u, &l, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    u = 0xff800000u;   /* NaN -> -infinity */
  else if (u == 0x80000000u)
    u = 0;             /* -0 -> +0 */
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Key and id together: a larger rank comes first (larger logit; on equal
 * logits the lower id). */
AVQ_LOGIT_ORDER_FN uint64_t
avq_logit_rank (float l, int32_t id)
{
  return (uint64_t) avq_logit_order_key (l) << 32 |
         (uint64_t) (0xffffffffu - (uint32_t) id);
}

#endif
