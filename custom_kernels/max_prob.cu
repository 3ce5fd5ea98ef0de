// Confidence of a classifier: the lowest, over the batch, of each row's top-1 softmax probability,
// computed from logits as 1 / sum(exp(x - max)). One block of 256 threads.
#include "orchestrator.cuh"

extern "C" __global__ void max_prob(const float* logits, float* confidence, int rows, int cols) {
  __shared__ float scratch[256];
  float lowest = 1.f;
  for (int r = 0; r < rows; ++r) {
    const float* x = logits + (long long)r * cols;
    float m = neg_infinity();
    for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, x[i]);
    m = block_max(m, scratch);
    float s = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s += expf(x[i] - m);
    s = block_sum(s, scratch);
    lowest = fminf(lowest, 1.f / s);
  }
  if (threadIdx.x == 0) confidence[0] = lowest;
}
