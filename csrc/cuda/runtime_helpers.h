// CUDA runtime helpers shared by the GPU build's translation units: error
// texts, and a guard that makes a device current and gives the caller's back.
#pragma once
#include <cuda_runtime.h>

#include <string>

namespace fusedlr {
namespace cuda {

// "" for cudaSuccess, else CUDA's description of the error.
inline std::string error_text(cudaError_t err) {
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err));
}

// The error of the launches so far (clearing it), as error_text.
inline std::string last_error_text() { return error_text(cudaGetLastError()); }

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

}  // namespace cuda
}  // namespace fusedlr
