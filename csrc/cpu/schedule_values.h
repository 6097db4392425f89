// Host evaluation of a packed schedule over many steps and param groups.
#pragma once
#include <stdint.h>

namespace fusedlr {
namespace cpu {

// out[i * n_groups + g] = lr at steps[i] for group g with base lr base_lrs[g].
void schedule_values(const double* prog, const int64_t* steps, int64_t n_steps,
                     const double* base_lrs, int64_t n_groups, double* out);

}  // namespace cpu
}  // namespace fusedlr
