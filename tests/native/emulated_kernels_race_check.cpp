// The emulated CUDA kernels under ThreadSanitizer (tests/test_device_kernels.py
// builds this with -fsanitize=thread and runs it): SGD (plain, Nesterov),
// AdamW and Adam (plain, AMSGrad) in fp32 and fp16, with fp32 masters of bf16
// params, with bf16 states (rounded stochastically), with the low halves of bf16
// params' masters (fp32 or bf16 states); and Adam(W) with 8-bit coded moments
// (the block-wide absmax reduction), over tensors of odd sizes, one with
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

template <typename T> constexpr int kDtypeCode = kFloat32;
template <> constexpr int kDtypeCode<half_bits> = kFloat16;
template <> constexpr int kDtypeCode<bf16_bits> = kBFloat16;
template <> constexpr int kDtypeCode<bf16_low_bits> = kInt16;

template <typename T> const char* kTypeName = "fp32";
template <> const char* kTypeName<half_bits> = "fp16";
template <> const char* kTypeName<bf16_bits> = "bf16";
template <> const char* kTypeName<bf16_low_bits> = "bf16 low halves";

StepArgs make_args(const int64_t* rows, int64_t n, const double* group, int64_t* step, const float* found_inf,
                   int kind, int dtype, int grad_dtype, int state_dtype, bool flag, bool stochastic, double* scalars,
                   double* values_scratch, double* next_lr, bool* applied) {
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
  a.grad_dtype = grad_dtype;
  a.state_dtype = state_dtype;
  a.nesterov = kind == kSGD && flag;
  a.amsgrad = element_update_of(kind) == kAdamUpdate && flag;
  a.stochastic_rounding = stochastic;
  a.scalars = scalars;
  a.group_values = values_scratch;
  a.next_lr = next_lr;
  a.applied = applied;
  a.last_bucket = true;
  return a;
}

template <typename T>
T from_float(float v) {
  if constexpr (std::is_same<T, float>::value) return v;
  else if constexpr (std::is_same<T, half_bits>::value) return T{detail::float_to_half(v)};
  else if constexpr (std::is_same<T, bf16_bits>::value) return T{detail::float_to_bf16(v)};
  else return T{(uint16_t)(detail::float_bits(v) & 0xffffu)};  // low halves: any bits
}

template <typename T>
struct Arrays {  // one array per tensor; tensor 0 starts one element in (misaligned)
  std::vector<std::vector<T>> storage;
  T* of(int64_t t) { return storage[t].data() + (t == 0 ? 1 : 0); }
  void fill(const std::vector<int64_t>& sizes, std::mt19937& rng, bool positive) {
    std::normal_distribution<float> normal;
    for (int64_t size : sizes) {
      std::vector<T> values(size + 8);
      for (T& v : values) v = from_float<T>(positive ? std::fabs(normal(rng)) * 0.1f : normal(rng));
      storage.push_back(values);
    }
  }
  bool same(const Arrays& other, const std::vector<int64_t>& sizes) {
    for (int64_t t = 0; t < (int64_t)sizes.size(); ++t)
      if (std::memcmp(of(t), const_cast<Arrays&>(other).of(t), sizeof(T) * sizes[t]) != 0) return false;
    return true;
  }
};

// T: what the kernels update (the param, its fp32 master or the master's low
// halves); G: the grads and, when G is not T, the param beside T; S: states.
template <typename T, typename G, typename S>
struct Case {
  int kind;
  bool flag;  // nesterov (SGD) or amsgrad (Adam, AdamW)
  bool stochastic;  // bf16 states rounded stochastically
  std::vector<int64_t> sizes;
  Arrays<T> params;
  Arrays<G> grads, copies;
  Arrays<S> states[3];
  std::vector<int64_t> counts;

  static constexpr bool kCopy = !std::is_same<T, G>::value;  // a param beside T (master or high halves)

  void fill(std::mt19937& rng) {
    params.fill(sizes, rng, false);
    grads.fill(sizes, rng, false);
    copies.fill(sizes, rng, false);
    for (auto& state : states) state.fill(sizes, rng, true);
    counts.assign(sizes.size(), 0);
  }

  void row(int64_t t, int64_t* out) {
    out[kParamPtr] = (int64_t)params.of(t);
    out[kGradPtr] = (int64_t)grads.of(t);
    for (int k = 0; k < 3; ++k) out[kState0Ptr + k] = (int64_t)states[k].of(t);
    out[kParamCopyPtr] = kCopy ? (int64_t)copies.of(t) : 0;
  }
};

template <typename T, typename G, typename S>
bool run(Case<T, G, S> device_case) {
  std::mt19937 rng(7);
  device_case.fill(rng);
  auto serial = device_case;  // the same data, updated serially
  const int64_t n = (int64_t)device_case.sizes.size();
  // group table: base lr, weight decay, hyper1..3 (momentum, dampening / beta1, beta2, eps), schedule offsets
  const double group[kGroupFields] = {0.05, 0.01, 0.9, device_case.kind == kSGD ? 0.0 : 0.999, 1e-8, 0, -1, -1};
  std::vector<int64_t> rows, chunks;
  for (int64_t t = 0; t < n; ++t) {
    int64_t row[kTensorFields] = {};
    device_case.row(t, row);
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
  StepArgs a = make_args(rows.data(), n, group, &global_step, &found_inf, device_case.kind, kDtypeCode<T>,
                         kDtypeCode<G>, kDtypeCode<S>, device_case.flag, device_case.stochastic, scalars.data(),
                         values_scratch.data(), next_lr.data(), &applied);
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
    for (int64_t t = 0; t < n; ++t) {
      double row[kTensorScalarFields];
      tensor_scalars(serial.kind, group, values, serial.counts[t], row);
      using M = typename math_type<T>::type;
      const M factor = (M)clipping[kClipCoefficient];
      const auto r = rounding_for<T, S>(serial.stochastic, t, &serial.counts[t], 0);
      const auto param = param_view(serial.params.of(t), serial.copies.of(t));
      const G* grad = serial.grads.of(t);
      S *s0 = serial.states[0].of(t), *s1 = serial.states[1].of(t), *s2 = serial.states[2].of(t);
      for (int64_t i = 0; i < serial.sizes[t]; ++i) {
        if (element_update_of(serial.kind) == kSgdUpdate) {
          const SgdScalars<M> sc = sgd_scalars<M>(row);
          if (serial.flag) sgd_element<true>(sc, factor, param, grad, s0, i, r);
          else sgd_element<false>(sc, factor, param, grad, s0, i, r);
        } else {
          const AdamScalars<M> sc = adam_scalars<M>(row);
          if (serial.flag) adam_element<true>(sc, factor, param, grad, s0, s1, s2, i, r);
          else adam_element<false>(sc, factor, param, grad, s0, s1, s2, i, r);
        }
        if constexpr (kWritesParamCopy<T, G>) copy_out_element(serial.params.of(t), serial.copies.of(t), i);
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
  same = same && device_case.counts == serial.counts && device_case.params.same(serial.params, serial.sizes) &&
         device_case.grads.same(serial.grads, serial.sizes) && device_case.copies.same(serial.copies, serial.sizes);
  for (int k = 0; k < 3; ++k) same = same && device_case.states[k].same(serial.states[k], serial.sizes);
  const char* names[] = {"sgd", "adamw", "adam"};
  std::printf("%s %s%s, grads %s, states %s%s, odd sizes: %s\n", names[device_case.kind],
              device_case.flag ? "flag " : "", kTypeName<T>, kTypeName<G>, kTypeName<S>,
              device_case.stochastic ? " stochastic" : "", same ? "same as serial" : "DIFFERENT");
  return same;
}

// Adam(W) with 8-bit coded moments beside fp32 params (G float) or masters:
// the kernel's block-wide absmax reduction against the block loop done serially.
template <typename G>
bool run_coded(int kind, const std::vector<int64_t>& sizes) {
  constexpr int64_t kCodedChunk = 2 * kStateBlock;  // chunks of whole state blocks, several per tensor
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  const int64_t n = (int64_t)sizes.size();
  struct Tensor { std::vector<float> master; std::vector<G> grad, copy; std::vector<uint8_t> m, root; std::vector<float> scales; int64_t count = 0; };
  std::vector<Tensor> device(n);
  for (int64_t t = 0; t < n; ++t) {
    Tensor& x = device[t];
    const int64_t blocks = (sizes[t] + kStateBlock - 1) / kStateBlock;
    for (int64_t i = 0; i < sizes[t]; ++i) {
      x.master.push_back(normal(rng));
      x.grad.push_back(from_float<G>(normal(rng)));
      x.copy.push_back(from_float<G>(0.0f));
      x.m.push_back((uint8_t)(rng() & 0x77));  // any finite codes
      x.root.push_back((uint8_t)(rng() & 0x77));
    }
    for (int64_t b = 0; b < 2 * blocks; ++b) x.scales.push_back(std::fabs(normal(rng)));
  }
  std::vector<Tensor> serial = device;
  const double group[kGroupFields] = {0.05, 0.01, 0.9, 0.999, 1e-8, 0, -1, -1};
  std::vector<int64_t> rows, chunks;
  for (int64_t t = 0; t < n; ++t) {
    Tensor& x = device[t];
    int64_t row[kTensorFields] = {};
    row[kParamPtr] = (int64_t)x.master.data();
    row[kGradPtr] = (int64_t)x.grad.data();
    row[kState0Ptr] = (int64_t)x.m.data();
    row[kState1Ptr] = (int64_t)x.root.data();
    row[kParamCopyPtr] = std::is_same<G, float>::value ? 0 : (int64_t)x.copy.data();
    row[kStateScalesPtr] = (int64_t)x.scales.data();
    row[kStepPtr] = (int64_t)&x.count;
    row[kNumel] = sizes[t];
    rows.insert(rows.end(), row, row + kTensorFields);
    for (int64_t begin = 0; begin < sizes[t]; begin += kCodedChunk) chunks.insert(chunks.end(), {t, begin});
  }
  std::vector<double> scalars(n * kTensorScalarFields), values_scratch(kGroupValueFields), next_lr(1);
  int64_t global_step = 0, serial_step = 0;
  bool applied = true;
  unsigned int blocks_done = 0;
  float found_inf = 0.0f;
  StepArgs a = make_args(rows.data(), n, group, &global_step, &found_inf, kind, kFloat32, kDtypeCode<G>, kUInt8,
                         false, false, scalars.data(), values_scratch.data(), next_lr.data(), &applied);
  if (!cuda::step(0, nullptr, a, kPrepare).empty()) return false;
  for (int s = 0; s < kSteps; ++s) {
    if (!cuda::update(0, nullptr, a, chunks.data(), (int64_t)chunks.size() / 2, kCodedChunk, &blocks_done).empty())
      return false;
    StepArgs serial_args = a;
    serial_args.global_step = &serial_step;
    const GroupValues values = group_values(serial_args, 0, serial_step);
    for (int64_t t = 0; t < n; ++t) {
      Tensor& x = serial[t];
      double row[kTensorScalarFields];
      tensor_scalars(kind, group, values, x.count, row);
      const AdamScalars<float> sc = adam_scalars<float>(row);
      const int64_t blocks = (sizes[t] + kStateBlock - 1) / kStateBlock;
      const StateRounding seeds = state_rounding(true, t, x.count, 0);
      for (int64_t begin = 0, b = 0; begin < sizes[t]; begin += kStateBlock, ++b) {
        const int64_t count = std::min<int64_t>(kStateBlock, sizes[t] - begin);
        float m[kStateBlock], r[kStateBlock], new_m = 0.0f, new_root = 0.0f;
        for (int64_t i = 0; i < count; ++i) {
          adam_coded_element(sc, 1.0f, x.master.data() + begin, x.grad.data() + begin, x.m.data() + begin,
                             x.root.data() + begin, x.scales[b], x.scales[blocks + b], i, m[i], r[i]);
          if constexpr (!std::is_same<G, float>::value) copy_out_element(x.master.data() + begin, x.copy.data() + begin, i);
          new_m = max_or_nan(new_m, std::fabs(m[i]));
          new_root = max_or_nan(new_root, r[i]);
        }
        for (int64_t i = 0; i < count; ++i) {
          x.m[begin + i] = encoded(m[i], new_m, element_random(seeds.seeds[0], begin + i));
          x.root[begin + i] = encoded_root(r[i], new_root, element_random(seeds.seeds[1], begin + i));
        }
        x.scales[b] = new_m;
        x.scales[blocks + b] = new_root;
      }
      ++x.count;
    }
    ++serial_step;
  }
  bool same = global_step == serial_step && blocks_done == 0;
  for (int64_t t = 0; t < n; ++t)
    same = same && device[t].master == serial[t].master && device[t].m == serial[t].m &&
           device[t].root == serial[t].root && device[t].scales == serial[t].scales && device[t].count == serial[t].count &&
           std::memcmp(device[t].copy.data(), serial[t].copy.data(), sizeof(G) * sizes[t]) == 0;
  std::printf("%s, grads %s, 8-bit coded moments, odd sizes: %s\n", kind == kAdamW ? "adamw" : "adam", kTypeName<G>,
              same ? "same as serial" : "DIFFERENT");
  return same;
}

}  // namespace

int main() {
  const std::vector<int64_t> sizes = {203, 1, 130, 64, 7, 257};
  bool ok = true;
  for (int kind : {kSGD, kAdamW, kAdam})
    for (bool flag : {false, true}) {
      ok = run(Case<float, float, float>{kind, flag, false, sizes}) && ok;
      ok = run(Case<half_bits, half_bits, half_bits>{kind, flag, false, sizes}) && ok;
      ok = run(Case<float, bf16_bits, float>{kind, flag, false, sizes}) && ok;            // master weights
      ok = run(Case<float, float, bf16_bits>{kind, flag, true, sizes}) && ok;             // bf16 states, stochastic
      ok = run(Case<bf16_low_bits, bf16_bits, float>{kind, flag, false, sizes}) && ok;    // master remainders
      ok = run(Case<bf16_low_bits, bf16_bits, bf16_bits>{kind, flag, true, sizes}) && ok;
    }
  const std::vector<int64_t> coded_sizes = {203, 1, 600, 256, 1031};
  for (int kind : {kAdamW, kAdam}) {
    ok = run_coded<float>(kind, coded_sizes) && ok;
    ok = run_coded<bf16_bits>(kind, coded_sizes) && ok;
  }
  return ok ? 0 : 1;
}
