// The per-element SGD and Adam(W) updates, with torch.optim's operation order,
// and the per-tensor scalars they need. The scalars of a tensor's coming update
// are computed once (in double) into a row of kTensorScalarFields doubles: by
// the CPU driver per chunk, and on the GPU once per step into a device table
// that the element loop only reads. The element updates work on values in
// registers, so the CPU loops and the vectorised CUDA loops share them.
// Host and device code both include this: one maths source.
#pragma once
#include <math.h>
#include <stdint.h>

#include "scalar_io.h"
#include "step_common.h"
#include "step_layout.h"

namespace fusedlr {

// Multiplier applied to every raw gradient: the GradScaler unscale (torch
// multiplies by the float reciprocal of the scale), the grad-norm clipping
// coefficient and the maximize sign.
FUSEDLR_HD double grad_factor(const StepArgs& a) {
  double factor = a.grad_scale ? (double)(float)(1.0 / (double)*a.grad_scale) : 1.0;
  if (a.clipping) factor *= a.clipping[kClipCoefficient];
  return a.maximize ? -factor : factor;
}

// The element update an optimizer kind runs: SGD's, or Adam's (Adam and AdamW
// differ only in their scalars: weight decay added to the grad as an L2 term,
// or decoupled from it).
enum ElementUpdate : int { kUnknownUpdate = -1, kSgdUpdate = 0, kAdamUpdate = 1 };

FUSEDLR_HD ElementUpdate element_update_of(int kind) {
  switch (kind) {
    case kSGD: return kSgdUpdate;
    case kAdamW:
    case kAdam: return kAdamUpdate;
    default: return kUnknownUpdate;
  }
}

// Row of a tensor's scalars for its coming update.
enum TensorScalarField : int {
  // SGD
  kSgdLr = 0, kSgdWeightDecay = 1, kSgdMomentum = 2, kSgdDampeningComplement = 3,
  kSgdHasMomentum = 4, kSgdFirstUpdate = 5,
  // Adam, AdamW
  kAdamDecay = 0, kAdamBeta1Complement = 1, kAdamBeta2 = 2, kAdamBeta2Complement = 3,
  kAdamNegStepSize = 4, kAdamBias2Sqrt = 5, kAdamEps = 6, kAdamL2 = 7,
  kTensorScalarFields = 8,
};

// The scalars of one tensor's update: `group` is its group table row, `values`
// the group's scheduled lr, weight decay and kHyper1 (momentum, beta1) at this
// step, `updates_before` how many updates the tensor received before this one.
// Entry points refuse an unknown kind before any of this runs.
FUSEDLR_HD void tensor_scalars(int kind, const double* group, const GroupValues& values, int64_t updates_before,
                               double* row) {
  const int64_t before = updates_before > 0 ? updates_before : 0;  // a negative count reads as 0
  if (element_update_of(kind) == kSgdUpdate) {
    row[kSgdLr] = values.lr;
    row[kSgdWeightDecay] = values.weight_decay;
    row[kSgdMomentum] = values.hyper1;
    row[kSgdDampeningComplement] = 1.0 - group[kDampening];
    row[kSgdHasMomentum] = values.hyper1 != 0.0;  // torch: `if momentum != 0` at every step
    row[kSgdFirstUpdate] = before == 0;           // torch: momentum_buffer is None
    return;
  }
  const double lr = values.lr, beta1 = values.hyper1, beta2 = group[kBeta2];
  const double step = (double)before + 1.0;
  const bool decoupled = kind == kAdamW;
  row[kAdamDecay] = decoupled ? 1.0 - lr * values.weight_decay : 1.0;
  row[kAdamL2] = decoupled ? 0.0 : values.weight_decay;
  row[kAdamBeta1Complement] = 1.0 - beta1;
  row[kAdamBeta2] = beta2;
  row[kAdamBeta2Complement] = 1.0 - beta2;
  row[kAdamNegStepSize] = -(lr / (1.0 - pow(beta1, step)));
  row[kAdamBias2Sqrt] = sqrt(1.0 - pow(beta2, step));
  row[kAdamEps] = group[kEps];
}

// Tensor t's scalars for its coming update into a.scalars, from its group's
// values in a.group_values (store_group_values) and its update count.
FUSEDLR_HD void store_tensor_scalars(const StepArgs& a, int64_t t) {
  const int64_t* row = a.tensors + t * kTensorFields;
  const int64_t g = row[kGroup];
  tensor_scalars(a.kind, a.groups + g * kGroupFields, stored_group_values(a, g),
                 *address_as<int64_t>(row[kStepPtr]), a.scalars + t * kTensorScalarFields);
}

template <typename M>
struct SgdScalars {
  M lr, weight_decay, momentum, dampening_complement;
  bool has_momentum, first_update;
};

template <typename M>
FUSEDLR_HD SgdScalars<M> sgd_scalars(const double* row) {
  return SgdScalars<M>{(M)row[kSgdLr], (M)row[kSgdWeightDecay], (M)row[kSgdMomentum],
                       (M)row[kSgdDampeningComplement], row[kSgdHasMomentum] != 0.0, row[kSgdFirstUpdate] != 0.0};
}

// torch.optim.SGD on one element, g already unscaled: d_p = g + wd p;
// buf = momentum buf + (1-dampening) d_p (buf = d_p on the first update);
// d_p = nesterov ? d_p + momentum buf : buf; p -= lr d_p. The momentum buffer
// is reached through `buffer` (load(), store(value)) only where torch reads or
// writes it, which also keeps the CPU loops vectorisable.
template <bool kNesterov, typename M, typename Buffer>
FUSEDLR_HD_ELEMENT M sgd_math(const SgdScalars<M>& s, M g, M p, Buffer& buffer) {
  if (s.weight_decay != (M)0) g = g + s.weight_decay * p;
  if (s.has_momentum) {
    const M buf = s.first_update ? g : buffer.load() * s.momentum + s.dampening_complement * g;
    buffer.store(buf);
    g = kNesterov ? g + s.momentum * buf : buf;
  }
  return p + (-s.lr) * g;
}

// A momentum buffer element in memory, for sgd_math.
template <typename T, typename M, typename R>
struct BufferAt {
  T* data;
  int64_t i;
  const R& rounding;
  FUSEDLR_HD_ELEMENT M load() const { return load_as_math(data, i); }
  FUSEDLR_HD_ELEMENT void store(M value) { store_state(data, i, value, rounding, 0); }
};

template <typename M>
struct AdamScalars {
  M decay, beta1_complement, beta2, beta2_complement, neg_step_size, bias2_sqrt, eps, l2;
};

template <typename M>
FUSEDLR_HD AdamScalars<M> adam_scalars(const double* row) {
  return AdamScalars<M>{(M)row[kAdamDecay], (M)row[kAdamBeta1Complement], (M)row[kAdamBeta2],
                        (M)row[kAdamBeta2Complement], (M)row[kAdamNegStepSize], (M)row[kAdamBias2Sqrt],
                        (M)row[kAdamEps], (M)row[kAdamL2]};
}

// a + b c rounded once, as torch computes add(b, alpha=c) (an FMA on the CPU,
// contracted to one on CUDA). On the host in fp32 through double (the product
// is exact there), which vectorises where a hardware FMA may be missing.
FUSEDLR_HD_ELEMENT float multiply_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return fmaf(b, c, a);
#else
  return (float)((double)a + (double)b * (double)c);
#endif
}
FUSEDLR_HD_ELEMENT double multiply_add(double a, double b, double c) { return fma(b, c, a); }

// torch.lerp's formula (exact at both ends).
template <typename M>
FUSEDLR_HD_ELEMENT M lerp_math(M from, M to, M weight) {
  return weight < (M)0.5 ? from + weight * (to - from) : to - (to - from) * ((M)1 - weight);
}

// torch.optim.Adam / AdamW on one element, g already unscaled (maths in
// registers, rounded to the storage type only when stored, like torch's fused
// kernels): Adam: g += wd p (when wd != 0, rounded once); AdamW: p *= 1 - lr wd;
// m = lerp(m, g, 1-beta1); v = beta2 v + (1-beta2) g g;
// [vmax = max(vmax, v)]; p += -lr/bc1 * m / (sqrt(v or vmax)/sqrt(bc2) + eps).
template <bool kAmsgrad, typename M>
FUSEDLR_HD_ELEMENT void adam_math(const AdamScalars<M>& s, M g, M& p, M& m, M& v, M& vmax) {
  if (s.l2 != (M)0) g = multiply_add(g, p, s.l2);  // Adam's weight decay (0 for AdamW: decoupled)
  p = p * s.decay;
  m = lerp_math(m, g, s.beta1_complement);
  v = v * s.beta2 + s.beta2_complement * g * g;
  M second = v;
  if (kAmsgrad) {
    vmax = vmax > v ? vmax : v;
    second = vmax;
  }
  const M denom = sqrt(second) / s.bias2_sqrt + s.eps;
  p = p + s.neg_step_size * m / denom;
}

// The element updates on memory, one element at a time (the CPU loops and the
// CUDA kernels' unaligned path). `param` points to what the maths updates
// (with master weights: the fp32 masters, or a SplitMaster), `grad` and the
// states to their own types.
template <bool kNesterov, typename P, typename G, typename S, typename M, typename R>
FUSEDLR_HD_ELEMENT void sgd_element(const SgdScalars<M>& s, M factor, P param, const G* grad, S* momentum_buffer,
                            int64_t i, const R& rounding) {
  BufferAt<S, M, R> buffer{momentum_buffer, i, rounding};
  store_from_math(param, i, sgd_math<kNesterov>(s, load_as_math(grad, i) * factor, load_as_math(param, i), buffer));
}

template <bool kAmsgrad, typename P, typename G, typename S, typename M, typename R>
FUSEDLR_HD_ELEMENT void adam_element(const AdamScalars<M>& s, M factor, P param, const G* grad, S* exp_avg,
                              S* exp_avg_sq, S* max_exp_avg_sq, int64_t i, const R& rounding) {
  M p = load_as_math(param, i), m = load_as_math(exp_avg, i), v = load_as_math(exp_avg_sq, i);
  M vmax = kAmsgrad ? load_as_math(max_exp_avg_sq, i) : (M)0;
  adam_math<kAmsgrad>(s, load_as_math(grad, i) * factor, p, m, v, vmax);
  store_state(exp_avg, i, m, rounding, 0);
  store_state(exp_avg_sq, i, v, rounding, 1);
  if (kAmsgrad) store_state(max_exp_avg_sq, i, vmax, rounding, 2);
  store_from_math(param, i, p);
}

// Master weights: element i of the param (the grads' dtype) becomes the
// rounding of its updated master (round to nearest even, as torch's .to()).
template <typename T, typename G>
FUSEDLR_HD_ELEMENT void copy_out_element(const T* master, G* param, int64_t i) {
  store_from_math(param, i, load_as_math(master, i));
}

}  // namespace fusedlr
