// state_dtype="int8": Adam's moments as 8-bit codes, block-wise (Python:
// fusedlr/optim/block_states.py, the same arithmetic in tensor ops). Each block
// of kStateBlock elements keeps one fp32 absmax per moment (kStateScalesPtr:
// row 0 exp_avg, row 1 exp_avg_sq) and each element one byte: the fp8 e4m3
// value nearest to 256 * value / absmax (ties to even). exp_avg_sq is kept as
// its square root. An element's moment is code_value * absmax / 256.
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

// The e4m3 byte nearest to x (|x| <= 256 or nan; ties to even), from its fp32
// bits: the mantissa rounded to 3 bits (a carry moves into the exponent), below
// 2**-6 the subnormal count x * 2**9 rounded (8 being the first normal).
FUSEDLR_HD_ELEMENT uint8_t code_of(float x) {
  const float a = fabsf(x);
  const uint32_t bits = detail::float_bits(a);
  const uint32_t normal = ((bits + 0x7ffffu + ((bits >> 20) & 1u)) >> 20) - (120u << 3);
  const uint32_t subnormal = (uint32_t)rintf(a * 512.0f);
  uint32_t code = a < 0.015625f ? subnormal : normal;
  code = x != x ? 0x7fu : code;
  return (uint8_t)(code | ((detail::float_bits(x) >> 24) & 0x80u));
}

// The larger magnitude, nan if either is nan (as torch's amax).
FUSEDLR_HD_ELEMENT float max_or_nan(float a, float b) { return a != a ? a : b != b ? b : a > b ? a : b; }

FUSEDLR_HD_ELEMENT float decoded(uint8_t code, float absmax) { return (code_value(code) * absmax) * 0.00390625f; }

// The code of `value` in a block whose absmax is `absmax` (0: a block of zeros).
FUSEDLR_HD_ELEMENT uint8_t encoded(float value, float absmax) {
  return code_of((absmax == 0.0f ? 0.0f : value / absmax) * 256.0f);
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
