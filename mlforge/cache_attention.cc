// CPU attention over a slot KV cache (see cache_attention.h). A task is one (batch row,
// kv head, block of up to 16 queries); its R = queries x G query rows share every key and
// value load. Two inner kernels, both online softmax over blocks of 64 keys:
//   few rows (decode): lanes run along D; a score is a vector dot plus a horizontal sum.
//   many rows (prefill chunks): lanes run along the query rows; q and the accumulator are
//     kept transposed (D, R), so scores and the value update are broadcast FMAs.
// The kernels are written once on GCC vector types of W lanes and instantiated in
// functions compiled for AVX-512 (W = 16), AVX2 (W = 8) and baseline (W = 1, scalar),
// picked at run time from active_isa() (no -march flags), and for float32 or float16
// caches: float16 keys and values become float32 as they are loaded (F16C vcvtph2ps;
// half.h on the scalar path), and everything after the load is float32.
#include "mlforge/cache_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mlforge/cpu_features.h"
#include "mlforge/half.h"
#include "mlforge/parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>  // declares the vcvtph2ps builtins used by load_kv
#endif

#if defined(__GNUC__) && !defined(__clang__)
// Vector values only cross always_inline calls, so their return ABI never matters.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace mlforge {
namespace {

#define MLFORGE_INLINE inline __attribute__((always_inline))

// Masked scores: finite, so a fully masked block needs no special case; exp of anything
// this far below the row maximum is exactly 0.
constexpr float kMasked = -1e30f;
constexpr int64_t kQueryBlock = 16, kKeyBlock = 64, kAhead = 16;

template <int W>
struct Lanes {
  typedef float F __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t I __attribute__((vector_size(W * sizeof(int32_t))));
  typedef short H __attribute__((vector_size(W * sizeof(short))));  // float16 bits
};

template <int W>
MLFORGE_INLINE typename Lanes<W>::F load(const float* p) {
  typename Lanes<W>::F v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <int W>
MLFORGE_INLINE void store(float* p, const typename Lanes<W>::F& v) {
  std::memcpy(p, &v, sizeof v);
}

// W cache values as float32 lanes. For float16 this calls GCC's builtins rather than the
// _mm*_cvtph_ps intrinsics: those carry their own target attribute, which these
// ISA-generic templates lack, so they could not be inlined here (the builtins are checked
// only once inlined into task_avx2 / task_avx512, whose targets include f16c).
template <int W>
MLFORGE_INLINE typename Lanes<W>::F load_kv(const float* p) {
  return load<W>(p);
}

template <int W>
MLFORGE_INLINE typename Lanes<W>::F load_kv(const uint16_t* p) {
  if constexpr (W == 1) {
    return typename Lanes<1>::F{half_to_float(*p)};
  } else {
#if defined(__x86_64__)
    typename Lanes<W>::H h;
    std::memcpy(&h, p, sizeof h);
    if constexpr (W == 8) {
      return __builtin_ia32_vcvtph2ps256(h);
    } else {
      static_assert(W == 16, "float16 loads are 1, 8 or 16 lanes");
      return __builtin_ia32_vcvtph2ps512_mask(h, typename Lanes<16>::F{},
                                              static_cast<short>(-1), _MM_FROUND_CUR_DIRECTION);
    }
#else
    static_assert(W == 1, "vector float16 loads need x86-64 F16C");
#endif
  }
}

MLFORGE_INLINE float to_float(float x) { return x; }
MLFORGE_INLINE float to_float(uint16_t h) { return half_to_float(h); }

template <int W>
MLFORGE_INLINE typename Lanes<W>::F splat(float x) {
  return typename Lanes<W>::F{} + x;
}

template <int W>
MLFORGE_INLINE typename Lanes<W>::F vmax(const typename Lanes<W>::F& a,
                                         const typename Lanes<W>::F& b) {
  return a > b ? a : b;
}

// The low and high halves of v as register shuffles (a memcpy of halves would go
// through memory and stall on store forwarding).
template <int W, size_t... L>
MLFORGE_INLINE void halves(const typename Lanes<W>::F& v, typename Lanes<W / 2>::F& lo,
                           typename Lanes<W / 2>::F& hi, std::index_sequence<L...>) {
  lo = __builtin_shufflevector(v, v, L...);
  hi = __builtin_shufflevector(v, v, (L + W / 2)...);
}

template <int W>
MLFORGE_INLINE float hsum(const typename Lanes<W>::F& v) {
  if constexpr (W == 1) {
    return v[0];
  } else {
    typename Lanes<W / 2>::F lo, hi;
    halves<W>(v, lo, hi, std::make_index_sequence<W / 2>());
    return hsum<W / 2>(lo + hi);
  }
}

template <int W>
MLFORGE_INLINE float hmax(const typename Lanes<W>::F& v) {
  if constexpr (W == 1) {
    return v[0];
  } else {
    typename Lanes<W / 2>::F lo, hi;
    halves<W>(v, lo, hi, std::make_index_sequence<W / 2>());
    return hmax<W / 2>(vmax<W / 2>(lo, hi));
  }
}

// exp(x) for x <= ~0 (relative error ~2e-7), 0 below -87: 2^n * p(r) with
// n = round(x / ln 2) and a degree-6 polynomial on |r| <= ln 2 / 2.
template <int W>
MLFORGE_INLINE typename Lanes<W>::F vexp(const typename Lanes<W>::F& x_in) {
  using F = typename Lanes<W>::F;
  F x = x_in;
  using I = typename Lanes<W>::I;
  const F lo = splat<W>(-87.0f), hi = splat<W>(88.0f);
  const auto underflow = x < lo;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const F round = splat<W>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F n = (x * 1.44269504088896341f + round) - round;
  const F r = x - n * 0.693359375f + n * 2.12194440e-4f;
  F p = splat<W>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  F two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return underflow ? F{} : p * two_n;
}

MLFORGE_INLINE float exp1(float x) { return vexp<1>(typename Lanes<1>::F{x})[0]; }

struct Dims {
  int64_t T, H, G, D, kv_stride;
  float scale;
};

// One (batch row, kv head, query block). Row r of the block is query t = r / G of head
// h0 + r % G; keys 0..keys - 1 of the cache row are read. T: the caches' element type
// (float, or uint16_t holding float16 bits).
template <typename T>
struct Task {
  const float* q;      // q[b, t0, 0, 0]
  const T* k;          // k_cache[slot, 0, j, 0]
  const T* v;          // v_cache[slot, 0, j, 0]
  const int32_t* pos;  // q_positions[b, t0]
  float* out;          // out[b, t0, 0, 0]
  int64_t queries, h0, keys;
  int64_t rows(const Dims& n) const { return queries * n.G; }
  const float* q_row(const Dims& n, int64_t r) const {
    return q + (r / n.G) * n.H * n.D + (h0 + r % n.G) * n.D;
  }
  float* out_row(const Dims& n, int64_t r) const {
    return out + (r / n.G) * n.H * n.D + (h0 + r % n.G) * n.D;
  }
  int32_t row_pos(const Dims& n, int64_t r) const { return pos[r / n.G]; }
};

// ---- few rows: lanes along D ----

template <int W, typename T>
MLFORGE_INLINE float dot(const float* a, const T* b, int64_t D) {
  using F = typename Lanes<W>::F;
  F acc0{}, acc1{};
  int64_t d = 0;
  for (; d + 2 * W <= D; d += 2 * W) {
    acc0 += load<W>(a + d) * load_kv<W>(b + d);
    acc1 += load<W>(a + d + W) * load_kv<W>(b + d + W);
  }
  for (; d + W <= D; d += W) acc0 += load<W>(a + d) * load_kv<W>(b + d);
  float s = hsum<W>(acc0 + acc1);
  for (; d < D; ++d) s += a[d] * to_float(b[d]);
  return s;
}

// y[0..D) = y * a + w * x
template <int W, typename T>
MLFORGE_INLINE void scale_add(float* y, float a, float w, const T* x, int64_t D) {
  int64_t d = 0;
  for (; d + W <= D; d += W) store<W>(y + d, load<W>(y + d) * a + load_kv<W>(x + d) * w);
  for (; d < D; ++d) y[d] = y[d] * a + to_float(x[d]) * w;
}

template <int W, typename T>
MLFORGE_INLINE void few_rows(const Dims& n, const Task<T>& a, std::vector<float>& buf) {
  using F = typename Lanes<W>::F;
  const int64_t R = a.rows(n), D = n.D;
  buf.resize(static_cast<size_t>(R * (2 * D + kKeyBlock + 2)));
  float* qs = buf.data();        // (R, D) scaled queries
  float* acc = qs + R * D;       // (R, D)
  float* sc = acc + R * D;       // (R, kKeyBlock) scores, then probabilities
  float* m = sc + R * kKeyBlock;  // (R) running max
  float* l = m + R;               // (R) running sum
  for (int64_t r = 0; r < R; ++r) {
    const float* qr = a.q_row(n, r);
    for (int64_t d = 0; d < D; ++d) qs[r * D + d] = qr[d] * n.scale;
  }
  std::fill(acc, acc + R * D, 0.0f);
  std::fill(m, m + R, kMasked);
  std::fill(l, l + R, 0.0f);
  for (int64_t s0 = 0; s0 < a.keys; s0 += kKeyBlock) {
    const int64_t bk = std::min(kKeyBlock, a.keys - s0);
    for (int64_t i = 0; i < bk; ++i) {
      const T* kr = a.k + (s0 + i) * n.kv_stride;
      // Keys are short strided reads that the hardware prefetchers follow poorly (as
      // qmatmul's weight rows): fetch the key kAhead ahead of this one, a line at a time.
      constexpr int64_t kLine = 64 / sizeof(T);
      for (int64_t d = 0; d < D; d += kLine) __builtin_prefetch(kr + kAhead * n.kv_stride + d);
      for (int64_t r = 0; r < R; ++r) sc[r * kKeyBlock + i] = dot<W>(qs + r * D, kr, D);
    }
    for (int64_t r = 0; r < R; ++r) {
      float* sr = sc + r * kKeyBlock;
      for (int64_t i = std::max<int64_t>(0, a.row_pos(n, r) + 1 - s0); i < bk; ++i) {
        sr[i] = kMasked;
      }
      int64_t i = 0;
      F mv = splat<W>(kMasked);
      for (; i + W <= bk; i += W) mv = vmax<W>(mv, load<W>(sr + i));
      float mx = std::max(m[r], hmax<W>(mv));
      for (; i < bk; ++i) mx = std::max(mx, sr[i]);
      F sv{};
      for (i = 0; i + W <= bk; i += W) {
        const F p = vexp<W>(load<W>(sr + i) - mx);
        store<W>(sr + i, p);
        sv += p;
      }
      float sum = hsum<W>(sv);
      for (; i < bk; ++i) sum += (sr[i] = exp1(sr[i] - mx));
      const float alpha = exp1(m[r] - mx);
      l[r] = l[r] * alpha + sum;
      m[r] = mx;
      if (alpha != 1.0f) scale_add<W>(acc + r * D, alpha, 0.0f, acc + r * D, D);
    }
    for (int64_t i = 0; i < bk; ++i) {
      const T* vr = a.v + (s0 + i) * n.kv_stride;
      for (int64_t r = 0; r < R; ++r) scale_add<W>(acc + r * D, 1.0f, sc[r * kKeyBlock + i], vr, D);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    float* o = a.out_row(n, r);
    const float inv = a.row_pos(n, r) < 0 ? 0.0f : 1.0f / l[r];
    for (int64_t d = 0; d < D; ++d) o[d] = acc[r * D + d] * inv;
  }
}

// ---- many rows: lanes along rows, q and the accumulator transposed to (D, Rp) ----

// P[i][c0 * W ..] for KS keys from i0 and NC vectors of rows from c0: sum_d k[i][d] * Qt[d].
// k holds key i at k + i * ks.
template <int W, int KS, int NC>
MLFORGE_INLINE void score_tile(const Dims& n, const float* k, int64_t ks, const float* qt,
                               int64_t rp, int64_t i0, int64_t c0, float* p) {
  using F = typename Lanes<W>::F;
  F acc[KS][NC] = {};
  const float* kr[KS];
  for (int s = 0; s < KS; ++s) kr[s] = k + (i0 + s) * ks;
  for (int64_t d = 0; d < n.D; ++d) {
    F qv[NC];
    for (int c = 0; c < NC; ++c) qv[c] = load<W>(qt + d * rp + (c0 + c) * W);
    for (int s = 0; s < KS; ++s) {
      const F kb = splat<W>(kr[s][d]);
      for (int c = 0; c < NC; ++c) acc[s][c] += kb * qv[c];
    }
  }
  for (int s = 0; s < KS; ++s) {
    for (int c = 0; c < NC; ++c) store<W>(p + (i0 + s) * rp + (c0 + c) * W, acc[s][c]);
  }
}

// At[d0 + e][c0 * W ..] += sum_i v[i][d0 + e] * P[i] for KD dims and NC vectors of rows.
template <int W, int KD, int NC>
MLFORGE_INLINE void value_tile(const float* v, int64_t vs, const float* p, int64_t rp,
                               int64_t bk, int64_t d0, int64_t c0, float* at) {
  using F = typename Lanes<W>::F;
  F acc[KD][NC];
  for (int e = 0; e < KD; ++e) {
    for (int c = 0; c < NC; ++c) acc[e][c] = load<W>(at + (d0 + e) * rp + (c0 + c) * W);
  }
  for (int64_t i = 0; i < bk; ++i) {
    F pv[NC];
    for (int c = 0; c < NC; ++c) pv[c] = load<W>(p + i * rp + (c0 + c) * W);
    const float* vr = v + i * vs + d0;
    for (int e = 0; e < KD; ++e) {
      const F vb = splat<W>(vr[e]);
      for (int c = 0; c < NC; ++c) acc[e][c] += vb * pv[c];
    }
  }
  for (int e = 0; e < KD; ++e) {
    for (int c = 0; c < NC; ++c) store<W>(at + (d0 + e) * rp + (c0 + c) * W, acc[e][c]);
  }
}

// rows keys or values of D from src (stride `stride`) into dst (stride D) as float32.
template <int W>
MLFORGE_INLINE void widen_block(const uint16_t* src, int64_t stride, int64_t rows, int64_t D,
                                float* dst) {
  for (int64_t i = 0; i < rows; ++i) {
    const uint16_t* s = src + i * stride;
    float* o = dst + i * D;
    int64_t d = 0;
    for (; d + W <= D; d += W) store<W>(o + d, load_kv<W>(s + d));
    for (; d < D; ++d) o[d] = half_to_float(s[d]);
  }
}

// A block of keys or values as float32 rows: (pointer, row stride). float16 blocks are
// widened into `wide`; float32 ones are read in place.
template <int W, typename T>
MLFORGE_INLINE std::pair<const float*, int64_t> as_float(const T* src, int64_t stride,
                                                         int64_t rows, int64_t D, float* wide) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    widen_block<W>(src, stride, rows, D, wide);
    return {wide, D};
  } else {
    return {src, stride};
  }
}

template <int W, typename T>
MLFORGE_INLINE void many_rows(const Dims& n, const Task<T>& a, std::vector<float>& buf) {
  using F = typename Lanes<W>::F;
  constexpr int KS = 4, KD = 4, NC = 2;
  constexpr bool kHalf = std::is_same_v<T, uint16_t>;
  const int64_t R = a.rows(n), D = n.D, rp = (R + W - 1) / W * W, nv = rp / W;
  // float16: each block of keys (then values) is widened once into a (kKeyBlock, D)
  // float32 tile that every query column reuses; a splat straight from float16 would
  // cost a conversion per multiply-add.
  buf.resize(static_cast<size_t>(rp * (2 * D + kKeyBlock + 3) + (kHalf ? kKeyBlock * D : 0)));
  float* qt = buf.data();          // (D, rp) scaled queries
  float* at = qt + D * rp;         // (D, rp) accumulator
  float* p = at + D * rp;          // (kKeyBlock, rp) scores, then probabilities
  float* m = p + kKeyBlock * rp;   // (rp)
  float* l = m + rp;               // (rp)
  float* alpha = l + rp;           // (rp)
  float* wide = alpha + rp;        // (kKeyBlock, D) widened float16 block
  std::fill(qt, qt + 2 * D * rp, 0.0f);
  int64_t first = a.keys;  // smallest position of a real row: blocks past it need masks
  for (int64_t r = 0; r < R; ++r) {
    const float* qr = a.q_row(n, r);
    for (int64_t d = 0; d < D; ++d) qt[d * rp + r] = qr[d] * n.scale;
    if (a.row_pos(n, r) >= 0) first = std::min<int64_t>(first, a.row_pos(n, r));
  }
  std::fill(m, m + rp, kMasked);
  std::fill(l, l + rp, 0.0f);
  for (int64_t s0 = 0; s0 < a.keys; s0 += kKeyBlock) {
    const int64_t bk = std::min(kKeyBlock, a.keys - s0);
    const auto [k, ks] = as_float<W>(a.k + s0 * n.kv_stride, n.kv_stride, bk, D, wide);
    int64_t i = 0;
    for (; i + KS <= bk; i += KS) {
      int64_t c = 0;
      for (; c + NC <= nv; c += NC) score_tile<W, KS, NC>(n, k, ks, qt, rp, i, c, p);
      for (; c < nv; ++c) score_tile<W, KS, 1>(n, k, ks, qt, rp, i, c, p);
    }
    for (; i < bk; ++i) {
      for (int64_t c = 0; c < nv; ++c) score_tile<W, 1, 1>(n, k, ks, qt, rp, i, c, p);
    }
    if (s0 + bk - 1 > first) {
      for (int64_t r = 0; r < R; ++r) {
        for (int64_t j = std::max<int64_t>(0, a.row_pos(n, r) + 1 - s0); j < bk; ++j) {
          p[j * rp + r] = kMasked;
        }
      }
    }
    for (int64_t c = 0; c < nv; ++c) {
      F mx = load<W>(m + c * W);
      for (int64_t j = 0; j < bk; ++j) mx = vmax<W>(mx, load<W>(p + j * rp + c * W));
      F sum{};
      for (int64_t j = 0; j < bk; ++j) {
        const F e = vexp<W>(load<W>(p + j * rp + c * W) - mx);
        store<W>(p + j * rp + c * W, e);
        sum += e;
      }
      const F al = vexp<W>(load<W>(m + c * W) - mx);
      store<W>(l + c * W, load<W>(l + c * W) * al + sum);
      store<W>(m + c * W, mx);
      store<W>(alpha + c * W, al);
    }
    if (s0 > 0) {
      for (int64_t d = 0; d < D; ++d) {
        for (int64_t c = 0; c < nv; ++c) {
          store<W>(at + d * rp + c * W, load<W>(at + d * rp + c * W) * load<W>(alpha + c * W));
        }
      }
    }
    const auto [v, vs] = as_float<W>(a.v + s0 * n.kv_stride, n.kv_stride, bk, D, wide);
    int64_t d = 0;
    for (; d + KD <= D; d += KD) {
      int64_t c = 0;
      for (; c + NC <= nv; c += NC) value_tile<W, KD, NC>(v, vs, p, rp, bk, d, c, at);
      for (; c < nv; ++c) value_tile<W, KD, 1>(v, vs, p, rp, bk, d, c, at);
    }
    for (; d < D; ++d) {
      for (int64_t c = 0; c < nv; ++c) value_tile<W, 1, 1>(v, vs, p, rp, bk, d, c, at);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    float* o = a.out_row(n, r);
    const float inv = a.row_pos(n, r) < 0 ? 0.0f : 1.0f / l[r];
    for (int64_t d = 0; d < D; ++d) o[d] = at[d * rp + r] * inv;
  }
}

template <int W, typename T>
MLFORGE_INLINE void run_task(const Dims& n, const Task<T>& a, std::vector<float>& buf) {
  if (a.keys == 0) {  // every query of the block is padding
    for (int64_t r = 0; r < a.rows(n); ++r) std::fill_n(a.out_row(n, r), n.D, 0.0f);
  } else if (2 * a.rows(n) <= W) {
    few_rows<W>(n, a, buf);
  } else {
    many_rows<W>(n, a, buf);
  }
}

template <typename T>
using TaskFn = void (*)(const Dims&, const Task<T>&, std::vector<float>&);

template <typename T>
void task_scalar(const Dims& n, const Task<T>& a, std::vector<float>& buf) {
  run_task<1>(n, a, buf);
}

#if defined(__x86_64__)
// Every AVX2 CPU has F16C (Haswell onwards; Zen), so f16c adds no requirement.
template <typename T>
__attribute__((target("avx2,fma,f16c"))) void task_avx2(const Dims& n, const Task<T>& a,
                                                        std::vector<float>& buf) {
  run_task<8>(n, a, buf);
}

template <typename T>
__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl"))) void task_avx512(
    const Dims& n, const Task<T>& a, std::vector<float>& buf) {
  run_task<16>(n, a, buf);
}
#endif

template <typename T>
TaskFn<T> pick_task_fn() {
#if defined(__x86_64__)
  const Isa isa = active_isa();
  if (isa >= Isa::kAvx512) return task_avx512<T>;
  if (isa >= Isa::kAvx2) return task_avx2<T>;
#endif
  return task_scalar<T>;
}

void check_indices(const CacheAttentionShape& s, const int32_t* slots, const int32_t* pos) {
  for (int64_t b = 0; b < s.batch; ++b) {
    if (slots[b] < 0 || slots[b] >= s.rows) {
      throw std::invalid_argument("cache_attention: slots[" + std::to_string(b) + "] = " +
                                  std::to_string(slots[b]) + " is outside [0, " +
                                  std::to_string(s.rows) + ")");
    }
    for (int64_t t = 0; t < s.queries; ++t) {
      if (pos[b * s.queries + t] >= s.capacity) {
        throw std::invalid_argument(
            "cache_attention: q_positions[" + std::to_string(b) + ", " + std::to_string(t) +
            "] = " + std::to_string(pos[b * s.queries + t]) + " must be < the cache length " +
            std::to_string(s.capacity));
      }
    }
  }
}

}  // namespace

void check_cache_attention_shape(const CacheAttentionShape& s) {
  const std::pair<const char*, int64_t> dims[] = {
      {"batch", s.batch},       {"queries", s.queries}, {"heads", s.heads},
      {"kv_heads", s.kv_heads}, {"head_dim", s.head_dim}, {"rows", s.rows},
      {"capacity", s.capacity}};
  for (const auto& [name, value] : dims) {
    if (value <= 0) {
      throw std::invalid_argument(std::string("cache_attention: ") + name +
                                  " must be positive, got " + std::to_string(value));
    }
  }
  if (s.heads % s.kv_heads != 0) {
    throw std::invalid_argument("cache_attention: heads (" + std::to_string(s.heads) +
                                ") must be a multiple of kv_heads (" +
                                std::to_string(s.kv_heads) + ")");
  }
}

namespace {

template <typename T>
void run_cache_attention(const CacheAttentionShape& s, float scale, const float* q,
                         const T* k_cache, const T* v_cache, const int32_t* slots,
                         const int32_t* q_positions, float* out) {
  check_cache_attention_shape(s);
  check_indices(s, slots, q_positions);
  const Dims n{s.queries, s.heads, s.heads / s.kv_heads, s.head_dim, s.kv_heads * s.head_dim,
               scale};
  const int64_t blocks = (s.queries + kQueryBlock - 1) / kQueryBlock;
  // Tasks ordered by descending key count, claimed one at a time: later query blocks of
  // a chunk read more keys, and rows differ in length.
  std::vector<Task<T>> tasks;
  tasks.reserve(static_cast<size_t>(s.batch * s.kv_heads * blocks));
  int64_t work = 0;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t row = static_cast<int64_t>(slots[b]) * s.capacity * n.kv_stride;
    for (int64_t qb = 0; qb < blocks; ++qb) {
      const int64_t t0 = qb * kQueryBlock, tq = std::min(kQueryBlock, s.queries - t0);
      const int32_t* pos = q_positions + b * s.queries + t0;
      const int64_t keys = *std::max_element(pos, pos + tq) + 1;  // 0 when all padding
      for (int64_t j = 0; j < s.kv_heads; ++j) {
        const int64_t at = (b * s.queries + t0) * s.heads * s.head_dim;
        tasks.push_back(Task<T>{q + at, k_cache + row + j * s.head_dim,
                                v_cache + row + j * s.head_dim, pos, out + at, tq, j * n.G,
                                std::max<int64_t>(keys, 0)});
        work += std::max<int64_t>(keys, 1) * tq * n.G * n.D;
      }
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(),
                   [&](const Task<T>& x, const Task<T>& y) { return x.keys > y.keys; });
  const TaskFn<T> fn = pick_task_fn<T>();
  // Below ~256K multiply-adds a second thread costs more to wake than it saves.
  constexpr int64_t kMinWork = 1 << 18;
  const int64_t ntasks = static_cast<int64_t>(tasks.size());
  const int64_t workers = std::min<int64_t>(ntasks, std::max<int64_t>(1, work / kMinWork));
  std::atomic<int64_t> next{0};
  parallel_for(workers, 1, [&](int64_t, int64_t) {
    std::vector<float> buf;
    for (int64_t i = next++; i < ntasks; i = next++) fn(n, tasks[i], buf);
  });
}

}  // namespace

void cache_attention(const CacheAttentionShape& s, float scale, const float* q,
                     const float* k_cache, const float* v_cache, const int32_t* slots,
                     const int32_t* q_positions, float* out) {
  run_cache_attention(s, scale, q, k_cache, v_cache, slots, q_positions, out);
}

void cache_attention(const CacheAttentionShape& s, float scale, const float* q,
                     const uint16_t* k_cache, const uint16_t* v_cache, const int32_t* slots,
                     const int32_t* q_positions, float* out) {
  run_cache_attention(s, scale, q, k_cache, v_cache, slots, q_positions, out);
}

void cache_attention_reference(const CacheAttentionShape& s, float scale, const float* q,
                               const float* k_cache, const float* v_cache,
                               const int32_t* slots, const int32_t* q_positions, float* out) {
  check_cache_attention_shape(s);
  check_indices(s, slots, q_positions);
  const int64_t G = s.heads / s.kv_heads, D = s.head_dim, kvs = s.kv_heads * D;
  std::vector<double> w;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t row = static_cast<int64_t>(slots[b]) * s.capacity * kvs;
    for (int64_t t = 0; t < s.queries; ++t) {
      const int32_t p = q_positions[b * s.queries + t];
      for (int64_t h = 0; h < s.heads; ++h) {
        const float* qr = q + ((b * s.queries + t) * s.heads + h) * D;
        float* o = out + ((b * s.queries + t) * s.heads + h) * D;
        const float* k = k_cache + row + (h / G) * D;
        const float* v = v_cache + row + (h / G) * D;
        w.assign(static_cast<size_t>(std::max(p + 1, 0)), 0.0);
        double mx = -INFINITY, sum = 0;
        for (int32_t j = 0; j <= p; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(qr[d]) * k[j * kvs + d];
          w[j] = dot * scale;
          mx = std::max(mx, w[j]);
        }
        for (int32_t j = 0; j <= p; ++j) sum += (w[j] = std::exp(w[j] - mx));
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int32_t j = 0; j <= p; ++j) acc += w[j] * v[j * kvs + d];
          o[d] = p < 0 ? 0.0f : static_cast<float>(acc / sum);
        }
      }
    }
  }
}

}  // namespace mlforge
