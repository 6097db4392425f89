// pybind11 module fusedlr._C: the CPU backend. Takes raw addresses of
// contiguous CPU tensors (validated by the Python layer), so it links no torch.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cpu/optimizer_step.h"
#include "cpu/schedule_values.h"
#include "format_constants.h"
#include "fusedlr/step_common.h"
#include "step_args_binding.h"

namespace py = pybind11;

#ifndef FUSEDLR_TORCH_VERSION
#define FUSEDLR_TORCH_VERSION ""
#endif

template <typename T>
static T* as_ptr(std::uintptr_t address) { return reinterpret_cast<T*>(address); }

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedlr CPU backend";
  fusedlr::export_format_constants(m);
  fusedlr::export_step_layout(m);
  m.attr("TORCH_VERSION_AT_BUILD") = FUSEDLR_TORCH_VERSION;

  m.def(
      "schedule_values",
      [](std::uintptr_t prog, std::uintptr_t steps, int64_t n_steps,
         std::uintptr_t base_lrs, int64_t n_groups, std::uintptr_t out) {
        py::gil_scoped_release no_gil;
        fusedlr::cpu::schedule_values(as_ptr<const double>(prog),
                                      as_ptr<const int64_t>(steps), n_steps,
                                      as_ptr<const double>(base_lrs), n_groups,
                                      as_ptr<double>(out));
      },
      py::arg("prog"), py::arg("steps"), py::arg("n_steps"), py::arg("base_lrs"),
      py::arg("n_groups"), py::arg("out"),
      "Evaluate a packed schedule: out[i, g] = lr(steps[i]) for group g (addresses "
      "of contiguous float64/int64 CPU buffers).");

  m.def(
      "update",
      [](std::uintptr_t tensors, int64_t num_tensors, std::uintptr_t groups, int64_t num_groups,
         std::uintptr_t program, std::uintptr_t plateau, std::uintptr_t global_step, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clipping, int kind, int dtype, bool maximize, bool nesterov,
         bool amsgrad, int num_threads) {
        const fusedlr::StepArgs a = fusedlr::make_step_args(
            tensors, num_tensors, groups, num_groups, program, plateau, global_step, grad_scale,
            found_inf, clipping, kind, dtype, maximize, nesterov, amsgrad);
        py::gil_scoped_release no_gil;
        fusedlr::cpu::update(a, num_threads);
      },
      FUSEDLR_STEP_ARG_NAMES, py::arg("num_threads"),
      "Update one bucket's tensors (tables described by TENSOR_FIELDS/GROUP_FIELDS).");

  m.def(
      "finish",
      [](std::uintptr_t tensors, int64_t num_tensors, std::uintptr_t groups, int64_t num_groups,
         std::uintptr_t program, std::uintptr_t plateau, std::uintptr_t global_step, std::uintptr_t grad_scale,
         std::uintptr_t found_inf, std::uintptr_t clipping, int kind, int dtype, bool maximize, bool nesterov,
         bool amsgrad, bool advance, std::uintptr_t next_lr, std::uintptr_t applied, std::uintptr_t history) {
        const fusedlr::StepArgs a = fusedlr::make_step_args(
            tensors, num_tensors, groups, num_groups, program, plateau, global_step, grad_scale,
            found_inf, clipping, kind, dtype, maximize, nesterov, amsgrad, 0, 0, 0, 0, false, history);
        fusedlr::cpu::finish(a, advance, reinterpret_cast<double*>(next_lr), reinterpret_cast<bool*>(applied));
      },
      FUSEDLR_STEP_ARG_NAMES, py::arg("advance"), py::arg("next_lr"), py::arg("applied"), py::arg("history"),
      "Count the update in each tensor's step; with advance, record the step in the history ring "
      "(history: 0 when not kept), step the schedule, write each group's next lr and whether the step "
      "was applied (a bool).");

  m.def(
      "plateau_report",
      [](std::uintptr_t groups, int64_t num_groups, std::uintptr_t program, std::uintptr_t plateau,
         std::uintptr_t global_step, std::uintptr_t metric, std::uintptr_t next_lr) {
        const fusedlr::StepArgs a = fusedlr::make_step_args(0, 0, groups, num_groups, program, plateau,
                                                            global_step, 0, 0, 0, 0, 0, false, false, false);
        fusedlr::report_plateau(a, as_ptr<double>(plateau), *as_ptr<const double>(metric), as_ptr<double>(next_lr));
      },
      py::arg("groups"), py::arg("num_groups"), py::arg("program"), py::arg("plateau"), py::arg("global_step"),
      py::arg("metric"), py::arg("next_lr"),
      "One ReduceLROnPlateau step on the plateau buffer (float64 metric), then the groups' next lrs.");
}
