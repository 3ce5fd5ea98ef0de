// Block-wide top-K (K = TOPK) for the fast example kernels, one block per row: every thread keeps a
// sorted top-K of the elements it visits in registers (`topk_insert`), then K rounds of a block-wide
// arg-max by warp shuffles pop the best head (`topk_pop`). Ties keep the lower index first, as the numpy
// reference (a stable sort) does.
#pragma once
#include "fast.cuh"

__device__ inline bool topk_better(float v, int i, float w, int j) { return v > w || (v == w && i < j); }

__device__ inline void topk_init(float (&best)[TOPK], int (&where)[TOPK]) {
#pragma unroll
  for (int k = 0; k < TOPK; ++k) { best[k] = neg_infinity(); where[k] = NO_INDEX; }
}

__device__ inline void topk_insert(float (&best)[TOPK], int (&where)[TOPK], float v, int i) {
  if (!topk_better(v, i, best[TOPK - 1], where[TOPK - 1])) return;
  best[TOPK - 1] = v; where[TOPK - 1] = i;
#pragma unroll
  for (int k = TOPK - 1; k > 0; --k) {
    if (topk_better(best[k], where[k], best[k - 1], where[k - 1])) {
      float tv = best[k]; best[k] = best[k - 1]; best[k - 1] = tv;
      int ti = where[k]; where[k] = where[k - 1]; where[k - 1] = ti;
    }
  }
}

__device__ inline void topk_warp_argmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(FULL_MASK, v, o);
    int oi = __shfl_xor_sync(FULL_MASK, i, o);
    if (topk_better(ov, oi, v, i)) { v = ov; i = oi; }
  }
}

// f(value, index) for each element of `row` this thread visits (strided by blockDim.x), in increasing index
// order: float4 loads when cols % 4 == 0 and `base` (the tensor, whose rows then all start aligned) is
// 16-byte aligned, else scalar loads.
template <typename F>
__device__ inline void for_each_strided(const float* base, const float* row, int cols, F f) {
  if ((cols & 3) == 0 && ((size_t)base & 15) == 0) {
    for (int j = threadIdx.x; 4 * j < cols; j += blockDim.x) {
      float4 v = reinterpret_cast<const float4*>(row)[j];
      f(v.x, 4 * j); f(v.y, 4 * j + 1); f(v.z, 4 * j + 2); f(v.w, 4 * j + 3);
    }
  } else {
    for (int j = threadIdx.x; j < cols; j += blockDim.x) f(row[j], j);
  }
}

// The K best of the block, in order: emit(r, index, value) runs on one thread for r = 0..K-1 (index
// NO_INDEX when the row has fewer than K elements). Every thread of the block must call it.
template <typename Emit>
__device__ void topk_pop(float (&best)[TOPK], int (&where)[TOPK], Emit emit) {
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  for (int r = 0; r < TOPK; ++r) {
    float v = best[0];
    int i = where[0];
    topk_warp_argmax(v, i);
    if (lane == 0) { best_v[warp] = v; best_i[warp] = i; }
    __syncthreads();
    if (warp == 0) {
      v = lane < warps ? best_v[lane] : neg_infinity();
      i = lane < warps ? best_i[lane] : NO_INDEX;
      topk_warp_argmax(v, i);
      if (lane == 0) {
        emit(r, i, v);
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
