/* Shared by the CPU stand-ins of the CUDA runtime, cuBLAS and the kernel
 * launchers (cuda-emu.cpp, cuda-emu-llama.cpp).
 *
 * Stream capture (CUDA graphs) is emulated the way the hardware behaves:
 * while a stream captures, work enqueued on it is not run but recorded,
 * with its arguments frozen as they were at the call (a lambda capturing by
 * value, like the kernel parameters a graph node stores); cudaGraphLaunch
 * runs the recording. A pass whose host code bakes a per-call value (a
 * position, a length) into launch arguments therefore replays stale values
 * here exactly as it would on a GPU, and a test comparing replayed steps
 * with the CPU catches it. Synchronising, allocating or freeing while a
 * capture is active fails as on a GPU. */
#pragma once
#include <functional>
#include <vector>
#include <cuda_runtime_api.h>

struct CUstream_st {
  bool capturing = false;
  std::vector<std::function<void ()>> recorded;
};

/* True while some stream captures (sync and allocation are then illegal). */
bool avq_emu_any_capture ();

/* In a stand-in whose first parameter is the stream: when the stream
 * captures, record the same call (arguments by value) and return success. */
#define AVQ_EMU_DEFER(stream, call)                                     \
  do {                                                                  \
    if ((stream) != nullptr && (stream)->capturing) {                   \
      (stream)->recorded.push_back ([=] { (void) (call); });            \
      return cudaSuccess;                                               \
    }                                                                   \
  } while (0)
