// AVX2 and AVX-512 variants of qmatmul. Each is compiled for its instruction set with a
// function target attribute (no -march flags) and only called when cpu_features reports
// support and the group size fits its vector width. Off x86 they fall back to scalar.
//
// A tile is NR outputs x MR activation rows: NR weight rows are decoded once per vector
// and reused for MR rows. Each (output, row) pair has its own accumulator fed in the
// same order whatever the tile, so a row's result does not depend on how many rows the
// call had or how outputs were split across threads.
#include "mlforge/qmatmul_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics use _mm512_undefined_ps() placeholders that trip these.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace mlforge {
namespace internal {

#if defined(__x86_64__)

#define MLFORGE_AVX2 __attribute__((target("avx2,fma")))
#define MLFORGE_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")))
#define MLFORGE_INLINE inline __attribute__((always_inline))

namespace {

// prefetch_distance (qmatmul_kernels.h): each weight load also prefetches ahead.
MLFORGE_AVX2 MLFORGE_INLINE void prefetch(const void* p) {
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
}

// ---- AVX-512: 16 floats per vector ----

// Two accumulator chains per (output, row): with one, a single-row tile is bound by FMA
// latency (4 chains of 4-cycle FMAs), not by memory.
template <int NR, int MR>
MLFORGE_AVX512 MLFORGE_INLINE void store_512(const QMatmulArgs& a, int64_t o, int64_t m0,
                                             __m512 (&acc)[NR][MR][2]) {
  for (int m = 0; m < MR; ++m) {
    for (int n = 0; n < NR; ++n) {
      a.y[(m0 + m) * a.out + o + n] =
          _mm512_reduce_add_ps(_mm512_add_ps(acc[n][m][0], acc[n][m][1]));
    }
  }
}

template <int NR, int MR>
MLFORGE_AVX512 MLFORGE_INLINE void zero_512(__m512 (&acc)[NR][MR][2]) {
  for (int n = 0; n < NR; ++n) {
    for (int m = 0; m < MR; ++m) acc[n][m][0] = acc[n][m][1] = _mm512_setzero_ps();
  }
}

// 16 int8 weights of row w at i, times their scale: rounded exactly as the float
// reference's q * scale, before the dot.
MLFORGE_AVX512 MLFORGE_INLINE __m512 weights_i8_512(const int8_t* w, __m512 scale) {
  __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), scale);
}

template <int NR, int MR>
MLFORGE_AVX512 void tile_i8_512(const QMatmulArgs& a, int64_t o, int64_t m0) {
  const int64_t groups = a.in / a.group;
  const int8_t* w[NR];
  const float* sc[NR];
  const float* x[MR];
  for (int n = 0; n < NR; ++n) {
    w[n] = reinterpret_cast<const int8_t*>(a.wq) + (o + n) * a.in;
    sc[n] = a.scales + (o + n) * groups;
  }
  for (int m = 0; m < MR; ++m) x[m] = a.x + (m0 + m) * a.in;
  const int64_t ahead = prefetch_distance(NR * a.in);
  __m512 acc[NR][MR][2];
  zero_512<NR, MR>(acc);
  for (int64_t g = 0; g < groups; ++g) {
    __m512 s[NR];
    for (int n = 0; n < NR; ++n) s[n] = _mm512_set1_ps(sc[n][g]);
    const int64_t end = (g + 1) * a.group;
    int64_t i = g * a.group;
    for (; i + 32 <= end; i += 32) {  // chain 0 takes the first 16 inputs, chain 1 the next
      __m512 w0[NR], w1[NR];
      for (int n = 0; n < NR; ++n) {
        prefetch(w[n] + i + ahead);
        w0[n] = weights_i8_512(w[n] + i, s[n]);
        w1[n] = weights_i8_512(w[n] + i + 16, s[n]);
      }
      for (int m = 0; m < MR; ++m) {
        __m512 x0 = _mm512_loadu_ps(x[m] + i), x1 = _mm512_loadu_ps(x[m] + i + 16);
        for (int n = 0; n < NR; ++n) {
          acc[n][m][0] = _mm512_fmadd_ps(w0[n], x0, acc[n][m][0]);
          acc[n][m][1] = _mm512_fmadd_ps(w1[n], x1, acc[n][m][1]);
        }
      }
    }
    if (i < end) {  // groups of 16 (mod 32)
      for (int n = 0; n < NR; ++n) {
        __m512 wv = weights_i8_512(w[n] + i, s[n]);
        for (int m = 0; m < MR; ++m) {
          acc[n][m][0] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x[m] + i), acc[n][m][0]);
        }
      }
    }
  }
  store_512<NR, MR>(a, o, m0, acc);
}

template <int NR, int MR>
MLFORGE_AVX512 void tile_i4_512(const QMatmulArgs& a, int64_t o, int64_t m0) {
  const int64_t groups = a.in / a.group, half = a.group / 2;
  const uint8_t* w[NR];
  const float* sc[NR];
  const float* x[MR];
  for (int n = 0; n < NR; ++n) {
    w[n] = a.wq + (o + n) * (a.in / 2);
    sc[n] = a.scales + (o + n) * groups;
  }
  for (int m = 0; m < MR; ++m) x[m] = a.x + (m0 + m) * a.in;
  __m512 acc[NR][MR][2];
  zero_512<NR, MR>(acc);
  const int64_t ahead = prefetch_distance(NR * (a.in / 2));
  const __m512 levels = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t g = 0; g < groups; ++g) {
    // All 16 values (nibble - 8) * scale of this group (each rounded once, as the float
    // reference rounds q * scale); nibbles then index the table. vpermps reads only the
    // low 4 bits of each index, so the high nibble needs a shift and no mask.
    __m512 table[NR];
    for (int n = 0; n < NR; ++n) table[n] = _mm512_mul_ps(levels, _mm512_set1_ps(sc[n][g]));
    const int64_t xg = g * a.group;
    for (int64_t k = 0; k < half; k += 16) {  // chain 0: low nibbles, chain 1: high
      __m512 lo[NR], hi[NR];
      for (int n = 0; n < NR; ++n) {
        prefetch(w[n] + g * half + k + ahead);
        __m512i d = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[n] + g * half + k)));
        lo[n] = _mm512_permutexvar_ps(d, table[n]);
        hi[n] = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), table[n]);
      }
      for (int m = 0; m < MR; ++m) {
        __m512 xl = _mm512_loadu_ps(x[m] + xg + k);
        __m512 xh = _mm512_loadu_ps(x[m] + xg + half + k);
        for (int n = 0; n < NR; ++n) {
          acc[n][m][0] = _mm512_fmadd_ps(lo[n], xl, acc[n][m][0]);
          acc[n][m][1] = _mm512_fmadd_ps(hi[n], xh, acc[n][m][1]);
        }
      }
    }
  }
  store_512<NR, MR>(a, o, m0, acc);
}

template <int BITS, int NR, int MR>
MLFORGE_AVX512 MLFORGE_INLINE void tile_512(const QMatmulArgs& a, int64_t o, int64_t m0) {
  if constexpr (BITS == 8) {
    tile_i8_512<NR, MR>(a, o, m0);
  } else {
    tile_i4_512<NR, MR>(a, o, m0);
  }
}

// Tiles of at most 2 rows: NR x 2 rows x 2 chains = 16 accumulators, and registers left
// for the decoded weights. Wider batches re-read the tile's weights from L1.
template <int BITS, int NR>
MLFORGE_AVX512 void rows_512(const QMatmulArgs& a, int64_t o) {
  int64_t m = 0;
  for (; m + 2 <= a.rows; m += 2) tile_512<BITS, NR, 2>(a, o, m);
  if (m < a.rows) tile_512<BITS, NR, 1>(a, o, m);
}

template <int BITS>
MLFORGE_AVX512 void outputs_512(const QMatmulArgs& a, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) rows_512<BITS, 4>(a, o);
  for (; o < o1; ++o) rows_512<BITS, 1>(a, o);
}

// ---- AVX2: 8 floats per vector, 16 registers, so at most 2 rows per tile ----

MLFORGE_AVX2 MLFORGE_INLINE float hsum_256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <int BITS, int NR, int MR>
MLFORGE_AVX2 void tile_256(const QMatmulArgs& a, int64_t o, int64_t m0) {
  const int64_t groups = a.in / a.group, half = a.group / 2;
  const int64_t row_bytes = BITS == 8 ? a.in : a.in / 2;
  const uint8_t* w[NR];
  const float* sc[NR];
  const float* x[MR];
  for (int n = 0; n < NR; ++n) {
    w[n] = a.wq + (o + n) * row_bytes;
    sc[n] = a.scales + (o + n) * groups;
  }
  for (int m = 0; m < MR; ++m) x[m] = a.x + (m0 + m) * a.in;
  __m256 acc[NR][MR];
  for (int n = 0; n < NR; ++n) {
    for (int m = 0; m < MR; ++m) acc[n][m] = _mm256_setzero_ps();
  }
  const int64_t ahead = prefetch_distance(NR * row_bytes);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m256i eight = _mm256_set1_epi32(8);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t xg = g * a.group;
    if constexpr (BITS == 8) {
      for (int64_t i = xg; i < xg + a.group; i += 8) {
        __m256 wv[NR];
        for (int n = 0; n < NR; ++n) {
          prefetch(w[n] + i + ahead);
          __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w[n] + i));
          wv[n] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)),
                                _mm256_set1_ps(sc[n][g]));
        }
        for (int m = 0; m < MR; ++m) {
          __m256 xv = _mm256_loadu_ps(x[m] + i);
          for (int n = 0; n < NR; ++n) acc[n][m] = _mm256_fmadd_ps(wv[n], xv, acc[n][m]);
        }
      }
    } else {
      for (int64_t k = 0; k < half; k += 8) {
        __m256 lo[NR], hi[NR];
        for (int n = 0; n < NR; ++n) {
          prefetch(w[n] + g * half + k + ahead);
          __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w[n] + g * half + k));
          __m256i l = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_and_si128(b, low4)), eight);
          __m256i h = _mm256_sub_epi32(
              _mm256_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), low4)), eight);
          const __m256 s = _mm256_set1_ps(sc[n][g]);
          lo[n] = _mm256_mul_ps(_mm256_cvtepi32_ps(l), s);
          hi[n] = _mm256_mul_ps(_mm256_cvtepi32_ps(h), s);
        }
        for (int m = 0; m < MR; ++m) {
          __m256 xl = _mm256_loadu_ps(x[m] + xg + k);
          __m256 xh = _mm256_loadu_ps(x[m] + xg + half + k);
          for (int n = 0; n < NR; ++n) {
            acc[n][m] = _mm256_fmadd_ps(lo[n], xl, acc[n][m]);
            acc[n][m] = _mm256_fmadd_ps(hi[n], xh, acc[n][m]);
          }
        }
      }
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int n = 0; n < NR; ++n) a.y[(m0 + m) * a.out + o + n] = hsum_256(acc[n][m]);
  }
}

template <int BITS, int NR>
MLFORGE_AVX2 void rows_256(const QMatmulArgs& a, int64_t o) {
  int64_t m = 0;
  for (; m + 2 <= a.rows; m += 2) tile_256<BITS, NR, 2>(a, o, m);
  if (m < a.rows) tile_256<BITS, NR, 1>(a, o, m);
}

template <int BITS>
MLFORGE_AVX2 void outputs_256(const QMatmulArgs& a, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) rows_256<BITS, 4>(a, o);
  for (; o < o1; ++o) rows_256<BITS, 1>(a, o);
}

}  // namespace

MLFORGE_AVX512 void qmatmul_outputs_avx512(const QMatmulArgs& a, int64_t o0, int64_t o1) {
  if (a.bits == 8) {
    outputs_512<8>(a, o0, o1);
  } else {
    outputs_512<4>(a, o0, o1);
  }
}

MLFORGE_AVX2 void qmatmul_outputs_avx2(const QMatmulArgs& a, int64_t o0, int64_t o1) {
  if (a.bits == 8) {
    outputs_256<8>(a, o0, o1);
  } else {
    outputs_256<4>(a, o0, o1);
  }
}

#else  // not x86: active_isa() is always kScalar, these only satisfy the linker.

void qmatmul_outputs_avx512(const QMatmulArgs& a, int64_t o0, int64_t o1) {
  qmatmul_outputs_scalar(a, o0, o1);
}
void qmatmul_outputs_avx2(const QMatmulArgs& a, int64_t o0, int64_t o1) {
  qmatmul_outputs_scalar(a, o0, o1);
}

#endif

}  // namespace internal
}  // namespace mlforge
