// The definitions of launchers.h, for both builds. The including file first
// provides: the kernels (kernels.cuh), `launch(kernel, grid, block, stream,
// args...)`, `kMaxGrid` (blocks per update launch at most), the RAII
// `DeviceGuard(device)` that makes `device` current and restores the caller's,
// `last_error_text()` ("" when the launches went well), and `Stream`.
#pragma once
#include <atomic>

namespace fusedlr {
namespace cuda {

namespace {

std::atomic<int64_t> launches{0};

template <typename... Params, typename... Args>
void counted_launch(void (*kernel)(Params...), unsigned grid, unsigned block, Stream stream, Args... args) {
  launches.fetch_add(1, std::memory_order_relaxed);
  launch(kernel, grid, block, stream, args...);
}

// T: params (or their fp32 masters, or the masters' low halves); G: grads
// (and params written from masters); S: states. kFlag: SGD's nesterov, Adam's amsgrad.
template <typename T, typename G = T, typename S = T>
std::string launch_update(const StepArgs& a, const kernels::ChunkArgs& c, unsigned grid, Stream stream) {
  using namespace kernels;
  switch (element_update_of(a.kind)) {
    case kSgdUpdate:
      counted_launch(a.nesterov ? update_kernel<T, G, S, kSgdUpdate, true> : update_kernel<T, G, S, kSgdUpdate, false>,
                     grid, kBlock, stream, a, c);
      return last_error_text();
    case kAdamUpdate:
      counted_launch(a.amsgrad ? update_kernel<T, G, S, kAdamUpdate, true> : update_kernel<T, G, S, kAdamUpdate, false>,
                     grid, kBlock, stream, a, c);
      return last_error_text();
    default: return kUnknownOptimizerKind;
  }
}

// Adam with 8-bit coded moments (S uint8_t): one kernel per grad dtype (the
// update of T float masters); amsgrad and SGD keep no 8-bit states.
template <typename G>
std::string launch_coded_update(const StepArgs& a, const kernels::ChunkArgs& c, unsigned grid, Stream stream) {
  if (element_update_of(a.kind) != kAdamUpdate || a.amsgrad) return kCodedStatesNeedAdam;
  counted_launch(kernels::update_kernel<float, G, uint8_t, kAdamUpdate, false>, grid, kBlock, stream, a, c);
  return last_error_text();
}

}  // namespace

int64_t launch_count() { return launches.load(); }

std::string update(int device, void* stream, const StepArgs& a, const int64_t* chunks, int64_t num_chunks,
                   int64_t chunk_size, unsigned int* blocks_done) {
  if (num_chunks == 0) return "update launched without chunks";
  if (chunk_size <= 0 || chunk_size > (int64_t(1) << 30)) return "chunk_size must be in [1, 2**30] (32-bit offsets)";
  if (a.state_dtype == kUInt8 && chunk_size % kStateBlock != 0)
    return "chunk_size must be a multiple of 256 with 8-bit states (a chunk holds whole state blocks)";
  DeviceGuard guard(device);
  const kernels::ChunkArgs c{chunks, num_chunks, chunk_size, blocks_done};
  const unsigned grid = (unsigned)(num_chunks < kMaxGrid ? num_chunks : kMaxGrid);
  Stream s = static_cast<Stream>(stream);
  switch (dtype_combination(a)) {
    case kFloat32Step: return launch_update<float>(a, c, grid, s);
    case kFloat64Step: return launch_update<double>(a, c, grid, s);
    case kFloat16Step: return launch_update<half_bits>(a, c, grid, s);
    case kBFloat16Step: return launch_update<bf16_bits>(a, c, grid, s);
    case kFloat16MasterStep: return launch_update<float, half_bits>(a, c, grid, s);
    case kBFloat16MasterStep: return launch_update<float, bf16_bits>(a, c, grid, s);
    case kBFloat16SplitStep: return launch_update<bf16_low_bits, bf16_bits, float>(a, c, grid, s);
    case kFloat32Bf16StateStep: return launch_update<float, float, bf16_bits>(a, c, grid, s);
    case kFloat16MasterBf16StateStep: return launch_update<float, half_bits, bf16_bits>(a, c, grid, s);
    case kBFloat16MasterBf16StateStep: return launch_update<float, bf16_bits, bf16_bits>(a, c, grid, s);
    case kBFloat16SplitBf16StateStep: return launch_update<bf16_low_bits, bf16_bits, bf16_bits>(a, c, grid, s);
    case kFloat32CodedStateStep: return launch_coded_update<float>(a, c, grid, s);
    case kFloat16MasterCodedStateStep: return launch_coded_update<half_bits>(a, c, grid, s);
    case kBFloat16MasterCodedStateStep: return launch_coded_update<bf16_bits>(a, c, grid, s);
    default: return kUnsupportedDtypes;
  }
}

std::string step(int device, void* stream, const StepArgs& a, int mode) {
  if (element_update_of(a.kind) == kUnknownUpdate) return kUnknownOptimizerKind;  // it writes the kind's scalars
  DeviceGuard guard(device);
  counted_launch(kernels::step_kernel, 1, kBlock, static_cast<Stream>(stream), a, mode);
  return last_error_text();
}

std::string plateau_report(int device, void* stream, const StepArgs& a, const double* metric, double metric_value) {
  DeviceGuard guard(device);
  counted_launch(kernels::plateau_report_kernel, 1, 1, static_cast<Stream>(stream), a, metric, metric_value);
  return last_error_text();
}

std::string write_column(int device, void* stream, int64_t* column, int64_t stride, const int64_t* values,
                         int64_t count) {
  DeviceGuard guard(device);
  for (int64_t first = 0; first < count; first += kernels::kColumnBatch) {
    kernels::ColumnBatch batch;
    const int64_t n = count - first < kernels::kColumnBatch ? count - first : kernels::kColumnBatch;
    for (int64_t i = 0; i < n; ++i) batch.values[i] = values[first + i];
    counted_launch(kernels::write_column_kernel, 1, kBlock, static_cast<Stream>(stream),
                   column + first * stride, stride, n, batch);
  }
  return last_error_text();
}

}  // namespace cuda
}  // namespace fusedlr
