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

// T: params (or their fp32 masters); G: grads (and params written from
// masters); S: states.
template <typename T, typename G = T, typename S = T>
void launch_update(const StepArgs& a, const kernels::ChunkArgs& c, unsigned grid, Stream stream) {
  using namespace kernels;
  if (a.kind == kSGD) {
    counted_launch(a.nesterov ? update_kernel<T, G, S, kSGD, true> : update_kernel<T, G, S, kSGD, false>, grid,
                   kBlock, stream, a, c);
  } else {
    counted_launch(a.amsgrad ? update_kernel<T, G, S, kAdamW, true> : update_kernel<T, G, S, kAdamW, false>, grid,
                   kBlock, stream, a, c);
  }
}

}  // namespace

int64_t launch_count() { return launches.load(); }

std::string update(int device, void* stream, const StepArgs& a, const int64_t* chunks, int64_t num_chunks,
                   int64_t chunk_size, unsigned int* blocks_done) {
  if (num_chunks == 0) return "update launched without chunks";
  if (chunk_size <= 0 || chunk_size > (int64_t(1) << 30)) return "chunk_size must be in [1, 2**30] (32-bit offsets)";
  DeviceGuard guard(device);
  const kernels::ChunkArgs c{chunks, num_chunks, chunk_size, blocks_done};
  const unsigned grid = (unsigned)(num_chunks < kMaxGrid ? num_chunks : kMaxGrid);
  Stream s = static_cast<Stream>(stream);
  switch (dtype_combination(a)) {
    case kFloat32Step: launch_update<float>(a, c, grid, s); break;
    case kFloat64Step: launch_update<double>(a, c, grid, s); break;
    case kFloat16Step: launch_update<half_bits>(a, c, grid, s); break;
    case kBFloat16Step: launch_update<bf16_bits>(a, c, grid, s); break;
    case kFloat16MasterStep: launch_update<float, half_bits>(a, c, grid, s); break;
    case kBFloat16MasterStep: launch_update<float, bf16_bits>(a, c, grid, s); break;
    case kFloat32Bf16StateStep: launch_update<float, float, bf16_bits>(a, c, grid, s); break;
    case kFloat16MasterBf16StateStep: launch_update<float, half_bits, bf16_bits>(a, c, grid, s); break;
    case kBFloat16MasterBf16StateStep: launch_update<float, bf16_bits, bf16_bits>(a, c, grid, s); break;
    default: return kUnsupportedDtypes;
  }
  return last_error_text();
}

std::string step(int device, void* stream, const StepArgs& a, int mode) {
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
