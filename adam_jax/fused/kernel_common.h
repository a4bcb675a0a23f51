// What the fused kernels share: the hyper-parameters of one step, the arithmetic that mirrors XLA's, and
// the loop that spreads work items over the calling thread and XLA's intra-op thread pool.

#ifndef ADAM_JAX_FUSED_KERNEL_COMMON_H_
#define ADAM_JAX_FUSED_KERNEL_COMMON_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace adam_jax_kernel {

namespace ffi = xla::ffi;

// The scalars operand of every kernel, f32[kNumScalars], formed by adam_jax/fused/optimizer.py.
// kNesterovM, kNesterovG: NAdam's look-ahead coefficients b1 / (1 - b1^(t+1)) and (1 - b1) / (1 - b1^t) (used by
// the float32 kernel with nesterov = 1; the 8-bit kernel has no look-ahead).
enum Scalar {
  kOneMinusB1,
  kB1,
  kOneMinusB2,
  kB2,
  kC1,
  kC2,
  kEpsRoot,
  kEps,
  kWeightDecay,
  kNegLr,
  kNesterovM,
  kNesterovG,
  kBeliefEps,      // AdaBelief's eps added to s_t every step (its scale_by_rms has eps_root 0)
  kRectification,  // RAdam's r_t
  kTractable,      // RAdam: 1 once rho_t has reached the threshold, 0 before (SGD with momentum)
  kNumScalars
};

static_assert(kNumScalars == 15, "the kernels' error messages say 15 scalars per problem");

struct Hyper {
  float one_minus_b1, b1, one_minus_b2, b2, c1, c2, eps_root, eps, wd, neg_lr, nesterov_m, nesterov_g, belief_eps,
      rectification, tractable;
};

inline Hyper ReadHyper(const float* s) {
  return Hyper{s[kOneMinusB1], s[kB1],          s[kOneMinusB2], s[kB2],         s[kC1],
               s[kC2],         s[kEpsRoot],     s[kEps],        s[kWeightDecay], s[kNegLr],
               s[kNesterovM],  s[kNesterovG],   s[kBeliefEps],  s[kRectification], s[kTractable]};
}

// The scalars of a batch of independent problems. Under jax.vmap the kernels are called with every operand
// broadcast to a leading batch axis (vmap_method='broadcast_all'): scalars f32[batch, kNumScalars], and each
// leaf holds `batch` problems one after another. Returns an empty vector if the count is not a multiple.
inline std::vector<Hyper> ReadHypers(const float* s, int64_t count) {
  std::vector<Hyper> hypers;
  if (count < kNumScalars || count % kNumScalars != 0) return hypers;
  for (int64_t b = 0; b < count / kNumScalars; ++b) hypers.push_back(ReadHyper(s + b * kNumScalars));
  return hypers;
}

// One loop, two arithmetics: kFma fuses exactly where XLA's compiled chain does on an FMA CPU.
template <bool kFma>
inline float Fma(float a, float b, float c) {
  if constexpr (kFma) {
    return __builtin_fmaf(a, b, c);
  } else {
    return a * b + c;
  }
}

// An EMA (1 - b) x + b old, where XLA fuses the new term's product.
template <bool kFma>
inline float Ema(float one_minus_b, float b, float x, float old) {
  return Fma<kFma>(one_minus_b, x, b * old);
}

// One element of the step as XLA compiles the chain (Kingma & Ba 2014, Algorithm 1; AdamW's decoupled decay):
// m_t and v_t from the old moments, then theta_t with r_i = 1 / (1 - b_i^t). Shared by the float32 loop and the
// scalar code of the 8-bit kernel, so both do the same float32 operations in the same order.
template <bool kFma>
inline float FirstMoment(const Hyper& h, float g, float m) {
  return Ema<kFma>(h.one_minus_b1, h.b1, g, m);
}

template <bool kFma>
inline float SecondMoment(const Hyper& h, float g, float v) {
  return Ema<kFma>(h.one_minus_b2, h.b2, g * g, v);
}

// AdaBelief's s_t = (1 - b2) (g_t - m_t)^2 + b2 s_{t-1} + eps (Zhuang et al. 2020, Algorithm 2), from the new m_t.
// Here XLA fuses b2 s_{t-1}, the sum's second product (the first is a product of a product), unlike Adam's v_t.
template <bool kFma>
inline float BeliefMoment(const Hyper& h, float g, float m, float s) {
  const float e = g - m;
  return Fma<kFma>(h.b2, s, h.one_minus_b2 * (e * e)) + h.belief_eps;
}

// The corrected first moment: m_t r1 (Adam), or with Nesterov momentum NAdam's look-ahead
// b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t) (Dozat 2016; adam_jax.nesterov_momentum). XLA contracts one of
// the two products into a fused multiply-add: c_m m_t in Adam's float32 chain, whatever the leaf's shape. (Not so
// in AdaBelief's chain, nor in the 8-bit chain: there the product depends on the leaf, so those take the chain.)
template <bool kFma, bool kNesterov>
inline float CorrectedFirstMoment(const Hyper& h, float r1, float g, float m) {
  if constexpr (kNesterov) {
    return Fma<kFma>(h.nesterov_m, m, h.nesterov_g * g);
  } else {
    return m * r1;
  }
}

// Which member of the Adam family a loop computes, by what its second moment and direction are: Adam's EMA of
// squares v_t (and NAdam's, AdamW's), AdaMax's exponentially weighted infinity norm u_t, AMSGrad's running maximum
// of the corrected v_t (a fifth array), AdaBelief's EMA of squared prediction errors s_t, RAdam's rectified
// direction over v_t, or Lion's sign of an interpolation, with one moment and no second (three arrays). The values
// are the `family` attribute of the float32 kernel (adam_jax/fused/optimizer.py).
enum class Family : int32_t { kAdam = 0, kAdaMax = 1, kAmsgrad = 2, kAdaBelief = 3, kRAdam = 4, kLion = 5 };

// max(a, b) as XLA's maximum computes it: a NaN in either operand is the result, and +0 is above -0 (a review found a
// warm state with u = -0 where returning b flipped the sign of an infinite step).
inline float MaxOrNan(float a, float b) {
  if (a != a || a > b) return a;
  if (a == b) return std::signbit(a) ? b : a;
  return b;
}

// sign(x) as XLA's sign computes it: +-1 by the sign bit, and a zero (of either sign) or a NaN is its own sign.
inline float SignOrSelf(float x) { return (x == 0.0f || x != x) ? x : std::copysign(1.0f, x); }

// Lion (Chen et al. 2023, Algorithm 2): the direction sign(b1 m_{t-1} + (1 - b1) g_t), an EMA with b1 of the old
// momentum, and the momentum m_t = b2 m_{t-1} + (1 - b2) g_t; XLA fuses the gradient's product in both.
template <bool kFma>
inline float LionDirection(const Hyper& h, float g, float m) {
  return SignOrSelf(FirstMoment<kFma>(h, g, m));
}

template <bool kFma>
inline float LionMomentum(const Hyper& h, float g, float m) {
  return Ema<kFma>(h.one_minus_b2, h.b2, g, m);
}

// AdaMax's u_t = max(|g_t| + eps, b2 u_{t-1}) (Kingma & Ba 2014, Algorithm 2; eps inside the max as in optax and
// PyTorch, from the kEps slot).
inline float InfinityNorm(const Hyper& h, float g, float u) { return MaxOrNan(std::fabs(g) + h.eps, h.b2 * u); }

// AdamW's decoupled decay d + wd p (Loshchilov & Hutter 2019), added to the direction d where kDecay.
template <bool kFma, bool kDecay>
inline float Decayed(const Hyper& h, float p, float d) {
  if constexpr (kDecay) return Fma<kFma>(h.wd, p, d);
  return d;
}

// The direction that the learning rate scales, from the corrected first moment m_hat and the raw second moment v:
// m_hat / (sqrt(v_hat + eps_root) + eps) (r2 = 1 / (1 - b2^t)), or AdaMax's m_hat / u_t (u_t needs no correction
// and no root; its chain's eps is 0, and XLA drops the additions of a known 0); then [+ wd p] (AdamW's decay).
template <bool kFma, bool kDecay, Family kFamily = Family::kAdam>
inline float Direction(const Hyper& h, float r2, float p, float m_hat, float v) {
  float d;
  if constexpr (kFamily == Family::kAdaMax) {
    d = m_hat / v;
  } else if constexpr (kFamily == Family::kRAdam) {  // RAdam: r_t times Adam's direction, or m_hat alone
    const float adaptive = m_hat / (std::sqrt(Fma<kFma>(v, r2, h.eps_root)) + h.eps);
    d = h.tractable != 0.0f ? h.rectification * adaptive : m_hat;
  } else {
    d = m_hat / (std::sqrt(Fma<kFma>(v, r2, h.eps_root)) + h.eps);
  }
  return Decayed<kFma, kDecay>(h, p, d);
}

// The step: theta_t = theta_{t-1} - lr d, as XLA fuses the chain's update with optax.apply_updates.
template <bool kFma, bool kDecay, Family kFamily = Family::kAdam>
inline float NewParam(const Hyper& h, float r2, float p, float m_hat, float v) {
  return Fma<kFma>(h.neg_lr, Direction<kFma, kDecay, kFamily>(h, r2, p, m_hat, v), p);
}

// The update alone, -lr d, as the chain's update returns it (for optax.apply_updates to add later).
template <bool kFma, bool kDecay>
inline float Update(const Hyper& h, float r2, float p, float m_hat, float v) {
  return h.neg_lr * Direction<kFma, kDecay>(h, r2, p, m_hat, v);
}

// Results not aliased to their operands start as a copy of them, then are updated in place.
template <typename T>
void CopyIfNotAliased(T* out, const T* in, int64_t n) {
  if (out != in) std::memmove(out, in, n * sizeof(T));
}

inline bool Overlaps(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

// Calls fn(item, scratch) for item in [0, n) on the calling thread and up to pool.num_threads() - 1 helpers;
// scratch is a per-thread std::vector<float>. The caller works too and waits only for the items, never for
// the helpers themselves: a helper that starts late finds no item left and returns without touching fn, so
// a busy pool cannot deadlock the step and fn may live on the caller's stack.
//
// The items are cut into one contiguous range per worker, taken by the workers in the order they start; a worker
// takes the items of its range in order, then helps finish the others' (still in order), so a late helper costs
// no more than before. Measured on this project's 2-core machine at 16M params, in the minutes when its memory ran
// fast: a C++ harness streaming one contiguous range per core took 0.95x the time of two workers taking every
// other 64K-element item (1134 rounds; in the slow minutes both take the same time), and in benchmark workers this
// split with the unrolled loops took 1.00x the time of torch's fused Adam against 1.10x before (344 fast rounds;
// 0.98x both in the slow ones). Asking every pool thread (one worker more than the cores) made late helpers rare,
// but in those fast rounds the step took 1.18x torch's time: not done.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const Fn& fn) {
  if (n <= 0) return;
  const int64_t ranges = std::clamp<int64_t>(pool.num_threads(), 1, n);
  struct Shared {
    explicit Shared(int64_t ranges) : next(ranges) {}
    std::vector<std::atomic<int64_t>> next;  // the next item of each range
    std::atomic<int64_t> workers{0}, done{0};
  };
  auto shared = std::make_shared<Shared>(ranges);
  for (int64_t r = 0; r < ranges; ++r) shared->next[r].store(n * r / ranges, std::memory_order_relaxed);
  const Fn* body = &fn;
  auto run = [shared, body, n, ranges] {
    std::vector<float> scratch;
    const int64_t first = shared->workers.fetch_add(1) % ranges;
    for (int64_t k = 0; k < ranges; ++k) {
      const int64_t r = (first + k) % ranges, end = n * (r + 1) / ranges;
      for (int64_t i = shared->next[r].fetch_add(1); i < end; i = shared->next[r].fetch_add(1)) {
        (*body)(i, scratch);
        shared->done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(std::max<int64_t>(pool.num_threads() - 1, 0), n - 1);
  for (int64_t k = 0; k < helpers; ++k) pool.Schedule([run] { run(); });
  run();
  while (shared->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// Elements per work item: 1.75 MiB of traffic at 28 B/param, enough to hide the scheduling.
constexpr int64_t kItemElements = 1 << 16;

// Whether the x86-64 kernels may choose their AVX-512 loops: not where ADAM_JAX_FUSED_ISA is "avx2" (so that the
// tests can run the AVX2 loops on an AVX-512 CPU). adam_jax/fused/_library.py refuses values other than avx2 and
// avx512 before the kernels are loaded. (No cap goes below AVX2: the baseline loops use no FMA, XLA's code on an
// FMA CPU does, so they would not be bitwise its chain there.)
inline bool Avx512Allowed() {
  const char* value = std::getenv("ADAM_JAX_FUSED_ISA");
  return value == nullptr || std::strcmp(value, "avx2") != 0;
}

}  // namespace adam_jax_kernel

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__FMA__)
// Runtime dispatch: one portable build runs AVX2+FMA (or AVX-512) code where the CPU has it.
#define ADAM_JAX_X86_DISPATCH 1
#endif

#if defined(_WIN32)
#define ADAM_JAX_EXPORT __declspec(dllexport)
#else
#define ADAM_JAX_EXPORT __attribute__((visibility("default")))
#endif

#endif  // ADAM_JAX_FUSED_KERNEL_COMMON_H_
