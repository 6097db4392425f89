// Closed-form evaluation of a packed schedule (see schedule_format.h) at one
// step, in double precision. Header-only and free of torch and of the CUDA
// runtime: the CPU backend and the CUDA kernels both include it, so the CPU
// tests exercise exactly the code the GPU runs.
#pragma once

#include <math.h>
#include <stdint.h>

#include "hd.h"
#include "plateau.h"
#include "schedule_format.h"

namespace fusedlr {
namespace detail {

constexpr double kPi = 3.14159265358979323846;

// pi/2 split so that k * kPio2Hi and k * kPio2Mid are exact for |k| < 2**20
// (33 significant bits each), and the rest to double precision.
constexpr double kPio2Hi = 0x1.921fb544p+0;
constexpr double kPio2Mid = 0x1.0b4611a6p-34;
constexpr double kPio2Lo = 0x1.3198a2e037073p-69;
constexpr double kTwoOverPi = 0x1.45f306dc9c883p-1;
constexpr double kExactReductionLimit = 0x1p+20 * 1.5707963267948966;

// The cosine of a, to about an ulp, with no local arrays (libm's and CUDA's
// cos keep one for huge arguments, which gave the update kernel a stack):
// Cody-Waite reduction by pi/2, exact for |a| < 2**20 pi/2 (schedules stay far
// below), then the Taylor series of sin and cos on [-pi/4, pi/4], whose
// truncation error (< 1e-19) is far below an ulp.
FUSEDLR_HD double cos_of(double a) {
  a = fabs(a);
  if (!(a < kExactReductionLimit)) {
    if (!(a <= 1.7976931348623157e308)) return a - a;  // nan or inf: nan
    a = fmod(a, 2.0 * kPi);                              // beyond: close, not exact
  }
  const double k = rint(a * kTwoOverPi);
  const double r = ((a - k * kPio2Hi) - k * kPio2Mid) - k * kPio2Lo;
  const double r2 = r * r;
  const double sin_r = r + r * r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (1.0 / 362880 +
                       r2 * (-1.0 / 39916800 + r2 * (1.0 / 6227020800 + r2 * (-1.0 / 1307674368000 +
                       r2 * (1.0 / 355687428096000))))))));
  const double cos_r = 1.0 - 0.5 * r2 + r2 * r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320 +
                       r2 * (-1.0 / 3628800 + r2 * (1.0 / 479001600 + r2 * (-1.0 / 87178291200 +
                       r2 * (1.0 / 20922789888000 + r2 * (-1.0 / 6402373705728000))))))));
  switch ((int)k & 3) {
    case 0: return cos_r;
    case 1: return -sin_r;
    case 2: return -cos_r;
    default: return sin_r;
  }
}

FUSEDLR_HD double min_d(double a, double b) { return a < b ? a : b; }
FUSEDLR_HD double max_d(double a, double b) { return a > b ? a : b; }

// How many of the sorted values in bounds[0..n) are <= t (Python's bisect_right).
FUSEDLR_HD int64_t count_at_or_below(const double* bounds, int64_t n, double t) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (bounds[mid] <= t) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// floor(t / d) for t >= 0, d > 0, exact even where t / d would round up to
// the next integer (fmod is exact in IEEE arithmetic).
FUSEDLR_HD double floor_div(double t, double d) { return round((t - fmod(t, d)) / d); }

// Fraction of the way through a phase of `steps` steps, held at 1 afterwards.
FUSEDLR_HD double progress(double t, double steps) {
  return steps > 0 ? min_d(t / steps, 1.0) : 1.0;
}

// Interpolation exact at both ends (start + (end - start) w cancels to 0 at
// w = 1 when end << start).
FUSEDLR_HD double lerp(double start, double end, double w) { return start * (1.0 - w) + end * w; }

FUSEDLR_HD double anneal(int shape, double start, double end, double p) {
  switch (shape) {
    case kShapeCosine: return lerp(start, end, 0.5 * (1.0 - cos_of(kPi * p)));
    case kShapeGeometric: return start * pow(end / start, p);
    case kShapeSqrt: return lerp(start, end, sqrt(p));
    case kShapeOneMinusSqrt: return lerp(start, end, 1.0 - sqrt(1.0 - p));
    default: return lerp(start, end, p);
  }
}

FUSEDLR_HD double exponential(const double* a, double t, double b) {
  const double rate = a[0], steps = a[1], begin = a[2];
  double p = max_d(t - begin, 0.0) / steps;
  if (a[3] != 0) p = floor_div(max_d(t - begin, 0.0), steps);
  double f = pow(rate, p);
  if (a[4] != 0) f = rate < 1 ? max_d(f, a[5]) : min_d(f, a[5]);
  return b * f;
}

FUSEDLR_HD double polynomial(const double* a, double t, double b) {
  double steps = a[0];
  const double power = a[1], end_lr = a[2];
  if (a[3] != 0) {  // Keras cycle: stretch the decay to the next multiple
    if (t > 0) steps *= ceil(t / steps);
  } else {
    t = min_d(t, steps);
  }
  return (b - end_lr) * pow(1.0 - t / steps, power) + end_lr;
}

FUSEDLR_HD double cosine(const double* a, double t, double b) {
  const double steps = a[0], eta_min = a[1], alpha = a[2], exponent = a[3];
  const double cycles = a[4];
  // Periodic: reduce to one period first so huge steps keep full precision.
  double p = a[5] != 0 ? fmod(t, steps / cycles) / steps : min_d(t / steps, 1.0);
  double c = 0.5 * (1.0 + cos_of(2.0 * kPi * cycles * p));
  if (exponent != 1.0) c = pow(c, exponent);
  const double lo = eta_min + alpha * b;
  return lo + (b - lo) * c;
}

FUSEDLR_HD double cosine_restarts(const double* a, double t, double b) {
  const double T0 = a[0], mult = a[1];
  double cycle, start, period;
  if (mult == 1.0) {
    cycle = floor_div(t, T0);
    start = t - fmod(t, T0);
    period = T0;
  } else {
    // Cycle i starts at T0 (mult^i - 1) / (mult - 1) and lasts T0 mult^i; solve
    // for i, then correct the rounding of log() at the boundaries exactly. One
    // pow per candidate cycle, computed only when needed (fewer registers).
    cycle = floor(log1p(t * (mult - 1.0) / T0) / log(mult));
    double grown = pow(mult, cycle);
    start = T0 * (grown - 1.0) / (mult - 1.0);
    if (start > t) {
      cycle -= 1;
      grown = pow(mult, cycle);
      start = T0 * (grown - 1.0) / (mult - 1.0);
    } else {
      const double next_grown = pow(mult, cycle + 1);
      const double next = T0 * (next_grown - 1.0) / (mult - 1.0);
      if (next <= t) {
        cycle += 1;
        start = next;
        grown = next_grown;
      }
    }
    period = T0 * grown;
  }
  const double lo = a[2] + a[3] * b;  // eta_min + alpha b
  const double limit = a[5];
  if (limit > 0 && cycle >= limit) return lo;
  const double amplitude = pow(a[4], cycle);  // cycle_decay^cycle
  return lo + (b - lo) * amplitude * 0.5 * (1.0 + cos_of(kPi * (t - start) / period));
}

FUSEDLR_HD double one_cycle(const double* a, double t) {
  const int phases = (int)a[0];
  const bool linear = (int)a[1] == kAnnealLinear;
  const double* ends = a + 2;
  const double* lrs = a + 5;
  double start = 0.0;
  for (int k = 0; k < phases; ++k) {
    if (t <= ends[k] || k == phases - 1) {
      const double pct = min_d((t - start) / (ends[k] - start), 1.0);
      const double from = lrs[k], to = lrs[k + 1];
      // Same arithmetic as torch's OneCycleLR anneal functions.
      return linear ? (to - from) * pct + from
                    : to + (from - to) / 2.0 * (cos_of(kPi * pct) + 1.0);
    }
    start = ends[k];
  }
  return lrs[phases];
}

FUSEDLR_HD double cyclic(const double* a, double t, double b) {
  const double max_lr = a[0], total = a[1], ratio = a[2], gamma = a[4];
  if (a[5] != 0) b = a[6];  // a fixed start value (momentum cycling), not the incoming base
  const int mode = (int)a[3];
  // torch's CyclicLR, with the position in the cycle taken exactly.
  const double cycle = floor_div(t, total) + 1.0;
  const double x = fmod(t, total) / total;
  const double sf = x <= ratio ? x / ratio : (x - 1.0) / (ratio - 1.0);
  double scale = 1.0;
  if (mode == kTriangular2) scale = 1.0 / pow(2.0, cycle - 1.0);
  else if (mode == kExpRange) scale = pow(gamma, t);
  return b + (max_lr - b) * sf * scale;
}

FUSEDLR_HD double range_test(const double* a, double t, double b) {
  const double end_lr = a[0];
  const double r = progress(t, a[1]);
  if ((int)a[2] == kRangeLinear) return b + r * (end_lr - b);
  return b > 0 ? b * pow(end_lr / b, r) : 0.0;  // a zero base (e.g. chained) stays 0, not NaN
}

// lr of leaf node n (pointing at its header) at local step t with base lr b.
FUSEDLR_HD double leaf(const double* n, double t, double b) {
  const double* a = n + kNodeHeader;
  switch ((int)n[kNodeKind]) {
    case kConstant: return t < a[1] ? b * a[0] : b;
    case kAnneal: return b * anneal((int)a[3], a[0], a[1], progress(t, a[2]));
    case kStep: return b * pow(a[1], floor_div(t, a[0]));
    case kPiecewise: {
      const int64_t count = (int64_t)a[0];
      return b * a[1 + count + count_at_or_below(a + 1, count, t)];
    }
    case kExponential: return exponential(a, t, b);
    case kPolynomial: return polynomial(a, t, b);
    case kCosine: return cosine(a, t, b);
    case kCosineRestarts: return cosine_restarts(a, t, b);
    case kInverseSqrt: return b * sqrt(a[0] / (t + a[0]));
    case kInverseTime: {
      const double p = a[2] != 0 ? floor_div(t, a[1]) : t / a[1];
      return b / (1.0 + a[0] * p);
    }
    case kOneCycle: return one_cycle(a, t);
    case kCyclic: return cyclic(a, t, b);
    case kRangeTest: return range_test(a, t, b);
    default: return b;  // unreachable for programs built by fusedlr.schedules
  }
}

}  // namespace detail

// lr at `step` for param group `group` whose base lr is `base_lr`; `plateau`:
// the optimizer's plateau buffer (plateau.h), or null (no reductions).
// Walks the program without a stack: SEQUENTIAL and PER_GROUP descend into one
// child (SEQUENTIAL making t local to it), CHAIN into each child in turn, each
// child's result the next one's base lr. After a leaf the walk climbs the
// parent links to the nearest CHAIN with a child left. The local t is the step
// less the milestones taken on the way down, kept as their (whole-number,
// exact) sum, so climbing restores it exactly however large the step.
FUSEDLR_HD_OUT_OF_LINE double evaluate_schedule(const double* prog, int64_t step, int64_t group,
                                                double base_lr, const double* plateau = nullptr) {
  int64_t node = 0;
  const double t0 = step > 0 ? (double)step : 0.0;  // a negative count (written from the host) reads as 0
  double taken = 0.0;  // the milestones the SEQUENTIALs above took off t
  double t = t0;
  double lr = base_lr;
  for (;;) {
    const double* n = prog + node;
    const int kind = (int)n[kNodeKind];
    const double* children = n + kNodeHeader + 1;
    const int64_t count = (int64_t)n[kNodeHeader];
    if (kind == kSequential) {
      const double* milestones = children + count;
      const int64_t idx = detail::count_at_or_below(milestones, count - 1, t);
      if (idx > 0) {
        taken += milestones[idx - 1];
        t = t0 - taken;
      }
      node = (int64_t)children[idx];
      continue;
    }
    if (kind == kPerGroup) {
      node = (int64_t)children[group < count ? group : count - 1];
      continue;
    }
    if (kind == kChain) {
      node = (int64_t)children[0];
      continue;
    }
    lr = kind == kPlateau ? plateau_value(plateau, group, lr) : detail::leaf(n, t, lr);
    for (;;) {  // climb to the next child of an enclosing CHAIN
      const int64_t parent = (int64_t)prog[node + kNodeParent];
      if (parent < 0) return lr;
      const int64_t idx = (int64_t)prog[node + kNodeIndex];
      const double* p = prog + parent;
      const int64_t siblings = (int64_t)p[kNodeHeader];
      if ((int)p[kNodeKind] == kSequential && idx > 0) {
        taken -= p[kNodeHeader + 1 + siblings + idx - 1];
        t = t0 - taken;
      }
      if ((int)p[kNodeKind] == kChain && idx + 1 < siblings) {
        node = (int64_t)p[kNodeHeader + 1 + idx + 1];
        break;
      }
      node = parent;
    }
  }
}

}  // namespace fusedlr
