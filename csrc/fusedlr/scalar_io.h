// Loads and stores of fp32/fp64/fp16/bf16 elements as their math type (fp32,
// or fp64 for fp64), usable from host and device code. Stores round to
// nearest even, as torch's conversions do.
#pragma once
#include <stdint.h>
#include <string.h>

#include <type_traits>

#include "hd.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fusedlr {

struct half_bits { uint16_t x; };
struct bf16_bits { uint16_t x; };
// master_weights="remainder": the low 16 bits of a bf16 param's fp32 master
struct bf16_low_bits { uint16_t x; };

template <typename T> struct math_type { using type = float; };
template <> struct math_type<double> { using type = double; };

namespace detail {

FUSEDLR_HD_ELEMENT uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
FUSEDLR_HD_ELEMENT float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

FUSEDLR_HD_ELEMENT float half_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  __half v; memcpy(&v, &h, 2); return __half2float(v);
#else
  // every case computed, then selected: no branches, so CPU loops vectorise
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  const uint32_t normal = sign | ((exp + 112u) << 23) | (man << 13);
  const uint32_t inf_nan = sign | 0x7f800000u | (man << 13);
  const uint32_t subnormal = sign | float_bits((float)(int32_t)man * 5.9604644775390625e-08f);  // man * 2**-24, exact
  return bits_float(exp == 0x1fu ? inf_nan : exp == 0u ? subnormal : normal);
#endif
}

FUSEDLR_HD_ELEMENT uint16_t float_to_half(float f) {
#if defined(__CUDA_ARCH__)
  __half v = __float2half_rn(f); uint16_t h; memcpy(&h, &v, 2); return h;
#else
  // round to nearest even; every case computed, then selected (vectorisable)
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  const uint32_t inf_nan = 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);  // nan stays quiet
  const uint32_t normal = (abs + 0xfffu + ((abs >> 13) & 1u) - 0x38000000u) >> 13;
  // below 2**-14: the half subnormal count is x * 2**24 rounded to an integer;
  // adding and removing 2**23 rounds it to nearest even in float arithmetic
  const bool tiny = abs < 0x38800000u;
  const float scaled = bits_float(tiny ? abs : 0u) * 16777216.0f;
  const uint32_t subnormal = (uint32_t)(int32_t)((scaled + 8388608.0f) - 8388608.0f);  // signed: vectorises
  const uint32_t magnitude = abs >= 0x7f800000u ? inf_nan
                             : abs >= 0x477ff000u ? 0x7c00u  // rounds past 65504: inf
                             : tiny ? subnormal : normal;
  return (uint16_t)(sign | magnitude);
#endif
}

FUSEDLR_HD_ELEMENT float bf16_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

FUSEDLR_HD_ELEMENT uint16_t float_to_bf16(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __nv_bfloat16 v = __float2bfloat16_rn(f); uint16_t b; memcpy(&b, &v, 2); return b;  // one instruction
#else
  const uint32_t u = float_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // nearest even
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);  // a select, not a branch
#endif
}

}  // namespace detail

FUSEDLR_HD_ELEMENT float load_as_math(const float* p, int64_t i) { return p[i]; }
FUSEDLR_HD_ELEMENT double load_as_math(const double* p, int64_t i) { return p[i]; }
FUSEDLR_HD_ELEMENT float load_as_math(const half_bits* p, int64_t i) { return detail::half_to_float(p[i].x); }
FUSEDLR_HD_ELEMENT float load_as_math(const bf16_bits* p, int64_t i) { return detail::bf16_to_float(p[i].x); }

FUSEDLR_HD_ELEMENT void store_from_math(float* p, int64_t i, float v) { p[i] = v; }
FUSEDLR_HD_ELEMENT void store_from_math(double* p, int64_t i, double v) { p[i] = v; }
FUSEDLR_HD_ELEMENT void store_from_math(half_bits* p, int64_t i, float v) { p[i].x = detail::float_to_half(v); }
FUSEDLR_HD_ELEMENT void store_from_math(bf16_bits* p, int64_t i, float v) { p[i].x = detail::float_to_bf16(v); }

// master_weights="remainder": a bf16 param and the low halves of its fp32
// master, together the exact master with no second copy. The param is the
// master's high half rounded half away from zero (a low half >= 0x8000
// carries into it; unlike ties-to-even this can be undone: the carry is the
// low half's top bit). inf and nan masters keep no low half.
struct SplitMaster {
  bf16_bits* high;
  bf16_low_bits* low;
};
FUSEDLR_HD_ELEMENT float load_as_math(const SplitMaster& p, int64_t i) {
  const uint32_t low = p.low[i].x;
  const uint32_t high = (uint32_t)(p.high[i].x - (low >> 15)) & 0xffffu;
  return detail::bits_float((high << 16) | low);
}
FUSEDLR_HD_ELEMENT void store_from_math(const SplitMaster& p, int64_t i, float v) {
  const uint32_t u = detail::float_bits(v);
  const uint32_t low = (u & 0x7f800000u) == 0x7f800000u ? 0u : u & 0xffffu;
  p.low[i].x = (uint16_t)low;
  p.high[i].x = (uint16_t)((u >> 16) + (low >> 15));
}

// Stochastic rounding of bf16 states (stochastic_rounding=True): the value
// rounds up in magnitude with the probability of its distance from the lower
// bf16, so the rounding is unbiased; the random bits are a hash of a seed (per
// tensor, state and update count: StateRounding) and the element index, so
// runs are reproducible and need no generator state (graph-safe).
FUSEDLR_HD_ELEMENT uint32_t mix32(uint32_t x) {  // a 32-bit integer hash (Chris Wellons' lowbias32)
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// The seeds of tensor `tensor`'s three state slots at its update `update` (0: round to nearest).
struct StateRounding {
  uint32_t seeds[3];
  int64_t first;  // index in the tensor of element 0 of the pointers the element functions get
};

FUSEDLR_HD StateRounding state_rounding(bool stochastic, int64_t tensor, int64_t update, int64_t first) {
  StateRounding r{{0u, 0u, 0u}, first};
  if (!stochastic) return r;
  const uint32_t base = mix32((uint32_t)tensor ^ mix32((uint32_t)update ^ mix32((uint32_t)(update >> 32))));
  for (int slot = 0; slot < 3; ++slot) r.seeds[slot] = mix32(base + 0x9e3779b9u * (uint32_t)(slot + 1)) | 1u;
  return r;
}

FUSEDLR_HD_ELEMENT uint16_t float_to_bf16_stochastic(float f, uint32_t random) {
  const uint32_t u = detail::float_bits(f);
  const uint32_t rounded = (u + (random & 0xffffu)) >> 16;  // the magnitude bits: carries round up in magnitude
  return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);  // nan stays a quiet nan
}

// Round-to-nearest stores only: kernels whose states cannot be stochastically
// rounded carry no seeds (no registers spent on them).
struct NearestRounding {
  int64_t first;
};

// The rounding of the states of an update of T params with S states at tensor
// `tensor`'s update `update`: stochastic (when asked) for bf16 states beside
// fp32 params, else to nearest.
template <typename T, typename S>
FUSEDLR_HD auto rounding_for(bool stochastic, int64_t tensor, const int64_t* update, int64_t first) {
  if constexpr (std::is_same<S, bf16_bits>::value && !std::is_same<T, S>::value)
    return state_rounding(stochastic, tensor, stochastic ? *update : 0, first);
  else
    return NearestRounding{first};
}

// Element i of state slot `slot`, element `element` of its tensor: to nearest,
// or stochastically for bf16 with a seed.
template <typename T, typename M, typename R>
FUSEDLR_HD_ELEMENT void store_state_at(T* p, int64_t i, M v, const R&, int, int64_t) { store_from_math(p, i, v); }

FUSEDLR_HD_ELEMENT void store_state_at(bf16_bits* p, int64_t i, float v, const StateRounding& r, int slot, int64_t element) {
  const uint32_t seed = r.seeds[slot];
  p[i].x = seed ? float_to_bf16_stochastic(v, mix32(seed ^ mix32((uint32_t)element ^ (uint32_t)(element >> 32))))
                : detail::float_to_bf16(v);
}

// ... with the pointers' element 0 at index r.first of the tensor.
template <typename T, typename M, typename R>
FUSEDLR_HD_ELEMENT void store_state(T* p, int64_t i, M v, const R& r, int slot) {
  store_state_at(p, i, v, r, slot, r.first + i);
}

}  // namespace fusedlr
