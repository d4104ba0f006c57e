// AVX2 and AVX-512 variants of the affine quantization kernels. Each entry point is
// compiled for its instruction set with a function target attribute (no -march flags),
// and only called when cpu_features reports support. Off x86 they fall back to scalar.
#include "mlforge/quant_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics use _mm512_undefined_ps() placeholders that trip this.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace mlforge {
namespace internal {

#if defined(__x86_64__)

#define MLFORGE_AVX2 __attribute__((target("avx2,fma")))
#define MLFORGE_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")))

namespace {

struct Avx2Ops {
  MLFORGE_AVX2 static bool minmax(const float* x, int n, float* mn, float* mx) {
    __m256 lo = _mm256_loadu_ps(x), hi = lo, bad = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
      __m256 v = _mm256_loadu_ps(x + i);
      lo = _mm256_min_ps(lo, v);
      hi = _mm256_max_ps(hi, v);
      bad = _mm256_or_ps(bad, _mm256_sub_ps(v, v));  // +0 unless v is NaN/Inf
    }
    __m128 l = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps(hi, 1));
    l = _mm_min_ps(l, _mm_movehl_ps(l, l));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    l = _mm_min_ss(l, _mm_shuffle_ps(l, l, 1));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    *mn = _mm_cvtss_f32(l);
    *mx = _mm_cvtss_f32(h);
    return _mm256_testz_si256(_mm256_castps_si256(bad), _mm256_castps_si256(bad));
  }

  MLFORGE_AVX2 static __m256i quantize8(const float* x, __m256 s, __m256 b, __m256 top) {
    __m256 t = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x), b), s);
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), top);
    return _mm256_cvtps_epi32(_mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }

  MLFORGE_AVX2 static void quantize(const float* x, int n, float scale, float bias, float nbins,
                                    uint8_t* q) {
    const __m256 s = _mm256_set1_ps(scale), b = _mm256_set1_ps(bias), top = _mm256_set1_ps(nbins);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < n; i += 32) {
      __m256i a = _mm256_packs_epi32(quantize8(x + i, s, b, top), quantize8(x + i + 8, s, b, top));
      __m256i c =
          _mm256_packs_epi32(quantize8(x + i + 16, s, b, top), quantize8(x + i + 24, s, b, top));
      __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, c), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), bytes);
    }
  }

  MLFORGE_AVX2 static void dequantize(const uint8_t* q, int n, float scale, float bias,
                                      float* out) {
    const __m256 s = _mm256_set1_ps(scale), b = _mm256_set1_ps(bias);
    for (int i = 0; i < n; i += 8) {
      __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
      __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
      // Separate multiply and add: MLX rounds the product before adding the bias.
      _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_mul_ps(v, s), b));
    }
  }
};

struct Avx512Ops {
  MLFORGE_AVX512 static bool minmax(const float* x, int n, float* mn, float* mx) {
    __m512 lo = _mm512_loadu_ps(x), hi = lo;
    __m512i bad = _mm512_setzero_si512();
    for (int i = 0; i < n; i += 16) {
      __m512 v = _mm512_loadu_ps(x + i);
      lo = _mm512_min_ps(lo, v);
      hi = _mm512_max_ps(hi, v);
      bad = _mm512_or_si512(bad, _mm512_castps_si512(_mm512_sub_ps(v, v)));
    }
    *mn = _mm512_reduce_min_ps(lo);
    *mx = _mm512_reduce_max_ps(hi);
    return _mm512_test_epi32_mask(bad, bad) == 0;
  }

  MLFORGE_AVX512 static void quantize(const float* x, int n, float scale, float bias, float nbins,
                                      uint8_t* q) {
    const __m512 s = _mm512_set1_ps(scale), b = _mm512_set1_ps(bias), top = _mm512_set1_ps(nbins),
                 zero = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
      __m512 t = _mm512_div_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), b), s);
      t = _mm512_min_ps(_mm512_max_ps(t, zero), top);
      t = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                       _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
    }
  }

  MLFORGE_AVX512 static void dequantize(const uint8_t* q, int n, float scale, float bias,
                                        float* out) {
    const __m512 s = _mm512_set1_ps(scale), b = _mm512_set1_ps(bias);
    for (int i = 0; i < n; i += 16) {
      __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
      __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
      _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_mul_ps(v, s), b));
    }
  }
};

}  // namespace

MLFORGE_AVX2 int64_t quantize_rows_avx2(const QuantArgs& a, int64_t r0, int64_t r1){
    MLFORGE_DISPATCH_BITS_GS(quantize_rows_t, Avx2Ops, a.bits, a.group_size, a, r0, r1)}

MLFORGE_AVX2 void dequantize_rows_avx2(const DequantArgs& a, int64_t r0, int64_t r1){
    MLFORGE_DISPATCH_BITS_GS(dequantize_rows_t, Avx2Ops, a.bits, a.group_size, a, r0, r1)}

MLFORGE_AVX512 int64_t quantize_rows_avx512(const QuantArgs& a, int64_t r0, int64_t r1){
    MLFORGE_DISPATCH_BITS_GS(quantize_rows_t, Avx512Ops, a.bits, a.group_size, a, r0, r1)}

MLFORGE_AVX512 void dequantize_rows_avx512(const DequantArgs& a, int64_t r0, int64_t r1){
    MLFORGE_DISPATCH_BITS_GS(dequantize_rows_t, Avx512Ops, a.bits, a.group_size, a, r0, r1)}

#else  // not x86: active_isa() is always kScalar, these only satisfy the linker.

int64_t quantize_rows_avx2(const QuantArgs& a, int64_t r0, int64_t r1) {
  return quantize_rows_scalar(a, r0, r1);
}
int64_t quantize_rows_avx512(const QuantArgs& a, int64_t r0, int64_t r1) {
  return quantize_rows_scalar(a, r0, r1);
}
void dequantize_rows_avx2(const DequantArgs& a, int64_t r0, int64_t r1) {
  dequantize_rows_scalar(a, r0, r1);
}
void dequantize_rows_avx512(const DequantArgs& a, int64_t r0, int64_t r1) {
  dequantize_rows_scalar(a, r0, r1);
}

#endif

}  // namespace internal
}  // namespace mlforge
