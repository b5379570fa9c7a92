// Host shim for compiling the CUDA backend's .cu kernel files with the host
// C++ compiler (C++20), so that tests can run the real kernel code without a
// GPU: each block's threads are std::threads, __syncthreads a barrier over
// the block, warp shuffles a per-warp exchange between barriers, __shared__
// a static (blocks, over grid x, y and z, run one after another), launches
// go through AVQ_LAUNCH (lib/cuda/avq-cuda-device.cuh). Used by
// cuda-kernels-host.cpp and cuda-flash-host.cpp; tests/cuda-wmma-host.h adds
// the subset of nvcuda::wmma the tensor-core kernels use.
//
// This checks the kernels' arithmetic, indexing, reductions and tie rules;
// not what only hardware shows (memory model, occupancy, real fp16 units).
#pragma once
#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <tuple>
#include <vector>
#include <cuda_runtime_api.h>

extern "C" unsigned short avq_float_to_half (float f);
extern "C" float avq_half_to_float (unsigned short h);

#define AVQ_KERNEL_HOST_EMU 1
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define cudaGetLastError() (cudaSuccess)

struct __half {
  uint16_t x;
};

static inline __half
__float2half_rn (float f)
{
  __half h;
  h.x = avq_float_to_half (f);
  return h;
}

static inline float
__half2float (__half h)
{
  return avq_half_to_float (h.x);
}

namespace avq_emu {

struct Dim {
  unsigned x = 0, y = 1, z = 1;
};

inline thread_local Dim thread_idx, block_idx;
inline Dim block_dim, grid_dim;
inline thread_local int lane, warp;

struct Warp {
  std::barrier<> *bar;
  unsigned long long slot[32];
};
inline Warp *warps;
inline std::barrier<> *block_bar;

template <class T>
T
shfl_down (T v, int off)
{
  static_assert (sizeof (T) <= sizeof (unsigned long long), "shuffle width");
  Warp &w = warps[warp];
  std::memcpy (&w.slot[lane], &v, sizeof v);
  w.bar->arrive_and_wait ();
  T r = v;
  if (lane + off < 32)
    std::memcpy (&r, &w.slot[lane + off], sizeof r);
  w.bar->arrive_and_wait ();
  return r;
}

template <class T>
T
shfl_idx (T v, int src)
{
  static_assert (sizeof (T) <= sizeof (unsigned long long), "shuffle width");
  Warp &w = warps[warp];
  std::memcpy (&w.slot[lane], &v, sizeof v);
  w.bar->arrive_and_wait ();
  T r;
  std::memcpy (&r, &w.slot[src & 31], sizeof r);
  w.bar->arrive_and_wait ();
  return r;
}

template <class T>
T
shfl_xor (T v, int mask)
{
  static_assert (sizeof (T) <= sizeof (unsigned long long), "shuffle width");
  Warp &w = warps[warp];
  std::memcpy (&w.slot[lane], &v, sizeof v);
  w.bar->arrive_and_wait ();
  T r;
  std::memcpy (&r, &w.slot[(lane ^ mask) & 31], sizeof r);
  w.bar->arrive_and_wait ();
  return r;
}

inline Dim
to_dim (unsigned x)
{
  Dim d;
  d.x = x;
  return d;
}

inline Dim
to_dim (int x)
{
  return to_dim ((unsigned) x);
}

inline Dim
to_dim (const dim3 &g)
{
  Dim d;
  d.x = g.x;
  d.y = g.y;
  d.z = g.z;
  return d;
}

template <class... P>
struct Launch {
  void (*kernel) (P...);
  Dim grid;
  unsigned block;

  template <class... A>
  void
  operator() (A... a)
  {
    std::tuple<P...> args (static_cast<P> (a)...);
    block_dim.x = block;
    grid_dim = grid;
    std::barrier<> bb (block);
    block_bar = &bb;
    const unsigned nw = (block + 31) / 32;
    std::vector<std::unique_ptr<std::barrier<>>> wb;
    std::vector<Warp> ws (nw);
    for (unsigned i = 0; i < nw; i++) {
      wb.push_back (std::make_unique<std::barrier<>> (
          (std::ptrdiff_t) (block - 32 * i < 32 ? block - 32 * i : 32)));
      ws[i].bar = wb[i].get ();
    }
    warps = ws.data ();
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; t++)
      threads.emplace_back ([&, t] {
        thread_idx.x = t;
        lane = (int) (t % 32);
        warp = (int) (t / 32);
        for (unsigned bz = 0; bz < grid.z; bz++)
          for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
              block_idx.x = bx;
              block_idx.y = by;
              block_idx.z = bz;
              std::apply (kernel, args);
              bb.arrive_and_wait ();
            }
      });
    for (auto &th : threads)
      th.join ();
  }
};

template <class... P>
Launch<P...>
launch (void (*kernel) (P...), Dim grid, unsigned block)
{
  return Launch<P...>{ kernel, grid, block };
}

}  // namespace avq_emu

#define threadIdx avq_emu::thread_idx
#define blockIdx avq_emu::block_idx
#define blockDim avq_emu::block_dim
#define gridDim avq_emu::grid_dim
#define __syncthreads() avq_emu::block_bar->arrive_and_wait ()
#define __shfl_down_sync(mask, v, off) avq_emu::shfl_down ((v), (off))
#define __shfl_sync(mask, v, src) avq_emu::shfl_idx ((v), (src))
#define __shfl_xor_sync(mask, v, m) avq_emu::shfl_xor ((v), (m))
#define __syncwarp() avq_emu::warps[avq_emu::warp].bar->arrive_and_wait ()
#define AVQ_LAUNCH(kernel, grid, block, stream) \
  ((void) (stream), avq_emu::launch ((kernel), avq_emu::to_dim (grid), (unsigned) (block)))

