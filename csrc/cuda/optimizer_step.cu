// The GPU build of the optimizer step: kernels.cuh compiled by nvcc, launched
// by the shared launchers_impl.h.
#include <cuda_runtime.h>

#include <string>

#include "kernels.cuh"
#include "launchers.h"

namespace fusedlr {
namespace cuda {
namespace {

using Stream = cudaStream_t;
constexpr unsigned kBlock = kernels::kThreads;
constexpr int64_t kMaxGrid = 65535;

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned grid, unsigned block, Stream stream, Args... args) {
  kernel<<<grid, block, 0, stream>>>(args...);
}

// Makes `device` current for the launches and gives the caller's back after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) == cudaSuccess && previous_ != device) changed_ = cudaSetDevice(device) == cudaSuccess;
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool changed_ = false;
};

std::string last_error_text() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err));
}

}  // namespace
}  // namespace cuda
}  // namespace fusedlr

#include "launchers_impl.h"
