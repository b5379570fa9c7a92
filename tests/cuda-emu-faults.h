/* Fault injection into the CUDA runtime stand-ins (cuda-emu.cpp), for the
 * error paths that a GPU rarely shows: from C tests built against the
 * emulation (AVQ_CUDA_EMULATED). */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

/* The device or pinned allocation (cudaMalloc, cudaMallocHost) after `n`
 * more successful ones fails with cudaErrorMemoryAllocation, once; n < 0
 * turns injection off. Returns the allocations made since the last call,
 * so that a test can learn how many a call makes. */
int avq_emu_fail_allocation_after (int n);

#ifdef __cplusplus
}
#endif
