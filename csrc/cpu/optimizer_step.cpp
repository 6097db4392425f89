#include "optimizer_step.h"

#include <stdexcept>
#include <type_traits>
#include <vector>

#include "cpu/half_conversions.h"
#include "fusedlr/block_update.h"
#include "fusedlr/step_common.h"
#include "fusedlr/update_math.h"

namespace fusedlr {
namespace cpu {
namespace {

// The lambdas of the element loops, inlined like the functions they call: a
// call left in a loop keeps it from vectorising.
#define FUSEDLR_INLINED __attribute__((always_inline))

// Elements per work item: large enough to amortise the per-chunk scalars,
// small enough to balance threads over a few big tensors.
constexpr int64_t kChunk = 1 << 15;

struct Chunk { int64_t tensor, begin, end; };

// The arrays an element update reads and writes: the param (or what the maths
// updates: its fp32 master, a SplitMaster), the grads and up to three states.
template <typename P, typename G, typename S>
struct ElementArrays {
  P param;
  const G* grad;
  S* s0;
  S* s1;
  S* s2;
};

// The element update of one chunk with the states rounded by `r`, handed to
// `run_elements` as a body(arrays, i) for each mode: run_elements decides
// where the elements live (memory, or fp32 tiles) and loops over them. Always
// inlined, so each ISA variant below compiles the loops for its own vectors.
template <typename M, typename R, typename Run>
__attribute__((always_inline)) inline void update_elements(const StepArgs& a, const double* scalars, double factor,
                                                           const R& r, const Run& run_elements) {
  const M f = (M)factor;
  if (element_update_of(a.kind) == kSgdUpdate) {
    const SgdScalars<M> s = sgd_scalars<M>(scalars);
    // SGD's modes as constants in each loop: free of branches, it vectorises
    // (GCC stops unswitching the invariant branches of the larger fp16 loops)
    auto loop = [&](auto nesterov, auto momentum, auto first_update) FUSEDLR_INLINED {
      SgdScalars<M> fixed = s;
      fixed.has_momentum = momentum;
      fixed.first_update = first_update;
      run_elements([&](const auto& x, int64_t i) FUSEDLR_INLINED {
        sgd_element<nesterov()>(fixed, f, x.param, x.grad, x.s0, i, r);
      });
    };
    auto with_momentum = [&](auto nesterov) FUSEDLR_INLINED {
      if (!s.has_momentum) loop(nesterov, std::false_type(), std::false_type());
      else if (s.first_update) loop(nesterov, std::true_type(), std::true_type());
      else loop(nesterov, std::true_type(), std::false_type());
    };
    if (a.nesterov)
      with_momentum(std::true_type());
    else
      with_momentum(std::false_type());
  } else {
    const AdamScalars<M> s = adam_scalars<M>(scalars);
    auto adam = [&](auto amsgrad) FUSEDLR_INLINED {
      run_elements([&](const auto& x, int64_t i) FUSEDLR_INLINED {
        adam_element<amsgrad()>(s, f, x.param, x.grad, x.s0, x.s1, x.s2, i, r);
      });
    };
    if (a.amsgrad)
      adam(std::true_type());
    else
      adam(std::false_type());
  }
}

// T: params (their fp32 masters with master weights, or the masters' low
// halves with master_weights="remainder"); G: grads (and the params written
// from masters); S: states. The element loops run on memory.
template <typename T, typename G = T, typename S = T>
__attribute__((always_inline)) inline void update_range(const StepArgs& a, const std::vector<GroupValues>& values,
                                                        double factor, const Chunk& c) {
  using M = typename math_type<T>::type;
  const int64_t* row = a.tensors + c.tensor * kTensorFields;
  const int64_t g = row[kGroup];
  double scalars[kTensorScalarFields];
  tensor_scalars(a.kind, a.groups + g * kGroupFields, values[g], *address_as<int64_t>(row[kStepPtr]), scalars);
  const auto arrays = ElementArrays<decltype(param_view(address_as<T>(0), address_as<G>(0))), G, S>{
      param_view(address_as<T>(row[kParamPtr]), address_as<G>(row[kParamCopyPtr])),
      address_as<const G>(row[kGradPtr]), address_as<S>(row[kState0Ptr]), address_as<S>(row[kState1Ptr]),
      address_as<S>(row[kState2Ptr])};
  auto in_memory = [&](const auto& body) FUSEDLR_INLINED {
    for (int64_t i = c.begin; i < c.end; ++i) body(arrays, i);
  };
  const auto r = rounding_for<T, S>(a.stochastic_rounding, c.tensor, address_as<const int64_t>(row[kStepPtr]), 0);
  if (std::is_same<decltype(r), const StateRounding>::value && !a.stochastic_rounding)
    update_elements<M>(a, scalars, factor, NearestRounding{0}, in_memory);  // no seeds: vectorised loops
  else
    update_elements<M>(a, scalars, factor, r, in_memory);
  if constexpr (kWritesParamCopy<T, G>) {  // master weights: the params become the fp32 masters' rounding
    const T* master = address_as<const T>(row[kParamPtr]);
    narrow(master + c.begin, address_as<G>(row[kParamCopyPtr]) + c.begin, c.end - c.begin);
  }
}

// A single-dtype fp16 or bf16 chunk, updated by the fp32 element loops in
// tiles: each tile of params and states widened to fp32 on the stack (grads
// too), updated, narrowed back. The results are those of the element loops on
// the 16-bit type (the same fp32 maths, rounded to nearest even once per
// store), but the conversions run as plain loops (fp16 with F16C instructions
// where the CPU has them) instead of inside the update's loop, where the
// software fp16 conversions were 2-4x slower and the bf16 ones' shuffles left
// the loop compute-bound. The loop over tiles runs inside each mode's loop and
// a whole tile's loop has a constant length over distinct stack arrays, so a
// tile costs no dispatch, alias checks or remainder loops.
constexpr int64_t kTile = 128;

template <typename H>
__attribute__((always_inline)) inline void update_range_16_bit_in_fp32_tiles(const StepArgs& a,
                                                                             const std::vector<GroupValues>& values,
                                                                             double factor, const Chunk& c) {
  const int64_t* row = a.tensors + c.tensor * kTensorFields;
  const int64_t g = row[kGroup];
  double scalars[kTensorScalarFields];
  tensor_scalars(a.kind, a.groups + g * kGroupFields, values[g], *address_as<int64_t>(row[kStepPtr]), scalars);
  constexpr int kArrays[] = {kParamPtr, kGradPtr, kState0Ptr, kState1Ptr, kState2Ptr};
  alignas(64) float tiles[5][kTile];
  const ElementArrays<float*, float, float> tile_arrays{tiles[0], tiles[1], tiles[2], tiles[3], tiles[4]};
  auto in_tiles = [&](const auto& body) FUSEDLR_INLINED {
    // a tile of `count` elements from `begin`: a constant for whole tiles, so
    // every loop of theirs has a constant length
    auto tile = [&](int64_t begin, auto count) FUSEDLR_INLINED {
      for (int k = 0; k < 5; ++k)
        if (row[kArrays[k]]) widen(address_as<const H>(row[kArrays[k]]) + begin, tiles[k], count);
      for (int64_t i = 0; i < count; ++i) body(tile_arrays, i);
      for (int k = 0; k < 5; ++k)
        if (k != 1 && row[kArrays[k]]) narrow(tiles[k], address_as<H>(row[kArrays[k]]) + begin, count);
    };
    int64_t begin = c.begin;
    for (; begin + kTile <= c.end; begin += kTile) tile(begin, std::integral_constant<int64_t, kTile>());
    if (begin < c.end) tile(begin, c.end - begin);
  };
  update_elements<float>(a, scalars, factor, NearestRounding{0}, in_tiles);
}

// Adam with 8-bit coded moments (block_update.h), a block at a time, in
// passes that vectorise: the moments decoded onto the stack, the elements'
// updates (adam_coded_element's maths), the block's absmax values, the codes.
// Chunks start at multiples of the block.
template <typename G>
__attribute__((always_inline)) inline void update_range_coded(const StepArgs& a, const std::vector<GroupValues>& values,
                                                              double factor, const Chunk& c) {
  static_assert(kChunk % kStateBlock == 0, "a chunk holds whole blocks");
  const int64_t* row = a.tensors + c.tensor * kTensorFields;
  const int64_t g = row[kGroup];
  double scalars[kTensorScalarFields];
  tensor_scalars(a.kind, a.groups + g * kGroupFields, values[g], *address_as<int64_t>(row[kStepPtr]), scalars);
  const AdamScalars<float> s = adam_scalars<float>(scalars);
  const float f = (float)factor;
  float* __restrict__ master = address_as<float>(row[kParamPtr]);
  const G* __restrict__ grad = address_as<const G>(row[kGradPtr]);
  uint8_t* __restrict__ exp_avg = address_as<uint8_t>(row[kState0Ptr]);
  uint8_t* __restrict__ root = address_as<uint8_t>(row[kState1Ptr]);
  float* __restrict__ m_absmax = address_as<float>(row[kStateScalesPtr]);
  float* __restrict__ root_absmax = m_absmax + (row[kNumel] + kStateBlock - 1) / kStateBlock;
  const StateRounding seeds = state_rounding(true, c.tensor, *address_as<int64_t>(row[kStepPtr]), 0);
  alignas(64) float m[kStateBlock], r[kStateBlock];
  for (int64_t begin = c.begin; begin < c.end; begin += kStateBlock) {
    const int64_t b = begin / kStateBlock, n = c.end - begin < kStateBlock ? c.end - begin : kStateBlock;
    const float old_m = m_absmax[b], old_root = root_absmax[b];
    for (int64_t i = 0; i < n; ++i) {
      m[i] = decoded(exp_avg[begin + i], old_m);
      r[i] = decoded(root[begin + i], old_root);
    }
    for (int64_t i = 0; i < n; ++i) {
      float p = master[begin + i], v = r[i] * r[i], unused = 0.0f;
      adam_math<false>(s, load_as_math(grad, begin + i) * f, p, m[i], v, unused);
      master[begin + i] = p;
      r[i] = sqrtf(v);
    }
    // max_or_nan's results as integer maxima, which vectorise: magnitudes' bits
    // order as their values, and a nan's above them all
    uint32_t m_bits = 0, root_bits = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t am = detail::float_bits(m[i]) & 0x7fffffffu, ar = detail::float_bits(r[i]) & 0x7fffffffu;
      m_bits = am > m_bits ? am : m_bits;
      root_bits = ar > root_bits ? ar : root_bits;
    }
    const float new_m = detail::bits_float(m_bits), new_root = detail::bits_float(root_bits);
    for (int64_t i = 0; i < n; ++i)  // (one output a loop: vectorises)
      exp_avg[begin + i] = encoded(m[i], new_m, element_random(seeds.seeds[0], begin + i));
    for (int64_t i = 0; i < n; ++i)
      root[begin + i] = encoded_root(r[i], new_root, element_random(seeds.seeds[1], begin + i));
    m_absmax[b] = new_m;
    root_absmax[b] = new_root;
  }
  if constexpr (!std::is_same<G, float>::value)  // master weights: the params become the masters' rounding
    narrow(master + c.begin, address_as<G>(row[kParamCopyPtr]) + c.begin, c.end - c.begin);
}

// The element loops are compiled for the x86-64-v4 (AVX-512) and v3 (AVX2,
// F16C) levels as well as the baseline ISA, picked at load time by the CPU
// (GCC function multiversioning), so one build runs anywhere and still uses
// wide vectors. Flattened: everything a variant calls is inlined into it
// where its ISA allows, so the F16C conversions of the tiles are not a call
// each (measured: fp16 AdamW 0.73 -> 0.60 ns per element in L2). FMA
// contraction is off in CMake, so every variant rounds like the scalar maths.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define FUSEDLR_CPU_VARIANTS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)  // (arch= clones need GCC 12)
#define FUSEDLR_CPU_VARIANTS __attribute__((target_clones("avx512f", "avx2", "default"), flatten))
#else
#define FUSEDLR_CPU_VARIANTS
#endif

using RangeUpdate = void (*)(const StepArgs&, const std::vector<GroupValues>&, double, const Chunk&);

#define FUSEDLR_RANGE_UPDATE(name, ...)                                                                       \
  FUSEDLR_CPU_VARIANTS void name(const StepArgs& a, const std::vector<GroupValues>& values, double f,          \
                                 const Chunk& c) {                                                            \
    update_range<__VA_ARGS__>(a, values, f, c);                                                               \
  }
FUSEDLR_RANGE_UPDATE(update_range_f32, float)
FUSEDLR_RANGE_UPDATE(update_range_f64, double)
FUSEDLR_CPU_VARIANTS void update_range_f16(const StepArgs& a, const std::vector<GroupValues>& values, double f,
                                           const Chunk& c) {
  update_range_16_bit_in_fp32_tiles<half_bits>(a, values, f, c);
}
FUSEDLR_CPU_VARIANTS void update_range_bf16(const StepArgs& a, const std::vector<GroupValues>& values, double f,
                                            const Chunk& c) {
  update_range_16_bit_in_fp32_tiles<bf16_bits>(a, values, f, c);
}
FUSEDLR_RANGE_UPDATE(update_range_f16_master, float, half_bits)
FUSEDLR_RANGE_UPDATE(update_range_bf16_master, float, bf16_bits)
FUSEDLR_RANGE_UPDATE(update_range_bf16_split, bf16_low_bits, bf16_bits, float)
FUSEDLR_RANGE_UPDATE(update_range_f32_bf16_states, float, float, bf16_bits)
FUSEDLR_RANGE_UPDATE(update_range_f16_master_bf16_states, float, half_bits, bf16_bits)
FUSEDLR_RANGE_UPDATE(update_range_bf16_master_bf16_states, float, bf16_bits, bf16_bits)
FUSEDLR_RANGE_UPDATE(update_range_bf16_split_bf16_states, bf16_low_bits, bf16_bits, bf16_bits)
#undef FUSEDLR_RANGE_UPDATE
FUSEDLR_CPU_VARIANTS void update_range_coded_f32(const StepArgs& a, const std::vector<GroupValues>& values, double f,
                                                 const Chunk& c) {
  update_range_coded<float>(a, values, f, c);
}
FUSEDLR_CPU_VARIANTS void update_range_coded_f16_master(const StepArgs& a, const std::vector<GroupValues>& values,
                                                        double f, const Chunk& c) {
  update_range_coded<half_bits>(a, values, f, c);
}
FUSEDLR_CPU_VARIANTS void update_range_coded_bf16_master(const StepArgs& a, const std::vector<GroupValues>& values,
                                                         double f, const Chunk& c) {
  update_range_coded<bf16_bits>(a, values, f, c);
}

RangeUpdate range_update_of(const StepArgs& a) {
  switch (dtype_combination(a)) {
    case kFloat32Step: return update_range_f32;
    case kFloat64Step: return update_range_f64;
    case kFloat16Step: return update_range_f16;
    case kBFloat16Step: return update_range_bf16;
    case kFloat16MasterStep: return update_range_f16_master;
    case kBFloat16MasterStep: return update_range_bf16_master;
    case kBFloat16SplitStep: return update_range_bf16_split;
    case kFloat32Bf16StateStep: return update_range_f32_bf16_states;
    case kFloat16MasterBf16StateStep: return update_range_f16_master_bf16_states;
    case kBFloat16MasterBf16StateStep: return update_range_bf16_master_bf16_states;
    case kBFloat16SplitBf16StateStep: return update_range_bf16_split_bf16_states;
    case kFloat32CodedStateStep: return update_range_coded_f32;
    case kFloat16MasterCodedStateStep: return update_range_coded_f16_master;
    case kBFloat16MasterCodedStateStep: return update_range_coded_bf16_master;
    default: throw std::invalid_argument(kUnsupportedDtypes);
  }
}

void update_chunks(RangeUpdate update_range_of_dtype, const StepArgs& a, const std::vector<Chunk>& chunks,
                   int num_threads) {
  std::vector<GroupValues> values(a.num_groups);
  for (int64_t g = 0; g < a.num_groups; ++g) values[g] = group_values(a, g, *a.global_step);
  const double factor = grad_factor(a);
  const int64_t n = (int64_t)chunks.size();
#pragma omp parallel for schedule(static) num_threads(num_threads) if (n > 1 && num_threads > 1)
  for (int64_t c = 0; c < n; ++c) update_range_of_dtype(a, values, factor, chunks[c]);
}

}  // namespace

void update(const StepArgs& a, int num_threads) {
  if (element_update_of(a.kind) == kUnknownUpdate) throw std::invalid_argument(kUnknownOptimizerKind);
  if (a.state_dtype == kUInt8 && (element_update_of(a.kind) != kAdamUpdate || a.amsgrad))
    throw std::invalid_argument(kCodedStatesNeedAdam);
  if (step_is_skipped(a)) return;
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < a.num_tensors; ++t) {
    const int64_t numel = a.tensors[t * kTensorFields + kNumel];
    for (int64_t begin = 0; begin < numel; begin += kChunk)
      chunks.push_back({t, begin, begin + kChunk < numel ? begin + kChunk : numel});
  }
  update_chunks(range_update_of(a), a, chunks, num_threads);
}

void finish(const StepArgs& a, bool advance) {
  const bool skipped = step_is_skipped(a);
  if (advance) *a.applied = !skipped;
  // next_lr still holds the lrs of the step now ending
  if (advance && a.history) record_history(a.history, a.num_groups, a.next_lr, *a.global_step, !skipped,
                                           clipped_grad_norm(a));
  if (skipped) return;
  for (int64_t t = 0; t < a.num_tensors; ++t) count_update(a, t);
  if (!advance) return;
  const int64_t step = *a.global_step = count_one_more(*a.global_step);
  for (int64_t g = 0; g < a.num_groups; ++g) a.next_lr[g] = group_lr(a, g, step);
}

}  // namespace cpu
}  // namespace fusedlr
