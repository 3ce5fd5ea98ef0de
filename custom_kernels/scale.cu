// Multiply every element by a factor (on logits: a softmax temperature of 1 / factor).
extern "C" __global__ void scale(const float* src, float* dst, float factor, int count) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) dst[i] = src[i] * factor;
}
