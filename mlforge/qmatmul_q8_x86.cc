// x86 kernels of qmatmul's Activations::kInt8: int8 activation blocks times int8/int4
// weights with integer byte dots, each compiled for its instruction set (no -march) and
// called only when cpu_features reports it. Off x86 they fall back to scalar.
//
// vpdpbusd multiplies unsigned by signed bytes, so the weights go in as unsigned (int8:
// q ^ 0x80 = q + 128; int4: the stored nibble q + 8) and each lane starts from the
// activation-side correction xc = -offset * sum x (qmatmul_kernels.h): exact int32 dots.
// Each block's int32 lanes are scaled by its activation scale into a float partial sum
// per group, which the group's weight scale then multiplies. Every (output, row) pair
// is computed in the same order whatever the tile, so results do not depend on the
// number of rows in the call or on the thread split.
#include "mlforge/qmatmul_kernels.h"

#include <cmath>

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

// One step: 64 inputs (two blocks, 16 int32 lanes) at x position p, or 32 when `half`
// (the upper lanes then load as zeros and add nothing).
template <int NR, int MR>
Q8_INLINE void step_512(const Q8Args& a, int64_t m0, int64_t p, bool half,
                        const __m512i (&w)[NR], __m512 (&t)[NR][MR]) {
  const __mmask64 bytes = half ? 0xffffffffull : ~0ull;
  const __mmask16 lanes = half ? 0x00ff : 0xffff;
  for (int m = 0; m < MR; ++m) {
    const __m512i x = _mm512_maskz_loadu_epi8(bytes, a.xq + (m0 + m) * a.in + p);
    const int64_t lane = (m0 + m) * (a.in / 4) + p / 4;
    const __m512i xc = _mm512_maskz_loadu_epi32(lanes, a.xc + lane);
    const __m512 xd = _mm512_maskz_loadu_ps(lanes, a.xd + lane);
    for (int n = 0; n < NR; ++n) {
      const __m512i dot = _mm512_dpbusd_epi32(xc, w[n], x);
      t[n][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), xd, t[n][m]);
    }
  }
}

template <int BITS, int NR, int MR>
void tile_512(const Q8Args& a, int64_t o, int64_t m0) {
  const int64_t groups = a.in / a.group, half = a.group / 2;
  const int64_t row_bytes = BITS == 8 ? a.in : a.in / 2;
  const int64_t ahead = prefetch_distance(NR * row_bytes);
  const uint8_t* w[NR];
  for (int n = 0; n < NR; ++n) w[n] = a.wq + (o + n) * row_bytes;
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  __m512 acc[NR][MR];
  for (int n = 0; n < NR; ++n) {
    for (int m = 0; m < MR; ++m) acc[n][m] = _mm512_setzero_ps();
  }
  for (int64_t g = 0; g < groups; ++g) {
    __m512 t[NR][MR];
    for (int n = 0; n < NR; ++n) {
      for (int m = 0; m < MR; ++m) t[n][m] = _mm512_setzero_ps();
    }
    __m512i wv[NR];
    const int64_t end = (g + 1) * a.group;
    if constexpr (BITS == 8) {
      for (int64_t p = g * a.group; p < end; p += 64) {
        const bool part = p + 64 > end;  // groups of 32 (mod 64)
        for (int n = 0; n < NR; ++n) {
          _mm_prefetch(reinterpret_cast<const char*>(w[n] + p + ahead), _MM_HINT_T0);
          wv[n] = _mm512_xor_si512(
              _mm512_maskz_loadu_epi8(part ? 0xffffffffull : ~0ull, w[n] + p), bias);
        }
        step_512<NR, MR>(a, m0, p, part, wv, t);
      }
    } else if (a.group == 32) {  // 16 bytes: low nibbles are inputs 0..15, high 16..31
      for (int n = 0; n < NR; ++n) {
        const uint8_t* src = w[n] + g * 16;
        _mm_prefetch(reinterpret_cast<const char*>(src + ahead), _MM_HINT_T0);
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
        const __m256i y = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
        wv[n] = _mm512_and_si512(_mm512_zextsi256_si512(y), low4);
      }
      step_512<NR, MR>(a, m0, g * 32, true, wv, t);
    } else {
      for (int64_t k = 0; k < half; k += 32) {  // low nibbles: one block, high: the next
        for (int n = 0; n < NR; ++n) {
          const uint8_t* src = w[n] + g * half + k;
          _mm_prefetch(reinterpret_cast<const char*>(src + ahead), _MM_HINT_T0);
          const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
          const __m512i both =
              _mm512_inserti64x4(_mm512_castsi256_si512(b), _mm256_srli_epi16(b, 4), 1);
          wv[n] = _mm512_and_si512(both, low4);
        }
        step_512<NR, MR>(a, m0, g * a.group + 2 * k, false, wv, t);
      }
    }
    for (int n = 0; n < NR; ++n) {
      const __m512 s = _mm512_set1_ps(a.scales[(o + n) * groups + g]);
      for (int m = 0; m < MR; ++m) acc[n][m] = _mm512_fmadd_ps(t[n][m], s, acc[n][m]);
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int n = 0; n < NR; ++n) a.y[(m0 + m) * a.out + o + n] = _mm512_reduce_add_ps(acc[n][m]);
  }
}

// Tiles of at most 2 rows: 4 outputs x 2 rows of accumulators and of group partial
// sums, 4 weight vectors and the row's operands fit the 32 zmm registers.
template <int BITS, int NR>
void rows_512(const Q8Args& a, int64_t o) {
  int64_t m = 0;
  for (; m + 2 <= a.rows; m += 2) tile_512<BITS, NR, 2>(a, o, m);
  if (m < a.rows) tile_512<BITS, NR, 1>(a, o, m);
}

template <int BITS>
void outputs_512(const Q8Args& a, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) rows_512<BITS, 4>(a, o);
  for (; o < o1; ++o) rows_512<BITS, 1>(a, o);
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

#endif

}  // namespace internal
}  // namespace mlforge
