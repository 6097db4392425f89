// Pieces of an optimizer step that the CPU driver and the CUDA kernels share:
// reading the tables, evaluating a group's scheduled values, counting steps.
#pragma once
#include <math.h>
#include <stdint.h>

#include <type_traits>

#include "hd.h"
#include "scalar_io.h"
#include "schedule_eval.h"
#include "step_layout.h"

namespace fusedlr {

template <typename T>
FUSEDLR_HD T* address_as(int64_t address) { return reinterpret_cast<T*>(address); }

// What the element updates read and write as the param: the T array (fp32
// masters with master weights), or with master_weights="remainder" (T the
// masters' low halves) the bf16 params and low halves, together the masters.
template <typename T, typename G>
FUSEDLR_HD T* param_view(T* param, G*) { return param; }
FUSEDLR_HD SplitMaster param_view(bf16_low_bits* low, bf16_bits* high) { return {high, low}; }

// Is the param written from an fp32 master held elsewhere (G, the grads'
// dtype, is not the dtype T updated), rather than being half of it?
template <typename T, typename G>
constexpr bool kWritesParamCopy = !std::is_same<T, G>::value && !std::is_same<T, bf16_low_bits>::value;

FUSEDLR_HD bool step_is_skipped(const StepArgs& a) { return a.found_inf && *a.found_inf != 0.0f; }

// count += 1, held at the int64 maximum instead of wrapping to negative.
FUSEDLR_HD int64_t count_one_more(int64_t count) { return count < INT64_MAX ? count + 1 : count; }

// A group hyperparameter at schedule step `step`: its schedule applied to its
// base value, or the base value when it has none (offset -1).
FUSEDLR_HD double scheduled_value(const StepArgs& a, const double* row, int field, int program_field,
                                  int64_t g, int64_t step) {
  const double offset = row[program_field];
  return offset < 0 ? row[field]
                    : evaluate_schedule(a.program + (int64_t)offset, step, g, row[field], a.plateau);
}

// lr of group g at schedule step `step` (its schedule scales its base lr).
FUSEDLR_HD double group_lr(const StepArgs& a, int64_t g, int64_t step) {
  return scheduled_value(a, a.groups + g * kGroupFields, kBaseLr, kProgram, g, step);
}

// The scheduled hyperparameters of group g for the update at step `step`
// (hyper1: kHyper1, e.g. SGD's momentum or Adam's beta1).
struct GroupValues { double lr, weight_decay, hyper1; };
constexpr int kGroupValueFields = 3;

FUSEDLR_HD GroupValues group_values(const StepArgs& a, int64_t g, int64_t step) {
  const double* row = a.groups + g * kGroupFields;
  return GroupValues{scheduled_value(a, row, kBaseLr, kProgram, g, step),
                     scheduled_value(a, row, kWeightDecay, kWeightDecayProgram, g, step),
                     scheduled_value(a, row, kHyper1, kHyper1Program, g, step)};
}

// The end of a step and the preparation of the next, in pieces that the
// threads of a CUDA block share out (the CPU runs them in loops).

// Tensor t of the bucket received an update: count it.
FUSEDLR_HD void count_update(const StepArgs& a, int64_t t) {
  int64_t* count = address_as<int64_t>(a.tensors[t * kTensorFields + kStepPtr]);
  *count = count_one_more(*count);
}

// Group g's scheduled values at `step` into the a.group_values scratch, and its
// lr into a.next_lr when this bucket ends the step.
FUSEDLR_HD void store_group_values(const StepArgs& a, int64_t g, int64_t step) {
  const GroupValues v = group_values(a, g, step);
  double* row = a.group_values + g * kGroupValueFields;
  row[0] = v.lr;
  row[1] = v.weight_decay;
  row[2] = v.hyper1;
  if (a.last_bucket) a.next_lr[g] = v.lr;
}

// The global grad norm of the step's clipping, NaN without max_grad_norm.
FUSEDLR_HD double clipped_grad_norm(const StepArgs& a) { return a.clipping ? a.clipping[kClipGradNorm] : NAN; }

// Record the step now ending in the history ring (step_layout.h): its
// schedule step, whether it was applied, its grad norm and each group's lr in
// it (`lrs`). Plain arguments, not StepArgs: the CUDA kernels call it out of line.
FUSEDLR_HD void record_history(double* history, int64_t num_groups, const double* lrs, int64_t step, bool applied,
                               double grad_norm) {
  const int64_t recorded = (int64_t)history[kHistoryRecorded], capacity = (int64_t)history[kHistoryCapacity];
  if (capacity <= 0) return;
  double* row = history + kHistoryHeader + (recorded % capacity) * (kHistoryLrs + num_groups);
  for (int64_t g = 0; g < num_groups; ++g) row[kHistoryLrs + g] = lrs[g];
  row[kHistoryStep] = (double)step;
  row[kHistoryApplied] = applied ? 1.0 : 0.0;
  row[kHistoryGradNorm] = grad_norm;
  history[kHistoryRecorded] = (double)(recorded + 1);
}

FUSEDLR_HD GroupValues stored_group_values(const StepArgs& a, int64_t g) {
  const double* row = a.group_values + g * kGroupValueFields;
  return GroupValues{row[0], row[1], row[2]};
}

// opt.report(metric): one plateau step on `plateau` (a.plateau, writable),
// then each group's lr for the next step, as finish writes it.
FUSEDLR_HD void report_plateau(const StepArgs& a, double* plateau, double metric, double* next_lr) {
  plateau_report(plateau, metric, a.groups);
  for (int64_t g = 0; g < a.num_groups; ++g) next_lr[g] = group_lr(a, g, *a.global_step);
}

}  // namespace fusedlr
