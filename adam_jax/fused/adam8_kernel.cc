// One pass of Adam / AdamW with 8-bit block-wise moments (Dettmers et al. 2021) over every quantized leaf
// of a parameter tree, called from JAX through the XLA FFI.
//
// Per block of block_size consecutive elements (row-major) the composed chain
// scale_by_moments(mu_dtype='int8', nu_dtype='uint8') -> bias_correct -> scale_by_rms -> [decoupled_decay]
// -> scale_by_learning_rate -> optax.apply_updates, as adam_jax/quantization.py and adam_kernel.cc write it:
//
//   m_old = Q_s[code_m] N_m        v_old = Q_u[code_v] N_v          (dequantize: a table of the map)
//   m = fma(1 - b1, g, b1 m_old)   v = fma(1 - b2, g g, b2 v_old)   (float32)
//   p = fma(-lr, [fma(wd, p,] (m r1) / (sqrt(fma(v, r2, eps_root)) + eps) [)], p)   (the moments before
//                                                                     requantizing, as the chain uses them)
//   N_m = max |m|, N_v = max |v| over the finite elements of the block (NaN and inf take no part)
//   code_m = sign(m) round(fma(a, C1[e], C0[e])), a = min(|m| / N_m, 1), e = #{j >= 1 : a < 10^-j}
//   code_v = round(fma(a, C1[e], C0[e])), a = clip(v / N_v, 0, 1)                 (requantize)
//
// round is to nearest even; x / N is x * (1 / N) (0 where N is 0), as XLA computes it. The tables Q and the
// per-decade constants C1, C0 are an operand computed by adam_jax.quantization in float32, so both paths use
// the same constants; with the same operations in the same order, one kernel step is bitwise the jitted
// chain's (checked in the tests). A block is read and written once: 16 bytes per parameter instead of the
// 28 of float32 Adam (the moments are updated in L1-resident scratch between the two passes).
//
// Operands: scalars f32[kNumScalars], maps f32[kMapFloats], then params[n] f32, grads[n] f32, mu codes[n] s8,
// mu absmax[n] f32, nu codes[n] u8, nu absmax[n] f32; results: params, mu codes, mu absmax, nu codes,
// nu absmax, aliased to the inputs by the caller. Attributes: decay (0/1), block_size, updates (0/1). With
// updates = 1 the first result of each leaf is not the new params but the chain's update -lr d, which is what
// GradientTransformation.update returns; the params are only read (for the decay), and the caller may alias the
// result to the grads (each element's gradient is read before its update is written). Under
// jax.vmap every operand carries a leading batch axis (see ReadHypers); each problem's leaf is quantized in
// blocks of its own.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernel_common.h"

namespace ffi = xla::ffi;
using namespace adam_jax_kernel;

namespace {

constexpr int kDecadesSigned = 7;    // e = 0..6 (adam_jax.quantization: k = 6 fraction bits)
constexpr int kDecadesUnsigned = 8;  // e = 0..7 (k = 7)
constexpr int kMapFloats = 256 + 256 + 10 * 8;

// Views into the maps operand (adam_jax.quantization.kernel_constants): [signed table (code + 128) |
// unsigned table | 10 rows of 8 decade constants: encoding's signed lower, C1, C0, unsigned lower, C1, C0
// (unused slots hold lower = 0, never chosen), decoding's signed c, w, unsigned c, w].
struct Maps {
  const float *m_table, *v_table, *m_lower, *m_c1, *m_c0, *v_lower, *v_c1, *v_c0, *m_dc, *m_dw, *v_dc, *v_dw;
  float m_next[8], v_next[8];  // lower[e + 1], 0 past the last decade: the vector encoders' one compare per decade

  explicit Maps(const float* f)
      : m_table(f + 128),
        v_table(f + 256),
        m_lower(f + 512),
        m_c1(f + 520),
        m_c0(f + 528),
        v_lower(f + 536),
        v_c1(f + 544),
        v_c0(f + 552),
        m_dc(f + 560),
        m_dw(f + 568),
        v_dc(f + 576),
        v_dw(f + 584) {
    for (int e = 0; e < 8; ++e) {
      m_next[e] = e + 1 < kDecadesSigned ? m_lower[e + 1] : 0.0f;
      v_next[e] = e + 1 < kDecadesUnsigned ? v_lower[e + 1] : 0.0f;
    }
  }
};

// float -> int32 as XLA converts the rounded value: NaN -> INT32_MIN, whose low byte (the code) is 0.
inline int32_t ToInt(float r) { return r != r ? std::numeric_limits<int32_t>::min() : static_cast<int32_t>(r); }

template <bool kFma>
inline int32_t EncodeMagnitude(float a, const float* lower, const float* c1, const float* c0, int decades) {
  int e = 0;
  for (int j = 1; j < decades; ++j) e += a < lower[j];
  return ToInt(std::nearbyint(Fma<kFma>(a, c1[e], c0[e])));
}

struct Block {
  const float* p;  // read for the step (and the decay)
  float* out;      // written: the new params (out == p, in place) or the update
  const float* g;
  int8_t* mc;
  float* ma;  // this block's absmax: read (old), then written (new)
  uint8_t* vc;
  float* va;
  int64_t n;
};

// The param an element's update reads: none where the update alone is written without decay (p may then be
// any buffer of the right size, or the grads themselves).
template <bool kDecay, bool kUpdates>
inline float ReadParam(const float* p, int64_t i) {
  return kUpdates && !kDecay ? 0.0f : p[i];
}

// Elements [from, n) of pass 1 in scalar code: the update, moments to scratch, running absmax.
template <bool kFma, bool kDecay, bool kUpdates>
inline void Pass1Scalar(const Block& b, int64_t from, const Hyper& h, const Maps& q, float* mt, float* vt,
                        float& amax_m, float& amax_v) {
  const float r1 = 1.0f / h.c1, r2 = 1.0f / h.c2, old_m = *b.ma, old_v = *b.va;
  for (int64_t i = from; i < b.n; ++i) {
    const float m = FirstMoment<kFma>(h, b.g[i], q.m_table[b.mc[i]] * old_m);
    const float v = SecondMoment<kFma>(h, b.g[i], q.v_table[b.vc[i]] * old_v);
    mt[i] = m;
    vt[i] = v;
    const float am = std::fabs(m), av = std::fabs(v);
    amax_m = am > amax_m ? am : amax_m;  // a NaN element leaves the maximum as it is
    amax_v = av > amax_v ? av : amax_v;
    const float p = ReadParam<kDecay, kUpdates>(b.p, i);
    b.out[i] = kUpdates ? Update<kFma, kDecay>(h, r2, p, m * r1, v) : NewParam<kFma, kDecay>(h, r2, p, m * r1, v);
  }
}

template <bool kFma>
inline void Pass2Scalar(const Block& b, int64_t from, const Maps& q, const float* mt, const float* vt, float sm,
                        float sv) {
  for (int64_t i = from; i < b.n; ++i) {
    const float x = mt[i] * sm;
    const float ax = std::fabs(x);
    const int32_t n = EncodeMagnitude<kFma>(ax > 1.0f ? 1.0f : ax, q.m_lower, q.m_c1, q.m_c0, kDecadesSigned);
    b.mc[i] = static_cast<int8_t>(static_cast<uint8_t>(x < 0 ? 0u - static_cast<uint32_t>(n) : n));
    float y = vt[i] * sv;
    y = y < 0.0f ? 0.0f : y;
    y = y > 1.0f ? 1.0f : y;
    b.vc[i] = static_cast<uint8_t>(EncodeMagnitude<kFma>(y, q.v_lower, q.v_c1, q.v_c0, kDecadesUnsigned));
  }
}

inline float Scale(float absmax) { return absmax > 0.0f ? 1.0f / absmax : 0.0f; }

// The largest finite |x[i]|, for the rare block whose running maximum (which skips NaN) came out inf.
inline float FiniteAbsMax(const float* x, int64_t n) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax && a < std::numeric_limits<float>::infinity()) amax = a;
  }
  return amax;
}

// Stores the block's new absmax (of the finite moments in mt, vt) and returns the scales that requantize it.
inline void Finish(const Block& b, const float* mt, const float* vt, float amax_m, float amax_v, float& sm,
                   float& sv) {
  if (!(amax_m < std::numeric_limits<float>::infinity())) amax_m = FiniteAbsMax(mt, b.n);
  if (!(amax_v < std::numeric_limits<float>::infinity())) amax_v = FiniteAbsMax(vt, b.n);
  *b.ma = amax_m;
  *b.va = amax_v;
  sm = Scale(amax_m);
  sv = Scale(amax_v);
}

// The blocks of a span from the block at offset a (element) and k (block).
inline Block SubBlock(const Block& span, int64_t a, int64_t k, int64_t block_size) {
  return Block{span.p + a,  span.out + a, span.g + a, span.mc + a, span.ma + k,
               span.vc + a, span.va + k,  std::min(block_size, span.n - a)};
}

template <bool kFma, bool kDecay, bool kUpdates>
void SpanPortable(const Block& span, int64_t block_size, const Hyper& h, const Maps& q, float* mt, float* vt) {
  for (int64_t k = 0; k * block_size < span.n; ++k) {
    const Block b = SubBlock(span, k * block_size, k, block_size);
    float amax_m = 0.0f, amax_v = 0.0f, sm, sv;
    Pass1Scalar<kFma, kDecay, kUpdates>(b, 0, h, q, mt, vt, amax_m, amax_v);
    Finish(b, mt, vt, amax_m, amax_v, sm, sv);
    Pass2Scalar<kFma>(b, 0, q, mt, vt, sm, sv);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ADAM_JAX_AVX2 __attribute__((target("avx2,fma")))

ADAM_JAX_AVX2 inline float MaxLanes(__m256 x) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// round(fma(a, C1[e], C0[e])) as int32 for a in [0, 1] or NaN, with e = #{1 <= j <= k : a < lower[j]} found
// from the binary exponent of a: of the thresholds 10^-j, those at or above the top 2^(126 - b) of a's binade
// (b: biased exponent) number e0 = min(floor(m log10 2), k) with m = max(126 - b, 0), and floor(m log10 2) =
// (m 19729) >> 16 (exact for every binade of float32, checked in the tests); at most one more lies inside the
// binade (10 > 2), so one compare with next_lower[e0] = lower[e0 + 1] settles e (next_lower[k] = 0: never).
// A NaN gives e = 0 and converts to INT32_MIN (code 0), as in XLA. The conversion rounds to nearest even (the
// MXCSR default).
ADAM_JAX_AVX2 inline __m256i EncodeMagnitude8(__m256 a, int k, __m256 next_lower, __m256 c1, __m256 c0) {
  // b <= 255 sits in the low 16-bit half of each lane (the high half is 0): 16-bit unsigned arithmetic on the halves
  // is 32-bit arithmetic on the lanes. Capping m at the least value whose e0 is k (b at 126 - cap from below) and
  // subtracting with unsigned saturation (b = 127, a = 1, gives m = 0) spares the clamps of the 32-bit form; the
  // unsigned high product is then (m 19729) >> 16 in the low half and 0 in the high one, the shift for free.
  const int cap = (k * 65536 + 19728) / 19729;
  const __m256i b = _mm256_max_epu16(_mm256_srli_epi32(_mm256_castps_si256(a), 23), _mm256_set1_epi32(126 - cap));
  __m256i e = _mm256_mulhi_epu16(_mm256_subs_epu16(_mm256_set1_epi32(126), b), _mm256_set1_epi32(19729));
  e = _mm256_sub_epi32(e, _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_permutevar8x32_ps(next_lower, e), _CMP_LT_OQ)));
  return _mm256_cvtps_epi32(_mm256_fmadd_ps(a, _mm256_permutevar8x32_ps(c1, e), _mm256_permutevar8x32_ps(c0, e)));
}

// Q(n) for float magnitudes n: (n - c[e]) w[e], e = min(max(k + 127 - b, 0), k) with b the exponent bits of n,
// which is decode's choice of decade (its thresholds are the powers of two 2^(k-e+1)); n = 0 falls in decade k
// (Q = 0), and n = 2^(k+1) (the signed map's unused code -128) in decade 0. As in EncodeMagnitude8, b sits in the
// low 16-bit half of each lane: raising b to at least 127 and subtracting with unsigned saturation clamps e.
ADAM_JAX_AVX2 inline __m256 DecodeMagnitude8(__m256 n, int k, __m256 c, __m256 w) {
  const __m256i b = _mm256_max_epu16(_mm256_srli_epi32(_mm256_castps_si256(n), 23), _mm256_set1_epi32(127));
  const __m256i e = _mm256_subs_epu16(_mm256_set1_epi32(k + 127), b);
  return _mm256_mul_ps(_mm256_sub_ps(n, _mm256_permutevar8x32_ps(c, e)), _mm256_permutevar8x32_ps(w, e));
}

// The signed map: Q(|x|) with the sign of x, for float codes x.
ADAM_JAX_AVX2 inline __m256 DecodeSigned8(__m256 x, __m256 c, __m256 w) {
  const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN));
  const __m256 magnitude = DecodeMagnitude8(_mm256_andnot_ps(sign, x), kDecadesSigned - 1, c, w);
  return _mm256_or_ps(magnitude, _mm256_and_ps(sign, x));
}

// The low byte of each int32 lane, as 8 consecutive bytes.
ADAM_JAX_AVX2 inline void StoreLowBytes(void* out, __m256i x) {
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i lanes = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
  const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(x, pick), lanes);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(bytes));
}

// What requantization needs, broadcast once per span: the per-decade constants of both maps and a few masks.
struct Encoder {
  __m256 one, zero, abs_mask, m_next_lower, m_c1, m_c0, v_next_lower, v_c1, v_c0;
  __m256i low_byte;
};

// The codes of moments [i, i + 8) of the scratch as int32 lanes: m's signed code, v's unsigned one.
ADAM_JAX_AVX2 inline void Encode8(const Encoder& c, const float* mt, const float* vt, int64_t i, __m256 scale_m,
                                  __m256 scale_v, __m256i& code_m, __m256i& code_v) {
  const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(mt + i), scale_m);
  // min_ps returns its second operand when either is NaN: NaN stays NaN, as in XLA.
  const __m256 a = _mm256_min_ps(c.one, _mm256_and_ps(x, c.abs_mask));
  // NaN converts to INT32_MIN, whose low byte (0) is its code in XLA; keeping the low byte lets the packing
  // saturate nothing. sign_epi32 gives -n where x < 0 (n = 0 at x = 0).
  const __m256i n = _mm256_and_si256(EncodeMagnitude8(a, kDecadesSigned - 1, c.m_next_lower, c.m_c1, c.m_c0),
                                     c.low_byte);
  code_m = _mm256_sign_epi32(n, _mm256_castps_si256(x));
  // clip to [0, 1]: max_ps(y, 0) turns -0 into +0 and NaN into 0, whose code (0) is NaN's code in XLA.
  const __m256 y = _mm256_min_ps(c.one, _mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(vt + i), scale_v), c.zero));
  code_v = EncodeMagnitude8(y, kDecadesUnsigned - 1, c.v_next_lower, c.v_c1, c.v_c0);
}

// 32 bytes packed from four vectors of int32 codes by packs_epi32 then packs_epi16 / packus_epi16, which work
// within 128-bit lanes: numbering the 4-code dwords of the result 0..7 in memory order (vector j holds 2j and
// 2j + 1), they come out as [0 2 4 6 1 3 5 7]; put them back in order.
ADAM_JAX_AVX2 inline void StorePacked32(void* out, __m256i packed) {
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permutevar8x32_epi32(packed, order));
}

// Consecutive blocks of block_size elements (the last may be partial): span.n elements from span.p, ...,
// one absmax each from span.ma, span.va.
template <bool kDecay, bool kUpdates>
ADAM_JAX_AVX2 void SpanAvx2(const Block& span, int64_t block_size, const Hyper& h, const Maps& q, float* mt,
                            float* vt) {
  const __m256 one_minus_b1 = _mm256_set1_ps(h.one_minus_b1), b1 = _mm256_set1_ps(h.b1);
  const __m256 one_minus_b2 = _mm256_set1_ps(h.one_minus_b2), b2 = _mm256_set1_ps(h.b2);
  const __m256 r1 = _mm256_set1_ps(1.0f / h.c1), r2 = _mm256_set1_ps(1.0f / h.c2);
  const __m256 eps_root = _mm256_set1_ps(h.eps_root), eps = _mm256_set1_ps(h.eps);
  const __m256 wd = _mm256_set1_ps(h.wd), neg_lr = _mm256_set1_ps(h.neg_lr);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 m_dc = _mm256_loadu_ps(q.m_dc), m_dw = _mm256_loadu_ps(q.m_dw);
  const __m256 v_dc = _mm256_loadu_ps(q.v_dc), v_dw = _mm256_loadu_ps(q.v_dw);
  const Encoder enc{_mm256_set1_ps(1.0f),    _mm256_setzero_ps(),
                    abs_mask,                _mm256_loadu_ps(q.m_next),
                    _mm256_loadu_ps(q.m_c1), _mm256_loadu_ps(q.m_c0),
                    _mm256_loadu_ps(q.v_next), _mm256_loadu_ps(q.v_c1),
                    _mm256_loadu_ps(q.v_c0), _mm256_set1_epi32(0xff)};
  for (int64_t k = 0; k * block_size < span.n; ++k) {
    const Block b = SubBlock(span, k * block_size, k, block_size);
    const int64_t n8 = b.n & ~int64_t{7};
    const __m256 old_m = _mm256_set1_ps(*b.ma), old_v = _mm256_set1_ps(*b.va);
    __m256 amax_m8 = _mm256_setzero_ps(), amax_v8 = _mm256_setzero_ps();
    for (int64_t i = 0; i < n8; i += 8) {
      const __m256i cm = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.mc + i)));
      const __m256i cv = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.vc + i)));
      const __m256 mo = _mm256_mul_ps(DecodeSigned8(_mm256_cvtepi32_ps(cm), m_dc, m_dw), old_m);
      const __m256 vq = DecodeMagnitude8(_mm256_cvtepi32_ps(cv), kDecadesUnsigned - 1, v_dc, v_dw);
      const __m256 vo = _mm256_mul_ps(vq, old_v);
      const __m256 g = _mm256_loadu_ps(b.g + i);
      const __m256 m = _mm256_fmadd_ps(one_minus_b1, g, _mm256_mul_ps(b1, mo));
      const __m256 v = _mm256_fmadd_ps(one_minus_b2, _mm256_mul_ps(g, g), _mm256_mul_ps(b2, vo));
      _mm256_storeu_ps(mt + i, m);
      _mm256_storeu_ps(vt + i, v);
      amax_m8 = _mm256_max_ps(_mm256_and_ps(m, abs_mask), amax_m8);  // NaN in the first operand: keeps amax_m8
      amax_v8 = _mm256_max_ps(_mm256_and_ps(v, abs_mask), amax_v8);
      const __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_fmadd_ps(v, r2, eps_root)), eps);
      __m256 d = _mm256_div_ps(_mm256_mul_ps(m, r1), denom);
      if constexpr (kUpdates && !kDecay) {
        _mm256_storeu_ps(b.out + i, _mm256_mul_ps(neg_lr, d));
      } else {
        const __m256 p = _mm256_loadu_ps(b.p + i);
        if constexpr (kDecay) d = _mm256_fmadd_ps(wd, p, d);
        _mm256_storeu_ps(b.out + i, kUpdates ? _mm256_mul_ps(neg_lr, d) : _mm256_fmadd_ps(neg_lr, d, p));
      }
    }
    float amax_m = MaxLanes(amax_m8), amax_v = MaxLanes(amax_v8), sm, sv;
    Pass1Scalar<true, kDecay, kUpdates>(b, n8, h, q, mt, vt, amax_m, amax_v);
    Finish(b, mt, vt, amax_m, amax_v, sm, sv);

    const __m256 scale_m = _mm256_set1_ps(sm), scale_v = _mm256_set1_ps(sv);
    int64_t i = 0;
    for (; i + 32 <= n8; i += 32) {  // 32 codes at a time, narrowed with saturating packs (every code fits)
      __m256i cm[4], cv[4];
      for (int j = 0; j < 4; ++j) Encode8(enc, mt, vt, i + 8 * j, scale_m, scale_v, cm[j], cv[j]);
      StorePacked32(b.mc + i, _mm256_packs_epi16(_mm256_packs_epi32(cm[0], cm[1]), _mm256_packs_epi32(cm[2], cm[3])));
      StorePacked32(b.vc + i, _mm256_packus_epi16(_mm256_packs_epi32(cv[0], cv[1]), _mm256_packs_epi32(cv[2], cv[3])));
    }
    for (; i < n8; i += 8) {
      __m256i cm, cv;
      Encode8(enc, mt, vt, i, scale_m, scale_v, cm, cv);
      StoreLowBytes(b.mc + i, cm);
      StoreLowBytes(b.vc + i, cv);
    }
    Pass2Scalar<true>(b, n8, q, mt, vt, sm, sv);
  }
}

// The same two passes on 16 lanes with AVX-512 (F, BW for the 16-bit arithmetic): the operations of SpanAvx2
// element by element (so bitwise its results), with mask registers where AVX2 used compare vectors and
// vpmovdb (truncation: every code fits a byte, as in the saturating packs) to narrow the codes.
#define ADAM_JAX_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

// Eight per-decade constants in the low half of a 16-lane vector (decades are indexed 0..7 only).
ADAM_JAX_AVX512 inline __m512 Table16(const float* eight) { return _mm512_zextps256_ps512(_mm256_loadu_ps(eight)); }

ADAM_JAX_AVX512 inline __m512 And16(__m512 x, __m512i mask) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), mask));
}

// EncodeMagnitude8 on 16 lanes (see there).
ADAM_JAX_AVX512 inline __m512i EncodeMagnitude16(__m512 a, int k, __m512 next_lower, __m512 c1, __m512 c0) {
  const int cap = (k * 65536 + 19728) / 19729;
  const __m512i b = _mm512_max_epu16(_mm512_srli_epi32(_mm512_castps_si512(a), 23), _mm512_set1_epi32(126 - cap));
  __m512i e = _mm512_mulhi_epu16(_mm512_subs_epu16(_mm512_set1_epi32(126), b), _mm512_set1_epi32(19729));
  const __mmask16 below = _mm512_cmp_ps_mask(a, _mm512_permutexvar_ps(e, next_lower), _CMP_LT_OQ);
  e = _mm512_mask_add_epi32(e, below, e, _mm512_set1_epi32(1));
  return _mm512_cvtps_epi32(_mm512_fmadd_ps(a, _mm512_permutexvar_ps(e, c1), _mm512_permutexvar_ps(e, c0)));
}

// DecodeMagnitude8 on 16 lanes.
ADAM_JAX_AVX512 inline __m512 DecodeMagnitude16(__m512 n, int k, __m512 c, __m512 w) {
  const __m512i b = _mm512_max_epu16(_mm512_srli_epi32(_mm512_castps_si512(n), 23), _mm512_set1_epi32(127));
  const __m512i e = _mm512_subs_epu16(_mm512_set1_epi32(k + 127), b);
  return _mm512_mul_ps(_mm512_sub_ps(n, _mm512_permutexvar_ps(e, c)), _mm512_permutexvar_ps(e, w));
}

// DecodeSigned8 on 16 lanes.
ADAM_JAX_AVX512 inline __m512 DecodeSigned16(__m512 x, __m512 c, __m512 w) {
  const __m512i bits = _mm512_castps_si512(x), sign = _mm512_set1_epi32(INT32_MIN);
  const __m512 magnitude = DecodeMagnitude16(_mm512_castsi512_ps(_mm512_andnot_si512(sign, bits)),
                                             kDecadesSigned - 1, c, w);
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(magnitude), _mm512_and_si512(sign, bits)));
}

struct Encoder16 {
  __m512 one, zero, m_next_lower, m_c1, m_c0, v_next_lower, v_c1, v_c0;
  __m512i abs_mask, low_byte;
};

// Encode8 on 16 lanes: the codes of moments [i, i + 16), stored as bytes.
ADAM_JAX_AVX512 inline void Encode16(const Encoder16& c, const float* mt, const float* vt, int64_t i,
                                     __m512 scale_m, __m512 scale_v, int8_t* mc, uint8_t* vc) {
  const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(mt + i), scale_m);
  const __m512 a = _mm512_min_ps(c.one, And16(x, c.abs_mask));  // NaN stays NaN (min returns its second operand)
  const __m512i n = _mm512_and_si512(EncodeMagnitude16(a, kDecadesSigned - 1, c.m_next_lower, c.m_c1, c.m_c0),
                                     c.low_byte);
  // sign_epi32(n, x): -n where x's bits are negative as int32, 0 where they are 0, n elsewhere.
  const __m512i xi = _mm512_castps_si512(x), zero = _mm512_setzero_si512();
  const __m512i signed_n = _mm512_mask_sub_epi32(n, _mm512_cmplt_epi32_mask(xi, zero), zero, n);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(mc + i),
                   _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(_mm512_test_epi32_mask(xi, xi), signed_n)));
  const __m512 y = _mm512_min_ps(c.one, _mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(vt + i), scale_v), c.zero));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(vc + i),
                   _mm512_cvtepi32_epi8(EncodeMagnitude16(y, kDecadesUnsigned - 1, c.v_next_lower, c.v_c1, c.v_c0)));
}

template <bool kDecay, bool kUpdates>
ADAM_JAX_AVX512 void SpanAvx512(const Block& span, int64_t block_size, const Hyper& h, const Maps& q, float* mt,
                                float* vt) {
  const __m512 one_minus_b1 = _mm512_set1_ps(h.one_minus_b1), b1 = _mm512_set1_ps(h.b1);
  const __m512 one_minus_b2 = _mm512_set1_ps(h.one_minus_b2), b2 = _mm512_set1_ps(h.b2);
  const __m512 r1 = _mm512_set1_ps(1.0f / h.c1), r2 = _mm512_set1_ps(1.0f / h.c2);
  const __m512 eps_root = _mm512_set1_ps(h.eps_root), eps = _mm512_set1_ps(h.eps);
  const __m512 wd = _mm512_set1_ps(h.wd), neg_lr = _mm512_set1_ps(h.neg_lr);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512 m_dc = Table16(q.m_dc), m_dw = Table16(q.m_dw), v_dc = Table16(q.v_dc), v_dw = Table16(q.v_dw);
  const Encoder16 enc{_mm512_set1_ps(1.0f), _mm512_setzero_ps(), Table16(q.m_next),  Table16(q.m_c1),
                      Table16(q.m_c0),      Table16(q.v_next),     Table16(q.v_c1), Table16(q.v_c0),
                      abs_mask,             _mm512_set1_epi32(0xff)};
  for (int64_t k = 0; k * block_size < span.n; ++k) {
    const Block b = SubBlock(span, k * block_size, k, block_size);
    const int64_t n16 = b.n & ~int64_t{15};
    const __m512 old_m = _mm512_set1_ps(*b.ma), old_v = _mm512_set1_ps(*b.va);
    __m512 amax_m16 = _mm512_setzero_ps(), amax_v16 = _mm512_setzero_ps();
    for (int64_t i = 0; i < n16; i += 16) {
      const __m512i cm = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.mc + i)));
      const __m512i cv = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.vc + i)));
      const __m512 mo = _mm512_mul_ps(DecodeSigned16(_mm512_cvtepi32_ps(cm), m_dc, m_dw), old_m);
      const __m512 vq = DecodeMagnitude16(_mm512_cvtepi32_ps(cv), kDecadesUnsigned - 1, v_dc, v_dw);
      const __m512 vo = _mm512_mul_ps(vq, old_v);
      const __m512 g = _mm512_loadu_ps(b.g + i);
      const __m512 m = _mm512_fmadd_ps(one_minus_b1, g, _mm512_mul_ps(b1, mo));
      const __m512 v = _mm512_fmadd_ps(one_minus_b2, _mm512_mul_ps(g, g), _mm512_mul_ps(b2, vo));
      _mm512_storeu_ps(mt + i, m);
      _mm512_storeu_ps(vt + i, v);
      amax_m16 = _mm512_max_ps(And16(m, abs_mask), amax_m16);  // NaN in the first operand: keeps amax_m16
      amax_v16 = _mm512_max_ps(And16(v, abs_mask), amax_v16);
      const __m512 denom = _mm512_add_ps(_mm512_sqrt_ps(_mm512_fmadd_ps(v, r2, eps_root)), eps);
      __m512 d = _mm512_div_ps(_mm512_mul_ps(m, r1), denom);
      if constexpr (kUpdates && !kDecay) {
        _mm512_storeu_ps(b.out + i, _mm512_mul_ps(neg_lr, d));
      } else {
        const __m512 p = _mm512_loadu_ps(b.p + i);
        if constexpr (kDecay) d = _mm512_fmadd_ps(wd, p, d);
        _mm512_storeu_ps(b.out + i, kUpdates ? _mm512_mul_ps(neg_lr, d) : _mm512_fmadd_ps(neg_lr, d, p));
      }
    }
    float amax_m = _mm512_reduce_max_ps(amax_m16), amax_v = _mm512_reduce_max_ps(amax_v16), sm, sv;  // no NaN
    Pass1Scalar<true, kDecay, kUpdates>(b, n16, h, q, mt, vt, amax_m, amax_v);
    Finish(b, mt, vt, amax_m, amax_v, sm, sv);
    const __m512 scale_m = _mm512_set1_ps(sm), scale_v = _mm512_set1_ps(sv);
    for (int64_t i = 0; i < n16; i += 16) Encode16(enc, mt, vt, i, scale_m, scale_v, b.mc, b.vc);
    Pass2Scalar<true>(b, n16, q, mt, vt, sm, sv);
  }
}

bool HasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool HasAvx512() {
  __builtin_cpu_init();
  return Avx512Allowed() && HasAvx2Fma() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#define ADAM_JAX_HAVE_AVX2_PATH 1
#endif

using SpanFn = void (*)(const Block&, int64_t, const Hyper&, const Maps&, float*, float*);

SpanFn ChooseSpanFn(bool decay, bool updates) {
#if defined(ADAM_JAX_HAVE_AVX2_PATH)
  static const bool avx512 = HasAvx512(), avx2 = HasAvx2Fma();
  if (avx512) {
    if (updates) return decay ? SpanAvx512<true, true> : SpanAvx512<false, true>;
    return decay ? SpanAvx512<true, false> : SpanAvx512<false, false>;
  }
  if (avx2) {
    if (updates) return decay ? SpanAvx2<true, true> : SpanAvx2<false, true>;
    return decay ? SpanAvx2<true, false> : SpanAvx2<false, false>;
  }
#endif
#if defined(__aarch64__) || defined(__FMA__)
  constexpr bool kFma = true;  // the baseline of this target has FMA, as XLA's code uses
#else
  constexpr bool kFma = false;
#endif
  if (updates) return decay ? SpanPortable<kFma, true, true> : SpanPortable<kFma, false, true>;
  return decay ? SpanPortable<kFma, true, false> : SpanPortable<kFma, false, false>;
}

struct Leaf8 {
  const float *p_in, *g;
  const int8_t* mc_in;
  const float* ma_in;
  const uint8_t* vc_in;
  const float* va_in;
  float* p;
  int8_t* mc;
  float* ma;
  uint8_t* vc;
  float* va;
  int64_t size;
  const Hyper* h;  // the scalars of its problem (one per vmapped batch element)
};

struct Item {
  int64_t leaf, first_block, num_blocks;
};

// Blocks [first, first + count) of one leaf. leaf.p is the params result (step) or the update (updates).
void RunItem(const Leaf8& leaf, int64_t first, int64_t count, int64_t block_size, bool updates, const Maps& q,
             SpanFn fn, std::vector<float>& scratch) {
  const int64_t lo = first * block_size, hi = std::min(leaf.size, (first + count) * block_size), n = hi - lo;
  if (!updates) CopyIfNotAliased(leaf.p + lo, leaf.p_in + lo, n);
  CopyIfNotAliased(leaf.mc + lo, leaf.mc_in + lo, n);
  CopyIfNotAliased(leaf.vc + lo, leaf.vc_in + lo, n);
  CopyIfNotAliased(leaf.ma + first, leaf.ma_in + first, count);
  CopyIfNotAliased(leaf.va + first, leaf.va_in + first, count);
  // The same array passed as params and grads, updated in place: read the grads from a copy. (With updates the
  // params are never written; the update may overwrite the grads, element after element.)
  const bool same = !updates && Overlaps(leaf.g + lo, n * sizeof(float), leaf.p + lo, n * sizeof(float));
  scratch.resize(2 * block_size + (same ? n : 0));
  const float* g = leaf.g + lo;
  if (same) {
    std::memcpy(scratch.data() + 2 * block_size, g, n * sizeof(float));
    g = scratch.data() + 2 * block_size;
  }
  const float* p = updates ? leaf.p_in + lo : leaf.p + lo;
  fn(Block{p, leaf.p + lo, g, leaf.mc + lo, leaf.ma + first, leaf.vc + lo, leaf.va + first, n}, block_size, *leaf.h,
     q, scratch.data(), scratch.data() + block_size);
}

ffi::Error Adam8Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::Buffer<ffi::F32> maps,
                     ffi::RemainingArgs args, ffi::RemainingRets rets, int32_t decay, int32_t block_size,
                     int32_t updates) {
  const std::vector<Hyper> hypers = ReadHypers(scalars.typed_data(), scalars.element_count());
  if (hypers.empty()) return ffi::Error::InvalidArgument("adam_jax fused 8-bit Adam: expected 15 scalars per problem");
  const int64_t batch = static_cast<int64_t>(hypers.size());
  if (maps.element_count() % kMapFloats != 0 || maps.element_count() == 0) {  // one copy per problem under vmap
    return ffi::Error::InvalidArgument(
        "adam_jax fused 8-bit Adam: expected the 592 constants of adam_jax.quantization.kernel_constants()");
  }
  if (block_size < 1) return ffi::Error::InvalidArgument("adam_jax fused 8-bit Adam: block_size must be >= 1");
  const size_t n = rets.size() / 5;
  if (rets.size() != 5 * n || args.size() != 6 * n) {
    return ffi::Error::InvalidArgument("adam_jax fused 8-bit Adam: expected 6n operands after the maps, 5n results");
  }
  const Maps q(maps.typed_data());
  std::vector<Leaf8> leaves;
  std::vector<Item> items;
  leaves.reserve(n * batch);
  const int64_t blocks_per_item = std::max<int64_t>(1, kItemElements / block_size);
  for (size_t i = 0; i < n; ++i) {
    ffi::AnyBuffer in[6] = {*args.get<ffi::AnyBuffer>(i),         *args.get<ffi::AnyBuffer>(n + i),
                            *args.get<ffi::AnyBuffer>(2 * n + i), *args.get<ffi::AnyBuffer>(3 * n + i),
                            *args.get<ffi::AnyBuffer>(4 * n + i), *args.get<ffi::AnyBuffer>(5 * n + i)};
    ffi::Result<ffi::AnyBuffer> out[5] = {*rets.get<ffi::AnyBuffer>(i), *rets.get<ffi::AnyBuffer>(n + i),
                                          *rets.get<ffi::AnyBuffer>(2 * n + i), *rets.get<ffi::AnyBuffer>(3 * n + i),
                                          *rets.get<ffi::AnyBuffer>(4 * n + i)};
    const int64_t total = static_cast<int64_t>(in[0].element_count());
    if (total % batch != 0) return ffi::Error::InvalidArgument("adam_jax fused 8-bit Adam: leaves must hold the batch");
    const int64_t size = total / batch;  // one problem's elements, quantized in blocks of its own
    const int64_t num_blocks = (size + block_size - 1) / block_size;
    const ffi::DataType in_types[6] = {ffi::F32, ffi::F32, ffi::S8, ffi::F32, ffi::U8, ffi::F32};
    const int64_t in_sizes[6] = {total, total, total, batch * num_blocks, total, batch * num_blocks};
    for (int j = 0; j < 6; ++j) {
      if (in[j].element_type() != in_types[j] || static_cast<int64_t>(in[j].element_count()) != in_sizes[j]) {
        return ffi::Error::InvalidArgument(
            "adam_jax fused 8-bit Adam: each leaf needs f32 params and grads, s8 mu codes, u8 nu codes of its size "
            "and f32 absmax of one per block");
      }
    }
    for (int j = 0; j < 5; ++j) {
      const int k = j == 0 ? 0 : j + 1;  // results: params, mu codes, mu absmax, nu codes, nu absmax
      if (out[j]->element_type() != in_types[k] || static_cast<int64_t>(out[j]->element_count()) != in_sizes[k]) {
        return ffi::Error::InvalidArgument("adam_jax fused 8-bit Adam: results must match the operands");
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t o = b * size, ob = b * num_blocks;
      leaves.push_back(Leaf8{in[0].typed_data<float>() + o, in[1].typed_data<float>() + o,
                             static_cast<const int8_t*>(in[2].untyped_data()) + o, in[3].typed_data<float>() + ob,
                             static_cast<const uint8_t*>(in[4].untyped_data()) + o, in[5].typed_data<float>() + ob,
                             out[0]->typed_data<float>() + o, static_cast<int8_t*>(out[1]->untyped_data()) + o,
                             out[2]->typed_data<float>() + ob, static_cast<uint8_t*>(out[3]->untyped_data()) + o,
                             out[4]->typed_data<float>() + ob, size, &hypers[b]});
      for (int64_t first = 0; first < num_blocks; first += blocks_per_item) {
        const int64_t count = std::min(blocks_per_item, num_blocks - first);
        items.push_back(Item{static_cast<int64_t>(leaves.size() - 1), first, count});
      }
    }
  }
  const SpanFn fn = ChooseSpanFn(decay != 0, updates != 0);
  ParallelFor(pool, static_cast<int64_t>(items.size()), [&](int64_t k, std::vector<float>& scratch) {
    const Item& item = items[k];
    RunItem(leaves[item.leaf], item.first_block, item.num_blocks, block_size, updates != 0, q, fn, scratch);
  });
  return ffi::Error::Success();
}

}  // namespace

extern "C" ADAM_JAX_EXPORT XLA_FFI_Error* AdamJaxFusedAdam8(XLA_FFI_CallFrame* call_frame);

// Which build of the 8-bit loops this CPU runs (for the test log and the benchmark tables).
extern "C" ADAM_JAX_EXPORT const char* AdamJaxFused8Isa() {
#if defined(ADAM_JAX_HAVE_AVX2_PATH)
  if (HasAvx512()) return "avx512";
  if (HasAvx2Fma()) return "avx2+fma";
#endif
  return "scalar";
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdamJaxFusedAdam8, Adam8Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int32_t>("decay")
                                  .Attr<int32_t>("block_size")
                                  .Attr<int32_t>("updates"));
