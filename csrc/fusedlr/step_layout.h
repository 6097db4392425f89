// Layout of the tables an optimizer step reads, shared by the Python packer,
// the CPU driver and the CUDA kernels (Python reads these numbers from
// fusedlr/_layout.py, written from this header at build time, so they are
// written down only here).
//
// Tensor table: int64 rows of kTensorFields, one per parameter updated in
// this step. Group table: float64 rows of kGroupFields, one per param group.
#pragma once
#include <stdint.h>

#include "enum_list.h"

namespace fusedlr {

#define FUSEDLR_TENSOR_FIELDS(X)                                                                               \
  X(kParamPtr, "param", 0)    /* address of the parameter data (its fp32 master copy with master weights) */ \
  X(kGradPtr, "grad", 1)      /* address of its gradient (same layout) */                                     \
  X(kState0Ptr, "state0", 2)  /* the optimizer's state slots (specs.py): SGD momentum buffer (0 when */       \
  X(kState1Ptr, "state1", 3)  /* momentum == 0); Adam(W) exp_avg, exp_avg_sq, max_exp_avg_sq (0 unless */     \
  X(kState2Ptr, "state2", 4)  /* amsgrad) */                                                                  \
  X(kStepPtr, "step", 5)      /* int64 updates this parameter has received */                                 \
  X(kNumel, "numel", 6)                                                                                       \
  X(kGroup, "group", 7)       /* index of its param group */                                                  \
  X(kParamCopyPtr, "param_copy", 8)  /* with master weights: the param (grad dtype) written as kParamPtr's */  \
                                     /* rounding; else 0 */                                                  \
  X(kStateScalesPtr, "state_scales", 9)  /* with 8-bit states: float32 (2, blocks), each block's absmax of */  \
                                         /* state0 and state1 (block_update.h); else 0 */
enum TensorField : int { FUSEDLR_TENSOR_FIELDS(FUSEDLR_ENUMERATOR) kTensorFields = 10 };
static_assert(FUSEDLR_COUNT(FUSEDLR_TENSOR_FIELDS) == kTensorFields, "a row holds every field");

// Every optimizer has a base lr and a weight decay; up to three
// hyperparameters of its own (kHyper1..3, named per optimizer below); the
// offsets of its lr schedule and of the schedules that may drive its weight
// decay and kHyper1 (-1: constant).
#define FUSEDLR_GROUP_FIELDS(X)                                                                          \
  X(kBaseLr, "base_lr", 0)                                                                              \
  X(kWeightDecay, "weight_decay", 1)                                                                    \
  X(kHyper1, "hyper1", 2)                                                                               \
  X(kHyper2, "hyper2", 3)                                                                               \
  X(kHyper3, "hyper3", 4)                                                                               \
  X(kProgram, "program", 5)  /* offset of the group's lr schedule in the program buffer */              \
  X(kWeightDecayProgram, "weight_decay_program", 6)  /* its weight decay schedule, -1: constant */      \
  X(kHyper1Program, "hyper1_program", 7)             /* its kHyper1 schedule, -1: constant */
enum GroupField : int { FUSEDLR_GROUP_FIELDS(FUSEDLR_ENUMERATOR) kGroupFields = 8 };
static_assert(FUSEDLR_COUNT(FUSEDLR_GROUP_FIELDS) == kGroupFields, "a row holds every field");
enum SgdGroupField : int { kMomentum = kHyper1, kDampening = kHyper2 };
enum AdamGroupField : int { kBeta1 = kHyper1, kBeta2 = kHyper2, kEps = kHyper3 };

#define FUSEDLR_SCALAR_TYPES(X) \
  X(kFloat32, "float32", 0) X(kFloat64, "float64", 1) X(kFloat16, "float16", 2) X(kBFloat16, "bfloat16", 3) \
  X(kInt16, "int16", 4) /* as the dtype updated, with bf16 grads: the low halves of bf16 params' fp32 masters */ \
  X(kUInt8, "uint8", 5) /* as the state dtype: Adam's moments as 8-bit codes, block-wise (block_update.h) */
enum ScalarType : int { FUSEDLR_SCALAR_TYPES(FUSEDLR_ENUMERATOR) };

// The optimizers (Python: fusedlr/optim/specs.py, by these names). Code that
// depends on the kind switches over all of them with a failing default.
#define FUSEDLR_OPTIMIZER_KINDS(X) X(kSGD, "sgd", 0) X(kAdamW, "adamw", 1) X(kAdam, "adam", 2)
enum OptimizerKind : int { FUSEDLR_OPTIMIZER_KINDS(FUSEDLR_ENUMERATOR) };
constexpr const char kUnknownOptimizerKind[] = "unknown optimizer kind (see FUSEDLR_OPTIMIZER_KINDS)";

// The (params or masters, grads, states) dtypes a step's kernels are built
// for: each dtype alone, fp32 masters of fp16/bf16 params, bf16 params with
// their fp32 masters' low halves (int16), and bf16 states or 8-bit codes of
// states beside fp32 params or masters.
enum DtypeCombination : int {
  kUnsupportedCombination = -1,
  kFloat32Step, kFloat64Step, kFloat16Step, kBFloat16Step,
  kFloat16MasterStep, kBFloat16MasterStep, kBFloat16SplitStep,
  kFloat32Bf16StateStep, kFloat16MasterBf16StateStep, kBFloat16MasterBf16StateStep, kBFloat16SplitBf16StateStep,
  kFloat32CodedStateStep, kFloat16MasterCodedStateStep, kBFloat16MasterCodedStateStep,
};
constexpr const char kUnsupportedDtypes[] =
    "unsupported (dtype, grad_dtype, state_dtype): one float type for all, or float32 params (masters of "
    "float16/bfloat16 params) or int16 low halves of bfloat16 params' masters, with bfloat16 or float32 states "
    "(or, for float32 params or masters, 8-bit codes)";

inline DtypeCombination dtype_combination_of(int dtype, int grad_dtype, int state_dtype) {
  if (dtype == grad_dtype && dtype == state_dtype) {
    switch (dtype) {
      case kFloat32: return kFloat32Step;
      case kFloat64: return kFloat64Step;
      case kFloat16: return kFloat16Step;
      case kBFloat16: return kBFloat16Step;
      default: return kUnsupportedCombination;
    }
  }
  if (state_dtype == kUInt8 && dtype == kFloat32) {
    switch (grad_dtype) {
      case kFloat32: return kFloat32CodedStateStep;
      case kFloat16: return kFloat16MasterCodedStateStep;
      case kBFloat16: return kBFloat16MasterCodedStateStep;
      default: return kUnsupportedCombination;
    }
  }
  if (state_dtype != kFloat32 && state_dtype != kBFloat16) return kUnsupportedCombination;
  const bool bf16_states = state_dtype == kBFloat16;
  if (dtype == kInt16 && grad_dtype == kBFloat16) return bf16_states ? kBFloat16SplitBf16StateStep : kBFloat16SplitStep;
  if (dtype != kFloat32) return kUnsupportedCombination;
  switch (grad_dtype) {
    case kFloat32: return bf16_states ? kFloat32Bf16StateStep : kFloat32Step;
    case kFloat16: return bf16_states ? kFloat16MasterBf16StateStep : kFloat16MasterStep;
    case kBFloat16: return bf16_states ? kBFloat16MasterBf16StateStep : kBFloat16MasterStep;
    default: return kUnsupportedCombination;
  }
}

// The opt-in history ring (opt.enable_history): a float64 buffer of
// kHistoryHeader values (the number of steps recorded so far, the number of
// rows), then the rows, one per ended step, oldest overwritten first, of
// kHistoryLrs + num_groups values: the step's schedule step, whether it was
// applied (1) or skipped by GradScaler (0), the global grad norm its clipping
// measured (NaN without max_grad_norm), and each group's lr in it.
enum HistoryField : int { kHistoryStep = 0, kHistoryApplied = 1, kHistoryGradNorm = 2, kHistoryLrs = 3 };
enum HistoryHeader : int { kHistoryRecorded = 0, kHistoryCapacity = 1, kHistoryHeader = 2 };

// What the CUDA backend's one-block step kernel does.
// With max_grad_norm, two float64 values on the bucket's device, written
// before the update: the factor clipping multiplies every (unscaled) grad by,
// and the global grad norm it was computed from.
enum ClippingField : int { kClipCoefficient = 0, kClipGradNorm = 1, kClippingFields = 2 };

enum StepKernelMode : int {
  kPrepare = 0,  // write the tensors' values for an update at the current step
  kEndStep = 1,  // count a step with no update launch (no param had a grad), then prepare
};

// Everything one step of one bucket needs, as X(type, name) entries: the one
// list that declares StepArgs and names its fields for Python
// (step_args_binding.h). All pointers live on the bucket's device.
#define FUSEDLR_STEP_ARGS(X)                                                                                 \
  X(const int64_t*, tensors)   /* the tensor table: kTensorFields int64 per tensor */                         \
  X(int64_t, num_tensors)                                                                                     \
  X(const double*, groups)     /* the group table: kGroupFields float64 per group */                          \
  X(int64_t, num_groups)                                                                                      \
  X(const double*, program)    /* the packed schedules */                                                     \
  X(const double*, plateau)    /* the optimizer's plateau buffer (plateau.h) */                               \
  X(int64_t*, global_step)     /* schedule step of this update, advanced by the step's last bucket */         \
  X(const float*, grad_scale)  /* GradScaler's scale, null without one */                                     \
  X(const float*, found_inf)   /* GradScaler's inf/nan flag, null without one */                              \
  X(const double*, clipping)   /* null without max_grad_norm, else kClippingFields values */                  \
  X(int, kind)                 /* OptimizerKind */                                                            \
  X(int, dtype)                /* ScalarType of the params the kernels update (their masters, if any) */      \
  X(int, grad_dtype)           /* ScalarType of the grads (and of the params written from masters) */        \
  X(int, state_dtype)          /* ScalarType of the states */                                                 \
  X(bool, maximize)                                                                                           \
  X(bool, nesterov)            /* SGD */                                                                      \
  X(bool, amsgrad)             /* AdamW */                                                                    \
  X(bool, stochastic_rounding) /* bf16 states rounded stochastically (scalar_io.h) */                         \
  X(double*, scalars)          /* CUDA: each tensor's scalars for its coming update (update_math.h), */       \
  X(double*, group_values)     /* scratch of kGroupValueFields doubles per group for writing them */         \
  X(double*, next_lr)          /* each group's lr for the next step */                                        \
  X(bool*, applied)            /* whether the last step was applied */                                        \
  X(bool, last_bucket)         /* CUDA: this bucket's update is the step's last (it advances the step) */     \
  X(double*, history)          /* the history ring, null when not kept */

#define FUSEDLR_DECLARE_STEP_ARG(type, name) type name;
struct StepArgs {
  FUSEDLR_STEP_ARGS(FUSEDLR_DECLARE_STEP_ARG)
};
#undef FUSEDLR_DECLARE_STEP_ARG

inline DtypeCombination dtype_combination(const StepArgs& a) {
  return dtype_combination_of(a.dtype, a.grad_dtype, a.state_dtype);
}

}  // namespace fusedlr
