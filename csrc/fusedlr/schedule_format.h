// Packed schedule format shared by the Python packer, the CPU evaluator and
// the CUDA kernels. A schedule is a flat array of doubles; a node starts with
// a header (its kind, the offset of its parent node or -1 at the root, its
// index among the parent's children), followed by the fields listed below.
// Child references are offsets into the same array. The parent links let the
// evaluator walk the tree without a stack. The Python side reads these numbers
// from the native module, so this header is the only place they are written down.
#pragma once

namespace fusedlr {

enum NodeKind : int {
  // Leaves: lr = f(local step t, incoming base lr b, group g).
  kConstant = 1,        // factor, total_iters          b*factor for t<total_iters, else b
  kAnneal = 2,          // start, end, steps, shape     b*(start..end) along a shape
  kStep = 3,            // step_size, gamma             b*gamma^floor(t/step_size)
  kPiecewise = 4,       // n, bounds[n], factors[n+1]   b*factors[#{bounds <= t}]
  kExponential = 5,     // rate, transition_steps, begin, staircase, bounded, end_factor
  kPolynomial = 6,      // steps, power, end_lr, cycle
  kCosine = 7,          // steps, eta_min, alpha, exponent, cycles, periodic
  kCosineRestarts = 8,  // T_0, T_mult, eta_min, alpha, cycle_decay, cycle_limit
  kInverseSqrt = 9,     // timescale                    b*sqrt(ts/(t+ts))
  kInverseTime = 10,    // decay_rate, decay_steps, staircase
  kOneCycle = 11,       // n_phases, anneal, end[3], lr[4]
  kCyclic = 12,         // max_lr, total_size, step_ratio, mode, gamma, has_start, start (else b)
  kRangeTest = 13,      // end_lr, num_iter, mode
  kPlateau = 14,        // (none)                       b reduced on plateaus, see plateau.h
  // Composites.
  kSequential = 20,     // n, child[n], milestones[n-1]  torch SequentialLR
  kChain = 21,          // n, child[n]                   each child rescales the previous output
  kPerGroup = 22,       // n, child[n]                   child[g] for param group g
};

enum AnnealShape : int {
  kShapeLinear = 0,       // p
  kShapeCosine = 1,       // (1 - cos(pi p)) / 2
  kShapeGeometric = 2,    // start * (end/start)^p
  kShapeSqrt = 3,         // sqrt(p)
  kShapeOneMinusSqrt = 4, // 1 - sqrt(1 - p)
};

enum CyclicMode : int { kTriangular = 0, kTriangular2 = 1, kExpRange = 2 };
enum RangeTestMode : int { kRangeExponential = 0, kRangeLinear = 1 };
enum OneCycleAnneal : int { kAnnealCos = 0, kAnnealLinear = 1 };

enum NodeHeader : int { kNodeKind = 0, kNodeParent = 1, kNodeIndex = 2, kNodeHeader = 3 };

}  // namespace fusedlr
