// Shared helpers for the example kernels. NVRTC compiles these without a CUDA toolkit (no cuda_fp16.h),
// so half precision is a 16-bit storage type converted with PTX instructions.
#pragma once

struct half_t { unsigned short bits; };

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(half_t v) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits)); return f; }

template <typename T> __device__ inline T from_float(float v);
template <> __device__ inline float from_float<float>(float v) { return v; }
template <> __device__ inline half_t from_float<half_t>(float v) {
  half_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v)); return h;
}

__device__ inline float neg_infinity() { return __int_as_float(0xff800000); }

// Block-wide reductions; blockDim.x must be a power of two and `scratch` hold blockDim.x floats.
__device__ inline float block_max(float v, float* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) scratch[threadIdx.x] = fmaxf(scratch[threadIdx.x], scratch[threadIdx.x + s]);
    __syncthreads();
  }
  float r = scratch[0];
  __syncthreads();
  return r;
}

__device__ inline float block_sum(float v, float* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
    __syncthreads();
  }
  float r = scratch[0];
  __syncthreads();
  return r;
}
