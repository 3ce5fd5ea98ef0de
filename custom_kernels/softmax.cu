// Row-wise softmax, one block per row (blockDim.x a power of two, at most 256).
#include "orchestrator.cuh"

extern "C" __global__ void softmax(const float* logits, float* probs, int cols) {
  __shared__ float scratch[256];
  const float* x = logits + (long long)blockIdx.x * cols;
  float* y = probs + (long long)blockIdx.x * cols;
  float m = neg_infinity();
  for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, x[i]);
  m = block_max(m, scratch);
  float s = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) s += expf(x[i] - m);
  s = block_sum(s, scratch);
  for (int i = threadIdx.x; i < cols; i += blockDim.x) y[i] = expf(x[i] - m) / s;
}
