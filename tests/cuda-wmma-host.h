// The subset of nvcuda::wmma (<mma.h>) that lib/cuda/avq-cuda-flash.cu
// uses, for the host shim of cuda-host-shim.h (include that first): 16x16x16
// fragments of fp16 (matrix_a, matrix_b, row or column major) and of fp32
// accumulators; fill_fragment, load_matrix_sync, store_matrix_sync,
// mma_sync.
//
// Warp-collective semantics on top of the shim's per-warp barrier. Every
// lane's fragment holds the whole 16x16 tile (num_elements = 256), so that
// element-wise code (`for i < num_elements: f.x[i] ...`) does the same on
// every lane and the copies stay equal. load_matrix_sync and
// store_matrix_sync first wait for the whole warp (as the hardware's do);
// a load then reads the tile into each lane's copy, a store writes each
// element from exactly one lane (element e from lane e % 32), so concurrent
// lanes never write the same address. What a store wrote is visible to other
// lanes only after a __syncwarp / __syncthreads, as on the GPU. mma_sync is
// register-only: each lane computes d = a b + c in fp32 (products of fp16
// operands are exact in fp32) on its own copies.
//
// The order of x[] is deliberately not row-major: element i of a fragment
// is tile entry kPos[i] (a fixed permutation), so a kernel that assumed a
// layout of the fragment internals (which CUDA leaves unspecified) would
// fail here rather than only on hardware. Pointer and ldm requirements of
// the real API (256-bit aligned pointers, ldm a multiple of 8 fp16 or 4
// fp32 elements) are checked and abort.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

namespace nvcuda {
namespace wmma {

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;

enum layout_t { mem_row_major, mem_col_major };

namespace emu {

constexpr int kElems = 256;

// x[] index i holds tile entry (kPos[i] / 16, kPos[i] % 16); 97 is odd, so
// i -> 97 i + 13 mod 256 is a bijection.
constexpr int
pos (int i)
{
  return (i * 97 + 13) % kElems;
}

inline float
h2f (__half h)
{
  static const struct Table {
    float v[65536];
    Table ()
    {
      for (unsigned i = 0; i < 65536; i++)
        v[i] = avq_half_to_float ((unsigned short) i);
    }
  } table;
  return table.v[h.x];
}

inline void
check (const void *p, unsigned ldm, unsigned elem_size, const char *what)
{
  if (((uintptr_t) p % 32) != 0 || (ldm * elem_size) % 16 != 0 || ldm < 16) {
    std::fprintf (stderr, "wmma %s: pointer %p or ldm %u violates the API's "
                  "alignment rules\n", what, p, ldm);
    std::abort ();
  }
}

inline void
warp_wait ()
{
  avq_emu::warps[avq_emu::warp].bar->arrive_and_wait ();
}

// Address offset of tile entry (r, c) in memory.
inline size_t
offset (int r, int c, unsigned ldm, bool row_major)
{
  return row_major ? (size_t) r * ldm + c : (size_t) c * ldm + r;
}

}  // namespace emu

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert (M == 16 && N == 16 && K == 16, "only 16x16x16 is emulated");
  enum { num_elements = emu::kElems };
  T x[emu::kElems];
};

template <class Use, class T, class Layout, class V>
inline void
fill_fragment (fragment<Use, 16, 16, 16, T, Layout> &f, const V &v)
{
  for (int i = 0; i < emu::kElems; i++)
    f.x[i] = v;
}

template <class Use, class Layout>
inline void
load_matrix_sync (fragment<Use, 16, 16, 16, __half, Layout> &f,
                  const __half *p, unsigned ldm)
{
  static_assert (std::is_same<Use, matrix_a>::value || std::is_same<Use, matrix_b>::value,
                 "fp16 operand fragments only");
  emu::check (p, ldm, 2, "load_matrix_sync");
  emu::warp_wait ();
  const bool rm = std::is_same<Layout, row_major>::value;
  for (int i = 0; i < emu::kElems; i++) {
    int e = emu::pos (i);
    f.x[i] = p[emu::offset (e / 16, e % 16, ldm, rm)];
  }
}

inline void
load_matrix_sync (fragment<accumulator, 16, 16, 16, float> &f, const float *p,
                  unsigned ldm, layout_t layout)
{
  emu::check (p, ldm, 4, "load_matrix_sync");
  emu::warp_wait ();
  for (int i = 0; i < emu::kElems; i++) {
    int e = emu::pos (i);
    f.x[i] = p[emu::offset (e / 16, e % 16, ldm, layout == mem_row_major)];
  }
}

inline void
store_matrix_sync (float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                   unsigned ldm, layout_t layout)
{
  emu::check (p, ldm, 4, "store_matrix_sync");
  emu::warp_wait ();
  for (int i = 0; i < emu::kElems; i++) {
    int e = emu::pos (i);
    if (e % 32 == avq_emu::lane)
      p[emu::offset (e / 16, e % 16, ldm, layout == mem_row_major)] = f.x[i];
  }
}

// d = a b + c; d may be c.
template <class LA, class LB>
inline void
mma_sync (fragment<accumulator, 16, 16, 16, float> &d,
          const fragment<matrix_a, 16, 16, 16, __half, LA> &a,
          const fragment<matrix_b, 16, 16, 16, __half, LB> &b,
          const fragment<accumulator, 16, 16, 16, float> &c)
{
  float A[16][16], B[16][16], C[16][16];
  for (int i = 0; i < emu::kElems; i++) {
    int e = emu::pos (i);
    A[e / 16][e % 16] = emu::h2f (a.x[i]);
    B[e / 16][e % 16] = emu::h2f (b.x[i]);
    C[e / 16][e % 16] = c.x[i];
  }
  for (int r = 0; r < 16; r++)
    for (int k = 0; k < 16; k++) {
      const float ark = A[r][k];
      for (int col = 0; col < 16; col++)
        C[r][col] += ark * B[k][col];
    }
  for (int i = 0; i < emu::kElems; i++) {
    int e = emu::pos (i);
    d.x[i] = C[e / 16][e % 16];
  }
}

}  // namespace wmma
}  // namespace nvcuda
