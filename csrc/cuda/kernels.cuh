// The multi-tensor CUDA kernels of one optimizer step. Device code only, free
// of the CUDA runtime API: optimizer_step.cu compiles it for the GPU, and
// emulation/emulated_step.cpp compiles the same source for the CPU (with
// emulation/cuda_emulation.h standing in for CUDA's built-ins), so CI runs
// these very kernels, under ThreadSanitizer too, on machines without a GPU.
//
// One launch per step and bucket: blocks stride over a chunk table of
// (tensor, first element) pairs, each chunk's elements updated with the
// tensor's scalars from a table written in the previous step; the last block
// to finish counts the updates, advances the step (when its bucket is the
// step's last) and writes the scalars of the next update, evaluating the
// groups' schedules once for the step.
#pragma once
#include <stdint.h>

#include <type_traits>

#include "fusedlr/block_update.h"
#include "fusedlr/step_common.h"
#include "fusedlr/update_math.h"

namespace fusedlr {
namespace kernels {

constexpr int kThreads = 256;  // threads per block on the GPU
// at least 4 blocks of 256 threads per SM: at most 64 registers per thread
constexpr int kMinBlocksPerSM = 4;

// Work of one update launch: chunk k covers elements [chunks[2k+1],
// chunks[2k+1] + chunk_size) of tensor chunks[2k] (clipped to its numel).
struct ChunkArgs {
  const int64_t* chunks;
  int64_t num_chunks;
  int64_t chunk_size;
  unsigned int* blocks_done;  // 0 between launches: the last block resets it
};

// N elements of T (16 bytes, or the grads, params or bf16 states beside 4 fp32
// params), moved with one 128-bit (or 64-bit) global load or store.
template <typename T, int N = 16 / sizeof(T)>
struct Pack {
  static constexpr int kSize = N;
  T v[N];
};

template <int kBytes> struct VectorOf;
template <> struct VectorOf<16> { using type = uint4; };
template <> struct VectorOf<8> { using type = uint2; };

// Element j of a momentum buffer pack (loaded only when the update reads it), for sgd_math.
template <typename T, int N, typename M, typename R>
struct BufferInPack {
  Pack<T, N>& pack;
  int j;
  const R& rounding;
  int64_t element;  // its index in the tensor
  __device__ __forceinline__ M load() const { return load_as_math(pack.v, j); }
  __device__ __forceinline__ void store(M value) { store_state_at(pack.v, j, value, rounding, 0, element); }
};

template <typename T, int N = 16 / sizeof(T)>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  using V = typename VectorOf<sizeof(T) * N>::type;
  union { V raw; Pack<T, N> pack; } u;
  u.raw = __ldcs(reinterpret_cast<const V*>(p));  // streamed: read once per step
  return u.pack;
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& value) {
  using V = typename VectorOf<sizeof(T) * N>::type;
  union { V raw; Pack<T, N> pack; } u;
  u.pack = value;
  __stcs(reinterpret_cast<V*>(p), u.raw);
}

// The pack of what the update reads and writes as the param: N values of T,
// or with master_weights="remainder" N fp32 masters joined from (and split
// into) N low halves and N bf16 params.
template <int N, typename T, typename G>
__device__ __forceinline__ Pack<T, N> load_param_pack(const T* param, const G*) {
  return load_pack<T, N>(param);
}
template <int N>
__device__ __forceinline__ Pack<float, N> load_param_pack(const bf16_low_bits* low, const bf16_bits* high) {
  Pack<bf16_low_bits, N> l = load_pack<bf16_low_bits, N>(low);
  Pack<bf16_bits, N> h = load_pack<bf16_bits, N>(high);
  Pack<float, N> p;
#pragma unroll
  for (int j = 0; j < N; ++j) p.v[j] = load_as_math(SplitMaster{h.v, l.v}, j);
  return p;
}
template <int N, typename T, typename G>
__device__ __forceinline__ void store_param_pack(T* param, G*, const Pack<T, N>& p) {
  store_pack(param, p);
}
template <int N>
__device__ __forceinline__ void store_param_pack(bf16_low_bits* low, bf16_bits* high, const Pack<float, N>& p) {
  Pack<bf16_low_bits, N> l;
  Pack<bf16_bits, N> h;
#pragma unroll
  for (int j = 0; j < N; ++j) store_from_math(SplitMaster{h.v, l.v}, j, p.v[j]);
  store_pack(low, l);
  store_pack(high, h);
}

// With master weights (G, the grads' dtype, is not T): the param pack written
// as the rounding of the updated master pack.
template <typename T, typename G, int N>
__device__ __forceinline__ void store_copy_pack(G* copy, const Pack<T, N>& master) {
  Pack<G, N> rounded;
#pragma unroll
  for (int j = 0; j < N; ++j) store_from_math(rounded.v, j, load_as_math(master.v, j));
  store_pack(copy, rounded);
}

// Elements [begin, begin + count) of one tensor, count <= the chunk size (so
// 32-bit offsets from pointers moved to `begin`: fewer registers in the
// loops): packs of 16 bytes of T when every pointer is 16-byte aligned (the
// chunk start is a multiple of the pack size), one element at a time for the
// rest. T: the param (its fp32 master with master weights, its master's low
// half with master_weights="remainder"); G: the grads, and the param written
// from (or holding half of) the master when G is not T; S: the states.
template <typename T, typename G, typename S, int kUpdate, bool kFlag>
__device__ __forceinline__ void update_chunk(const StepArgs& a, const int64_t* row, const double* scalars,
                                             int64_t begin, int count, typename math_type<T>::type factor) {
  using M = typename math_type<T>::type;
  constexpr bool kMaster = kWritesParamCopy<T, G>;
  using P = std::conditional_t<std::is_same<T, bf16_low_bits>::value, float, T>;  // the values of a param pack
  constexpr int kPack = Pack<P>::kSize;
  T* __restrict__ param = address_as<T>(row[kParamPtr]) + begin;
  const G* __restrict__ grad = address_as<const G>(row[kGradPtr]) + begin;
  S* __restrict__ s0 = address_as<S>(row[kState0Ptr]) + begin;
  S* __restrict__ s1 = address_as<S>(row[kState1Ptr]) + begin;
  S* __restrict__ s2 = address_as<S>(row[kState2Ptr]) + begin;
  G* __restrict__ copy = address_as<G>(row[kParamCopyPtr]) + begin;
  const bool aligned = ((row[kParamPtr] | row[kGradPtr] | row[kState0Ptr] | row[kState1Ptr] | row[kState2Ptr] |
                         row[kParamCopyPtr]) & 15) == 0;
  const int packed_end = aligned ? count / kPack * kPack : 0, end = count;
  const int first = (int)threadIdx.x * kPack, stride = (int)blockDim.x * kPack;
  const auto r = rounding_for<T, S>(a.stochastic_rounding, (row - a.tensors) / kTensorFields,
                                    address_as<const int64_t>(row[kStepPtr]), begin);
  using R = std::remove_const_t<decltype(r)>;
  if (kUpdate == kSgdUpdate) {
    const SgdScalars<M> s = sgd_scalars<M>(scalars);
    const bool reads_buffer = s.has_momentum && !s.first_update;
    for (int i = first; i < packed_end; i += stride) {
      Pack<P, kPack> p = load_param_pack<kPack>(param + i, copy + i);
      Pack<S, kPack> buf = {};
      const Pack<G, kPack> g = load_pack<G, kPack>(grad + i);
      if (reads_buffer) buf = load_pack<S, kPack>(s0 + i);
#pragma unroll
      for (int j = 0; j < kPack; ++j) {
        BufferInPack<S, kPack, M, R> buffer{buf, j, r, begin + i + j};
        store_from_math(p.v, j, sgd_math<kFlag>(s, load_as_math(g.v, j) * factor, load_as_math(p.v, j), buffer));
      }
      if (s.has_momentum) store_pack(s0 + i, buf);
      store_param_pack(param + i, copy + i, p);
      if constexpr (kMaster) store_copy_pack(copy + i, p);
    }
    for (int i = packed_end + (int)threadIdx.x; i < end; i += (int)blockDim.x) {
      sgd_element<kFlag>(s, factor, param_view(param, copy), grad, s0, i, r);
      if constexpr (kMaster) copy_out_element(param, copy, i);
    }
  } else {
    const AdamScalars<M> s = adam_scalars<M>(scalars);
    for (int i = first; i < packed_end; i += stride) {
      Pack<P, kPack> p = load_param_pack<kPack>(param + i, copy + i);
      Pack<S, kPack> m = load_pack<S, kPack>(s0 + i), v = load_pack<S, kPack>(s1 + i), vmax = {};
      const Pack<G, kPack> g = load_pack<G, kPack>(grad + i);
      if (kFlag) vmax = load_pack<S, kPack>(s2 + i);
#pragma unroll
      for (int j = 0; j < kPack; ++j) {
        M pj = load_as_math(p.v, j), mj = load_as_math(m.v, j), vj = load_as_math(v.v, j);
        M vmaxj = load_as_math(vmax.v, j);
        adam_math<kFlag>(s, load_as_math(g.v, j) * factor, pj, mj, vj, vmaxj);
        store_from_math(p.v, j, pj);
        store_state_at(m.v, j, mj, r, 0, begin + i + j);
        store_state_at(v.v, j, vj, r, 1, begin + i + j);
        store_state_at(vmax.v, j, vmaxj, r, 2, begin + i + j);
      }
      store_pack(s0 + i, m);
      store_pack(s1 + i, v);
      if (kFlag) store_pack(s2 + i, vmax);
      store_param_pack(param + i, copy + i, p);
      if constexpr (kMaster) store_copy_pack(copy + i, p);
    }
    for (int i = packed_end + (int)threadIdx.x; i < end; i += (int)blockDim.x) {
      adam_element<kFlag>(s, factor, param_view(param, copy), grad, s0, s1, s2, i, r);
      if constexpr (kMaster) copy_out_element(param, copy, i);
    }
  }
}

// Adam with 8-bit coded moments (block_update.h) on elements [begin, begin +
// count) of one tensor, begin a multiple of the state block: a state block per
// iteration of the block's threads (one element each on the GPU), the new
// moments kept in shared memory, the block's absmax values reduced there.
// Every thread runs every iteration (the barriers). G: the grads, and the
// params written from the fp32 masters when G is not float.
template <typename G>
__device__ __forceinline__ void update_chunk_coded(const StepArgs& a, const int64_t* row, const double* scalars,
                                                   int64_t begin, int count, float factor) {
  __shared__ float moments[2][kStateBlock];
  __shared__ float reduced[2][kThreads];
  const AdamScalars<float> s = adam_scalars<float>(scalars);
  float* __restrict__ master = address_as<float>(row[kParamPtr]) + begin;
  const G* __restrict__ grad = address_as<const G>(row[kGradPtr]) + begin;
  uint8_t* __restrict__ exp_avg = address_as<uint8_t>(row[kState0Ptr]) + begin;
  uint8_t* __restrict__ root = address_as<uint8_t>(row[kState1Ptr]) + begin;
  G* __restrict__ copy = address_as<G>(row[kParamCopyPtr]) + begin;
  float* __restrict__ m_absmax = address_as<float>(row[kStateScalesPtr]) + begin / kStateBlock;
  float* __restrict__ root_absmax = m_absmax + (row[kNumel] + kStateBlock - 1) / kStateBlock;
  const StateRounding seeds = state_rounding(true, (row - a.tensors) / kTensorFields,
                                             *address_as<const int64_t>(row[kStepPtr]), 0);
  const int t = (int)threadIdx.x, threads = (int)blockDim.x;  // a power of two, at most kThreads
  for (int first = 0, b = 0; first < count; first += kStateBlock, ++b) {
    const int n = count - first < kStateBlock ? count - first : kStateBlock;
    float m_max = 0.0f, root_max = 0.0f;
    for (int j = t; j < n; j += threads) {
      float m, r;
      adam_coded_element(s, factor, master + first, grad + first, exp_avg + first, root + first, m_absmax[b],
                         root_absmax[b], j, m, r);
      if constexpr (!std::is_same<G, float>::value) copy_out_element(master + first, copy + first, j);
      moments[0][j] = m;
      moments[1][j] = r;
      m_max = max_or_nan(m_max, fabsf(m));
      root_max = max_or_nan(root_max, fabsf(r));
    }
    reduced[0][t] = m_max;
    reduced[1][t] = root_max;
    __syncthreads();
    for (int width = threads / 2; width > 0; width /= 2) {
      if (t < width) {
        reduced[0][t] = max_or_nan(reduced[0][t], reduced[0][t + width]);
        reduced[1][t] = max_or_nan(reduced[1][t], reduced[1][t + width]);
      }
      __syncthreads();
    }
    const float new_m = reduced[0][0], new_root = reduced[1][0];
    for (int j = t; j < n; j += threads) {
      const int64_t element = begin + first + j;
      exp_avg[first + j] = encoded(moments[0][j], new_m, element_random(seeds.seeds[0], element));
      root[first + j] = encoded_root(moments[1][j], new_root, element_random(seeds.seeds[1], element));
    }
    __syncthreads();  // the absmax values, moments and reduction read before any is rewritten
    if (t == 0) {
      m_absmax[b] = new_m;
      root_absmax[b] = new_root;
    }
  }
}

// record_history out of line (inlined, its registers pushed the element
// loops of some update kernels into local memory).
__device__ __noinline__ void record_history_out_of_line(double* history, int64_t num_groups, const double* lrs,
                                                        int64_t step, bool applied, double grad_norm) {
  record_history(history, num_groups, lrs, step, applied, grad_norm);
}

// The end of a step (mode kEndStep, or the last block of an update) or the
// preparation of the next update (kPrepare), by the threads of one block:
// count the bucket's updates when `applied`, evaluate every group's values at
// the step the next update runs at, then write each tensor's scalars for it.
// The step's last bucket also advances the step, says whether it was applied
// and records it in the history ring (each group's lr in it: next_lr, until
// it is rewritten here).
__device__ __forceinline__ void end_step(const StepArgs& a, bool count, bool applied) {
  const int64_t step = *a.global_step;
  const bool advances = count && applied;
  const int64_t next = advances ? count_one_more(step) : step;
  if (count && a.last_bucket && a.history) {  // the same for the whole block
    if (threadIdx.x == 0)  // the lrs of the ending step: next_lr, until rewritten below
      record_history_out_of_line(a.history, a.num_groups, a.next_lr, step, applied, clipped_grad_norm(a));
    __syncthreads();
  }
  for (int64_t t = threadIdx.x; advances && t < a.num_tensors; t += blockDim.x) count_update(a, t);
  for (int64_t g = threadIdx.x; g < a.num_groups; g += blockDim.x) store_group_values(a, g, next);
  __syncthreads();  // every group's values (and every step and history row read above) before they are used or written
  for (int64_t t = threadIdx.x; t < a.num_tensors; t += blockDim.x) store_tensor_scalars(a, t);
  if (count && a.last_bucket && threadIdx.x == 0) {
    *a.global_step = next;
    *a.applied = applied;
  }
}

template <typename T, typename G, typename S, int kUpdate, bool kFlag>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM) update_kernel(StepArgs a, ChunkArgs c) {
  using M = typename math_type<T>::type;
  const bool applied = !step_is_skipped(a);
  if (applied) {
    const M factor = (M)grad_factor(a);
    for (int64_t k = blockIdx.x; k < c.num_chunks; k += gridDim.x) {
      const int64_t t = c.chunks[2 * k], begin = c.chunks[2 * k + 1];
      const int64_t* row = a.tensors + t * kTensorFields;
      const int64_t end = begin + c.chunk_size < row[kNumel] ? begin + c.chunk_size : row[kNumel];
      if constexpr (std::is_same<S, uint8_t>::value)
        update_chunk_coded<G>(a, row, a.scalars + t * kTensorScalarFields, begin, (int)(end - begin), factor);
      else
        update_chunk<T, G, S, kUpdate, kFlag>(a, row, a.scalars + t * kTensorScalarFields, begin, (int)(end - begin),
                                              factor);
    }
  }
  // The last block to finish ends the step: the fences make every block's
  // writes visible before it counts itself done, and to the last block after.
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(c.blocks_done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  end_step(a, true, applied);
  if (threadIdx.x == 0) *c.blocks_done = 0;  // ready for the next launch (or graph replay)
}

// One block: end_step outside an update launch.
__global__ void __launch_bounds__(kThreads) step_kernel(StepArgs a, int mode) {
  end_step(a, mode == kEndStep, !step_is_skipped(a));
}

__global__ void plateau_report_kernel(StepArgs a, const double* metric, double metric_value) {
  if (blockIdx.x == 0 && threadIdx.x == 0)
    report_plateau(a, const_cast<double*>(a.plateau), metric ? *metric : metric_value, a.next_lr);
}

// Values per write_column launch: 2 KB of kernel parameters, within the 4 KB limit.
constexpr int kColumnBatch = 256;
struct ColumnBatch { int64_t values[kColumnBatch]; };

__global__ void write_column_kernel(int64_t* column, int64_t stride, int64_t count, ColumnBatch batch) {
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) column[i * stride] = batch.values[i];
}

}  // namespace kernels
}  // namespace fusedlr
