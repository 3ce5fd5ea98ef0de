// Image + trimap -> 8-channel network input: normalised RGB, one-hot trimap (background, unknown,
// foreground) and two zero channels, so the first convolution has a tensor-core friendly channel count.
extern "C" __global__ void pack_rgbt(const unsigned char* image, const unsigned char* trimap, float* x,
                                     int n, int h, int w) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  long long plane = (long long)h * w;
  if (i >= n * 8 * plane) return;
  long long pixel = i % plane;
  int c = (int)((i / plane) % 8);
  long long b = i / (8 * plane);
  float v = 0.f;
  if (c < 3) {
    v = image[(b * plane + pixel) * 3 + c] * (2.0f / 255.0f) - 1.0f;
  } else if (c < 6) {
    unsigned char t = trimap[b * plane + pixel];
    int cls = t < 85 ? 0 : (t > 170 ? 2 : 1);
    v = (c - 3 == cls) ? 1.f : 0.f;
  }
  x[i] = v;
}
