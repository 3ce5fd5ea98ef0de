// Top-K (K = TOPK) of each row, one block per row (topk.cuh): each thread visits its strided elements in
// increasing index order (float4 loads where aligned), then the block pops the K best.
#include "topk.cuh"

extern "C" __global__ void topk_fast(const float* probs, int* index, float* value, int rows, int cols) {
  const int row = blockIdx.x;
  if (row >= rows) return;  // whole block: the grid has exactly `rows` blocks
  const float* p = probs + (long long)row * cols;
  float best[TOPK];
  int where[TOPK];
  topk_init(best, where);
  for_each_strided(probs, p, cols, [&](float v, int j) { topk_insert(best, where, v, j); });
  topk_pop(best, where, [&](int r, int i, float v) {
    const long long out = (long long)row * TOPK + r;
    index[out] = i == NO_INDEX ? -1 : i;  // fewer than TOPK columns: as the one-thread kernel, -1 and -1e30
    value[out] = i == NO_INDEX ? -1e30f : v;
  });
}
