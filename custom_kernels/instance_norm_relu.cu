// Instance normalisation (per sample and channel, over H x W) followed by ReLU; one block per plane.
#include "orchestrator.cuh"

extern "C" __global__ void instance_norm_relu(const float* x, float* y, int plane, float eps) {
  __shared__ float scratch[256];
  const float* src = x + (long long)blockIdx.x * plane;
  float* dst = y + (long long)blockIdx.x * plane;
  float s = 0.f;
  for (int i = threadIdx.x; i < plane; i += blockDim.x) s += src[i];
  float mean = block_sum(s, scratch) / plane;
  float q = 0.f;
  for (int i = threadIdx.x; i < plane; i += blockDim.x) { float d = src[i] - mean; q += d * d; }
  float inv_std = rsqrtf(block_sum(q, scratch) / plane + eps);
  for (int i = threadIdx.x; i < plane; i += blockDim.x) dst[i] = fmaxf((src[i] - mean) * inv_std, 0.f);
}
