// The GPU build of the optimizer step: kernels.cuh compiled by nvcc, launched
// by the shared launchers_impl.h.
#include <cuda_runtime.h>

#include <string>

#include "kernels.cuh"
#include "launchers.h"
#include "runtime_helpers.h"

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

}  // namespace
}  // namespace cuda
}  // namespace fusedlr

#include "launchers_impl.h"
