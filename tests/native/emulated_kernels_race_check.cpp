// The emulated CUDA kernels under ThreadSanitizer (tests/test_device_kernels.py
// builds this with -fsanitize=thread and runs it): SGD (plain, Nesterov),
// AdamW and Adam (plain, AMSGrad) in fp32 and fp16, over tensors of odd sizes, one with
// misaligned storage (the one-element path) and the rest aligned (the 16-byte
// path), cut into many small chunks that a few blocks stride over, through a
// schedule, with one step skipped as GradScaler would. Each kernel run is
// compared element by element with the same maths applied serially. A race
// between the threads of a block, or a missing barrier, is reported by
// ThreadSanitizer (exit code 66); a wrong value makes this program exit with 1.
#include "emulation/emulated_step.cpp"  // the kernels, the launchers and the CUDA stand-ins

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

using namespace fusedlr;

constexpr int64_t kChunk = 64;  // small: many chunks per tensor, so blocks stride over them
constexpr int kSteps = 5;
constexpr int kSkippedStep = 2;

// A Sequential of Constant(0.5) for 3 steps, then Step(2, 0.9) (packed as schedule_format.h lays it out).
const std::vector<double> kProgram = {kSequential, -1, 0, 2, 7, 12, 3,
                                      kConstant,   0,  0, 0.5, 1e300,
                                      kStep,       0,  1, 2, 0.9};

StepArgs make_args(const int64_t* rows, int64_t n, const double* group, int64_t* step, const float* found_inf,
                   int kind, int dtype, bool flag, double* scalars, double* values_scratch, double* next_lr,
                   bool* applied) {
  StepArgs a{};
  a.tensors = rows;
  a.num_tensors = n;
  a.groups = group;
  a.num_groups = 1;
  a.program = kProgram.data();
  a.plateau = nullptr;
  a.global_step = step;
  a.grad_scale = nullptr;
  a.found_inf = found_inf;
  a.kind = kind;
  a.dtype = dtype;
  a.grad_dtype = dtype;
  a.state_dtype = dtype;
  a.nesterov = kind == kSGD && flag;
  a.amsgrad = element_update_of(kind) == kAdamUpdate && flag;
  a.scalars = scalars;
  a.group_values = values_scratch;
  a.next_lr = next_lr;
  a.applied = applied;
  a.last_bucket = true;
  return a;
}

template <typename T>
T from_float(float v) {
  if constexpr (sizeof(T) == 4) return v;
  else return T{detail::float_to_half(v)};
}

template <typename T>
struct Case {
  int kind;
  bool flag;  // nesterov (SGD) or amsgrad (Adam, AdamW)
  std::vector<int64_t> sizes;
  // storage per tensor: param, grad, three states; tensor 0 starts one element in (misaligned)
  std::vector<std::vector<T>> storage;
  std::vector<int64_t> counts;

  T* tensor(int64_t t, int which) {
    return storage[5 * t + which].data() + (t == 0 ? 1 : 0);
  }

  void fill(std::mt19937& rng) {
    std::normal_distribution<float> normal;
    for (int64_t t = 0; t < (int64_t)sizes.size(); ++t)
      for (int which = 0; which < 5; ++which) {
        std::vector<T> values(sizes[t] + 8);
        for (T& v : values) v = from_float<T>(which >= 2 ? std::fabs(normal(rng)) * 0.1f : normal(rng));
        storage.push_back(values);
      }
    counts.assign(sizes.size(), 0);
  }
};

template <typename T>
bool run(Case<T> device_case) {
  std::mt19937 rng(7);
  device_case.fill(rng);
  Case<T> serial = device_case;  // the same data, updated serially
  const int64_t n = (int64_t)device_case.sizes.size();
  // group table: base lr, weight decay, hyper1..3 (momentum, dampening / beta1, beta2, eps), schedule offsets
  const double group[kGroupFields] = {0.05, 0.01, 0.9, device_case.kind == kSGD ? 0.0 : 0.999, 1e-8, 0, -1, -1};
  std::vector<int64_t> rows, chunks;
  for (int64_t t = 0; t < n; ++t) {
    int64_t row[kTensorFields];
    for (int which = 0; which < 5; ++which) row[which] = (int64_t)device_case.tensor(t, which);
    row[kStepPtr] = (int64_t)&device_case.counts[t];
    row[kNumel] = device_case.sizes[t];
    row[kGroup] = 0;
    rows.insert(rows.end(), row, row + kTensorFields);
    for (int64_t begin = 0; begin < device_case.sizes[t]; begin += kChunk) chunks.insert(chunks.end(), {t, begin});
  }
  std::vector<double> scalars(n * kTensorScalarFields), values_scratch(kGroupValueFields), next_lr(1);
  int64_t global_step = 0, serial_step = 0;
  bool applied = true;
  unsigned int blocks_done = 0;
  float found_inf = 0.0f;
  StepArgs a = make_args(rows.data(), n, group, &global_step, &found_inf, device_case.kind, sizeof(T) == 4 ? kFloat32 : kFloat16,
                         device_case.flag, scalars.data(), values_scratch.data(), next_lr.data(), &applied);
  std::vector<double> history(kHistoryHeader + 3 * (kHistoryLrs + 1));  // a ring of 3 steps, written by the last block
  a.history = history.data();
  history[kHistoryCapacity] = 3;
  const double clipping[kClippingFields] = {0.5, 7.0};  // grads halved by clipping, the norm recorded
  a.clipping = clipping;
  if (!cuda::step(0, nullptr, a, kPrepare).empty()) return false;
  for (int s = 0; s < kSteps; ++s) {
    found_inf = s == kSkippedStep ? 1.0f : 0.0f;
    if (!cuda::update(0, nullptr, a, chunks.data(), (int64_t)chunks.size() / 2, kChunk, &blocks_done).empty())
      return false;
    if (s == kSkippedStep) continue;
    StepArgs serial_args = a;
    serial_args.global_step = &serial_step;
    const GroupValues values = group_values(serial_args, 0, serial_step);
    const NearestRounding nearest{0};
    for (int64_t t = 0; t < n; ++t) {
      double row[kTensorScalarFields];
      tensor_scalars(serial.kind, group, values, serial.counts[t], row);
      using M = typename math_type<T>::type;
      for (int64_t i = 0; i < serial.sizes[t]; ++i) {
        if (element_update_of(serial.kind) == kSgdUpdate) {
          const SgdScalars<M> sc = sgd_scalars<M>(row);
          if (serial.flag) sgd_element<true>(sc, (M)clipping[kClipCoefficient], serial.tensor(t, 0), serial.tensor(t, 1), serial.tensor(t, 2), i, nearest);
          else sgd_element<false>(sc, (M)clipping[kClipCoefficient], serial.tensor(t, 0), serial.tensor(t, 1), serial.tensor(t, 2), i, nearest);
        } else {
          const AdamScalars<M> sc = adam_scalars<M>(row);
          if (serial.flag)
            adam_element<true>(sc, (M)clipping[kClipCoefficient], serial.tensor(t, 0), serial.tensor(t, 1), serial.tensor(t, 2),
                                serial.tensor(t, 3), serial.tensor(t, 4), i, nearest);
          else
            adam_element<false>(sc, (M)clipping[kClipCoefficient], serial.tensor(t, 0), serial.tensor(t, 1), serial.tensor(t, 2),
                                serial.tensor(t, 3), serial.tensor(t, 4), i, nearest);
        }
      }
      ++serial.counts[t];
    }
    ++serial_step;
  }
  // the ring holds the last 3 of kSteps steps: their schedule steps, in ring order
  bool same = global_step == serial_step && blocks_done == 0 && applied && history[0] == kSteps;
  for (int s = kSteps - 3; s < kSteps; ++s) {
    const double* row = history.data() + kHistoryHeader + (s % 3) * (kHistoryLrs + 1);
    const int64_t step = s > kSkippedStep ? s - 1 : s;  // the skipped step is not counted
    same = same && row[kHistoryStep] == (double)step && row[kHistoryApplied] == (s == kSkippedStep ? 0.0 : 1.0) &&
           row[kHistoryGradNorm] == clipping[kClipGradNorm];
  }
  for (int64_t t = 0; t < n; ++t) {
    same = same && device_case.counts[t] == serial.counts[t];
    for (int which = 0; which < 5; ++which)
      same = same && std::memcmp(device_case.tensor(t, which), serial.tensor(t, which), sizeof(T) * device_case.sizes[t]) == 0;
  }
  const char* names[] = {"sgd", "adamw", "adam"};
  std::printf("%s %s%s %s: %s\n", names[device_case.kind], device_case.flag ? "flag " : "",
              sizeof(T) == 4 ? "fp32" : "fp16", "odd sizes", same ? "same as serial" : "DIFFERENT");
  return same;
}

}  // namespace

int main() {
  const std::vector<int64_t> sizes = {203, 1, 130, 64, 7, 257};
  bool ok = true;
  for (int kind : {kSGD, kAdamW, kAdam})
    for (bool flag : {false, true}) {
      ok = run(Case<float>{kind, flag, sizes, {}, {}}) && ok;
      ok = run(Case<half_bits>{kind, flag, sizes, {}, {}}) && ok;
    }
  return ok ? 0 : 1;
}
