// pybind11 module fusedlr._C: the CPU backend. Takes raw addresses of
// contiguous CPU tensors (validated by the Python layer), so it links no torch.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cpu/optimizer_step.h"
#include "cpu/schedule_values.h"
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
  m.attr("TORCH_VERSION_AT_BUILD") = FUSEDLR_TORCH_VERSION;
#ifdef FUSEDLR_HOST_MODULE_BUILT
  m.attr("HOST_MODULE_BUILT") = true;  // the same build made fusedlr._C_host
#else
  m.attr("HOST_MODULE_BUILT") = false;
#endif

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

  fusedlr::bind_step_args(m);

  m.def(
      "update",
      [](const fusedlr::StepArgs& a, int num_threads) {
        py::gil_scoped_release no_gil;
        fusedlr::cpu::update(a, num_threads);
      },
      py::arg("args"), py::arg("num_threads"),
      "Update one bucket's tensors (tables described by TENSOR_FIELDS/GROUP_FIELDS).");

  m.def(
      "finish", [](const fusedlr::StepArgs& a, bool advance) { fusedlr::cpu::finish(a, advance); },
      py::arg("args"), py::arg("advance"),
      "Count the update in each tensor's step; with advance, record the step in the history ring "
      "(args.history: 0 when not kept), step the schedule, write each group's next lr (args.next_lr) and "
      "whether the step was applied (args.applied, a bool).");

  m.def(
      "plateau_report",
      [](const fusedlr::StepArgs& a, std::uintptr_t metric) {
        fusedlr::report_plateau(a, const_cast<double*>(a.plateau), *as_ptr<const double>(metric), a.next_lr);
      },
      py::arg("args"), py::arg("metric"),
      "One ReduceLROnPlateau step on args.plateau (metric: address of a float64), then the groups' next lrs "
      "into args.next_lr.");
}
