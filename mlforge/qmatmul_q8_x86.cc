// x86 kernels of qmatmul's Activations::kInt8: int8 activation blocks times int8/int4
// weights with integer byte dots, each compiled for its instruction set (no -march) and
// called only when cpu_features reports it. Off x86 they fall back to scalar.
//
// vpdpbusd multiplies unsigned by signed bytes, so the weights go in as unsigned (int8:
// q ^ 0x80 = q + 128; int4: the stored nibble q + 8) and each lane starts from the
// activation-side correction xc = -offset * sum x (qmatmul_kernels.h): exact int32 dots.
// AVX2: each block's int32 lanes are scaled by its activation scale into a float partial
// sum per group, which the group's weight scale then multiplies. AVX-512: each block's
// whole int32 dot is, the same way, with the outputs across the lanes (register tiles of
// 8 rows x 16 outputs). Every (output, row) pair is computed in the same order whatever
// the tile, so results do not depend on the number of rows in the call or on the thread
// split.
#include "mlforge/qmatmul_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics use _mm512_undefined_* placeholders that trip these.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace mlforge {
namespace internal {

#if defined(__x86_64__)

#define Q8_INLINE inline __attribute__((always_inline))

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace maddubs {
#define Q8_VNNI 0
#include "mlforge/qmatmul_q8_avx2.inc"
#undef Q8_VNNI
}  // namespace maddubs
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
namespace avx_vnni {
#define Q8_VNNI 1
#include "mlforge/qmatmul_q8_avx2.inc"
#undef Q8_VNNI
}  // namespace avx_vnni
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
namespace avx512_vnni {
namespace {

// Outputs are the 16 int32 lanes: a panel of 16 weight rows is transposed once into
// words (4 inputs of each output per zmm), then every activation row's block dot is 8
// vpdpbusd with its 4 bytes broadcast, one conversion and one fma per 16 outputs. Each
// weight load feeds kRows rows and no horizontal sums remain.
constexpr int kLanes = 16, kRows = 8;

// 16 outputs' 16 int32 words each -> word k of every output in r[k].
Q8_INLINE void transpose_16x16(__m512i (&r)[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // words j, j+4, j+8, j+12 of 4 outputs in u[i + j]
    u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i a = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88);
    const __m512i b = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xdd);
    const __m512i c = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88);
    const __m512i d = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xdd);
    r[j] = _mm512_shuffle_i32x4(a, c, 0x88);
    r[j + 8] = _mm512_shuffle_i32x4(a, c, 0xdd);
    r[j + 4] = _mm512_shuffle_i32x4(b, d, 0x88);
    r[j + 12] = _mm512_shuffle_i32x4(b, d, 0xdd);
  }
}

// 64 inputs (32 when `part`) of one weight row from kernel-order position c, as the
// unsigned bytes vpdpbusd takes. int4: both layouts keep them at packed byte c / 2.
template <int BITS>
Q8_INLINE __m512i load_chunk(const Q8Args& a, const uint8_t* w, int64_t c, bool part) {
  if constexpr (BITS == 8) {
    const __m512i v = _mm512_maskz_loadu_epi8(part ? 0xffffffffull : ~0ull, w + c);
    return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    const __m256i b = _mm256_maskz_loadu_epi8(part ? 0xffffu : 0xffffffffu, w + c / 2);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(b, low4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low4);
    if (a.group == 32) {  // per 16 bytes: low nibbles are inputs 0..15, high 16..31
      const __m256i first = _mm256_permute2x128_si256(lo, hi, 0x20);
      hi = _mm256_permute2x128_si256(lo, hi, 0x31);
      lo = first;
    }
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
}

// Weight rows o..o+n (n <= 16, the rest zero) into words p[in / 4] and their scales
// s[groups][16], prefetching the same position one panel-sized stride ahead.
template <int BITS>
void pack_panel(const Q8Args& a, int64_t o, int n, __m512i* p, float* s) {
  const int64_t groups = a.in / a.group;
  const int64_t row_bytes = BITS == 8 ? a.in : a.in / 2;
  const int64_t ahead = prefetch_distance(kLanes * row_bytes);
  for (int64_t c = 0; c < a.in; c += 64) {
    const bool part = c + 64 > a.in;
    __m512i r[16];
    for (int k = 0; k < kLanes; ++k) {
      if (k >= n) {
        r[k] = _mm512_setzero_si512();
        continue;
      }
      const uint8_t* w = a.wq + (o + k) * row_bytes;
      _mm_prefetch(reinterpret_cast<const char*>(w + c * BITS / 8 + ahead), _MM_HINT_T0);
      r[k] = load_chunk<BITS>(a, w, c, part);
    }
    transpose_16x16(r);
    for (int k = 0; k < (part ? 8 : 16); ++k) _mm512_storeu_si512(p + c / 4 + k, r[k]);
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int k = 0; k < kLanes; ++k) {
      s[g * kLanes + k] = k < n ? a.scales[(o + k) * groups + g] : 0;
    }
  }
}

Q8_INLINE __m512i broadcast4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm512_set1_epi32(v);
}

// y[m0 .. m0+MR, o .. o+n] from a packed panel: per (row, output) the block dots are
// exact int32, then t = fma(dot, d, t) per block and acc = fma(t, scale, acc) per group,
// in block order whatever MR (so rows do not depend on the call's row count).
template <int MR>
void panel_rows(const Q8Args& a, const __m512i* p, const float* s, int64_t m0, int64_t o, int n) {
  const int64_t per_group = a.group / 32, groups = a.in / a.group;
  const int8_t* x[MR];
  const float* xd[MR];
  const int32_t* xs[MR];
  __m512 acc[MR];
  for (int m = 0; m < MR; ++m) {
    x[m] = a.xq + (m0 + m) * a.in;
    xd[m] = a.xd + (m0 + m) * (a.in / 4);
    xs[m] = a.xs + (m0 + m) * (a.in / 32);
    acc[m] = _mm512_setzero_ps();
  }
  for (int64_t g = 0; g < groups; ++g) {
    __m512 t[MR];
    for (int m = 0; m < MR; ++m) t[m] = _mm512_setzero_ps();
    for (int64_t b = g * per_group; b < (g + 1) * per_group; ++b) {
      __m512i dot[MR];
      for (int m = 0; m < MR; ++m) dot[m] = _mm512_set1_epi32(xs[m][b]);
      for (int k = 0; k < 8; ++k) {
        const __m512i w = _mm512_loadu_si512(p + b * 8 + k);
        for (int m = 0; m < MR; ++m) {
          dot[m] = _mm512_dpbusd_epi32(dot[m], w, broadcast4(x[m] + b * 32 + 4 * k));
        }
      }
      for (int m = 0; m < MR; ++m) {
        t[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[m]), _mm512_set1_ps(xd[m][b * 8]), t[m]);
      }
    }
    const __m512 scale = _mm512_loadu_ps(s + g * kLanes);
    for (int m = 0; m < MR; ++m) acc[m] = _mm512_fmadd_ps(t[m], scale, acc[m]);
  }
  const __mmask16 keep = static_cast<__mmask16>((1u << n) - 1);
  for (int m = 0; m < MR; ++m) _mm512_mask_storeu_ps(a.y + (m0 + m) * a.out + o, keep, acc[m]);
}

// Row-major sums of 16 outputs' int32 lanes over 64 inputs -> (block c/32, block c/32 + 1)
// dots with output k in lane k. Integer adds, so exact in any order.
Q8_INLINE void reduce_blocks(__m512i (&v)[16], __m512i& first, __m512i& second) {
  __m512i q[4];
  for (int i = 0; i < 16; i += 4) {  // per 128-bit lane: outputs i..i+3, 16 inputs each
    const __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[i], v[i + 1]),
                                         _mm512_unpackhi_epi32(v[i], v[i + 1]));
    const __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[i + 2], v[i + 3]),
                                         _mm512_unpackhi_epi32(v[i + 2], v[i + 3]));
    q[i / 4] = _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23), _mm512_unpackhi_epi64(s01, s23));
  }
  const __m512i z0 = _mm512_add_epi32(_mm512_shuffle_i32x4(q[0], q[1], 0x88),
                                      _mm512_shuffle_i32x4(q[0], q[1], 0xdd));
  const __m512i z1 = _mm512_add_epi32(_mm512_shuffle_i32x4(q[2], q[3], 0x88),
                                      _mm512_shuffle_i32x4(q[2], q[3], 0xdd));
  first = _mm512_shuffle_i32x4(z0, z1, 0x88);
  second = _mm512_shuffle_i32x4(z0, z1, 0xdd);
}

// One row (decode, memory-bound: nothing to amortize a transpose over): the weights are
// read in place, dots run along the inputs and reduce_blocks turns them into the block
// dots of panel_rows, followed by the same float steps, so results match it bit for bit.
template <int BITS>
void single_row(const Q8Args& a, int64_t m, int64_t o, int n) {
  const int64_t groups = a.in / a.group, per_group = a.group / 32;
  const int64_t row_bytes = BITS == 8 ? a.in : a.in / 2;
  const int64_t ahead = prefetch_distance(kLanes * row_bytes);
  const int8_t* x = a.xq + m * a.in;
  const int32_t* xc = a.xc + m * (a.in / 4);
  const float* xd = a.xd + m * (a.in / 4);
  const __mmask16 keep = static_cast<__mmask16>((1u << n) - 1);
  const __m512i index =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int32_t>(groups)));
  const float* scales = a.scales + o * groups;
  __m512 acc = _mm512_setzero_ps(), t = _mm512_setzero_ps();
  auto block = [&](int64_t b, __m512i dot) {
    t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(xd[b * 8]), t);
    if ((b + 1) % per_group == 0) {
      const __m512 scale =
          _mm512_mask_i32gather_ps(_mm512_setzero_ps(), keep, index, scales + b / per_group, 4);
      acc = _mm512_fmadd_ps(t, scale, acc);
      t = _mm512_setzero_ps();
    }
  };
  for (int64_t c = 0; c < a.in; c += 64) {
    const bool part = c + 64 > a.in;
    const __m512i xv = _mm512_maskz_loadu_epi8(part ? 0xffffffffull : ~0ull, x + c);
    const __m512i cv = _mm512_maskz_loadu_epi32(part ? 0x00ff : 0xffff, xc + c / 4);
    __m512i v[16];
    for (int k = 0; k < kLanes; ++k) {
      if (k >= n) {
        v[k] = _mm512_setzero_si512();
        continue;
      }
      const uint8_t* w = a.wq + (o + k) * row_bytes;
      _mm_prefetch(reinterpret_cast<const char*>(w + c * BITS / 8 + ahead), _MM_HINT_T0);
      v[k] = _mm512_dpbusd_epi32(cv, load_chunk<BITS>(a, w, c, part), xv);
    }
    __m512i first, second;
    reduce_blocks(v, first, second);
    block(c / 32, first);
    if (!part) block(c / 32 + 1, second);
  }
  _mm512_mask_storeu_ps(a.y + m * a.out + o, keep, acc);
}

template <int MR>
void panel_tail(const Q8Args& a, const __m512i* p, const float* s, int64_t m0, int64_t o, int n) {
  if constexpr (MR > 0) {
    if (a.rows - m0 == MR) return panel_rows<MR>(a, p, s, m0, o, n);
    panel_tail<MR - 1>(a, p, s, m0, o, n);
  }
}

template <int BITS>
void outputs_512(const Q8Args& a, int64_t o0, int64_t o1) {
  // Per thread: the panel's words (in * 16 bytes, L1/L2-resident) and scales.
  thread_local std::vector<float> buf;
  const int64_t groups = a.in / a.group;
  buf.resize(static_cast<size_t>(4 * a.in + kLanes * groups + 16));
  float* base = buf.data() + (-reinterpret_cast<uintptr_t>(buf.data()) / 4 & 15);  // 64-aligned
  __m512i* p = reinterpret_cast<__m512i*>(base);
  float* s = base + 4 * a.in;
  for (int64_t o = o0; o < o1; o += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, o1 - o));
    if (a.rows == 1) {
      single_row<BITS>(a, 0, o, n);
      continue;
    }
    pack_panel<BITS>(a, o, n, p, s);
    int64_t m = 0;
    for (; m + kRows <= a.rows; m += kRows) panel_rows<kRows>(a, p, s, m, o, n);
    if (m < a.rows) panel_tail<kRows - 1>(a, p, s, m, o, n);
  }
}

// Panel layout (qmatmul.h), one row: the panel's words stream in order, each feeding one
// vpdpbusd with 4 activation bytes broadcast. Two dot chains per block hide the
// instruction's latency; their int32 sum is the block dot single_row computes, and the
// float steps are the same, so results match the row layout bit for bit.
void panel_one_row(const Q8Args& a, const __m512i* p, const float* s, int64_t o, int n) {
  const int64_t per_group = a.group / 32, blocks = a.in / 32;
  constexpr int64_t kAheadWords = (6 << 10) / 64;
  __m512 acc = _mm512_setzero_ps(), t = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const __m512i* w = p + b * 8;
    _mm_prefetch(reinterpret_cast<const char*>(w + kAheadWords), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + kAheadWords + 4), _MM_HINT_T0);
    const int8_t* x = a.xq + b * 32;
    __m512i d0 = _mm512_set1_epi32(a.xs[b]), d1 = _mm512_setzero_si512();
    for (int k = 0; k < 8; k += 2) {
      d0 = _mm512_dpbusd_epi32(d0, _mm512_loadu_si512(w + k), broadcast4(x + 4 * k));
      d1 = _mm512_dpbusd_epi32(d1, _mm512_loadu_si512(w + k + 1), broadcast4(x + 4 * k + 4));
    }
    const __m512i dot = _mm512_add_epi32(d0, d1);
    t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(a.xd[b * 8]), t);
    if ((b + 1) % per_group == 0) {
      acc = _mm512_fmadd_ps(t, _mm512_loadu_ps(s + (b / per_group) * kLanes), acc);
      t = _mm512_setzero_ps();
    }
  }
  _mm512_mask_storeu_ps(a.y + o, static_cast<__mmask16>((1u << n) - 1), acc);
}

// Panels p0..p1: a.wq / a.scales are the panels / panel_scales. Several rows (prefill
// chunks) run panel_rows on the panel in place: the row layout's per-call pack is gone.
void panels_512(const Q8Args& a, int64_t p0, int64_t p1) {
  const int64_t words = a.in / 4, groups = a.in / a.group;
  const __m512i* base = reinterpret_cast<const __m512i*>(a.wq);
  for (int64_t panel = p0; panel < p1; ++panel) {
    const __m512i* p = base + panel * words;
    const float* s = a.scales + panel * groups * kLanes;
    const int64_t o = panel * kLanes;
    const int n = static_cast<int>(std::min<int64_t>(kLanes, a.out - o));
    if (a.rows == 1) {
      panel_one_row(a, p, s, o, n);
      continue;
    }
    int64_t m = 0;
    for (; m + kRows <= a.rows; m += kRows) panel_rows<kRows>(a, p, s, m, o, n);
    if (m < a.rows) panel_tail<kRows - 1>(a, p, s, m, o, n);
  }
}

}  // namespace
}  // namespace avx512_vnni
#pragma GCC pop_options

__attribute__((target("avx2,fma"))) void q8_quantize_block_avx2(const float* x, int32_t offset,
                                                                 int8_t* xq, float* xd,
                                                                 int32_t* xc) {
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(INFINITY);
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    const __m256 a = _mm256_andnot_ps(sign, v[k]);
    amax = _mm256_max_ps(amax, a);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));  // inf or NaN
  }
  if (_mm256_movemask_ps(bad) != 0) {
    q8_quantize_block_scalar(x, offset, xq, xd, xc);
    return;
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  const float d = _mm_cvtss_f32(m) / 127.0f;
  __m256i q = _mm256_setzero_si256();
  if (d > 0) {
    const __m256 dv = _mm256_set1_ps(d);
    __m256i r[4];
    for (int k = 0; k < 4; ++k) {
      r[k] = _mm256_cvtps_epi32(
          _mm256_round_ps(_mm256_div_ps(v[k], dv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    // packs work within 128-bit lanes: undo their interleave with one 32-bit permute.
    q = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq), q);
  const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
                                         _mm256_set1_epi16(1));  // sum of each 4 xq
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(xc),
                      _mm256_mullo_epi32(sums, _mm256_set1_epi32(-offset)));
  _mm256_storeu_ps(xd, _mm256_set1_ps(d));
}

void q8_outputs_avx2(const Q8Args& a, int64_t o0, int64_t o1) {
  if (a.bits == 8) {
    maddubs::outputs_256<8>(a, o0, o1);
  } else {
    maddubs::outputs_256<4>(a, o0, o1);
  }
}

void q8_outputs_avx_vnni(const Q8Args& a, int64_t o0, int64_t o1) {
  if (a.bits == 8) {
    avx_vnni::outputs_256<8>(a, o0, o1);
  } else {
    avx_vnni::outputs_256<4>(a, o0, o1);
  }
}

void q8_outputs_avx512_vnni(const Q8Args& a, int64_t o0, int64_t o1) {
  if (a.bits == 8) {
    avx512_vnni::outputs_512<8>(a, o0, o1);
  } else {
    avx512_vnni::outputs_512<4>(a, o0, o1);
  }
}

void q8_panels_avx512_vnni(const Q8Args& a, int64_t p0, int64_t p1) {
  avx512_vnni::panels_512(a, p0, p1);
}

#else  // not x86: the cpu_features checks never pick these; they only satisfy the linker.

void q8_quantize_block_avx2(const float* x, int32_t offset, int8_t* xq, float* xd, int32_t* xc) {
  q8_quantize_block_scalar(x, offset, xq, xd, xc);
}
void q8_outputs_avx2(const Q8Args& a, int64_t o0, int64_t o1) { q8_outputs_scalar(a, o0, o1); }
void q8_outputs_avx_vnni(const Q8Args& a, int64_t o0, int64_t o1) {
  q8_outputs_scalar(a, o0, o1);
}
void q8_outputs_avx512_vnni(const Q8Args& a, int64_t o0, int64_t o1) {
  q8_outputs_scalar(a, o0, o1);
}
void q8_panels_avx512_vnni(const Q8Args& a, int64_t p0, int64_t p1) { q8_panels_scalar(a, p0, p1); }

#endif

}  // namespace internal
}  // namespace mlforge
