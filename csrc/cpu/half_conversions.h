// Whole arrays of fp16 widened to fp32 and fp32 narrowed to fp16 or bf16
// (round to nearest even): the CPU's fp16 steps, which update fp32 tiles, and
// the masters' copy-out (optimizer_step.cpp). fp16 uses the CPU's F16C
// conversion instructions when it has them (picked at run time); otherwise,
// and for bf16, plain loops of scalar_io.h's conversions, which the compiler
// vectorises. Both round exactly as scalar_io.h does (a nan may keep another
// payload).
#pragma once
#include <stdint.h>

#include "fusedlr/scalar_io.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FUSEDLR_NO_F16C)  // (the tests build both paths)
#include <immintrin.h>
#define FUSEDLR_HAVE_F16C_PATH 1
#endif

namespace fusedlr {
namespace cpu {

#if FUSEDLR_HAVE_F16C_PATH
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

inline bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("f16c");
  return has;
}
#endif

inline void widen(const half_bits* in, float* out, int64_t n) {
#if FUSEDLR_HAVE_F16C_PATH
  if (cpu_has_f16c()) return widen_f16c(in, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = load_as_math(in, i);
}

inline void narrow(const float* in, half_bits* out, int64_t n) {
#if FUSEDLR_HAVE_F16C_PATH
  if (cpu_has_f16c()) return narrow_f16c(in, out, n);
#endif
  for (int64_t i = 0; i < n; ++i) store_from_math(out, i, in[i]);
}

// bf16 (master weights' copy-out): always inlined, so it vectorises with the
// ISA of the caller's variant
__attribute__((always_inline)) inline void narrow(const float* in, bf16_bits* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_from_math(out, i, in[i]);
}

}  // namespace cpu
}  // namespace fusedlr
