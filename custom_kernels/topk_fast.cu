// Top-K (K = TOPK) of each row, one block per row: every thread keeps a sorted top-K of its strided
// elements in registers (float4 loads when cols % 4 == 0), then K rounds of a block-wide arg-max by warp
// shuffles pop the best head. Ties keep the lower index first, as the numpy reference (a stable sort) does.
#include "fast.cuh"

__device__ inline bool better(float v, int i, float w, int j) { return v > w || (v == w && i < j); }

__device__ inline void insert(float (&best)[TOPK], int (&where)[TOPK], float v, int i) {
  if (!better(v, i, best[TOPK - 1], where[TOPK - 1])) return;
  best[TOPK - 1] = v; where[TOPK - 1] = i;
#pragma unroll
  for (int k = TOPK - 1; k > 0; --k) {
    if (better(best[k], where[k], best[k - 1], where[k - 1])) {
      float tv = best[k]; best[k] = best[k - 1]; best[k - 1] = tv;
      int ti = where[k]; where[k] = where[k - 1]; where[k - 1] = ti;
    }
  }
}

__device__ inline void warp_argmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(FULL_MASK, v, o);
    int oi = __shfl_xor_sync(FULL_MASK, i, o);
    if (better(ov, oi, v, i)) { v = ov; i = oi; }
  }
}

extern "C" __global__ void topk_fast(const float* probs, int* index, float* value, int rows, int cols) {
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  const int row = blockIdx.x;
  if (row >= rows) return;  // whole block: the grid has exactly `rows` blocks
  const float* p = probs + (long long)row * cols;
  float best[TOPK];
  int where[TOPK];
#pragma unroll
  for (int k = 0; k < TOPK; ++k) { best[k] = neg_infinity(); where[k] = NO_INDEX; }
  // Rows start 16-byte aligned when cols % 4 == 0 and the base is; each thread visits its elements in
  // increasing index order either way (ties).
  if ((cols & 3) == 0 && ((size_t)probs & 15) == 0) {
    for (int j = threadIdx.x; 4 * j < cols; j += blockDim.x) {
      float4 f = reinterpret_cast<const float4*>(p)[j];
      insert(best, where, f.x, 4 * j); insert(best, where, f.y, 4 * j + 1);
      insert(best, where, f.z, 4 * j + 2); insert(best, where, f.w, 4 * j + 3);
    }
  } else {
    for (int j = threadIdx.x; j < cols; j += blockDim.x) insert(best, where, p[j], j);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  for (int r = 0; r < TOPK; ++r) {
    float v = best[0];
    int i = where[0];
    warp_argmax(v, i);
    if (lane == 0) { best_v[warp] = v; best_i[warp] = i; }
    __syncthreads();
    if (warp == 0) {
      v = lane < warps ? best_v[lane] : neg_infinity();
      i = lane < warps ? best_i[lane] : NO_INDEX;
      warp_argmax(v, i);
      if (lane == 0) {
        const long long out = (long long)row * TOPK + r;
        index[out] = i == NO_INDEX ? -1 : i;  // fewer than TOPK columns: as the one-thread kernel, -1 and -1e30
        value[out] = i == NO_INDEX ? -1e30f : v;
        best_i[0] = i;  // the winner, for every thread
      }
    }
    __syncthreads();
    const int winner = best_i[0];
    if (winner != NO_INDEX && where[0] == winner) {  // indices are unique: only the owner pops its head
#pragma unroll
      for (int k = 0; k < TOPK - 1; ++k) { best[k] = best[k + 1]; where[k] = where[k + 1]; }
      best[TOPK - 1] = neg_infinity(); where[TOPK - 1] = NO_INDEX;
    }
    __syncthreads();  // best_v/best_i are rewritten by the next round
  }
}
