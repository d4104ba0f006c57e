// Activations::kInt8 of qmatmul: quantizes x to int8 blocks of 32 (as llama.cpp's Q8_0),
// picks the integer-dot kernel for this CPU and threads it over outputs. The portable
// kernel is here; the x86 ones are in qmatmul_q8_x86.cc.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mlforge/cpu_features.h"
#include "mlforge/parallel.h"
#include "mlforge/qmatmul.h"
#include "mlforge/qmatmul_kernels.h"

namespace mlforge {
namespace internal {
namespace {

constexpr int64_t kBlock = 32;

using Q8Kernel = void (*)(const Q8Args&, int64_t, int64_t);

struct Q8Choice {
  const char* name;
  Q8Kernel kernel;
};

Q8Choice choose_q8() {
  if (avx512_vnni()) return {"avx512_vnni", q8_outputs_avx512_vnni};
  if (avx_vnni()) return {"avx_vnni", q8_outputs_avx_vnni};
  if (active_isa() >= Isa::kAvx2) return {"avx2", q8_outputs_avx2};
  return {"scalar", q8_outputs_scalar};
}

}  // namespace

// One block of x into its slot of xq / xd / xc (layout in qmatmul_kernels.h). A block
// holding a NaN or infinity gets d = NaN, so the outputs are NaN as the float path's are.
void q8_quantize_block_scalar(const float* xb, int32_t offset, int8_t* q, float* xd,
                              int32_t* xc) {
  float amax = 0;
  bool finite = true;
  for (int64_t i = 0; i < kBlock; ++i) {
    amax = std::fmax(amax, std::fabs(xb[i]));
    finite = finite && std::isfinite(xb[i]);
  }
  const float d = finite ? amax / 127.0f : NAN;
  for (int64_t i = 0; i < kBlock; ++i) {
    const float r = d > 0 ? std::nearbyint(xb[i] / d) : 0.0f;  // |r| <= 127 by construction
    q[i] = static_cast<int8_t>(std::fmax(-127.0f, std::fmin(127.0f, r)));
  }
  for (int64_t l = 0; l < kBlock / 4; ++l) {
    xd[l] = d;
    xc[l] = -offset * (q[4 * l] + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3]);
  }
}

namespace {

void quantize_row(const QMatmulShape& s, const float* x, int8_t* xq, float* xd, int32_t* xc,
                  int32_t* xs) {
  const int64_t per_group = s.group / kBlock;
  const int32_t offset = s.bits == 8 ? 128 : 8;
  const auto block = active_isa() >= Isa::kAvx2 ? q8_quantize_block_avx2 : q8_quantize_block_scalar;
  for (int64_t b = 0; b < s.in / kBlock; ++b) {
    const int64_t slot = b - b % per_group + q8_block_slot(s.bits, s.group, b % per_group);
    block(x + b * kBlock, offset, xq + slot * kBlock, xd + slot * 8, xc + slot * 8);
  }
  for (int64_t b = 0; b < s.in / kBlock; ++b) {
    xs[b] = 0;
    for (int64_t l = 0; l < 8; ++l) xs[b] += xc[b * 8 + l];
  }
}

// Row o of the weights as signed q, in the kernels' block order.
void unpack_row(const Q8Args& a, int64_t o, int8_t* q) {
  if (a.bits == 8) {
    const int8_t* w = reinterpret_cast<const int8_t*>(a.wq) + o * a.in;
    for (int64_t i = 0; i < a.in; ++i) q[i] = w[i];
    return;
  }
  const uint8_t* w = a.wq + o * (a.in / 2);
  const int64_t half = a.group / 2;
  for (int64_t g0 = 0; g0 < a.in; g0 += a.group, w += half) {
    if (a.group == kBlock) {  // one block: low nibbles are inputs 0..15, high 16..31
      for (int64_t j = 0; j < 16; ++j) {
        q[g0 + j] = static_cast<int8_t>((w[j] & 0x0f) - 8);
        q[g0 + 16 + j] = static_cast<int8_t>((w[j] >> 4) - 8);
      }
      continue;
    }
    for (int64_t k = 0; k < half; k += kBlock) {  // 32 bytes: two blocks, side by side
      for (int64_t j = 0; j < kBlock; ++j) {
        q[g0 + 2 * k + j] = static_cast<int8_t>((w[k + j] & 0x0f) - 8);
        q[g0 + 2 * k + kBlock + j] = static_cast<int8_t>((w[k + j] >> 4) - 8);
      }
    }
  }
}

}  // namespace

void q8_outputs_scalar(const Q8Args& a, int64_t o0, int64_t o1) {
  std::vector<int8_t> q(static_cast<size_t>(a.in));
  for (int64_t o = o0; o < o1; ++o) {
    unpack_row(a, o, q.data());
    const float* ws = a.scales + o * (a.in / a.group);
    for (int64_t m = 0; m < a.rows; ++m) {
      const int8_t* xq = a.xq + m * a.in;
      const float* xd = a.xd + m * (a.in / 4);
      float acc = 0;
      for (int64_t g0 = 0; g0 < a.in; g0 += a.group) {
        float t = 0;
        for (int64_t b0 = g0; b0 < g0 + a.group; b0 += kBlock) {
          int32_t dot = 0;
          for (int64_t i = b0; i < b0 + kBlock; ++i) dot += xq[i] * q[i];
          t += static_cast<float>(dot) * xd[b0 / 4];
        }
        acc += t * ws[g0 / a.group];
      }
      a.y[m * a.out + o] = acc;
    }
  }
}

namespace {

// Quantizes every row of x into this thread's buffer (in bytes of xq, in / 4 floats of xd,
// in / 4 int32 of xc and in / 32 of xs per row). Reused: decode calls this hundreds of
// times per token. The returned args point into it until the thread's next call.
Q8Args quantize_rows(const QMatmulShape& s, const float* x, const uint8_t* wq, const float* scales,
                     float* y) {
  thread_local std::vector<int32_t> buf;
  const int64_t lanes = s.rows * (s.in / 4), blocks = s.rows * (s.in / kBlock);
  buf.resize(static_cast<size_t>(3 * lanes + blocks));
  int8_t* xq = reinterpret_cast<int8_t*>(buf.data());
  float* xd = reinterpret_cast<float*>(buf.data() + lanes);
  int32_t* xc = buf.data() + 2 * lanes;
  int32_t* xs = buf.data() + 3 * lanes;
  for (int64_t m = 0; m < s.rows; ++m) {
    quantize_row(s, x + m * s.in, xq + m * s.in, xd + m * (s.in / 4), xc + m * (s.in / 4),
                 xs + m * (s.in / kBlock));
  }
  return Q8Args{xq, xd, xc, xs, wq, scales, y, s.rows, s.in, s.out, s.group, s.bits};
}

}  // namespace

void qmatmul_q8(const QMatmulShape& s, const float* x, const void* wq, const float* scales,
                float* y) {
  const Q8Args args = quantize_rows(s, x, static_cast<const uint8_t*>(wq), scales, y);
  const Q8Kernel kernel = choose_q8().kernel;
  for_output_blocks(s, [&](int64_t o0, int64_t o1) { kernel(args, o0, o1); });
}

// The portable panel kernel: the same integer block dots and the same fused float steps
// (std::fma) as the AVX-512 one, so the two agree bit for bit.
void q8_panels_scalar(const Q8Args& a, int64_t p0, int64_t p1) {
  const int64_t groups = a.in / a.group, per_group = a.group / kBlock;
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* w = a.wq + p * kPanelOutputs * a.in;
    const float* ps = a.scales + p * groups * kPanelOutputs;
    for (int64_t k = 0; k < kPanelOutputs && p * kPanelOutputs + k < a.out; ++k) {
      for (int64_t m = 0; m < a.rows; ++m) {
        const int8_t* xq = a.xq + m * a.in;
        const float* xd = a.xd + m * (a.in / 4);
        float acc = 0, t = 0;
        for (int64_t b = 0; b < a.in / kBlock; ++b) {
          int32_t dot = 0;
          for (int64_t i = b * kBlock; i < (b + 1) * kBlock; ++i) {
            const int32_t q = static_cast<int32_t>(w[(i / 4) * 64 + k * 4 + i % 4]) - 128;
            dot += xq[i] * q;
          }
          t = std::fma(static_cast<float>(dot), xd[b * 8], t);
          if ((b + 1) % per_group == 0) {
            acc = std::fma(t, ps[(b / per_group) * kPanelOutputs + k], acc);
            t = 0;
          }
        }
        a.y[m * a.out + p * kPanelOutputs + k] = acc;
      }
    }
  }
}

void qmatmul_q8_panel(const QMatmulShape& s, const float* x, const uint8_t* panels,
                      const float* panel_scales, float* y) {
  const Q8Args args = quantize_rows(s, x, panels, panel_scales, y);
  const auto kernel = avx512_vnni() ? q8_panels_avx512_vnni : q8_panels_scalar;
  // Threads take whole panels, kMinThreadBytes of weights each.
  const int64_t grain = std::max<int64_t>(1, kMinThreadBytes / (kPanelOutputs * s.in));
  parallel_for(qmatmul_panel_count(s.out), grain,
               [&](int64_t p0, int64_t p1) { kernel(args, p0, p1); });
}

}  // namespace internal

bool qmatmul_int8_fits(const QMatmulShape& s) {
  // int4 packs inputs j and j + group / 2 in a byte: blocks align for 32 or 64k only.
  return s.bits == 8 ? s.group % 32 == 0 : s.group == 32 || s.group % 64 == 0;
}

const char* qmatmul_int8_kernel() { return internal::choose_q8().name; }

}  // namespace mlforge
