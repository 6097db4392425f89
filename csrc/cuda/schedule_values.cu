#include <cuda_runtime.h>

#include "fusedlr/schedule_eval.h"
#include "launchers.h"
#include "runtime_helpers.h"

namespace fusedlr {
namespace cuda {
namespace {

__global__ void schedule_values_kernel(const double* prog, const int64_t* steps,
                                       int64_t n_steps, const double* base_lrs,
                                       int64_t n_groups, double* out) {
  const int64_t total = n_steps * n_groups;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
       k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t g = k % n_groups;
    out[k] = evaluate_schedule(prog, steps[k / n_groups], g, base_lrs[g]);
  }
}

}  // namespace

int device_count(std::string* error) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    *error = error_text(err);
    return 0;
  }
  return count;
}

std::string schedule_values(int device, void* stream, const double* prog,
                            const int64_t* steps, int64_t n_steps,
                            const double* base_lrs, int64_t n_groups, double* out) {
  const int64_t total = n_steps * n_groups;
  if (total == 0) return {};
  DeviceGuard guard(device);
  const int threads = 256;
  const int64_t wanted = (total + threads - 1) / threads;
  const int blocks = (int)(wanted < 65535 ? wanted : 65535);
  schedule_values_kernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
      prog, steps, n_steps, base_lrs, n_groups, out);
  return last_error_text();
}

}  // namespace cuda
}  // namespace fusedlr
