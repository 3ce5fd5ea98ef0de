// Top-K (K = TOPK) of each row, one block per row (topk.cuh): each thread visits its strided elements in
// increasing index order (float4 loads when cols % 4 == 0), then the block pops the K best.
#include "topk.cuh"

extern "C" __global__ void topk_fast(const float* probs, int* index, float* value, int rows, int cols) {
  const int row = blockIdx.x;
  if (row >= rows) return;  // whole block: the grid has exactly `rows` blocks
  const float* p = probs + (long long)row * cols;
  float best[TOPK];
  int where[TOPK];
  topk_init(best, where);
  // Rows start 16-byte aligned when cols % 4 == 0 and the base is.
  if ((cols & 3) == 0 && ((size_t)probs & 15) == 0) {
    for (int j = threadIdx.x; 4 * j < cols; j += blockDim.x) {
      float4 f = reinterpret_cast<const float4*>(p)[j];
      topk_insert(best, where, f.x, 4 * j); topk_insert(best, where, f.y, 4 * j + 1);
      topk_insert(best, where, f.z, 4 * j + 2); topk_insert(best, where, f.w, 4 * j + 3);
    }
  } else {
    for (int j = threadIdx.x; j < cols; j += blockDim.x) topk_insert(best, where, p[j], j);
  }
  topk_pop(best, where, [&](int r, int i, float v) {
    const long long out = (long long)row * TOPK + r;
    index[out] = i == NO_INDEX ? -1 : i;  // fewer than TOPK columns: as the one-thread kernel, -1 and -1e30
    value[out] = i == NO_INDEX ? -1e30f : v;
  });
}
