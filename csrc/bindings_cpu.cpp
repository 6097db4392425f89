// pybind11 module fusedlr._C: the CPU backend. Takes raw addresses of
// contiguous CPU tensors (validated by the Python layer), so it links no torch.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cpu/schedule_values.h"
#include "format_constants.h"

namespace py = pybind11;

#ifndef FUSEDLR_TORCH_VERSION
#define FUSEDLR_TORCH_VERSION ""
#endif

template <typename T>
static T* as_ptr(std::uintptr_t address) { return reinterpret_cast<T*>(address); }

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedlr CPU backend";
  fusedlr::export_format_constants(m);
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
}
