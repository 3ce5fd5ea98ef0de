// Top-K (K = TOPK) of each row, one thread per row; ties keep the lower index first.
extern "C" __global__ void topk(const float* probs, int* index, float* value, int rows, int cols) {
  int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const float* p = probs + (long long)row * cols;
  float best[TOPK];
  int where[TOPK];
  for (int k = 0; k < TOPK; ++k) { best[k] = -1e30f; where[k] = -1; }
  for (int i = 0; i < cols; ++i) {
    float v = p[i];
    if (v <= best[TOPK - 1]) continue;
    int k = TOPK - 1;
    while (k > 0 && v > best[k - 1]) { best[k] = best[k - 1]; where[k] = where[k - 1]; --k; }
    best[k] = v; where[k] = i;
  }
  for (int k = 0; k < TOPK; ++k) { index[row * TOPK + k] = where[k]; value[row * TOPK + k] = best[k]; }
}
