// CPU driver of one fused optimizer step (see fusedlr/step_layout.h).
#pragma once
#include "fusedlr/step_layout.h"

namespace fusedlr {
namespace cpu {

// Updates every tensor of the bucket with the lr of its group at *a.global_step,
// in parallel over chunks on `num_threads` threads. Does nothing when found_inf.
void update(const StepArgs& a, int num_threads);

// After update(): counts the update in each tensor's step; with `advance`, also
// records the step in the history ring, advances the schedule step, writes
// each group's next lr to a.next_lr and whether this step was applied (not
// skipped by GradScaler) to *a.applied.
void finish(const StepArgs& a, bool advance);

}  // namespace cpu
}  // namespace fusedlr
