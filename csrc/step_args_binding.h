// Builds StepArgs from the integers Python passes (addresses, counts, flags),
// for both binding modules, and exports the table layout to Python.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "fusedlr/plateau.h"
#include "fusedlr/step_layout.h"
#include "fusedlr/update_math.h"

namespace fusedlr {

inline StepArgs make_step_args(std::uintptr_t tensors, int64_t num_tensors, std::uintptr_t groups,
                               int64_t num_groups, std::uintptr_t program, std::uintptr_t plateau,
                               std::uintptr_t global_step, std::uintptr_t grad_scale,
                               std::uintptr_t found_inf, std::uintptr_t clipping, int kind, int dtype, bool maximize,
                               bool nesterov, bool amsgrad, std::uintptr_t scalars = 0,
                               std::uintptr_t group_values = 0, std::uintptr_t next_lr = 0,
                               std::uintptr_t applied = 0, bool last_bucket = false,
                               std::uintptr_t history = 0) {
  StepArgs a;
  a.tensors = reinterpret_cast<const int64_t*>(tensors);
  a.num_tensors = num_tensors;
  a.groups = reinterpret_cast<const double*>(groups);
  a.num_groups = num_groups;
  a.program = reinterpret_cast<const double*>(program);
  a.plateau = reinterpret_cast<const double*>(plateau);
  a.global_step = reinterpret_cast<int64_t*>(global_step);
  a.grad_scale = reinterpret_cast<const float*>(grad_scale);
  a.found_inf = reinterpret_cast<const float*>(found_inf);
  a.clipping = reinterpret_cast<const double*>(clipping);
  a.kind = kind;
  a.dtype = dtype;
  a.maximize = maximize;
  a.nesterov = nesterov;
  a.amsgrad = amsgrad;
  a.scalars = reinterpret_cast<double*>(scalars);
  a.group_values = reinterpret_cast<double*>(group_values);
  a.next_lr = reinterpret_cast<double*>(next_lr);
  a.applied = reinterpret_cast<bool*>(applied);
  a.last_bucket = last_bucket;
  a.history = reinterpret_cast<double*>(history);
  return a;
}

// Python keyword names of make_step_args' first fifteen parameters, in order.
#define FUSEDLR_STEP_ARG_NAMES                                                              \
  pybind11::arg("tensors"), pybind11::arg("num_tensors"), pybind11::arg("groups"),          \
      pybind11::arg("num_groups"), pybind11::arg("program"), pybind11::arg("plateau"), \
      pybind11::arg("global_step"), \
      pybind11::arg("grad_scale"), pybind11::arg("found_inf"), pybind11::arg("clipping"), \
      pybind11::arg("kind"), \
      pybind11::arg("dtype"), pybind11::arg("maximize"), pybind11::arg("nesterov"),         \
      pybind11::arg("amsgrad")

// ... and of the rest (the device step's tables).
#define FUSEDLR_DEVICE_STEP_ARG_NAMES                                                         \
  pybind11::arg("scalars"), pybind11::arg("group_values"), pybind11::arg("next_lr"),         \
      pybind11::arg("applied"), pybind11::arg("last_bucket"), pybind11::arg("history")

inline void export_step_layout(pybind11::module_& m) {
  pybind11::dict tensor_fields;
  tensor_fields["param"] = int(kParamPtr);
  tensor_fields["grad"] = int(kGradPtr);
  tensor_fields["state0"] = int(kState0Ptr);
  tensor_fields["state1"] = int(kState1Ptr);
  tensor_fields["state2"] = int(kState2Ptr);
  tensor_fields["step"] = int(kStepPtr);
  tensor_fields["numel"] = int(kNumel);
  tensor_fields["group"] = int(kGroup);
  m.attr("TENSOR_FIELDS") = tensor_fields;
  m.attr("NUM_TENSOR_FIELDS") = int(kTensorFields);
  pybind11::dict group_fields;
  group_fields["base_lr"] = int(kBaseLr);
  group_fields["weight_decay"] = int(kWeightDecay);
  group_fields["momentum"] = int(kMomentum);
  group_fields["dampening"] = int(kDampening);
  group_fields["eps"] = int(kEps);
  group_fields["program"] = int(kProgram);
  group_fields["weight_decay_program"] = int(kWeightDecayProgram);
  group_fields["momentum_program"] = int(kMomentumProgram);
  m.attr("GROUP_FIELDS") = group_fields;
  m.attr("NUM_GROUP_FIELDS") = int(kGroupFields);
  pybind11::dict dtypes;
  dtypes["float32"] = int(kFloat32);
  dtypes["float64"] = int(kFloat64);
  dtypes["float16"] = int(kFloat16);
  dtypes["bfloat16"] = int(kBFloat16);
  m.attr("DTYPES") = dtypes;
  pybind11::dict kinds;
  kinds["sgd"] = int(kSGD);
  kinds["adamw"] = int(kAdamW);
  m.attr("OPTIMIZER_KINDS") = kinds;
  pybind11::dict plateau_fields;
  plateau_fields["max_mode"] = int(kPlateauMaxMode);
  plateau_fields["factor"] = int(kPlateauFactor);
  plateau_fields["patience"] = int(kPlateauPatience);
  plateau_fields["threshold"] = int(kPlateauThreshold);
  plateau_fields["abs_threshold"] = int(kPlateauAbsThreshold);
  plateau_fields["cooldown"] = int(kPlateauCooldown);
  plateau_fields["eps"] = int(kPlateauEps);
  plateau_fields["num_groups"] = int(kPlateauNumGroups);
  plateau_fields["best"] = int(kPlateauBest);
  plateau_fields["bad_epochs"] = int(kPlateauBadEpochs);
  plateau_fields["cooldown_left"] = int(kPlateauCooldownLeft);
  m.attr("PLATEAU_FIELDS") = plateau_fields;
  m.attr("PLATEAU_HEADER") = int(kPlateauHeader);
  m.attr("TENSOR_SCALAR_FIELDS") = int(kTensorScalarFields);
  m.attr("GROUP_VALUE_FIELDS") = int(kGroupValueFields);
  m.attr("HISTORY_HEADER") = int(kHistoryHeader);
  m.attr("HISTORY_CAPACITY") = int(kHistoryCapacity);
  m.attr("HISTORY_LRS") = int(kHistoryLrs);
  m.attr("HISTORY_GRAD_NORM") = int(kHistoryGradNorm);
  m.attr("CLIP_COEFFICIENT") = int(kClipCoefficient);
  m.attr("CLIP_GRAD_NORM") = int(kClipGradNorm);
  m.attr("CLIPPING_FIELDS") = int(kClippingFields);
}

}  // namespace fusedlr
