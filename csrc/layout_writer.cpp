// Writes fusedlr/_layout.py at build time: every number the Python side
// shares with the kernels (table layouts, enums, packed-schedule format), read
// from the C++ headers, so Python has them without importing a native module
// (the reference backend runs where none loads) and they are written down once.
#include <cstdio>

#include "fusedlr/plateau.h"
#include "fusedlr/schedule_format.h"
#include "fusedlr/step_common.h"
#include "fusedlr/step_layout.h"
#include "fusedlr/update_math.h"

namespace {

#define FUSEDLR_PRINT_ENTRY(name, python_name, value) std::printf("    \"%s\": %d,\n", python_name, (int)name);
#define FUSEDLR_PRINT_DICT(python_name, list)  \
  std::printf("%s = {\n", python_name);        \
  list(FUSEDLR_PRINT_ENTRY)                    \
  std::printf("}\n");

void print_constant(const char* python_name, int value) { std::printf("%s = %d\n", python_name, value); }

}  // namespace

int main() {
  using namespace fusedlr;
  std::printf("\"\"\"The numbers fusedlr's Python side shares with its kernels, written at build time by\n"
              "csrc/layout_writer.cpp from the C++ headers (step_layout.h, schedule_format.h, plateau.h):\n"
              "do not edit.\"\"\"\n");
  FUSEDLR_PRINT_DICT("NODE_KINDS", FUSEDLR_NODE_KINDS)
  FUSEDLR_PRINT_DICT("ANNEAL_SHAPES", FUSEDLR_ANNEAL_SHAPES)
  FUSEDLR_PRINT_DICT("CYCLIC_MODES", FUSEDLR_CYCLIC_MODES)
  FUSEDLR_PRINT_DICT("RANGE_TEST_MODES", FUSEDLR_RANGE_TEST_MODES)
  FUSEDLR_PRINT_DICT("ONE_CYCLE_ANNEAL", FUSEDLR_ONE_CYCLE_ANNEAL)
  print_constant("NODE_HEADER", kNodeHeader);
  FUSEDLR_PRINT_DICT("TENSOR_FIELDS", FUSEDLR_TENSOR_FIELDS)
  print_constant("NUM_TENSOR_FIELDS", kTensorFields);
  FUSEDLR_PRINT_DICT("GROUP_FIELDS", FUSEDLR_GROUP_FIELDS)
  print_constant("NUM_GROUP_FIELDS", kGroupFields);
  FUSEDLR_PRINT_DICT("DTYPES", FUSEDLR_SCALAR_TYPES)
  FUSEDLR_PRINT_DICT("OPTIMIZER_KINDS", FUSEDLR_OPTIMIZER_KINDS)
  FUSEDLR_PRINT_DICT("PLATEAU_FIELDS", FUSEDLR_PLATEAU_FIELDS)
  print_constant("PLATEAU_HEADER", kPlateauHeader);
  print_constant("TENSOR_SCALAR_FIELDS", kTensorScalarFields);
  print_constant("GROUP_VALUE_FIELDS", kGroupValueFields);
  print_constant("HISTORY_HEADER", kHistoryHeader);
  print_constant("HISTORY_CAPACITY", kHistoryCapacity);
  print_constant("HISTORY_LRS", kHistoryLrs);
  print_constant("HISTORY_GRAD_NORM", kHistoryGradNorm);
  print_constant("CLIP_COEFFICIENT", kClipCoefficient);
  print_constant("CLIP_GRAD_NORM", kClipGradNorm);
  print_constant("CLIPPING_FIELDS", kClippingFields);
  return 0;
}
