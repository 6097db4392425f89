// pybind11 module fusedlr._C_cuda: the CUDA backend. Built only when nvcc is
// found; links the CUDA runtime statically, so importing it needs no GPU.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/launchers.h"
#include "step_args_binding.h"

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

  m.def(
      "update",
      [](int device, std::uintptr_t stream, std::uintptr_t tensors, int64_t num_tensors,
         std::uintptr_t groups, int64_t num_groups, std::uintptr_t program,
         std::uintptr_t plateau, std::uintptr_t global_step, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         int kind, int dtype, bool maximize, bool nesterov, bool amsgrad, std::uintptr_t chunks,
         int64_t num_chunks, int64_t chunk_size) {
        const fusedlr::StepArgs a = fusedlr::make_step_args(
            tensors, num_tensors, groups, num_groups, program, plateau, global_step, grad_scale,
            found_inf, kind, dtype, maximize, nesterov, amsgrad);
        check(fusedlr::cuda::update(device, as_ptr<void>(stream), a, as_ptr<const int64_t>(chunks),
                                    num_chunks, chunk_size),
              "fusedlr CUDA update kernel");
      },
      py::arg("device"), py::arg("stream"), FUSEDLR_STEP_ARG_NAMES, py::arg("chunks"),
      py::arg("num_chunks"), py::arg("chunk_size"),
      "Enqueue the update kernel of one bucket (device tables; `chunks` holds "
      "(tensor, first element) int64 pairs).");

  m.def(
      "finish",
      [](int device, std::uintptr_t stream, std::uintptr_t tensors, int64_t num_tensors,
         std::uintptr_t groups, int64_t num_groups, std::uintptr_t program,
         std::uintptr_t plateau, std::uintptr_t global_step, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         int kind, int dtype, bool maximize, bool nesterov, bool amsgrad, bool advance,
         std::uintptr_t next_lr, std::uintptr_t applied) {
        const fusedlr::StepArgs a = fusedlr::make_step_args(
            tensors, num_tensors, groups, num_groups, program, plateau, global_step, grad_scale,
            found_inf, kind, dtype, maximize, nesterov, amsgrad);
        check(fusedlr::cuda::finish(device, as_ptr<void>(stream), a, advance, as_ptr<double>(next_lr),
                                    as_ptr<bool>(applied)),
              "fusedlr CUDA finish kernel");
      },
      py::arg("device"), py::arg("stream"), FUSEDLR_STEP_ARG_NAMES, py::arg("advance"),
      py::arg("next_lr"), py::arg("applied"), "Enqueue the finish kernel (same contract as the CPU finish).");

  m.def(
      "plateau_report",
      [](int device, std::uintptr_t stream, std::uintptr_t groups, int64_t num_groups,
         std::uintptr_t program, std::uintptr_t plateau, std::uintptr_t global_step, std::uintptr_t metric,
         std::uintptr_t next_lr) {
        const fusedlr::StepArgs a = fusedlr::make_step_args(0, 0, groups, num_groups, program, plateau,
                                                            global_step, 0, 0, 0, 0, false, false, false);
        check(fusedlr::cuda::plateau_report(device, as_ptr<void>(stream), a, as_ptr<const double>(metric),
                                            as_ptr<double>(next_lr)),
              "fusedlr CUDA plateau kernel");
      },
      py::arg("device"), py::arg("stream"), py::arg("groups"), py::arg("num_groups"), py::arg("program"),
      py::arg("plateau"), py::arg("global_step"), py::arg("metric"), py::arg("next_lr"),
      "Enqueue the plateau report kernel (same contract as the CPU version).");

  m.def(
      "write_column",
      [](int device, std::uintptr_t stream, std::uintptr_t column, int64_t stride, std::vector<int64_t> values) {
        check(fusedlr::cuda::write_column(device, as_ptr<void>(stream), as_ptr<int64_t>(column), stride,
                                          values.data(), (int64_t)values.size()),
              "fusedlr CUDA table write");
      },
      py::arg("device"), py::arg("stream"), py::arg("column"), py::arg("stride"), py::arg("values"),
      "Enqueue kernels writing int64 `values` down a table column (capturable in a CUDA graph).");
}
