// Warp-shuffle reductions for the fast example kernels (blockDim.x a multiple of 32, at most 1024).
#pragma once
#include "orchestrator.cuh"

#define FULL_MASK 0xffffffffu
#define NO_INDEX 0x7fffffff  // an empty top-k slot: loses every tie against a real element

__device__ inline float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

// Block reductions through one shared slot per warp; `partial` holds 32 floats. Every thread gets the result.
__device__ inline float block_max_fast(float v, float* partial) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = warp_max(lane < warps ? partial[lane] : neg_infinity());
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  v = partial[0];
  __syncthreads();  // `partial` may be reused at once
  return v;
}

__device__ inline float block_sum_fast(float v, float* partial) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = warp_sum(lane < warps ? partial[lane] : 0.f);
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  v = partial[0];
  __syncthreads();
  return v;
}
