#include "mlforge/quant.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>

#include "mlforge/cpu_features.h"
#include "mlforge/half.h"
#include "mlforge/parallel.h"
#include "mlforge/quant_kernels.h"

namespace mlforge {
namespace internal {
namespace {

// Plain loops; the compiler vectorizes what it can for the baseline target (and ARM).
struct ScalarOps {
  static bool minmax(const float* x, int n, float* mn, float* mx) {
    float lo = x[0], hi = x[0];
    uint32_t nonfinite = 0;
    for (int i = 0; i < n; ++i) {
      lo = x[i] < lo ? x[i] : lo;
      hi = x[i] > hi ? x[i] : hi;
      nonfinite |= (float_bits(x[i]) & 0x7f800000u) == 0x7f800000u;
    }
    *mn = lo;
    *mx = hi;
    return nonfinite == 0;
  }
  static void quantize(const float* x, int n, float scale, float bias, float nbins, uint8_t* q) {
    for (int i = 0; i < n; ++i) {
      float t = (x[i] - bias) / scale;
      t = std::min(std::max(t, 0.0f), nbins);
      // Adding 1.5 * 2^23 rounds to nearest-even for 0 <= t <= 255, like rint().
      q[i] = static_cast<uint8_t>((t + 12582912.0f) - 12582912.0f);
    }
  }
  static void dequantize(const uint8_t* q, int n, float scale, float bias, float* out) {
    for (int i = 0; i < n; ++i) out[i] = scale * static_cast<float>(q[i]) + bias;
  }
};

struct HalfOps {
  static void dequantize(const uint8_t* q, int n, float scale, float bias, float* out) {
    for (int i = 0; i < n; ++i) {
      out[i] = round_to_half(round_to_half(scale * static_cast<float>(q[i])) + bias);
    }
  }
};

}  // namespace

int64_t quantize_rows_scalar(const QuantArgs& a, int64_t r0, int64_t r1) {
  MLFORGE_DISPATCH_BITS_GS(quantize_rows_t, ScalarOps, a.bits, a.group_size, a, r0, r1)
}

void dequantize_rows_scalar(const DequantArgs& a, int64_t r0, int64_t r1) {
  MLFORGE_DISPATCH_BITS_GS(dequantize_rows_t, ScalarOps, a.bits, a.group_size, a, r0, r1)
}

void dequantize_rows_half(const DequantArgs& a, int64_t r0, int64_t r1) {
  MLFORGE_DISPATCH_BITS_GS(dequantize_rows_t, HalfOps, a.bits, a.group_size, a, r0, r1)
}

}  // namespace internal

namespace {

// Rows per parallel chunk: enough work (~128K values) to pay for a thread.
int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, (int64_t{1} << 17) / cols); }

}  // namespace

void check_affine_params(int group_size, int bits) {
  if (group_size != 32 && group_size != 64 && group_size != 128) {
    throw std::invalid_argument("group_size must be 32, 64 or 128; got " +
                                std::to_string(group_size));
  }
  if (bits < 2 || bits > 8 || bits == 7) {
    throw std::invalid_argument("bits must be one of 2, 3, 4, 5, 6, 8; got " +
                                std::to_string(bits));
  }
}

void affine_quantize(const float* w, int64_t rows, int64_t cols, int group_size, int bits,
                     uint32_t* wq, float* scales, float* biases) {
  check_affine_params(group_size, bits);
  if (rows <= 0 || cols <= 0) {
    throw std::invalid_argument("w must be non-empty; got shape (" + std::to_string(rows) + ", " +
                                std::to_string(cols) + ")");
  }
  if (cols % group_size != 0) {
    throw std::invalid_argument("w.shape[1] (" + std::to_string(cols) +
                                ") must be divisible by group_size (" + std::to_string(group_size) +
                                ")");
  }
  internal::QuantArgs args{w,      rows,  cols, group_size, bits, reinterpret_cast<uint8_t*>(wq),
                           scales, biases};
  auto kernel = internal::quantize_rows_scalar;
  switch (active_isa()) {
    case Isa::kAvx512:
      kernel = internal::quantize_rows_avx512;
      break;
    case Isa::kAvx2:
      kernel = internal::quantize_rows_avx2;
      break;
    default:
      break;
  }
  std::atomic<int64_t> bad_row{rows};
  parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    int64_t bad = kernel(args, r0, r1);
    if (bad < 0) return;
    int64_t seen = bad_row.load();
    while (bad < seen && !bad_row.compare_exchange_weak(seen, bad)) {
    }
  });
  if (bad_row.load() < rows) {
    throw std::invalid_argument("w contains NaN or Inf (first in row " +
                                std::to_string(bad_row.load()) + "); quantize needs finite values");
  }
}

int64_t affine_dequantized_cols(int64_t packed_cols, int64_t scale_cols, int group_size, int bits) {
  check_affine_params(group_size, bits);
  if (packed_cols <= 0 || (packed_cols * 32) % bits != 0) {
    throw std::invalid_argument("wq.shape[1] (" + std::to_string(packed_cols) +
                                ") does not hold a whole number of " + std::to_string(bits) +
                                "-bit values");
  }
  int64_t cols = packed_cols * 32 / bits;
  if (scale_cols * group_size != cols) {
    throw std::invalid_argument("scales.shape[1] (" + std::to_string(scale_cols) +
                                ") * group_size (" + std::to_string(group_size) +
                                ") must equal the " + std::to_string(cols) +
                                " columns packed in wq; check group_size and bits");
  }
  return cols;
}

void affine_dequantize(const uint32_t* wq, const float* scales, const float* biases, int64_t rows,
                       int64_t cols, int group_size, int bits, float* out, bool half_precision) {
  check_affine_params(group_size, bits);
  if (rows <= 0 || cols <= 0 || cols % group_size != 0) {
    throw std::invalid_argument("wq must be a non-empty matrix of whole groups");
  }
  internal::DequantArgs args{
      reinterpret_cast<const uint8_t*>(wq), scales, biases, rows, cols, group_size, bits, out};
  auto kernel = internal::dequantize_rows_scalar;
  if (half_precision) {
    kernel = internal::dequantize_rows_half;
  } else if (active_isa() == Isa::kAvx512) {
    kernel = internal::dequantize_rows_avx512;
  } else if (active_isa() == Isa::kAvx2) {
    kernel = internal::dequantize_rows_avx2;
  }
  parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) { kernel(args, r0, r1); });
}

}  // namespace mlforge
