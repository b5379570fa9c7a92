// lib/cuda/avq-cuda-kernels.cu and avq-cuda-llama-kernels.cu compiled by the
// host C++ compiler through the shim of cuda-host-shim.h (block threads as
// std::threads, barriers, emulated warp shuffles), so that test-cuda-kernels
// can run the real kernel code without a GPU. Launchers are renamed kern_*
// so that they can sit next to the C reference implementations of
// cuda-emu.cpp.
#include "cuda-host-shim.h"

#define avq_cuk_im2col kern_im2col
#define avq_cuk_embed_init kern_embed_init
#define avq_cuk_layernorm kern_layernorm
#define avq_cuk_bias_act kern_bias_act
#define avq_cuk_softmax_rows kern_softmax_rows
#define avq_cuk_dlp kern_dlp
#define avq_cuk_argmin kern_argmin
#define avq_cuk_side_encode kern_side_encode
#define avq_cuk_gather kern_gather
#define avq_cuk_side_residual kern_side_residual
#define avq_cuk_derive_residual kern_derive_residual
#define avq_cuk_to_half kern_to_half
#define avq_cuk_attention kern_attention
#define avq_cuk_rmsnorm kern_rmsnorm
#define avq_cuk_rope_kv kern_rope_kv
#define avq_cuk_silu_mul kern_silu_mul
#define avq_cuk_embed_rows kern_embed_rows
#define avq_cuk_add kern_add
#define avq_cuk_causal_softmax kern_causal_softmax
#define avq_cuk_decode_attention kern_decode_attention
#define avq_cuk_argmax kern_argmax
#define avq_cuk_top_candidates kern_top_candidates
#define avq_cuk_fill_random kern_fill_random

#include "../lib/cuda/avq-cuda-kernels.cu"
#include "../lib/cuda/avq-cuda-llama-kernels.cu"
