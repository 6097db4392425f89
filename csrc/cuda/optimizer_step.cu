// Multi-tensor CUDA kernels of one fused optimizer step. The tensor table and
// the chunk table live in device memory (uploaded by Python when pointers
// change), so one launch covers any number of tensors and a captured graph
// replays it unchanged. The schedule is evaluated inside the update kernel.
#include <cuda_runtime.h>

#include "fusedlr/step_common.h"
#include "fusedlr/update_math.h"
#include "launchers.h"

namespace fusedlr {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;

template <typename M>
union TensorScalars {
  SgdScalars<M> sgd;
  AdamWScalars<M> adamw;
};

// One block per chunk (grid-stride over chunks). Thread 0 evaluates the
// schedule and the tensor's scalars in double; the block then updates the
// chunk's elements with 64-bit indices.
template <typename T, int kKind, bool kFlag>
__global__ void update_kernel(StepArgs a, const int64_t* chunks, int64_t num_chunks,
                              int64_t chunk_size) {
  using M = typename math_type<T>::type;
  if (step_is_skipped(a)) return;
  __shared__ TensorScalars<M> scalars;
  __shared__ int64_t shared_tensor;
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const int64_t t = chunks[2 * c];
    const int64_t begin = chunks[2 * c + 1];
    const int64_t* row = a.tensors + t * kTensorFields;
    if (threadIdx.x == 0 && (c == blockIdx.x || shared_tensor != t)) {
      const int64_t g = row[kGroup];
      const GroupValues values = group_values(a, g, *a.global_step);
      const double factor = grad_factor(a.grad_scale, a.maximize);
      const int64_t before = *address_as<int64_t>(row[kStepPtr]);
      const double* group = a.groups + g * kGroupFields;
      if (kKind == kSGD) scalars.sgd = sgd_scalars<M>(group, values, factor, before);
      else scalars.adamw = adamw_scalars<M>(group, values, factor, before);
      shared_tensor = t;
    }
    __syncthreads();
    const int64_t numel = row[kNumel];
    const int64_t end = begin + chunk_size < numel ? begin + chunk_size : numel;
    T* param = address_as<T>(row[kParamPtr]);
    const T* grad = address_as<const T>(row[kGradPtr]);
    T* s0 = address_as<T>(row[kState0Ptr]);
    T* s1 = address_as<T>(row[kState1Ptr]);
    T* s2 = address_as<T>(row[kState2Ptr]);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      if (kKind == kSGD) sgd_element<kFlag>(scalars.sgd, param, grad, s0, i);
      else adamw_element<kFlag>(scalars.adamw, param, grad, s0, s1, s2, i);
    }
    __syncthreads();  // scalars are rewritten for the next chunk
  }
}

__global__ void finish_kernel(StepArgs a, bool advance, double* next_lr, bool* applied) {
  if (advance && blockIdx.x == 0 && threadIdx.x == 0) *applied = !step_is_skipped(a);
  if (step_is_skipped(a)) return;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < a.num_tensors;
       t += (int64_t)gridDim.x * blockDim.x)
  {
    int64_t* count = address_as<int64_t>(a.tensors[t * kTensorFields + kStepPtr]);
    *count = count_one_more(*count);
  }
  if (!advance || blockIdx.x != 0 || threadIdx.x != 0) return;
  const int64_t step = *a.global_step = count_one_more(*a.global_step);
  for (int64_t g = 0; g < a.num_groups; ++g) next_lr[g] = group_lr(a, g, step);
}

__global__ void plateau_report_kernel(StepArgs a, const double* metric, double* next_lr) {
  if (blockIdx.x == 0 && threadIdx.x == 0)
    report_plateau(a, const_cast<double*>(a.plateau), *metric, next_lr);
}

// Values per write_column launch: 2 KB of kernel parameters, within the 4 KB limit.
constexpr int kColumnBatch = 256;
struct ColumnBatch { int64_t values[kColumnBatch]; };

__global__ void write_column_kernel(int64_t* column, int64_t stride, int64_t count, ColumnBatch batch) {
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) column[i * stride] = batch.values[i];
}

std::string error_text(cudaError_t err) {
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err));
}

template <typename T>
void launch_update(const StepArgs& a, const int64_t* chunks, int64_t num_chunks, int64_t chunk_size,
                   cudaStream_t stream) {
  const int blocks = (int)(num_chunks < kMaxBlocks ? num_chunks : kMaxBlocks);
  if (a.kind == kSGD) {
    if (a.nesterov) update_kernel<T, kSGD, true><<<blocks, kThreads, 0, stream>>>(a, chunks, num_chunks, chunk_size);
    else update_kernel<T, kSGD, false><<<blocks, kThreads, 0, stream>>>(a, chunks, num_chunks, chunk_size);
  } else {
    if (a.amsgrad) update_kernel<T, kAdamW, true><<<blocks, kThreads, 0, stream>>>(a, chunks, num_chunks, chunk_size);
    else update_kernel<T, kAdamW, false><<<blocks, kThreads, 0, stream>>>(a, chunks, num_chunks, chunk_size);
  }
}

}  // namespace

std::string update(int device, void* stream, const StepArgs& a, const int64_t* chunks,
                   int64_t num_chunks, int64_t chunk_size) {
  if (num_chunks == 0) return {};
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return error_text(err);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a.dtype) {
    case kFloat32: launch_update<float>(a, chunks, num_chunks, chunk_size, s); break;
    case kFloat64: launch_update<double>(a, chunks, num_chunks, chunk_size, s); break;
    case kFloat16: launch_update<half_bits>(a, chunks, num_chunks, chunk_size, s); break;
    case kBFloat16: launch_update<bf16_bits>(a, chunks, num_chunks, chunk_size, s); break;
    default: return "unknown dtype code";
  }
  return error_text(cudaGetLastError());
}

std::string finish(int device, void* stream, const StepArgs& a, bool advance, double* next_lr,
                   bool* applied) {
  if (a.num_tensors == 0 && !advance) return {};
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return error_text(err);
  const int64_t wanted = (a.num_tensors + kThreads - 1) / kThreads;
  const int blocks = (int)(wanted < 1 ? 1 : (wanted < kMaxBlocks ? wanted : kMaxBlocks));
  finish_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a, advance, next_lr, applied);
  return error_text(cudaGetLastError());
}

std::string plateau_report(int device, void* stream, const StepArgs& a, const double* metric,
                           double* next_lr) {
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return error_text(err);
  plateau_report_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(a, metric, next_lr);
  return error_text(cudaGetLastError());
}

std::string write_column(int device, void* stream, int64_t* column, int64_t stride, const int64_t* values,
                         int64_t count) {
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return error_text(err);
  for (int64_t first = 0; first < count; first += kColumnBatch) {
    ColumnBatch batch;
    const int64_t n = count - first < kColumnBatch ? count - first : kColumnBatch;
    for (int64_t i = 0; i < n; ++i) batch.values[i] = values[first + i];
    write_column_kernel<<<1, kColumnBatch, 0, static_cast<cudaStream_t>(stream)>>>(column + first * stride, stride,
                                                                                 n, batch);
  }
  return error_text(cudaGetLastError());
}

}  // namespace cuda
}  // namespace fusedlr
