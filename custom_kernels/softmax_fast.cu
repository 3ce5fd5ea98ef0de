// Row-wise softmax, one block per row, each logit read once and each probability written once: a thread
// keeps its ITEMS float4 (or 4 * ITEMS scalars) in registers between the max, the sum and the write.
// Rows longer than 4 * ITEMS * blockDim.x take a three-pass loop instead (correct, not single-pass).
#include "fast.cuh"

#ifndef ITEMS
#define ITEMS 4
#endif

__device__ void softmax_long_row(const float* x, float* y, int cols, float* partial) {
  float m = neg_infinity();
  for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, x[i]);
  m = block_max_fast(m, partial);
  float s = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) s += expf(x[i] - m);
  s = block_sum_fast(s, partial);
  for (int i = threadIdx.x; i < cols; i += blockDim.x) y[i] = expf(x[i] - m) / s;
}

extern "C" __global__ void softmax_fast(const float* logits, float* probs, int cols) {
  __shared__ float partial[32];
  const float* x = logits + (long long)blockIdx.x * cols;
  float* y = probs + (long long)blockIdx.x * cols;
  if (cols > 4 * ITEMS * (int)blockDim.x) { softmax_long_row(x, y, cols, partial); return; }
  // With cols % 4 == 0 and 16-byte aligned bases (the arena's are; a zero-copy input may not be), every
  // row starts 16-byte aligned.
  const bool vec = (cols & 3) == 0 && (((size_t)logits | (size_t)probs) & 15) == 0;
  float v[4 * ITEMS];
  float m = neg_infinity();
#pragma unroll
  for (int k = 0; k < ITEMS; ++k) {
    if (vec) {
      const int j = threadIdx.x + k * blockDim.x;  // float4 index
      float4 f = make_float4(neg_infinity(), neg_infinity(), neg_infinity(), neg_infinity());
      if (4 * j < cols) f = reinterpret_cast<const float4*>(x)[j];
      v[4 * k] = f.x; v[4 * k + 1] = f.y; v[4 * k + 2] = f.z; v[4 * k + 3] = f.w;
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = threadIdx.x + (4 * k + e) * blockDim.x;
        v[4 * k + e] = j < cols ? x[j] : neg_infinity();
      }
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) m = fmaxf(m, v[4 * k + e]);
  }
  m = block_max_fast(m, partial);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4 * ITEMS; ++i) {
    v[i] = v[i] == neg_infinity() ? 0.f : expf(v[i] - m);  // padding adds nothing (and no NaN when m = -inf)
    s += v[i];
  }
  s = block_sum_fast(s, partial);
#pragma unroll
  for (int k = 0; k < ITEMS; ++k) {
    if (vec) {
      const int j = threadIdx.x + k * blockDim.x;
      if (4 * j < cols)
        reinterpret_cast<float4*>(y)[j] = make_float4(v[4 * k] / s, v[4 * k + 1] / s, v[4 * k + 2] / s, v[4 * k + 3] / s);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = threadIdx.x + (4 * k + e) * blockDim.x;
        if (j < cols) y[j] = v[4 * k + e] / s;
      }
    }
  }
}
