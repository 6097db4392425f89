// Whole arrays of fp16/bf16 widened to fp32 and fp32 narrowed to fp16 or bf16
// (round to nearest even): the CPU's fp16 and bf16 steps, which update fp32
// tiles, and the masters' copy-out (optimizer_step.cpp). fp16 uses the CPU's
// F16C conversion instructions and bf16's narrowing AVX2 integer code when the
// CPU has them (picked at run time); otherwise plain loops of scalar_io.h's
// conversions. All round exactly as scalar_io.h does (a nan may keep another
// payload).
#pragma once
#include <stdint.h>

#include "fusedlr/scalar_io.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FUSEDLR_NO_SIMD_CONVERSIONS)  // (the tests build both paths)
#include <immintrin.h>
#define FUSEDLR_HAVE_SIMD_CONVERSIONS 1
#endif

namespace fusedlr {
namespace cpu {

#if FUSEDLR_HAVE_SIMD_CONVERSIONS
__attribute__((target("avx,f16c"))) inline void widen_f16c(const half_bits* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = _cvtsh_ss(in[i].x);
}

__attribute__((target("avx,f16c"))) inline void narrow_f16c(const float* in, half_bits* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) out[i].x = _cvtss_sh(in[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// scalar_io.h's float_to_bf16 on 16 floats at a time: the rounding add (a nan
// made quiet instead), then the low halves of the 32-bit lanes packed in order.
// GCC's vectorisation of the scalar code selects after packing (2x the work).
__attribute__((target("avx2"))) inline __m256i bf16_of_8(__m256 in) {
  const __m256i u = _mm256_castps_si256(in);
  const __m256i high = _mm256_srli_epi32(u, 16);
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(high, _mm256_set1_epi32(1))),
      16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, _mm256_or_si256(high, _mm256_set1_epi32(0x40)), nan);
}

__attribute__((target("avx2"))) inline void narrow_bf16_avx2(const float* in, bf16_bits* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i packed = _mm256_packus_epi32(bf16_of_8(_mm256_loadu_ps(in + i)), bf16_of_8(_mm256_loadu_ps(in + i + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_permute4x64_epi64(packed, 0xd8));
  }
  for (; i < n; ++i) store_from_math(out, i, in[i]);
}

inline bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("f16c");
  return has;
}

inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

inline void widen(const half_bits* in, float* out, int64_t n) {
#if FUSEDLR_HAVE_SIMD_CONVERSIONS
  if (cpu_has_f16c()) return widen_f16c(in, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = load_as_math(in, i);
}

inline void narrow(const float* in, half_bits* out, int64_t n) {
#if FUSEDLR_HAVE_SIMD_CONVERSIONS
  if (cpu_has_f16c()) return narrow_f16c(in, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) store_from_math(out, i, in[i]);
}

// bf16 widening, a shift: always inlined, so it vectorises with the ISA of the
// caller's variant
__attribute__((always_inline)) inline void widen(const bf16_bits* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = load_as_math(in, i);
}

inline void narrow(const float* in, bf16_bits* out, int64_t n) {
#if FUSEDLR_HAVE_SIMD_CONVERSIONS
  if (cpu_has_avx2()) return narrow_bf16_avx2(in, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) store_from_math(out, i, in[i]);
}

}  // namespace cpu
}  // namespace fusedlr
