// Builds StepArgs from the integers Python passes (addresses, counts, flags),
// for both binding modules, and exports the table layout to Python.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "fusedlr/plateau.h"
#include "fusedlr/step_layout.h"
#include "fusedlr/update_math.h"

namespace fusedlr {

// StepArgs cross the binding as one object, built by `step_args(**fields)`
// from the field names of FUSEDLR_STEP_ARGS (addresses as integers; fields
// not given are 0 / null / false).
namespace detail {

template <typename T>
void set_step_arg(T& field, pybind11::handle value) {
  if constexpr (std::is_pointer_v<T>)
    field = reinterpret_cast<T>(value.cast<std::uintptr_t>());
  else
    field = value.cast<T>();
}

inline StepArgs step_args_from(const pybind11::kwargs& fields) {
  StepArgs a{};
  for (auto item : fields) {
    const std::string name = item.first.cast<std::string>();
    bool known = false;
#define FUSEDLR_SET_STEP_ARG(type, field)     \
  if (!known && name == #field) {             \
    set_step_arg(a.field, item.second);       \
    known = true;                             \
  }
    FUSEDLR_STEP_ARGS(FUSEDLR_SET_STEP_ARG)
#undef FUSEDLR_SET_STEP_ARG
    if (!known) throw pybind11::type_error("step_args: unknown field " + name);
  }
  return a;
}

}  // namespace detail

inline void bind_step_args(pybind11::module_& m) {
  // module_local: each binding module (CPU, CUDA, emulated) has its own StepArgs type
  pybind11::class_<StepArgs>(m, "StepArgs", pybind11::module_local(), "One bucket's step arguments (see step_args).");
  m.def("step_args", &detail::step_args_from,
        "StepArgs from keyword fields (tensors, num_tensors, groups, ...: see FUSEDLR_STEP_ARGS in "
        "fusedlr/step_layout.h); addresses as integers, absent fields 0.");
  pybind11::list names;
#define FUSEDLR_NAME_STEP_ARG(type, field) names.append(#field);
  FUSEDLR_STEP_ARGS(FUSEDLR_NAME_STEP_ARG)
#undef FUSEDLR_NAME_STEP_ARG
  m.attr("STEP_ARG_FIELDS") = pybind11::tuple(names);
}

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
  tensor_fields["param_copy"] = int(kParamCopyPtr);
  m.attr("TENSOR_FIELDS") = tensor_fields;
  m.attr("NUM_TENSOR_FIELDS") = int(kTensorFields);
  pybind11::dict group_fields;
  group_fields["base_lr"] = int(kBaseLr);
  group_fields["weight_decay"] = int(kWeightDecay);
  group_fields["hyper1"] = int(kHyper1);
  group_fields["hyper2"] = int(kHyper2);
  group_fields["hyper3"] = int(kHyper3);
  group_fields["program"] = int(kProgram);
  group_fields["weight_decay_program"] = int(kWeightDecayProgram);
  group_fields["hyper1_program"] = int(kHyper1Program);
  m.attr("GROUP_FIELDS") = group_fields;
  m.attr("NUM_GROUP_FIELDS") = int(kGroupFields);
  pybind11::dict dtypes;
  dtypes["float32"] = int(kFloat32);
  dtypes["float64"] = int(kFloat64);
  dtypes["float16"] = int(kFloat16);
  dtypes["bfloat16"] = int(kBFloat16);
  m.attr("DTYPES") = dtypes;
  pybind11::dict kinds;
#define FUSEDLR_NAME_KIND(kind, name) kinds[#name] = int(kind);
  FUSEDLR_OPTIMIZER_KINDS(FUSEDLR_NAME_KIND)
#undef FUSEDLR_NAME_KIND
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
