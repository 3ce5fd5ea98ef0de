// Alpha from the network, forced to 0 in the trimap's background and 1 in its foreground.
extern "C" __global__ void trimap_clamp(const float* alpha, const unsigned char* trimap, float* out, long long count) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= count) return;
  unsigned char t = trimap[i];
  out[i] = t < 85 ? 0.f : (t > 170 ? 1.f : alpha[i]);
}
