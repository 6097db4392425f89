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

// A group hyperparameter at schedule step `step`: its schedule applied to its
// base value, or the base value when it has none (offset -1).
FUSEDLR_HD double scheduled_value(const double* row, const double* program, int field, int program_field,
                                  int64_t g, int64_t step) {
  const double offset = row[program_field];
  return offset < 0 ? row[field] : evaluate_schedule(program + (int64_t)offset, step, g, row[field]);
}

// lr of group g at schedule step `step` (its schedule scales its base lr).
FUSEDLR_HD double group_lr(const double* groups, const double* program, int64_t g, int64_t step) {
  return scheduled_value(groups + g * kGroupFields, program, kBaseLr, kProgram, g, step);
}

// The scheduled hyperparameters of group g for the update at step `step`.
struct GroupValues { double lr, weight_decay, momentum; };

FUSEDLR_HD GroupValues group_values(const double* groups, const double* program, int64_t g, int64_t step) {
  const double* row = groups + g * kGroupFields;
  return GroupValues{scheduled_value(row, program, kBaseLr, kProgram, g, step),
                     scheduled_value(row, program, kWeightDecay, kWeightDecayProgram, g, step),
                     scheduled_value(row, program, kMomentum, kMomentumProgram, g, step)};
}

}  // namespace fusedlr
