// csrc/cpu/half_conversions.h on every fp16 bit pattern (widened) and on a
// spread of fp32 bit patterns (narrowed to fp16 and bf16), written as raw
// arrays to the file named by argv[1]; tests/test_device_kernels.py compares
// them with torch's conversions. Built with and without FUSEDLR_NO_SIMD_CONVERSIONS.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <vector>

#include "cpu/half_conversions.h"

int main(int argc, char** argv) {
  using namespace fusedlr;
  if (argc != 2) return 2;
  std::vector<half_bits> halves(1 << 16);
  for (uint32_t i = 0; i < halves.size(); ++i) halves[i].x = (uint16_t)i;
  std::vector<float> widened(halves.size());
  cpu::widen(halves.data(), widened.data(), (int64_t)halves.size());
  // every 65537th fp32 pattern (all exponents, both signs, odd low bits), in an odd count: the tail path too
  std::vector<float> floats;
  for (uint64_t u = 0; u < (1ull << 32); u += 65537) {
    const uint32_t bits = (uint32_t)u;
    float f;
    memcpy(&f, &bits, 4);
    floats.push_back(f);
  }
  std::vector<half_bits> narrowed(floats.size());
  std::vector<bf16_bits> narrowed_bf16(floats.size());
  cpu::narrow(floats.data(), narrowed.data(), (int64_t)floats.size());
  cpu::narrow(floats.data(), narrowed_bf16.data(), (int64_t)floats.size());
  FILE* out = fopen(argv[1], "wb");
  if (!out) return 3;
  fwrite(widened.data(), sizeof(float), widened.size(), out);
  fwrite(narrowed.data(), 2, narrowed.size(), out);
  fwrite(narrowed_bf16.data(), 2, narrowed_bf16.size(), out);
  return fclose(out) == 0 ? 0 : 4;
}
