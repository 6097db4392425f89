// CPU driver of one fused optimizer step (see fusedlr/step_layout.h).
#pragma once
#include "fusedlr/step_layout.h"

namespace fusedlr {
namespace cpu {

// Updates every tensor of the bucket with the lr of its group at *a.global_step,
// in parallel over chunks on `num_threads` threads. Does nothing when found_inf.
void update(const StepArgs& a, int num_threads);

// After update(): counts the update in each tensor's step; with `advance`, also
// advances the schedule step, writes each group's next lr to next_lr and
// whether this step was applied (not skipped by GradScaler) to *applied.
void finish(const StepArgs& a, bool advance, double* next_lr, bool* applied);

}  // namespace cpu
}  // namespace fusedlr
