// One pass of Adam / AdamW over every fp32 leaf of a parameter tree, called from JAX through the XLA FFI.
//
// Per element, the composed chain scale_by_moments -> bias_correct -> scale_by_rms -> [decoupled_decay]
// -> scale_by_learning_rate -> optax.apply_updates (Kingma & Ba 2014, Algorithm 1; Loshchilov & Hutter
// 2019), in the float32 operations that XLA's CPU backend compiles that chain to:
//
//   m = fma(1 - b1, g, b1 m)          v = fma(1 - b2, g g, b2 v)
//   d = (m r1) / (sqrt(fma(v, r2, eps_root)) + eps)       r_i = 1 / (1 - b_i^t); 1 - b_i^t from the caller
//   d = fma(wd, p, d)                                     (AdamW only)
//   p = fma(-lr, d, p)
//
// XLA turns x / broadcast(c) into x * (1 / c), and LLVM contracts a*b + c into a fused multiply-add
// where the CPU has one (the first product of a sum is the one fused). The kernel does the same, so its
// results are bitwise those of the jitted chain on the same CPU; on a CPU without FMA both use separate
// multiplies and adds. The file is built with -ffp-contract=off (the fmas are written out, no others
// appear) and without -ffast-math; -fno-math-errno lets sqrtf vectorise (a correctly rounded sqrtps).
//
// Operands: scalars f32[10], then params[n], grads[n], mu[n], nu[n]; results: params[n], mu[n], nu[n],
// aliased to the inputs by the caller so the update is in place. The leaves are cut into chunks that the
// calling thread and XLA's intra-op thread pool take in turn, so 1000 small leaves cost one call.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Scalar { kOneMinusB1, kB1, kOneMinusB2, kB2, kC1, kC2, kEpsRoot, kEps, kWeightDecay, kNegLr, kNumScalars };

struct Hyper {
  float one_minus_b1, b1, one_minus_b2, b2, c1, c2, eps_root, eps, wd, neg_lr;
};

// One loop, two arithmetics: kFma fuses exactly where XLA's compiled chain does on an FMA CPU.
template <bool kFma>
inline float Fma(float a, float b, float c) {
  if constexpr (kFma) {
    return __builtin_fmaf(a, b, c);
  } else {
    return a * b + c;
  }
}

template <bool kFma, bool kDecay>
__attribute__((always_inline)) inline void Loop(float* __restrict p, const float* __restrict g,
                                                float* __restrict m, float* __restrict v, int64_t n, const Hyper h) {
  const float r1 = 1.0f / h.c1, r2 = 1.0f / h.c2;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = Fma<kFma>(h.one_minus_b1, gi, h.b1 * m[i]);
    const float vi = Fma<kFma>(h.one_minus_b2, gi * gi, h.b2 * v[i]);
    m[i] = mi;
    v[i] = vi;
    float d = (mi * r1) / (std::sqrt(Fma<kFma>(vi, r2, h.eps_root)) + h.eps);
    if constexpr (kDecay) d = Fma<kFma>(h.wd, p[i], d);
    p[i] = Fma<kFma>(h.neg_lr, d, p[i]);
  }
}

using LoopFn = void (*)(float*, const float*, float*, float*, int64_t, const Hyper, bool);

template <bool kFma>
inline void Dispatch(float* p, const float* g, float* m, float* v, int64_t n, const Hyper h, bool decay) {
  if (decay) {
    Loop<kFma, true>(p, g, m, v, n, h);
  } else {
    Loop<kFma, false>(p, g, m, v, n, h);
  }
}

void AdamPortable(float* p, const float* g, float* m, float* v, int64_t n, const Hyper h, bool decay) {
#if defined(__aarch64__) || defined(__FMA__)
  Dispatch<true>(p, g, m, v, n, h, decay);  // the baseline of this target has FMA, as XLA's code uses
#else
  Dispatch<false>(p, g, m, v, n, h, decay);
#endif
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__FMA__)
// Runtime dispatch: one portable build uses AVX2+FMA or AVX-512 where the CPU has them.
#define ADAM_JAX_X86_DISPATCH 1
__attribute__((target("avx2,fma"))) void AdamAvx2(float* p, const float* g, float* m, float* v, int64_t n,
                                                  const Hyper h, bool decay) {
  Dispatch<true>(p, g, m, v, n, h, decay);
}

__attribute__((target("avx512f,avx512vl,avx2,fma"))) void AdamAvx512(float* p, const float* g, float* m, float* v,
                                                                     int64_t n, const Hyper h, bool decay) {
  Dispatch<true>(p, g, m, v, n, h, decay);
}
#endif

struct Isa {
  LoopFn loop;
  const char* name;
};

Isa SelectIsa() {
#if defined(ADAM_JAX_X86_DISPATCH)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) {
    return {AdamAvx512, "avx512+fma"};
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {AdamAvx2, "avx2+fma"};
  return {AdamPortable, "sse2"};
#elif defined(__aarch64__)
  return {AdamPortable, "neon+fma"};
#else
  return {AdamPortable, "portable"};
#endif
}

const Isa& ChosenIsa() {
  static const Isa isa = SelectIsa();
  return isa;
}

struct Leaf {
  const float *p_in, *g, *m_in, *v_in;
  float *p, *m, *v;
  int64_t size, start;  // start: offset of the leaf in the concatenation of all leaves
};

bool Overlaps(const float* a, const float* b, int64_t n) { return a < b + n && b < a + n; }

struct Work {
  std::vector<Leaf> leaves;
  Hyper h;
  bool decay;
  int64_t total, chunk, num_chunks;
  std::atomic<int64_t> next{0}, done{0};

  void Segment(const Leaf& leaf, int64_t lo, int64_t hi, std::vector<float>& scratch) {
    const int64_t n = hi - lo;
    float *p = leaf.p + lo, *m = leaf.m + lo, *v = leaf.v + lo;
    // Results not aliased to the inputs: start from a copy of the inputs, then update in place.
    if (leaf.p != leaf.p_in) std::memmove(p, leaf.p_in + lo, n * sizeof(float));
    if (leaf.m != leaf.m_in) std::memmove(m, leaf.m_in + lo, n * sizeof(float));
    if (leaf.v != leaf.v_in) std::memmove(v, leaf.v_in + lo, n * sizeof(float));
    const float* g = leaf.g + lo;
    if (Overlaps(g, p, n) || Overlaps(g, m, n) || Overlaps(g, v, n)) {  // the same array passed twice
      scratch.assign(g, g + n);
      g = scratch.data();
    }
    ChosenIsa().loop(p, g, m, v, n, h, decay);
  }

  void Chunk(int64_t c, std::vector<float>& scratch) {
    const int64_t lo = c * chunk, hi = std::min(total, lo + chunk);
    auto it = std::upper_bound(leaves.begin(), leaves.end(), lo,
                               [](int64_t x, const Leaf& leaf) { return x < leaf.start; });
    for (auto leaf = it - 1; leaf != leaves.end() && leaf->start < hi; ++leaf) {
      const int64_t a = std::max(lo, leaf->start) - leaf->start;
      const int64_t b = std::min(hi, leaf->start + leaf->size) - leaf->start;
      if (b > a) Segment(*leaf, a, b, scratch);
    }
  }

  void Run() {
    std::vector<float> scratch;
    for (int64_t c = next.fetch_add(1); c < num_chunks; c = next.fetch_add(1)) {
      Chunk(c, scratch);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

constexpr int64_t kChunk = 1 << 16;  // elements: 1.75 MiB of traffic per chunk at 28 B/param

ffi::Error AdamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, int32_t decay) {
  if (scalars.element_count() != kNumScalars) {
    return ffi::Error::InvalidArgument("adam_jax fused Adam: expected 10 scalars");
  }
  const size_t n = rets.size() / 3;
  if (rets.size() != 3 * n || args.size() != 4 * n) {
    return ffi::Error::InvalidArgument("adam_jax fused Adam: expected 4n operands after the scalars and 3n results");
  }
  const float* s = scalars.typed_data();
  auto work = std::make_shared<Work>();
  work->h = Hyper{s[kOneMinusB1], s[kB1], s[kOneMinusB2], s[kB2],          s[kC1],
                  s[kC2],         s[kEpsRoot], s[kEps], s[kWeightDecay], s[kNegLr]};
  work->decay = decay != 0;
  work->leaves.reserve(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    ffi::AnyBuffer in[4] = {*args.get<ffi::AnyBuffer>(i), *args.get<ffi::AnyBuffer>(n + i),
                            *args.get<ffi::AnyBuffer>(2 * n + i), *args.get<ffi::AnyBuffer>(3 * n + i)};
    ffi::Result<ffi::AnyBuffer> out[3] = {*rets.get<ffi::AnyBuffer>(i), *rets.get<ffi::AnyBuffer>(n + i),
                                          *rets.get<ffi::AnyBuffer>(2 * n + i)};
    const int64_t size = static_cast<int64_t>(in[0].element_count());
    for (const auto& b : in) {
      if (b.element_type() != ffi::F32 || static_cast<int64_t>(b.element_count()) != size) {
        return ffi::Error::InvalidArgument("adam_jax fused Adam: every leaf must be float32 and shaped alike");
      }
    }
    for (auto& b : out) {
      if (b->element_type() != ffi::F32 || static_cast<int64_t>(b->element_count()) != size) {
        return ffi::Error::InvalidArgument("adam_jax fused Adam: results must match the leaves");
      }
    }
    work->leaves.push_back(Leaf{in[0].typed_data<float>(), in[1].typed_data<float>(), in[2].typed_data<float>(),
                                in[3].typed_data<float>(), out[0]->typed_data<float>(), out[1]->typed_data<float>(),
                                out[2]->typed_data<float>(), size, total});
    total += size;
  }
  work->total = total;
  work->chunk = kChunk;
  work->num_chunks = (total + kChunk - 1) / kChunk;
  if (work->num_chunks == 0) return ffi::Error::Success();

  // The caller works too and waits only for the chunks, never for the helpers themselves: a helper that
  // starts late finds no chunk left and returns, so a busy pool cannot deadlock the step.
  const int64_t helpers = std::min<int64_t>(std::max<int64_t>(pool.num_threads() - 1, 0), work->num_chunks - 1);
  for (int64_t k = 0; k < helpers; ++k) {
    pool.Schedule([work] { work->Run(); });
  }
  work->Run();
  while (work->done.load(std::memory_order_acquire) < work->num_chunks) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

#if defined(_WIN32)
#define ADAM_JAX_EXPORT __declspec(dllexport)
#else
#define ADAM_JAX_EXPORT __attribute__((visibility("default")))
#endif

extern "C" ADAM_JAX_EXPORT XLA_FFI_Error* AdamJaxFusedAdam(XLA_FFI_CallFrame* call_frame);

// Which build of the inner loop this CPU runs (for the test log and the benchmark table).
extern "C" ADAM_JAX_EXPORT const char* AdamJaxFusedIsa() { return ChosenIsa().name; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdamJaxFusedAdam, AdamImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int32_t>("decay"));
