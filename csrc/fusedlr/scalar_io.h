// Loads and stores of fp32/fp64/fp16/bf16 elements as their math type (fp32,
// or fp64 for fp64), usable from host and device code. Stores round to
// nearest even, as torch's conversions do.
#pragma once
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define FUSEDLR_IO __host__ __device__ inline
#else
#define FUSEDLR_IO inline
#endif

namespace fusedlr {

struct half_bits { uint16_t x; };
struct bf16_bits { uint16_t x; };

template <typename T> struct math_type { using type = float; };
template <> struct math_type<double> { using type = double; };

namespace detail {

FUSEDLR_IO uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
FUSEDLR_IO float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

FUSEDLR_IO float half_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  __half v; memcpy(&v, &h, 2); return __half2float(v);
#else
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return bits_float(sign);
    // subnormal: value = man * 2^-24
    float v = (float)man * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
#endif
}

FUSEDLR_IO uint16_t float_to_half(float f) {
#if defined(__CUDA_ARCH__)
  __half v = __float2half_rn(f); uint16_t h; memcpy(&h, &v, 2); return h;
#else
  const uint32_t u = float_bits(f);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u)  // inf or nan (keep nan quiet)
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504: inf
  if (abs < 0x38800000u) {
    // subnormal or zero in fp16: round abs / 2^-24 to nearest even
    const float scaled = bits_float(abs) * 16777216.0f;  // exact (power of two)
    uint32_t q = (uint32_t)scaled;
    const float rest = scaled - (float)q;
    if (rest > 0.5f || (rest == 0.5f && (q & 1u))) ++q;
    return sign | (uint16_t)q;
  }
  // normal: drop 13 mantissa bits with round to nearest even
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return sign | (uint16_t)((rounded - 0x38000000u) >> 13);
#endif
}

FUSEDLR_IO float bf16_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

FUSEDLR_IO uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // quiet nan
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace detail

FUSEDLR_IO float load_as_math(const float* p, int64_t i) { return p[i]; }
FUSEDLR_IO double load_as_math(const double* p, int64_t i) { return p[i]; }
FUSEDLR_IO float load_as_math(const half_bits* p, int64_t i) { return detail::half_to_float(p[i].x); }
FUSEDLR_IO float load_as_math(const bf16_bits* p, int64_t i) { return detail::bf16_to_float(p[i].x); }

FUSEDLR_IO void store_from_math(float* p, int64_t i, float v) { p[i] = v; }
FUSEDLR_IO void store_from_math(double* p, int64_t i, double v) { p[i] = v; }
FUSEDLR_IO void store_from_math(half_bits* p, int64_t i, float v) { p[i].x = detail::float_to_half(v); }
FUSEDLR_IO void store_from_math(bf16_bits* p, int64_t i, float v) { p[i].x = detail::float_to_bf16(v); }

}  // namespace fusedlr
