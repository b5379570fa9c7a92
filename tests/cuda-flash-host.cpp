// lib/cuda/avq-cuda-flash.cu (the tensor-core flash attention) compiled by
// the host C++ compiler through the thread shim of cuda-host-shim.h and the
// wmma emulation of cuda-wmma-host.h, so that test-cuda-flash runs the real
// kernel code without a GPU. The launchers are renamed kern_flash_* so that
// they never clash with the nvcc-built ones of libavq.
#include "cuda-host-shim.h"
#include "cuda-wmma-host.h"

#define avq_cuk_flash_attention kern_flash_attention
#define avq_cuk_flash_attention_qkv kern_flash_attention_qkv
#define avq_cuk_flash_attention_cache kern_flash_attention_cache

#include "../lib/cuda/avq-cuda-flash.cu"
