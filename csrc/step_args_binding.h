// Builds StepArgs from the integers Python passes (addresses, counts, flags),
// for both binding modules.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "fusedlr/step_layout.h"

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

}  // namespace fusedlr
