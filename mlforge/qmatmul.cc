#include "mlforge/qmatmul.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlforge/cpu_features.h"
#include "mlforge/parallel.h"
#include "mlforge/qmatmul_kernels.h"

namespace mlforge {
namespace internal {
namespace {

// Row o of W as floats, rounded exactly as the float reference rounds q * scale.
void dequantize_row(const QMatmulArgs& a, int64_t o, float* w) {
  const float* s = a.scales + o * (a.in / a.group);
  if (a.bits == 8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(a.wq) + o * a.in;
    for (int64_t i = 0; i < a.in; ++i) w[i] = static_cast<float>(q[i]) * s[i / a.group];
    return;
  }
  const uint8_t* q = a.wq + o * (a.in / 2);
  const int64_t half = a.group / 2;
  for (int64_t g0 = 0; g0 < a.in; g0 += a.group, q += half) {
    const float scale = s[g0 / a.group];
    for (int64_t j = 0; j < half; ++j) {
      w[g0 + j] = static_cast<float>((q[j] & 0x0f) - 8) * scale;
      w[g0 + half + j] = static_cast<float>((q[j] >> 4) - 8) * scale;
    }
  }
}

}  // namespace

// Portable path: one dequantized row, then dots with 8 partial sums (any group size).
void qmatmul_outputs_scalar(const QMatmulArgs& a, int64_t o0, int64_t o1) {
  std::vector<float> w(static_cast<size_t>(a.in));
  for (int64_t o = o0; o < o1; ++o) {
    dequantize_row(a, o, w.data());
    for (int64_t m = 0; m < a.rows; ++m) {
      const float* x = a.x + m * a.in;
      float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 8 <= a.in; i += 8) {
        for (int k = 0; k < 8; ++k) part[k] += x[i + k] * w[i + k];
      }
      for (; i < a.in; ++i) part[0] += x[i] * w[i];
      a.y[m * a.out + o] =
          ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    }
  }
}

void for_output_blocks(const QMatmulShape& s, const std::function<void(int64_t, int64_t)>& kernel) {
  // Threads take blocks of 4 outputs (the SIMD kernels' tile), kMinThreadBytes each.
  constexpr int64_t kBlock = 4;
  const int64_t blocks = (s.out + kBlock - 1) / kBlock;
  const int64_t block_bytes = kBlock * qmatmul_weight_bytes(s) / s.out;
  const int64_t grain = std::max<int64_t>(1, kMinThreadBytes / std::max<int64_t>(block_bytes, 1));
  parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
    kernel(b0 * kBlock, std::min(b1 * kBlock, s.out));
  });
}

}  // namespace internal

void check_qmatmul_shape(const QMatmulShape& s) {
  auto fail = [](const std::string& msg) { throw std::invalid_argument(msg); };
  if (s.bits != 8 && s.bits != 4) fail("bits must be 8 or 4; got " + std::to_string(s.bits));
  if (s.rows < 0) fail("rows must be >= 0; got " + std::to_string(s.rows));
  if (s.in <= 0 || s.out <= 0) {
    fail("in and out features must be positive; got in=" + std::to_string(s.in) +
         ", out=" + std::to_string(s.out));
  }
  if (s.group <= 0 || s.in % s.group != 0) {
    fail("group_size (" + std::to_string(s.group) + ") must divide the input size (" +
         std::to_string(s.in) + ")");
  }
  if (s.bits == 4 && s.group % 2 != 0) {
    fail("group_size (" + std::to_string(s.group) + ") must be even for 4 bits");
  }
}

int64_t qmatmul_weight_bytes(const QMatmulShape& s) {
  return s.bits == 8 ? s.out * s.in : s.out * (s.in / 2);
}

void qmatmul(const QMatmulShape& s, const float* x, const void* wq, const float* scales, float* y,
             Activations act) {
  check_qmatmul_shape(s);
  if (s.rows == 0) return;
  if (act == Activations::kInt8 && qmatmul_int8_fits(s)) {
    internal::qmatmul_q8(s, x, wq, scales, y);
    return;
  }
  internal::QMatmulArgs args{x, static_cast<const uint8_t*>(wq), scales, y,
                             s.rows, s.in, s.out, s.group, s.bits};
  auto kernel = internal::qmatmul_outputs_scalar;
  const Isa isa = active_isa();
  if (isa >= Isa::kAvx512 && internal::qmatmul_avx512_fits(s.bits, s.group)) {
    kernel = internal::qmatmul_outputs_avx512;
  } else if (isa >= Isa::kAvx2 && internal::qmatmul_avx2_fits(s.bits, s.group)) {
    kernel = internal::qmatmul_outputs_avx2;
  }
  internal::for_output_blocks(s, [&](int64_t o0, int64_t o1) { kernel(args, o0, o1); });
}

namespace {

void check_panel_shape(const QMatmulShape& s) {
  check_qmatmul_shape(s);
  if (!qmatmul_panel_fits(s)) {
    throw std::invalid_argument(
        "the panel layout takes bits 8 with group_size a multiple of 32; got bits " +
        std::to_string(s.bits) + ", group_size " + std::to_string(s.group));
  }
}

}  // namespace

int64_t qmatmul_panel_count(int64_t out) { return (out + kPanelOutputs - 1) / kPanelOutputs; }

bool qmatmul_panel_fits(const QMatmulShape& s) { return s.bits == 8 && s.group % 32 == 0; }

bool qmatmul_panel_native() { return avx512_vnni(); }

void qmatmul_pack_panels(const QMatmulShape& s, const int8_t* wq, const float* scales,
                         uint8_t* panels, float* panel_scales) {
  check_panel_shape(s);
  const int64_t groups = s.in / s.group;
  for (int64_t p = 0; p < qmatmul_panel_count(s.out); ++p) {
    for (int64_t k = 0; k < kPanelOutputs; ++k) {
      const int64_t o = p * kPanelOutputs + k;
      for (int64_t i = 0; i < s.in; ++i) {
        const int8_t q = o < s.out ? wq[o * s.in + i] : 0;
        panels[(p * (s.in / 4) + i / 4) * 64 + k * 4 + i % 4] = static_cast<uint8_t>(q ^ 0x80);
      }
      for (int64_t g = 0; g < groups; ++g) {
        panel_scales[(p * groups + g) * kPanelOutputs + k] = o < s.out ? scales[o * groups + g] : 0;
      }
    }
  }
}

void qmatmul_panel(const QMatmulShape& s, const float* x, const uint8_t* panels,
                   const float* panel_scales, float* y) {
  check_panel_shape(s);
  if (s.rows == 0) return;
  internal::qmatmul_q8_panel(s, x, panels, panel_scales, y);
}

void qmatmul_reference(const QMatmulShape& s, const float* x, const void* wq, const float* scales,
                       float* y) {
  check_qmatmul_shape(s);
  internal::QMatmulArgs args{x, static_cast<const uint8_t*>(wq), scales, y,
                             s.rows, s.in, s.out, s.group, s.bits};
  std::vector<float> w(static_cast<size_t>(s.in));
  for (int64_t o = 0; o < s.out; ++o) {
    internal::dequantize_row(args, o, w.data());
    for (int64_t m = 0; m < s.rows; ++m) {
      double acc = 0;
      for (int64_t i = 0; i < s.in; ++i) acc += static_cast<double>(x[m * s.in + i]) * w[i];
      y[m * s.out + o] = static_cast<float>(acc);
    }
  }
}

}  // namespace mlforge
