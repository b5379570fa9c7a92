// Configure-time trial compile (meson.build): nvcc, its host compiler and
// the requested architectures work together. Not part of the library.
__global__ void avq_cuda_probe_kernel (float *x) { x[threadIdx.x] *= 2.0f; }
