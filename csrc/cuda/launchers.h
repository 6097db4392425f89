// Host-side entry points of the CUDA kernels. Deliberately free of CUDA and
// torch headers so the pybind11 layer compiles with the plain host compiler.
// Every function returns an empty string on success, else the CUDA error text.
#pragma once
#include <stdint.h>
#include <string>

#include "fusedlr/step_layout.h"

namespace fusedlr {
namespace cuda {

// Number of visible CUDA devices; 0 with `error` set when none can be used.
int device_count(std::string* error);

// Same contract as cpu::schedule_values, on device pointers, enqueued on
// `stream` (a cudaStream_t) of device `device`.
std::string schedule_values(int device, void* stream, const double* prog,
                            const int64_t* steps, int64_t n_steps,
                            const double* base_lrs, int64_t n_groups, double* out);

// One optimizer step of one bucket (see cpu::update / cpu::finish). `chunks`
// is a device int64 table of (tensor index, first element) pairs, one per
// block of `chunk_size` elements.
std::string update(int device, void* stream, const StepArgs& a, const int64_t* chunks,
                   int64_t num_chunks, int64_t chunk_size);
// Writes values[0..count) to column[0], column[stride], ... with kernels whose
// arguments carry the values, so a CUDA graph capture records them (a copy
// from host memory would not be capturable).
std::string write_column(int device, void* stream, int64_t* column, int64_t stride, const int64_t* values,
                         int64_t count);

// One ReduceLROnPlateau step on the device plateau buffer, then the groups'
// next lrs (one thread; a.plateau is the buffer, written).
std::string plateau_report(int device, void* stream, const StepArgs& a, const double* metric,
                           double* next_lr);

std::string finish(int device, void* stream, const StepArgs& a, bool advance, double* next_lr,
                   bool* applied);

}  // namespace cuda
}  // namespace fusedlr
