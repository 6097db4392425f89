// Host-side entry points of the CUDA kernels (kernels.cuh), built twice from
// the same source (launchers_impl.h): for the GPU (optimizer_step.cu) and for
// the CPU emulation of the kernels (emulation/emulated_step.cpp). Deliberately
// free of CUDA and torch headers so the pybind11 layer compiles with the plain
// host compiler. Every function returns an empty string on success, else the
// CUDA error text. Each enqueues on `stream` (a cudaStream_t) of `device` and
// leaves the caller's current device as it was.
#pragma once
#include <stdint.h>
#include <string>

#include "fusedlr/step_layout.h"

namespace fusedlr {
namespace cuda {

// Number of visible CUDA devices; 0 with `error` set when none can be used.
int device_count(std::string* error);

// Kernel launches made by this module so far (for tests of launches per step).
int64_t launch_count();

// Same contract as cpu::schedule_values, on device pointers (GPU build only).
std::string schedule_values(int device, void* stream, const double* prog,
                            const int64_t* steps, int64_t n_steps,
                            const double* base_lrs, int64_t n_groups, double* out);

// One optimizer step of one bucket, in one launch: `chunks` is a device int64
// table of (tensor index, first element) pairs, one per `chunk_size` elements;
// `blocks_done` a device counter that is 0 between launches. The update reads
// each tensor's scalars from a.scalars; its last block counts the updates,
// advances the step when a.last_bucket, and writes the scalars of the next update.
std::string update(int device, void* stream, const StepArgs& a, const int64_t* chunks,
                   int64_t num_chunks, int64_t chunk_size, unsigned int* blocks_done);

// kPrepare: write a.scalars for an update at the current step (after
// the tables were built or the groups, the counter or the plateau changed);
// kEndStep: end a step in which no param had a grad (a.num_tensors 0).
std::string step(int device, void* stream, const StepArgs& a, int mode);

// Writes values[0..count) to column[0], column[stride], ... with kernels whose
// arguments carry the values, so no host memory is copied (and a CUDA graph
// capture records them).
std::string write_column(int device, void* stream, int64_t* column, int64_t stride, const int64_t* values,
                         int64_t count);

// One ReduceLROnPlateau step on the device plateau buffer (a.plateau, written)
// with the metric at `metric` (device memory) or, when null, `metric_value`;
// then the groups' next lrs (a.next_lr).
std::string plateau_report(int device, void* stream, const StepArgs& a, const double* metric,
                           double metric_value);

}  // namespace cuda
}  // namespace fusedlr
