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
#include <atomic>
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

// Every lane of the warp offers v; each gets the value of lane `src`, or
// keeps its own when src is outside the warp (as the hardware shuffles do
// for down/up past the ends).
template <class T>
T
warp_exchange (T v, int src)
{
  static_assert (sizeof (T) <= sizeof (unsigned long long), "shuffle width");
  Warp &w = warps[warp];
  std::memcpy (&w.slot[lane], &v, sizeof v);
  w.bar->arrive_and_wait ();
  T r = v;
  if (src >= 0 && src < 32)
    std::memcpy (&r, &w.slot[src], sizeof r);
  w.bar->arrive_and_wait ();
  return r;
}

template <class T>
T
shfl_down (T v, int off)
{
  return warp_exchange (v, lane + off);
}

template <class T>
T
shfl_idx (T v, int src)
{
  return warp_exchange (v, src & 31);
}

template <class T>
T
shfl_xor (T v, int mask)
{
  return warp_exchange (v, (lane ^ mask) & 31);
}

template <class T>
T
shfl_up (T v, int off)
{
  return warp_exchange (v, lane - off);
}

// The lanes of the current warp (the last warp of a block may be short).
inline int
warp_lanes ()
{
  const int left = (int) block_dim.x - 32 * warp;
  return left < 32 ? left : 32;
}

// The lanes whose v equals this lane's.
template <class T>
unsigned
match_any (T v)
{
  static_assert (sizeof (T) <= sizeof (unsigned long long), "match width");
  Warp &w = warps[warp];
  w.slot[lane] = 0;
  std::memcpy (&w.slot[lane], &v, sizeof v);
  w.bar->arrive_and_wait ();
  unsigned m = 0;
  for (int l = 0; l < warp_lanes (); l++)
    if (w.slot[l] == w.slot[lane])
      m |= 1u << l;
  w.bar->arrive_and_wait ();
  return m;
}

inline unsigned
ballot (bool p)
{
  Warp &w = warps[warp];
  w.slot[lane] = p;
  w.bar->arrive_and_wait ();
  unsigned m = 0;
  for (int l = 0; l < warp_lanes (); l++)
    if (w.slot[l])
      m |= 1u << l;
  w.bar->arrive_and_wait ();
  return m;
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
#define __shfl_up_sync(mask, v, off) avq_emu::shfl_up ((v), (off))
#define __match_any_sync(mask, v) avq_emu::match_any ((v))
#define __ballot_sync(mask, p) avq_emu::ballot ((p))

static inline int
__popc (unsigned v)
{
  return __builtin_popcount (v);
}

static inline int
__popcll (unsigned long long v)
{
  return __builtin_popcountll (v);
}

static inline int
__ffs (int v)
{
  return __builtin_ffs (v);
}

static inline int
__clz (int v)
{
  return v == 0 ? 32 : __builtin_clz ((unsigned) v);
}

// Shared and global atomics between the block's threads (the old value, as
// CUDA's).
template <class T>
static inline T
atomicAdd (T *p, T v)
{
  return std::atomic_ref<T> (*p).fetch_add (v);
}
#define AVQ_LAUNCH(kernel, grid, block, stream) \
  ((void) (stream), avq_emu::launch ((kernel), avq_emu::to_dim (grid), (unsigned) (block)))

