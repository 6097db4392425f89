// Packed schedule format shared by the Python packer, the CPU evaluator and
// the CUDA kernels. A schedule is a flat array of doubles; a node starts with
// a header (its kind, the offset of its parent node or -1 at the root, its
// index among the parent's children), followed by the fields listed below.
// Child references are offsets into the same array. The parent links let the
// evaluator walk the tree without a stack. The Python side reads these numbers
// from fusedlr/_layout.py, written from this header at build time, so this
// header is the only place they are written down.
#pragma once

#include "enum_list.h"

namespace fusedlr {

#define FUSEDLR_NODE_KINDS(X)                                                                   \
  /* Leaves: lr = f(local step t, incoming base lr b, group g). */                                \
  X(kConstant, "CONSTANT", 1)        /* factor, total_iters          b*factor for t<total_iters, else b */ \
  X(kAnneal, "ANNEAL", 2)            /* start, end, steps, shape     b*(start..end) along a shape */ \
  X(kStep, "STEP", 3)                /* step_size, gamma             b*gamma^floor(t/step_size) */ \
  X(kPiecewise, "PIECEWISE", 4)      /* n, bounds[n], factors[n+1]   b*factors[#{bounds <= t}] */ \
  X(kExponential, "EXPONENTIAL", 5)  /* rate, transition_steps, begin, staircase, bounded, end_factor */ \
  X(kPolynomial, "POLYNOMIAL", 6)    /* steps, power, end_lr, cycle */                            \
  X(kCosine, "COSINE", 7)            /* steps, eta_min, alpha, exponent, cycles, periodic */      \
  X(kCosineRestarts, "COSINE_RESTARTS", 8)  /* T_0, T_mult, eta_min, alpha, cycle_decay, cycle_limit */ \
  X(kInverseSqrt, "INVERSE_SQRT", 9)  /* timescale                   b*sqrt(ts/(t+ts)) */         \
  X(kInverseTime, "INVERSE_TIME", 10) /* decay_rate, decay_steps, staircase */                    \
  X(kOneCycle, "ONE_CYCLE", 11)       /* n_phases, anneal, end[3], lr[4] */                       \
  X(kCyclic, "CYCLIC", 12)            /* max_lr, total_size, step_ratio, mode, gamma, has_start, start (else b) */ \
  X(kRangeTest, "RANGE_TEST", 13)     /* end_lr, num_iter, mode */                                \
  X(kPlateau, "PLATEAU", 14)          /* (none)                      b reduced on plateaus, see plateau.h */ \
  /* Composites. */                                                                               \
  X(kSequential, "SEQUENTIAL", 20)    /* n, child[n], milestones[n-1]  torch SequentialLR */      \
  X(kChain, "CHAIN", 21)              /* n, child[n]                   each child rescales the previous output */ \
  X(kPerGroup, "PER_GROUP", 22)       /* n, child[n]                   child[g] for param group g */
enum NodeKind : int { FUSEDLR_NODE_KINDS(FUSEDLR_ENUMERATOR) };

#define FUSEDLR_ANNEAL_SHAPES(X)                                  \
  X(kShapeLinear, "linear", 0)             /* p */                \
  X(kShapeCosine, "cosine", 1)             /* (1 - cos(pi p)) / 2 */ \
  X(kShapeGeometric, "exponential", 2)     /* start * (end/start)^p */ \
  X(kShapeSqrt, "sqrt", 3)                 /* sqrt(p) */          \
  X(kShapeOneMinusSqrt, "1-sqrt", 4)       /* 1 - sqrt(1 - p) */
enum AnnealShape : int { FUSEDLR_ANNEAL_SHAPES(FUSEDLR_ENUMERATOR) };

#define FUSEDLR_CYCLIC_MODES(X) X(kTriangular, "triangular", 0) X(kTriangular2, "triangular2", 1) X(kExpRange, "exp_range", 2)
enum CyclicMode : int { FUSEDLR_CYCLIC_MODES(FUSEDLR_ENUMERATOR) };
#define FUSEDLR_RANGE_TEST_MODES(X) X(kRangeExponential, "exponential", 0) X(kRangeLinear, "linear", 1)
enum RangeTestMode : int { FUSEDLR_RANGE_TEST_MODES(FUSEDLR_ENUMERATOR) };
#define FUSEDLR_ONE_CYCLE_ANNEAL(X) X(kAnnealCos, "cos", 0) X(kAnnealLinear, "linear", 1)
enum OneCycleAnneal : int { FUSEDLR_ONE_CYCLE_ANNEAL(FUSEDLR_ENUMERATOR) };

enum NodeHeader : int { kNodeKind = 0, kNodeParent = 1, kNodeIndex = 2, kNodeHeader = 3 };

}  // namespace fusedlr
