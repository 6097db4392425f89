// The CPU emulation build of the CUDA optimizer step: the very kernels of
// kernels.cuh and launchers of launchers_impl.h, compiled with the stand-ins of
// cuda_emulation.h. Pointers are host pointers; devices and streams are
// ignored. Small launch shapes (a few blocks of a few threads) keep runs fast
// while still exercising the grid-stride loops, barriers and the last-block
// protocol with several blocks and threads.
#include "cuda_emulation.h"

#include <string>

#include "cuda/kernels.cuh"
#include "cuda/launchers.h"

namespace fusedlr {
namespace cuda {
namespace {

using Stream = void*;
constexpr unsigned kBlock = 8;
constexpr int64_t kMaxGrid = 3;

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned grid, unsigned block, Stream, Args... args) {
  fusedlr_emulation::launch(grid, block, [=] { kernel(args...); });
}

struct DeviceGuard {
  explicit DeviceGuard(int) {}
};

std::string last_error_text() { return {}; }

}  // namespace

int device_count(std::string*) { return 1; }

}  // namespace cuda
}  // namespace fusedlr

#include "cuda/launchers_impl.h"
