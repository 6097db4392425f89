// Pieces of an optimizer step that the CPU driver and the CUDA kernels share:
// reading the tables and evaluating a group's lr at the current step.
#pragma once
#include <stdint.h>

#include "schedule_eval.h"
#include "step_layout.h"

namespace fusedlr {

template <typename T>
FUSEDLR_HD T* address_as(int64_t address) { return reinterpret_cast<T*>(address); }

FUSEDLR_HD bool step_is_skipped(const StepArgs& a) { return a.found_inf && *a.found_inf != 0.0f; }

// lr of group g at schedule step `step` (its schedule scales its base lr).
FUSEDLR_HD double group_lr(const double* groups, const double* program, int64_t g, int64_t step) {
  const double* row = groups + g * kGroupFields;
  return evaluate_schedule(program + (int64_t)row[kProgram], step, g, row[kBaseLr]);
}

}  // namespace fusedlr
