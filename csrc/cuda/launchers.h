// Host-side entry points of the CUDA kernels. Deliberately free of CUDA and
// torch headers so the pybind11 layer compiles with the plain host compiler.
// Every function returns an empty string on success, else the CUDA error text.
#pragma once
#include <stdint.h>
#include <string>

namespace fusedlr {
namespace cuda {

// Number of visible CUDA devices; 0 with `error` set when none can be used.
int device_count(std::string* error);

// Same contract as cpu::schedule_values, on device pointers, enqueued on
// `stream` (a cudaStream_t) of device `device`.
std::string schedule_values(int device, void* stream, const double* prog,
                            const int64_t* steps, int64_t n_steps,
                            const double* base_lrs, int64_t n_groups, double* out);

}  // namespace cuda
}  // namespace fusedlr
