// Whole arrays of fp16/bf16 widened to fp32 and fp32 narrowed to fp16 or bf16
// (round to nearest even): the CPU's fp16 and bf16 steps, which update fp32
// tiles, and the masters' copy-out (optimizer_step.cpp). fp16 uses the CPU's
// F16C conversion instructions when it has them (picked at run time; GCC 12
// does not vectorise _Float16 conversions without AVX512-FP16), otherwise
// plain loops of scalar_io.h's conversions. bf16 is integer arithmetic in
// plain loops, always inlined, so they vectorise with the ISA of the caller's
// variant (AVX-512's vpmovdw packs the results: hand-written AVX2 narrowing
// was a call per tile and slower). All round exactly as scalar_io.h does (a
// nan may keep another payload).
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
  const int64_t whole = n - n % 8;  // (a tail loop from `whole`: empty for a constant multiple of 8)
  for (int64_t i = 0; i < whole; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (int64_t i = whole; i < n; ++i) out[i] = _cvtsh_ss(in[i].x);
}

__attribute__((target("avx,f16c"))) inline void narrow_f16c(const float* in, half_bits* out, int64_t n) {
  const int64_t whole = n - n % 8;
  for (int64_t i = 0; i < whole; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (int64_t i = whole; i < n; ++i) out[i].x = _cvtss_sh(in[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

inline bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("f16c");
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

__attribute__((always_inline)) inline void widen(const bf16_bits* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = load_as_math(in, i);
}

__attribute__((always_inline)) inline void narrow(const float* in, bf16_bits* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_from_math(out, i, in[i]);
}

}  // namespace cpu
}  // namespace fusedlr
