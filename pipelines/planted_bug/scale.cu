// y = x * factor, one thread per element.
extern "C" __global__ void scale(const float* src, float* dst, float factor, int count) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) dst[i] = src[i] * factor;
}
