// The per-element SGD and AdamW updates, with torch.optim's operation order,
// and the per-tensor scalars they need (computed once per tensor, in double).
// Host and device code both include this: one maths source.
#pragma once
#include <math.h>
#include <stdint.h>

#include "scalar_io.h"
#include "step_common.h"
#include "step_layout.h"

#if defined(__CUDACC__)
#define FUSEDLR_UPD __host__ __device__ inline
#else
#define FUSEDLR_UPD inline
#endif

namespace fusedlr {

// Multiplier applied to every raw gradient: the GradScaler unscale (torch
// multiplies by the float reciprocal of the scale) and the maximize sign.
FUSEDLR_UPD double grad_factor(const float* grad_scale, bool maximize) {
  double factor = grad_scale ? (double)(float)(1.0 / (double)*grad_scale) : 1.0;
  return maximize ? -factor : factor;
}

template <typename M>
struct SgdScalars {
  M grad_factor, lr, weight_decay, momentum, dampening_complement;
  bool has_momentum, first_update;
};

// `values`: the group's scheduled lr, weight decay and momentum at this step;
// `updates_before`: how many updates this parameter received before this one.
template <typename M>
FUSEDLR_UPD SgdScalars<M> sgd_scalars(const double* group, const GroupValues& values, double factor,
                                      int64_t updates_before) {
  SgdScalars<M> s;
  s.grad_factor = (M)factor;
  s.lr = (M)values.lr;
  s.weight_decay = (M)values.weight_decay;
  s.momentum = (M)values.momentum;
  s.dampening_complement = (M)(1.0 - group[kDampening]);
  s.has_momentum = values.momentum != 0.0;  // torch: `if momentum != 0` at every step
  s.first_update = updates_before <= 0;  // torch: momentum_buffer is None
  return s;
}

// torch.optim.SGD, one element: d_p = g + wd p; buf = momentum buf + (1-dampening) d_p
// (buf = d_p on the first update); d_p = nesterov ? d_p + momentum buf : buf; p -= lr d_p.
template <bool kNesterov, typename T, typename M>
FUSEDLR_UPD void sgd_element(const SgdScalars<M>& s, T* param, const T* grad, T* momentum_buffer,
                             int64_t i) {
  M g = load_as_math(grad, i) * s.grad_factor;
  M p = load_as_math(param, i);
  if (s.weight_decay != (M)0) g = g + s.weight_decay * p;
  if (s.has_momentum) {
    M buf = s.first_update ? g
                           : load_as_math(momentum_buffer, i) * s.momentum + s.dampening_complement * g;
    store_from_math(momentum_buffer, i, buf);
    g = kNesterov ? g + s.momentum * buf : buf;
  }
  store_from_math(param, i, p + (-s.lr) * g);
}

template <typename M>
struct AdamWScalars {
  M grad_factor, decay, beta1_complement, beta2, beta2_complement, neg_step_size, bias2_sqrt, eps;
};

template <typename M>
FUSEDLR_UPD AdamWScalars<M> adamw_scalars(const double* group, const GroupValues& values, double factor,
                                          int64_t updates_before) {
  const double lr = values.lr, beta1 = values.momentum, beta2 = group[kDampening];
  const double step = (double)(updates_before > 0 ? updates_before : 0) + 1.0;  // a negative count reads as 0
  AdamWScalars<M> s;
  s.grad_factor = (M)factor;
  s.decay = (M)(1.0 - lr * values.weight_decay);
  s.beta1_complement = (M)(1.0 - beta1);
  s.beta2 = (M)beta2;
  s.beta2_complement = (M)(1.0 - beta2);
  s.neg_step_size = (M)(-(lr / (1.0 - pow(beta1, step))));
  s.bias2_sqrt = (M)sqrt(1.0 - pow(beta2, step));
  s.eps = (M)group[kEps];
  return s;
}

// torch.lerp's formula (exact at both ends).
template <typename M>
FUSEDLR_UPD M lerp_math(M from, M to, M weight) {
  return weight < (M)0.5 ? from + weight * (to - from) : to - (to - from) * ((M)1 - weight);
}

// torch.optim.AdamW, one element (maths in registers, rounded to T only when
// stored, like torch's fused kernels): p *= 1 - lr wd; m = lerp(m, g, 1-beta1);
// v = beta2 v + (1-beta2) g g; [vmax = max(vmax, v)];
// p += -lr/bc1 * m / (sqrt(v or vmax)/sqrt(bc2) + eps).
template <bool kAmsgrad, typename T, typename M>
FUSEDLR_UPD void adamw_element(const AdamWScalars<M>& s, T* param, const T* grad, T* exp_avg,
                               T* exp_avg_sq, T* max_exp_avg_sq, int64_t i) {
  const M g = load_as_math(grad, i) * s.grad_factor;
  const M p = load_as_math(param, i) * s.decay;
  const M m = lerp_math(load_as_math(exp_avg, i), g, s.beta1_complement);
  const M v = load_as_math(exp_avg_sq, i) * s.beta2 + s.beta2_complement * g * g;
  store_from_math(exp_avg, i, m);
  store_from_math(exp_avg_sq, i, v);
  M second = v;
  if (kAmsgrad) {
    const M old_max = load_as_math(max_exp_avg_sq, i);
    second = old_max > v ? old_max : v;
    store_from_math(max_exp_avg_sq, i, second);
  }
  const M denom = sqrt(second) / s.bias2_sqrt + s.eps;
  store_from_math(param, i, p + s.neg_step_size * m / denom);
}

}  // namespace fusedlr
