// pybind11 module of the CUDA backend, built twice from this source:
// fusedlr._C_cuda (the kernels on the GPU; built when nvcc is found, links the
// CUDA runtime statically, so importing it needs no GPU) and, with
// FUSEDLR_EMULATED, fusedlr._C_emulated (the same kernels compiled for the CPU,
// on host memory: the test backend "emulated").
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/launchers.h"
#include "step_args_binding.h"

namespace py = pybind11;

#ifdef FUSEDLR_EMULATED
#define FUSEDLR_MODULE _C_emulated
#define FUSEDLR_CUDA_ARCHS ""
#define FUSEDLR_NVCC_VERSION ""
#else
#define FUSEDLR_MODULE _C_cuda
#endif
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

PYBIND11_MODULE(FUSEDLR_MODULE, m) {
#ifdef FUSEDLR_EMULATED
  m.doc() = "fusedlr's CUDA kernels compiled for the CPU (test backend 'emulated')";
#else
  m.doc() = "fusedlr CUDA backend";
#endif
  m.attr("CUDA_ARCHS") = FUSEDLR_CUDA_ARCHS;
  m.attr("NVCC_VERSION") = FUSEDLR_NVCC_VERSION;

  m.def("device_count", []() {
    std::string error;
    int count = fusedlr::cuda::device_count(&error);
    return py::make_tuple(count, error);
  }, "(number of usable CUDA devices, error text when there are none)");

  m.def("launch_count", &fusedlr::cuda::launch_count, "Kernel launches this module has made so far.");

#ifndef FUSEDLR_EMULATED
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
#endif

  fusedlr::bind_step_args(m);

  m.def(
      "update",
      [](int device, std::uintptr_t stream, const fusedlr::StepArgs& a, std::uintptr_t chunks, int64_t num_chunks,
         int64_t chunk_size, std::uintptr_t blocks_done) {
        py::gil_scoped_release no_gil;
        check(fusedlr::cuda::update(device, as_ptr<void>(stream), a, as_ptr<const int64_t>(chunks),
                                    num_chunks, chunk_size, as_ptr<unsigned int>(blocks_done)),
              "fusedlr CUDA update kernel");
      },
      py::arg("device"), py::arg("stream"), py::arg("args"), py::arg("chunks"), py::arg("num_chunks"),
      py::arg("chunk_size"), py::arg("blocks_done"),
      "Enqueue one bucket's update (one launch): `chunks` holds (tensor, first element) int64 pairs, "
      "`blocks_done` a uint32 that is 0 between launches.");

  m.def(
      "step",
      [](int device, std::uintptr_t stream, const fusedlr::StepArgs& a, int mode) {
        py::gil_scoped_release no_gil;
        check(fusedlr::cuda::step(device, as_ptr<void>(stream), a, mode), "fusedlr CUDA step kernel");
      },
      py::arg("device"), py::arg("stream"), py::arg("args"), py::arg("mode"),
      "Enqueue the one-block step kernel: mode PREPARE (write the tensors' scalars for an update at the "
      "current step) or END_STEP (advance a step in which no param had a grad).");
  m.attr("PREPARE") = int(fusedlr::kPrepare);
  m.attr("END_STEP") = int(fusedlr::kEndStep);

  m.def(
      "plateau_report",
      [](int device, std::uintptr_t stream, const fusedlr::StepArgs& a, std::uintptr_t metric, double metric_value) {
        py::gil_scoped_release no_gil;
        check(fusedlr::cuda::plateau_report(device, as_ptr<void>(stream), a, as_ptr<const double>(metric),
                                            metric_value),
              "fusedlr CUDA plateau kernel");
      },
      py::arg("device"), py::arg("stream"), py::arg("args"), py::arg("metric"), py::arg("metric_value"),
      "Enqueue the plateau report kernel on args.plateau and args.next_lr (metric: address of a float64 on the "
      "device, or 0 to pass metric_value as a kernel argument).");

  m.def(
      "write_column",
      [](int device, std::uintptr_t stream, std::uintptr_t column, int64_t stride, std::vector<int64_t> values) {
        py::gil_scoped_release no_gil;
        check(fusedlr::cuda::write_column(device, as_ptr<void>(stream), as_ptr<int64_t>(column), stride,
                                          values.data(), (int64_t)values.size()),
              "fusedlr CUDA table write");
      },
      py::arg("device"), py::arg("stream"), py::arg("column"), py::arg("stride"), py::arg("values"),
      "Enqueue kernels writing int64 `values` down a table column (no host memory copied; capturable).");
}
