// state_dtype="int8": Adam's moments as 8-bit codes, block-wise (Python:
// fusedlr/optim/block_states.py, the same arithmetic in tensor ops). Each block
// of kStateBlock elements keeps one fp32 absmax per moment (kStateScalesPtr:
// row 0 exp_avg, row 1 exp_avg_sq) and each element one byte: an fp8 e4m3
// code of 256 * value / absmax. exp_avg_sq is kept as its square root. An
// element's moment is code_value * absmax / 256. The update rounds codes
// stochastically, with the random bits of the bf16 states' stochastic rounding
// (scalar_io.h): state slot 0 for exp_avg, 1 for the root. (Python encodes a
// checkpoint's fp32 moments to nearest.)
//
// A block is updated in two passes: every element's update (the moments
// decoded, Adam's maths in fp32, the param stored), keeping the new moments;
// then the block's new absmax values and every element's codes. The CPU loops
// and the CUDA kernels (one element per thread, the absmax by a block-wide
// reduction) share the element functions below.
#pragma once
#include <math.h>
#include <stdint.h>

#include "scalar_io.h"
#include "update_math.h"

namespace fusedlr {

constexpr int kStateBlock = 256;  // elements per absmax
constexpr const char kCodedStatesNeedAdam[] = "8-bit states are kept for Adam and AdamW without amsgrad only";

// The value of an e4m3 byte (exact in fp32): sign, 4 exponent bits biased by 7,
// 3 mantissa bits; exponent 0 subnormal (mantissa * 2**-9); 0x7f and 0xff nan.
// (Every case computed, then selected: the CPU loops vectorise.)
FUSEDLR_HD_ELEMENT float code_value(uint8_t code) {
  const uint32_t exponent = (code >> 3) & 15u, mantissa = code & 7u;
  const uint32_t normal = ((exponent + 120u) << 23) | (mantissa << 20);
  const uint32_t subnormal = detail::float_bits((float)(int32_t)mantissa * 0.001953125f);  // 2**-9
  uint32_t magnitude = exponent == 0u ? subnormal : normal;
  magnitude = (exponent == 15u) & (mantissa == 7u) ? 0x7fc00000u : magnitude;
  return detail::bits_float(magnitude | ((uint32_t)(code & 0x80u) << 24));
}

// The e4m3 byte of x (|x| <= 256 or nan) rounded stochastically, from its
// fp32 bits: up in magnitude with the probability of x's distance from the
// code below, with `random` as the 32 random bits (unbiased, so moments that
// change by less than a code per step still accumulate on average). The
// mantissa is cut to 3 bits after adding 20 random bits (a carry moves into
// the exponent); below 2**-6 the subnormal count x * 2**9 plus a uniform
// fraction is cut to an integer (8 being the first normal).
FUSEDLR_HD_ELEMENT uint8_t code_of_stochastic(float x, uint32_t random) {
  const float a = fabsf(x);
  const uint32_t bits = detail::float_bits(a);
  const uint32_t normal = ((bits + (random & 0xfffffu)) >> 20) - (120u << 3);
  const float below = (a < 0.015625f ? a : 0.0f) * 512.0f + (float)(random >> 8) * 5.9604644775390625e-08f;  // + u
  uint32_t code = a < 0.015625f ? (uint32_t)below : normal;
  code = x != x ? 0x7fu : code;
  return (uint8_t)(code | ((detail::float_bits(x) >> 24) & 0x80u));
}

// The random bits of element `element` under `seed` (as store_state_at's for bf16 states).
FUSEDLR_HD_ELEMENT uint32_t element_random(uint32_t seed, int64_t element) {
  return mix32(seed ^ mix32((uint32_t)element ^ (uint32_t)(element >> 32)));
}

// The larger magnitude, nan if either is nan (as torch's amax).
FUSEDLR_HD_ELEMENT float max_or_nan(float a, float b) { return a != a ? a : b != b ? b : a > b ? a : b; }

FUSEDLR_HD_ELEMENT float decoded(uint8_t code, float absmax) { return (code_value(code) * absmax) * 0.00390625f; }

FUSEDLR_HD_ELEMENT float relative_to(float value, float absmax) {  // 256 value / absmax; 0 in a block of zeros
  return (absmax == 0.0f ? 0.0f : value / absmax) * 256.0f;
}

// The code of `value` in a block whose absmax is `absmax`, rounded stochastically.
FUSEDLR_HD_ELEMENT uint8_t encoded(float value, float absmax, uint32_t random) {
  return code_of_stochastic(relative_to(value, absmax), random);
}

// The code of exp_avg_sq's root, stochastically, a root above zero keeping at
// least the smallest code: at zero, the element's exp_avg (whose block's
// largest value shrinks faster) could be divided by eps alone.
FUSEDLR_HD_ELEMENT uint8_t encoded_root(float root, float absmax, uint32_t random) {
  const uint8_t code = encoded(root, absmax, random);
  return code == 0 && root > 0.0f ? (uint8_t)1 : code;
}

// Element i's update with coded moments (absmax values m_absmax, root_absmax of
// its block): the param stored as usual, the new exp_avg and exp_avg_sq's root
// returned for the block's second pass.
template <typename P, typename G>
FUSEDLR_HD_ELEMENT void adam_coded_element(const AdamScalars<float>& s, float factor, P param, const G* grad,
                                           const uint8_t* exp_avg, const uint8_t* exp_avg_sq_root, float m_absmax,
                                           float root_absmax, int64_t i, float& m, float& root) {
  float p = load_as_math(param, i);
  m = decoded(exp_avg[i], m_absmax);
  const float r = decoded(exp_avg_sq_root[i], root_absmax);
  float v = r * r, unused = 0.0f;
  adam_math<false>(s, load_as_math(grad, i) * factor, p, m, v, unused);
  store_from_math(param, i, p);
  root = sqrtf(v);
}

}  // namespace fusedlr
