// Reduce-on-plateau on the device: torch.optim.lr_scheduler.ReduceLROnPlateau's
// state machine, driven by a metric in device memory, and the lr factor a
// PLATEAU schedule node applies. Header-only and torch-free, shared by the CPU
// backend and the CUDA kernels.
//
// One float64 buffer per optimizer and device holds the configuration (written
// by Python from the Plateau schedule), the state, and per group its min_lr
// and how many times its lr was reduced.
#pragma once
#include <math.h>
#include <stdint.h>

#include "hd.h"
#include "step_layout.h"

namespace fusedlr {

#define FUSEDLR_PLATEAU_FIELDS(X)                                                   \
  X(kPlateauMaxMode, "max_mode", 0)            /* 1: a larger metric is better (mode="max") */ \
  X(kPlateauFactor, "factor", 1)                                                   \
  X(kPlateauPatience, "patience", 2)                                               \
  X(kPlateauThreshold, "threshold", 3)                                             \
  X(kPlateauAbsThreshold, "abs_threshold", 4)  /* 1: threshold_mode="abs" */       \
  X(kPlateauCooldown, "cooldown", 5)                                               \
  X(kPlateauEps, "eps", 6)                                                         \
  X(kPlateauNumGroups, "num_groups", 7)                                            \
  X(kPlateauBest, "best", 8)                   /* state: best metric so far */     \
  X(kPlateauBadEpochs, "bad_epochs", 9)        /* state: reports since the last improvement */ \
  X(kPlateauCooldownLeft, "cooldown_left", 10) /* state: reports left in the cooldown */
enum PlateauField : int {
  FUSEDLR_PLATEAU_FIELDS(FUSEDLR_ENUMERATOR)
  kPlateauHeader = 11,  // then min_lr[G], then reductions[G]
};

// Reductions of group g so far (0 without a plateau buffer).
FUSEDLR_HD double plateau_reductions(const double* p, int64_t g) {
  if (!p) return 0.0;
  const int64_t groups = (int64_t)p[kPlateauNumGroups];
  return p[kPlateauHeader + groups + (g < groups ? g : groups - 1)];
}

// The lr of group g after its reductions, starting from `lr`: torch's
// max(lr * factor, min_lr) applied `reductions` times, in closed form.
FUSEDLR_HD double plateau_value(const double* p, int64_t g, double lr) {
  const double k = plateau_reductions(p, g);
  if (k == 0.0) return lr;
  const int64_t groups = (int64_t)p[kPlateauNumGroups];
  const double min_lr = p[kPlateauHeader + (g < groups ? g : groups - 1)];
  const double reduced = lr * pow(p[kPlateauFactor], k);
  return reduced > min_lr ? reduced : min_lr;
}

// One ReduceLROnPlateau.step(metric) on the buffer; base lrs from the group
// table (the lr a reduction starts from is the group's base lr after its
// reductions so far).
FUSEDLR_HD void plateau_report(double* p, double metric, const double* groups) {
  const double best = p[kPlateauBest], threshold = p[kPlateauThreshold];
  bool better;
  if (p[kPlateauMaxMode] != 0)
    better = p[kPlateauAbsThreshold] != 0 ? metric > best + threshold : metric > best * (threshold + 1.0);
  else
    better = p[kPlateauAbsThreshold] != 0 ? metric < best - threshold : metric < best * (1.0 - threshold);
  if (better) {
    p[kPlateauBest] = metric;
    p[kPlateauBadEpochs] = 0;
  } else {
    p[kPlateauBadEpochs] += 1;
  }
  if (p[kPlateauCooldownLeft] > 0) {
    p[kPlateauCooldownLeft] -= 1;
    p[kPlateauBadEpochs] = 0;
  }
  if (p[kPlateauBadEpochs] <= p[kPlateauPatience]) return;
  const int64_t num_groups = (int64_t)p[kPlateauNumGroups];
  for (int64_t g = 0; g < num_groups; ++g) {
    const double old_lr = plateau_value(p, g, groups[g * kGroupFields + kBaseLr]);
    const double min_lr = p[kPlateauHeader + g];
    const double scaled = old_lr * p[kPlateauFactor];
    const double new_lr = scaled > min_lr ? scaled : min_lr;
    if (old_lr - new_lr > p[kPlateauEps]) p[kPlateauHeader + num_groups + g] += 1;
  }
  p[kPlateauCooldownLeft] = p[kPlateauCooldown];
  p[kPlateauBadEpochs] = 0;
}

}  // namespace fusedlr
