// Internal: the per-group pieces of affine quantization and the row loops that every
// instruction-set variant (scalar, AVX2, AVX-512) shares. Included by quant*.cc only.
#ifndef MLFORGE_QUANT_KERNELS_H_
#define MLFORGE_QUANT_KERNELS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "MLForge packs bits little-endian, as MLX does; big-endian hosts are unsupported"
#endif

#define MLFORGE_ALWAYS_INLINE inline __attribute__((always_inline))

namespace mlforge {
namespace internal {

struct QuantArgs {
  const float* w;
  int64_t rows, cols;
  int group_size, bits;
  uint8_t* wq;  // row-major packed bit stream
  float* scales;
  float* biases;
};

struct DequantArgs {
  const uint8_t* wq;
  const float* scales;
  const float* biases;
  int64_t rows, cols;
  int group_size, bits;
  float* out;
};

// Each returns the first row in [r0, r1) holding NaN/Inf, or -1.
int64_t quantize_rows_scalar(const QuantArgs& a, int64_t r0, int64_t r1);
int64_t quantize_rows_avx2(const QuantArgs& a, int64_t r0, int64_t r1);
int64_t quantize_rows_avx512(const QuantArgs& a, int64_t r0, int64_t r1);

void dequantize_rows_scalar(const DequantArgs& a, int64_t r0, int64_t r1);
void dequantize_rows_avx2(const DequantArgs& a, int64_t r0, int64_t r1);
void dequantize_rows_avx512(const DequantArgs& a, int64_t r0, int64_t r1);
void dequantize_rows_half(const DequantArgs& a, int64_t r0, int64_t r1);

// MLX's choice of scale and bias for a group with the given extremes.
MLFORGE_ALWAYS_INLINE void affine_params(float wmin, float wmax, float nbins, float* scale,
                                         float* bias) {
  bool neg_edge = std::fabs(wmin) > std::fabs(wmax);
  float s = std::max((wmax - wmin) / nbins, 1e-7f);
  s = neg_edge ? s : -s;
  float edge = neg_edge ? wmin : wmax;
  float q0 = std::nearbyint(edge / s);
  float b = 0.0f;
  if (q0 != 0.0f) {
    s = edge / q0;
    b = edge;
  }
  *scale = s;
  *bias = b;
}

// q (one byte per value) -> bit stream; 8 values fill exactly BITS bytes.
template <int BITS, int GS>
MLFORGE_ALWAYS_INLINE void pack_group(const uint8_t* q, uint8_t* out) {
  if constexpr (BITS == 8) {
    std::memcpy(out, q, GS);
  } else if constexpr (BITS == 4) {
    for (int i = 0; i < GS / 2; ++i) out[i] = static_cast<uint8_t>(q[2 * i] | (q[2 * i + 1] << 4));
  } else if constexpr (BITS == 2) {
    for (int i = 0; i < GS / 4; ++i) {
      out[i] = static_cast<uint8_t>(q[4 * i] | (q[4 * i + 1] << 2) | (q[4 * i + 2] << 4) |
                                    (q[4 * i + 3] << 6));
    }
  } else {
    for (int c = 0; c < GS / 8; ++c) {
      uint64_t v = 0;
      for (int k = 0; k < 8; ++k) v |= static_cast<uint64_t>(q[8 * c + k]) << (k * BITS);
      std::memcpy(out + c * BITS, &v, BITS);
    }
  }
}

template <int BITS, int GS>
MLFORGE_ALWAYS_INLINE void unpack_group(const uint8_t* in, uint8_t* q) {
  constexpr uint64_t kMask = (1u << BITS) - 1;
  if constexpr (BITS == 8) {
    std::memcpy(q, in, GS);
  } else if constexpr (BITS == 4) {
    for (int i = 0; i < GS / 2; ++i) {
      q[2 * i] = in[i] & 0x0f;
      q[2 * i + 1] = in[i] >> 4;
    }
  } else {
    for (int c = 0; c < GS / 8; ++c) {
      uint64_t v = 0;
      std::memcpy(&v, in + c * BITS, BITS);
      for (int k = 0; k < 8; ++k) q[8 * c + k] = static_cast<uint8_t>((v >> (k * BITS)) & kMask);
    }
  }
}

// Ops supplies, for one group of GS floats:
//   bool minmax(const float* x, int n, float* mn, float* mx)   false on NaN/Inf
//   void quantize(const float* x, int n, float scale, float bias, float nbins, uint8_t* q)
//   void dequantize(const uint8_t* q, int n, float scale, float bias, float* out)
template <class Ops, int BITS, int GS>
MLFORGE_ALWAYS_INLINE int64_t quantize_rows_t(const QuantArgs& a, int64_t r0, int64_t r1) {
  constexpr float kBins = static_cast<float>((1 << BITS) - 1);
  const int64_t groups = a.cols / GS;
  const int64_t row_bytes = a.cols * BITS / 8;
  alignas(64) uint8_t q[GS];
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = a.w + r * a.cols;
    uint8_t* out = a.wq + r * row_bytes;
    for (int64_t g = 0; g < groups; ++g, x += GS, out += GS * BITS / 8) {
      float mn, mx, scale, bias;
      if (!Ops::minmax(x, GS, &mn, &mx)) return r;
      affine_params(mn, mx, kBins, &scale, &bias);
      Ops::quantize(x, GS, scale, bias, kBins, q);
      pack_group<BITS, GS>(q, out);
      a.scales[r * groups + g] = scale;
      a.biases[r * groups + g] = bias;
    }
  }
  return -1;
}

template <class Ops, int BITS, int GS>
MLFORGE_ALWAYS_INLINE void dequantize_rows_t(const DequantArgs& a, int64_t r0, int64_t r1) {
  const int64_t groups = a.cols / GS;
  const int64_t row_bytes = a.cols * BITS / 8;
  alignas(64) uint8_t q[GS];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* in = a.wq + r * row_bytes;
    float* out = a.out + r * a.cols;
    for (int64_t g = 0; g < groups; ++g, in += GS * BITS / 8, out += GS) {
      unpack_group<BITS, GS>(in, q);
      Ops::dequantize(q, GS, a.scales[r * groups + g], a.biases[r * groups + g], out);
    }
  }
}

// Expands to a switch over (bits, group_size) calling FN<Ops, BITS, GS>(args...).
#define MLFORGE_DISPATCH_GS(FN, OPS, BITS, gs, ...) \
  switch (gs) {                                     \
    case 32:                                        \
      return FN<OPS, BITS, 32>(__VA_ARGS__);        \
    case 64:                                        \
      return FN<OPS, BITS, 64>(__VA_ARGS__);        \
    default:                                        \
      return FN<OPS, BITS, 128>(__VA_ARGS__);       \
  }

#define MLFORGE_DISPATCH_BITS_GS(FN, OPS, bits, gs, ...) \
  switch (bits) {                                        \
    case 2:                                              \
      MLFORGE_DISPATCH_GS(FN, OPS, 2, gs, __VA_ARGS__)   \
    case 3:                                              \
      MLFORGE_DISPATCH_GS(FN, OPS, 3, gs, __VA_ARGS__)   \
    case 4:                                              \
      MLFORGE_DISPATCH_GS(FN, OPS, 4, gs, __VA_ARGS__)   \
    case 5:                                              \
      MLFORGE_DISPATCH_GS(FN, OPS, 5, gs, __VA_ARGS__)   \
    case 6:                                              \
      MLFORGE_DISPATCH_GS(FN, OPS, 6, gs, __VA_ARGS__)   \
    default:                                             \
      MLFORGE_DISPATCH_GS(FN, OPS, 8, gs, __VA_ARGS__)   \
  }

}  // namespace internal
}  // namespace mlforge

#endif  // MLFORGE_QUANT_KERNELS_H_
