// Device helpers shared by the CUDA backend's kernel files
// (avq-cuda-kernels.cu: the vision half; avq-cuda-llama-kernels.cu: the
// LLaMA decoder): the launch macro, fp16 views and block reductions.
#pragma once
#include <stdint.h>
#include <stddef.h>

#ifndef AVQ_KERNEL_HOST_EMU
#include <cuda_fp16.h>
#include <cuda_runtime.h>
// tests/cuda-kernels-host.cpp compiles the kernel files with a host shim for
// threads, barriers and warp shuffles instead, and its own AVQ_LAUNCH.
#define AVQ_LAUNCH(kernel, grid, block, stream) \
  kernel<<<(grid), (block), 0, (stream)>>>
#endif
#include <math.h>
#include <string.h>

namespace avq_cuk {

constexpr int kRowThreads = 256;

__host__ __device__ __forceinline__ __half *as_half (uint16_t *p)
{
  return reinterpret_cast<__half *> (p);
}

template <typename T>
__device__ __forceinline__ T warp_sum (T v)
{
  for (int off = 16; off > 0; off >>= 1)
    v += __shfl_down_sync (0xffffffffu, v, off);
  return v;
}

// Sum over the block; every thread gets the result. `shared` holds 32 T.
template <typename T>
__device__ T block_sum (T v, T *shared)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = warp_sum (v);
  __syncthreads ();  // `shared` may still be read from a previous call
  if (lane == 0)
    shared[warp] = v;
  __syncthreads ();
  T total = 0;
  for (int w = 0; w < warps; w++)
    total += shared[w];
  return total;
}

__device__ inline float block_max (float v, float *shared)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  for (int off = 16; off > 0; off >>= 1)
    v = fmaxf (v, __shfl_down_sync (0xffffffffu, v, off));
  __syncthreads ();
  if (lane == 0)
    shared[warp] = v;
  __syncthreads ();
  float m = shared[0];
  for (int w = 1; w < warps; w++)
    m = fmaxf (m, shared[w]);
  return m;
}

__device__ inline float block_min (float v, float *shared)
{
  return -block_max (-v, shared);
}

// v of lane + off, for any T made of 32-bit words (a small struct such as
// a best (value, index) pair): a word at a time, as the shuffles move them.
template <typename T>
__device__ __forceinline__ T shfl_down_words (T v, int off)
{
  static_assert (sizeof (T) % 4 == 0, "whole 32-bit words");
  unsigned w[sizeof (T) / 4];
  memcpy (w, &v, sizeof v);
  for (int i = 0; i < (int) (sizeof (T) / 4); i++)
    w[i] = __shfl_down_sync (0xffffffffu, w[i], off);
  memcpy (&v, w, sizeof v);
  return v;
}

// The block's values combined by merge (a, b) -> T: a tree within each
// warp, then the warps' results in warp order, so that a merge that is not
// symmetric in its ties (a best value whose ties go to the lowest index,
// say) still gives one answer for a launch shape. Every thread gets it;
// `shared` holds 32 T.
template <typename T, typename Merge>
__device__ T block_reduce (T v, T *shared, Merge merge)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  for (int off = 16; off > 0; off >>= 1) {
    const T o = shfl_down_words (v, off);
    if (lane + off < 32)
      v = merge (v, o);
  }
  __syncthreads ();  // `shared` may still be read from a previous call
  if (lane == 0)
    shared[warp] = v;
  __syncthreads ();
  T r = shared[0];
  for (int w = 1; w < warps; w++)
    r = merge (r, shared[w]);
  return r;
}

inline int grid_for (size_t n, int threads)
{
  size_t blocks = (n + threads - 1) / threads;
  return (int) (blocks > 65535 * 8 ? 65535 * 8 : (blocks == 0 ? 1 : blocks));
}

}  // namespace avq_cuk
