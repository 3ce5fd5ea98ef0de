// uint8 NHWC image -> normalised NCHW tensor ((x / 255 - mean[c]) / std[c]), one thread per output element.
#include "orchestrator.cuh"

template <typename T>
__global__ void preprocess(const unsigned char* image, const float* mean, const float* std, T* out,
                           int n, int h, int w) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  long long plane = (long long)h * w;
  if (i >= n * 3 * plane) return;
  int x = (int)(i % w), y = (int)((i / w) % h), c = (int)((i / plane) % 3);
  long long b = i / (3 * plane);
  float v = image[((b * h + y) * w + x) * 3 + c] * (1.0f / 255.0f);
  out[i] = from_float<T>((v - mean[c]) / std[c]);
}
