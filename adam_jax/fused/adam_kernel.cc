// One pass of the Adam family (Adam, AdamW, NAdam(W), AdaMax(W), AMSGrad, AdaBelief, RAdam, Lion) over every fp32
// leaf of a parameter tree, called from JAX through the XLA FFI.
//
// Per element, the composed chain scale_by_moments -> bias_correct -> scale_by_rms -> [decoupled_decay]
// -> scale_by_learning_rate -> optax.apply_updates (Kingma & Ba 2014, Algorithm 1; Loshchilov & Hutter
// 2019), in the float32 operations that XLA's CPU backend compiles that chain to:
//
//   m = fma(1 - b1, g, b1 m)          v = fma(1 - b2, g g, b2 v)
//   d = (m r1) / (sqrt(fma(v, r2, eps_root)) + eps)       r_i = 1 / (1 - b_i^t); 1 - b_i^t from the caller
//       (NAdam, nesterov=1: m r1 is fma(c_m, m, c_g g), c_m = b1 / (1 - b1^(t+1)), c_g = (1 - b1) / (1 - b1^t))
//       (AdaMax, family=1: v is u = max(|g| + eps, b2 u), NaN from either side, and d = (m r1) / u)
//       (AMSGrad, family=2: w = max(v r2, w), and d = (m r1) / (sqrt(w + eps_root) + eps))
//       (AdaBelief, family=3: v is s = fma(b2, s, (1 - b2) ((g - m) (g - m))) + belief_eps, with the new m)
//       (RAdam, family=4: d = tractable ? r_t d : m r1, r_t and tractable from the caller)
//       (Lion, family=5: d = sign(fma(1 - b1, g, b1 m_old)), m = fma(1 - b2, g, b2 m_old); no nu)
//   d = fma(wd, p, d)                                     (AdamW, AdaMaxW, Lion with decay)
//   p = fma(-lr, d, p)
//
// XLA turns x / broadcast(c) into x * (1 / c), and LLVM contracts a*b + c into a fused multiply-add
// where the CPU has one (the first product of a sum is the one fused). The kernel does the same, so its
// results are bitwise those of the jitted chain on the same CPU; on a CPU without FMA both use separate
// multiplies and adds. The file is built with -ffp-contract=off (the fmas are written out, no others
// appear) and without -ffast-math; -fno-math-errno lets sqrtf vectorise (a correctly rounded sqrtps).
//
// Operands: scalars f32[kNumScalars] (f32[batch, kNumScalars] under vmap: see ReadHypers), then params[n],
// grads[n], mu[n], nu[n] (none for Lion) [, AMSGrad's running maximum w[n]]; results: params[n], mu[n], nu[n]
// [, w[n]], aliased to the inputs by the caller so the update is in place. The leaves are cut into chunks, and the
// calling thread and pool.num_threads() - 1 of XLA's intra-op pool threads each stream one contiguous range of them
// (ParallelFor; a range is shared when its helper starts late), so 1000 small leaves cost one call.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernel_common.h"

namespace ffi = xla::ffi;
using namespace adam_jax_kernel;

namespace {

template <bool kFma, bool kDecay, bool kNesterov, Family kFamily>
__attribute__((always_inline)) inline void Loop(float* __restrict p, const float* __restrict g,
                                                float* __restrict m, float* __restrict v, float* __restrict w,
                                                int64_t n, const Hyper h) {
  if constexpr (kFamily == Family::kLion) {  // one moment: v and w are not read
#pragma GCC unroll 4
    for (int64_t i = 0; i < n; ++i) {
      const float d = Decayed<kFma, kDecay>(h, p[i], LionDirection<kFma>(h, g[i], m[i]));
      m[i] = LionMomentum<kFma>(h, g[i], m[i]);
      p[i] = Fma<kFma>(h.neg_lr, d, p[i]);
    }
    return;
  }
  const float r1 = 1.0f / h.c1, r2 = 1.0f / h.c2;
  // Four vectors per iteration: more loads in flight beside the square root and the division. It is the same
  // arithmetic per element; in the minutes when this machine's memory runs fast (a 16M-param step in ~4.3 ms) the
  // unrolled loop took 0.92-0.95x the time of the plain one (a C++ harness, 782 and 1134 rounds); in the slow minutes
  // they take the same time (memory-bound).
#pragma GCC unroll 4
  for (int64_t i = 0; i < n; ++i) {
    const float mi = FirstMoment<kFma>(h, g[i], m[i]);
    float vi;
    if constexpr (kFamily == Family::kAdaMax) {
      vi = InfinityNorm(h, g[i], v[i]);
    } else if constexpr (kFamily == Family::kAdaBelief) {
      vi = BeliefMoment<kFma>(h, g[i], mi, v[i]);
    } else {
      vi = SecondMoment<kFma>(h, g[i], v[i]);
    }
    m[i] = mi;
    v[i] = vi;
    const float m_hat = CorrectedFirstMoment<kFma, kNesterov>(h, r1, g[i], mi);
    if constexpr (kFamily == Family::kAmsgrad) {
      const float wi = MaxOrNan(vi * r2, w[i]);  // the running maximum of the corrected v_t
      w[i] = wi;
      p[i] = NewParam<kFma, kDecay>(h, 1.0f, p[i], m_hat, wi);  // corrected already: fma(w, 1, e) is w + e
    } else {
      p[i] = NewParam<kFma, kDecay, kFamily>(h, r2, p[i], m_hat, vi);
    }
  }
}

// The step's variant: the family member, AdamW's decoupled decay, NAdam's look-ahead first moment.
struct Variant {
  bool decay, nesterov;
  Family family;
};

using LoopFn = void (*)(float*, const float*, float*, float*, float*, int64_t, const Hyper, Variant);

// Always inlined: each ISA's entry point must hold its own copies of the loops (a shared out-of-line Dispatch
// would compile them for the baseline ISA, where __builtin_fmaf is a library call: 6x slower, found by timing).
template <bool kFma>
__attribute__((always_inline)) inline void Dispatch(float* p, const float* g, float* m, float* v, float* w,
                                                    int64_t n, const Hyper h, Variant x) {
  constexpr Family kAdam = Family::kAdam, kAdaMax = Family::kAdaMax;
  if (x.family == Family::kLion) {  // Lion: decay or not, no look-ahead
    if (x.decay) {
      Loop<kFma, true, false, Family::kLion>(p, g, m, v, w, n, h);
    } else {
      Loop<kFma, false, false, Family::kLion>(p, g, m, v, w, n, h);
    }
  } else if (x.family == Family::kAmsgrad) {  // AMSGrad: no decay, no look-ahead
    Loop<kFma, false, false, Family::kAmsgrad>(p, g, m, v, w, n, h);
  } else if (x.family == Family::kAdaBelief) {  // AdaBelief: no decay, no look-ahead (with one, it takes the chain)
    Loop<kFma, false, false, Family::kAdaBelief>(p, g, m, v, w, n, h);
  } else if (x.family == Family::kRAdam) {  // RAdam: no decay
    if (x.nesterov) {
      Loop<kFma, false, true, Family::kRAdam>(p, g, m, v, w, n, h);
    } else {
      Loop<kFma, false, false, Family::kRAdam>(p, g, m, v, w, n, h);
    }
  } else if (x.family == kAdaMax) {  // AdaMax has no look-ahead
    if (x.decay) {
      Loop<kFma, true, false, kAdaMax>(p, g, m, v, w, n, h);
    } else {
      Loop<kFma, false, false, kAdaMax>(p, g, m, v, w, n, h);
    }
  } else if (x.nesterov) {
    if (x.decay) {
      Loop<kFma, true, true, kAdam>(p, g, m, v, w, n, h);
    } else {
      Loop<kFma, false, true, kAdam>(p, g, m, v, w, n, h);
    }
  } else if (x.decay) {
    Loop<kFma, true, false, kAdam>(p, g, m, v, w, n, h);
  } else {
    Loop<kFma, false, false, kAdam>(p, g, m, v, w, n, h);
  }
}

void AdamPortable(float* p, const float* g, float* m, float* v, float* w, int64_t n, const Hyper h, Variant x) {
#if defined(__aarch64__) || defined(__FMA__)
  Dispatch<true>(p, g, m, v, w, n, h, x);  // the baseline of this target has FMA, as XLA's code uses
#else
  Dispatch<false>(p, g, m, v, w, n, h, x);
#endif
}

#if defined(ADAM_JAX_X86_DISPATCH)
__attribute__((target("avx2,fma"))) void AdamAvx2(float* p, const float* g, float* m, float* v, float* w, int64_t n,
                                                  const Hyper h, Variant x) {
  Dispatch<true>(p, g, m, v, w, n, h, x);
}

__attribute__((target("avx512f,avx512vl,avx2,fma"))) void AdamAvx512(float* p, const float* g, float* m, float* v,
                                                                     float* w, int64_t n, const Hyper h, Variant x) {
  Dispatch<true>(p, g, m, v, w, n, h, x);
}
#endif

struct Isa {
  LoopFn loop;
  const char* name;
};

Isa SelectIsa() {
#if defined(ADAM_JAX_X86_DISPATCH)
  __builtin_cpu_init();
  if (Avx512Allowed() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma")) {
    return {AdamAvx512, "avx512+fma"};
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {AdamAvx2, "avx2+fma"};
  }
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

// One leaf's arrays: params, grads, mu, nu (null for Lion) and (AMSGrad only, else null) the running maximum w of the
// corrected nu.
struct Leaf {
  const float *p_in, *g, *m_in, *v_in, *w_in;
  float *p, *m, *v, *w;
  int64_t size, start;  // start: offset of the leaf in the concatenation of all leaves
  const Hyper* h;       // the scalars of its problem (one per vmapped batch element)
};

// Updates elements [lo, hi) of one leaf.
void Segment(const Leaf& leaf, int64_t lo, int64_t hi, Variant x, std::vector<float>& scratch) {
  const int64_t n = hi - lo;
  float *p = leaf.p + lo, *m = leaf.m + lo, *v = leaf.v ? leaf.v + lo : nullptr, *w = leaf.w ? leaf.w + lo : nullptr;
  CopyIfNotAliased(p, leaf.p_in + lo, n);
  CopyIfNotAliased(m, leaf.m_in + lo, n);
  if (v) CopyIfNotAliased(v, leaf.v_in + lo, n);
  if (w) CopyIfNotAliased(w, leaf.w_in + lo, n);
  const float* g = leaf.g + lo;
  const int64_t bytes = n * sizeof(float);
  if (Overlaps(g, bytes, p, bytes) || Overlaps(g, bytes, m, bytes) || (v && Overlaps(g, bytes, v, bytes)) ||
      (w && Overlaps(g, bytes, w, bytes))) {
    scratch.assign(g, g + n);  // the same array passed twice
    g = scratch.data();
  }
  ChosenIsa().loop(p, g, m, v, w, n, *leaf.h, x);
}

// Work items: chunks of kItemElements of the concatenated leaves, so 1000 small leaves cost one call.
ffi::Error Run(ffi::ThreadPool& pool, const std::vector<Leaf>& leaves, int64_t total, Variant variant) {
  ParallelFor(pool, (total + kItemElements - 1) / kItemElements, [&](int64_t c, std::vector<float>& scratch) {
    const int64_t lo = c * kItemElements, hi = std::min(total, lo + kItemElements);
    auto it = std::upper_bound(leaves.begin(), leaves.end(), lo,
                               [](int64_t x, const Leaf& leaf) { return x < leaf.start; });
    for (auto leaf = it - 1; leaf != leaves.end() && leaf->start < hi; ++leaf) {
      const int64_t a = std::max(lo, leaf->start) - leaf->start;
      const int64_t b = std::min(hi, leaf->start + leaf->size) - leaf->start;
      if (b > a) Segment(*leaf, a, b, variant, scratch);
    }
  });
  return ffi::Error::Success();
}

// Parts mode (offset >= 0): params, mu [, nu [, w]] are one flat buffer each, aliased to the results, and the grads
// are the gradients of consecutive parts of them, starting at element `offset` (the leaves a flat parameter vector is
// cut into by jax.flatten_util.ravel_pytree's unravel). The grads are read where the backward pass left them, so the
// step never concatenates them into a flat gradient (on CPU a fresh 64 MB buffer at 16M params, whose page faults
// cost more than the step). One problem only (the caller runs a vmapped batch sequentially).
ffi::Error Parts(const std::vector<Hyper>& hypers, ffi::RemainingArgs& args, ffi::RemainingRets& rets, size_t groups,
                 int64_t offset, std::vector<Leaf>& leaves, int64_t& total) {
  const size_t flats = groups - 1;  // params, mu [, nu [, w]]: the operand groups but the grads
  if (hypers.size() != 1) return ffi::Error::InvalidArgument("adam_jax fused kernel: parts take one problem");
  if (rets.size() != flats || args.size() <= flats) {
    return ffi::Error::InvalidArgument("adam_jax fused kernel: parts take one flat buffer per result and the grads");
  }
  float* in[4] = {nullptr, nullptr, nullptr, nullptr};
  float* out[4] = {nullptr, nullptr, nullptr, nullptr};
  int64_t size = -1;
  for (size_t k = 0; k < flats; ++k) {
    auto a = *args.get<ffi::AnyBuffer>(k);
    auto r = *rets.get<ffi::AnyBuffer>(k);
    if (size < 0) size = static_cast<int64_t>(a.element_count());
    if (a.element_type() != ffi::F32 || r->element_type() != ffi::F32 ||
        static_cast<int64_t>(a.element_count()) != size || static_cast<int64_t>(r->element_count()) != size) {
      return ffi::Error::InvalidArgument("adam_jax fused kernel: the flat buffers must be float32 and shaped alike");
    }
    in[k] = a.typed_data<float>();
    out[k] = r->typed_data<float>();
    CopyIfNotAliased(out[k], in[k], size);  // the whole buffer: this call updates only its parts
  }
  // Group k of a Leaf (params, grads, mu, nu, w) is flat buffer k, or k - 1 past the grads; null where absent.
  auto flat = [&](size_t group, int64_t o) -> float* {
    if (group == 0) return out[0] + o;
    return group - 1 < flats ? out[group - 1] + o : nullptr;
  };
  int64_t o = offset;
  for (size_t i = flats; i < args.size(); ++i) {
    auto g = *args.get<ffi::AnyBuffer>(i);
    const int64_t part = static_cast<int64_t>(g.element_count());
    if (g.element_type() != ffi::F32 || o + part > size) {
      return ffi::Error::InvalidArgument("adam_jax fused kernel: the parts must be float32 and fit the flat buffers");
    }
    float *p = flat(0, o), *m = flat(2, o), *v = flat(3, o), *w = flat(4, o);
    leaves.push_back(Leaf{p, g.typed_data<float>(), m, v, w, p, m, v, w, part, total, &hypers[0]});
    total += part;
    o += part;
  }
  return ffi::Error::Success();
}

ffi::Error AdamImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, int32_t decay, int32_t nesterov, int32_t family_id, int64_t offset) {
  const std::vector<Hyper> hypers = ReadHypers(scalars.typed_data(), scalars.element_count());
  if (hypers.empty()) return ffi::Error::InvalidArgument("adam_jax fused Adam: expected 15 scalars per problem");
  // The variants the loops have: decay for Adam, AdaMax and Lion, the look-ahead for Adam and RAdam.
  if (family_id < 0 || family_id > static_cast<int32_t>(Family::kLion)) {
    return ffi::Error::InvalidArgument("adam_jax fused Adam: family must be 0 to 5");
  }
  const Family family = static_cast<Family>(family_id);
  if ((decay && family != Family::kAdam && family != Family::kAdaMax && family != Family::kLion) ||
      (nesterov && family != Family::kAdam && family != Family::kRAdam)) {
    return ffi::Error::InvalidArgument("adam_jax fused Adam: no loop for this family with decay / the look-ahead");
  }
  const int64_t batch = static_cast<int64_t>(hypers.size());
  // Operand groups: params, grads, mu [, nu [, AMSGrad's running maximum]]; results: params, mu [, nu [, maximum]].
  const size_t groups = family == Family::kLion ? 3 : family == Family::kAmsgrad ? 5 : 4;
  std::vector<Leaf> leaves;
  int64_t total = 0;
  if (offset >= 0) {
    const ffi::Error error = Parts(hypers, args, rets, groups, offset, leaves, total);
    if (error.failure()) return error;
    return Run(pool, leaves, total, Variant{decay != 0, nesterov != 0, family});
  }
  const size_t n = rets.size() / (groups - 1);
  if (rets.size() != (groups - 1) * n || args.size() != groups * n) {
    return ffi::Error::InvalidArgument(groups == 3   ? "adam_jax fused Lion: expected 3n operands and 2n results"
                                       : groups == 5 ? "adam_jax fused AMSGrad: expected 5n operands and 4n results"
                                                     : "adam_jax fused Adam: expected 4n operands and 3n results");
  }
  leaves.reserve(n * batch);
  for (size_t i = 0; i < n; ++i) {
    std::vector<ffi::AnyBuffer> in;
    std::vector<ffi::Result<ffi::AnyBuffer>> out;
    for (size_t k = 0; k < groups; ++k) in.push_back(*args.get<ffi::AnyBuffer>(k * n + i));
    for (size_t k = 0; k + 1 < groups; ++k) out.push_back(*rets.get<ffi::AnyBuffer>(k * n + i));
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
    if (size % batch != 0) return ffi::Error::InvalidArgument("adam_jax fused Adam: leaves must hold the batch");
    const int64_t part = size / batch;  // one problem's elements
    // Operand group k of this leaf at problem offset o, or null where the family has no such group (nu: Lion; the
    // running maximum: all but AMSGrad).
    auto input = [&](size_t k, int64_t o) { return k < groups ? in[k].typed_data<float>() + o : nullptr; };
    auto result = [&](size_t k, int64_t o) { return k + 1 < groups ? out[k]->typed_data<float>() + o : nullptr; };
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t o = b * part;
      leaves.push_back(Leaf{input(0, o), input(1, o), input(2, o), input(3, o), input(4, o), result(0, o),
                            result(1, o), result(2, o), result(3, o), part, total, &hypers[b]});
      total += part;
    }
  }
  return Run(pool, leaves, total, Variant{decay != 0, nesterov != 0, family});
}

}  // namespace

extern "C" ADAM_JAX_EXPORT XLA_FFI_Error* AdamJaxFusedAdam(XLA_FFI_CallFrame* call_frame);

// Which build of the inner loop this CPU runs (for the test log and the benchmark table).
extern "C" ADAM_JAX_EXPORT const char* AdamJaxFusedIsa() { return ChosenIsa().name; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdamJaxFusedAdam, AdamImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int32_t>("decay")
                                  .Attr<int32_t>("nesterov")
                                  .Attr<int32_t>("family")
                                  .Attr<int64_t>("offset"));
