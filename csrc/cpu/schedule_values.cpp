#include "schedule_values.h"

#include "fusedlr/schedule_eval.h"

namespace fusedlr {
namespace cpu {

void schedule_values(const double* prog, const int64_t* steps, int64_t n_steps,
                     const double* base_lrs, int64_t n_groups, double* out) {
  for (int64_t i = 0; i < n_steps; ++i)
    for (int64_t g = 0; g < n_groups; ++g)
      out[i * n_groups + g] = evaluate_schedule(prog, steps[i], g, base_lrs[g]);
}

}  // namespace cpu
}  // namespace fusedlr
