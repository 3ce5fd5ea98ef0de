// Softmax of each row and its top-K (K = TOPK) in one kernel, one block per row: each logit is read once,
// and a thread keeps a running max and sum of exponentials (online softmax) beside a top-K of logits
// (exp is monotonic: the top-K logits are the top-K probabilities). The block combines the sums by warp
// shuffles and writes only the K probabilities. Saves a kernel and the [R, C] probabilities tensor.
#include "topk.cuh"

__device__ inline void visit(float (&best)[TOPK], int (&where)[TOPK], float& m, float& s, float v, int j) {
  topk_insert(best, where, v, j);
  if (v > m) {
    s = s * expf(m - v) + 1.f;  // m = -inf at first: 0 * 0 + 1
    m = v;
  } else if (v != neg_infinity()) {
    s += expf(v - m);
  }
}

extern "C" __global__ void softmax_topk_fast(const float* logits, int* index, float* value, int rows, int cols) {
  __shared__ float partial[32];
  const int row = blockIdx.x;
  if (row >= rows) return;  // whole block: the grid has exactly `rows` blocks
  const float* x = logits + (long long)row * cols;
  float best[TOPK];
  int where[TOPK];
  topk_init(best, where);
  float m = neg_infinity(), s = 0.f;
  for_each_strided(logits, x, cols, [&](float v, int j) { visit(best, where, m, s, v, j); });
  const float row_max = block_max_fast(m, partial);
  const float sum = block_sum_fast(m == neg_infinity() ? 0.f : s * expf(m - row_max), partial);
  topk_pop(best, where, [&](int r, int i, float v) {
    const long long out = (long long)row * TOPK + r;
    index[out] = i == NO_INDEX ? -1 : i;  // fewer than TOPK columns: as topk_fast, -1 and -1e30
    value[out] = i == NO_INDEX ? -1e30f : expf(v - row_max) / sum;
  });
}
