// csrc/fusedlr/block_update.h's stochastic e4m3 coding on a grid of fp32
// values (every exponent, both signs, the subnormal boundary, 256, zeros, nan)
// times a set of random words, written as raw bytes to the file named by
// argv[1]; tests/test_int8_states.py compares them with block_states.py's.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <vector>

#include "fusedlr/block_update.h"

std::vector<float> grid_values() {
  std::vector<float> values = {0.0f, -0.0f, 256.0f, -256.0f, 255.99998f, 0.015625f, 0.015624999f, 0.0019531250f,
                               0.0009765625f, 1e-30f, -1e-30f};
  for (uint32_t u = 0; u < 0x43800000u; u += 0x00012345u) {  // positive fp32 patterns up to 256
    float f;
    memcpy(&f, &u, 4);
    values.push_back(f);
    values.push_back(-f);
  }
  return values;
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::vector<float> values = grid_values();
  const uint32_t randoms[] = {0u, 1u, 0x7fffffu, 0x800000u, 0xfffffu, 0x100000u, 0x12345678u, 0xdeadbeefu, 0xffffffffu};
  FILE* out = fopen(argv[1], "wb");
  if (!out) return 3;
  const uint32_t count = (uint32_t)values.size();
  fwrite(&count, 4, 1, out);
  fwrite(values.data(), 4, values.size(), out);
  for (uint32_t random : randoms)
    for (float x : values) {
      const uint8_t code = fusedlr::code_of_stochastic(x, random);
      fwrite(&code, 1, 1, out);
    }
  return fclose(out) == 0 ? 0 : 4;
}
