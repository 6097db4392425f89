// pybind11 module fusedlr._C_cuda: the CUDA backend. Built only when nvcc is
// found; links the CUDA runtime statically, so importing it needs no GPU.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/launchers.h"
#include "format_constants.h"

namespace py = pybind11;

#ifndef FUSEDLR_CUDA_ARCHS
#define FUSEDLR_CUDA_ARCHS ""
#endif
#ifndef FUSEDLR_NVCC_VERSION
#define FUSEDLR_NVCC_VERSION ""
#endif

template <typename T>
static T* as_ptr(std::uintptr_t address) { return reinterpret_cast<T*>(address); }

static void check(const std::string& error, const char* what) {
  if (!error.empty()) throw std::runtime_error(std::string(what) + ": " + error);
}

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "fusedlr CUDA backend";
  m.attr("CUDA_ARCHS") = FUSEDLR_CUDA_ARCHS;
  m.attr("NVCC_VERSION") = FUSEDLR_NVCC_VERSION;

  m.def("device_count", []() {
    std::string error;
    int count = fusedlr::cuda::device_count(&error);
    return py::make_tuple(count, error);
  }, "(number of usable CUDA devices, error text when there are none)");

  m.def(
      "schedule_values",
      [](int device, std::uintptr_t stream, std::uintptr_t prog, std::uintptr_t steps,
         int64_t n_steps, std::uintptr_t base_lrs, int64_t n_groups,
         std::uintptr_t out) {
        check(fusedlr::cuda::schedule_values(
                  device, as_ptr<void>(stream), as_ptr<const double>(prog),
                  as_ptr<const int64_t>(steps), n_steps, as_ptr<const double>(base_lrs),
                  n_groups, as_ptr<double>(out)),
              "fusedlr CUDA schedule kernel");
      },
      py::arg("device"), py::arg("stream"), py::arg("prog"), py::arg("steps"),
      py::arg("n_steps"), py::arg("base_lrs"), py::arg("n_groups"), py::arg("out"),
      "Enqueue the schedule kernel on `stream` (device buffers, same layout as the "
      "CPU version).");
}
