// The same kernel with a planted off-by-one: it reads the next element.
extern "C" __global__ void scale(const float* src, float* dst, float factor, int count) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) dst[i] = src[i + 1 < count ? i + 1 : i] * factor;
}
