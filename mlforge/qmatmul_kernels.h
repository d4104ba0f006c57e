// Internal: the per-instruction-set entry points of qmatmul. Included by qmatmul*.cc only.
#ifndef MLFORGE_QMATMUL_KERNELS_H_
#define MLFORGE_QMATMUL_KERNELS_H_

#include <cstdint>
#include <functional>

#include "mlforge/qmatmul.h"

namespace mlforge {
namespace internal {

struct QMatmulArgs {
  const float* x;       // (rows, in)
  const uint8_t* wq;    // (out, in * bits / 8), see qmatmul.h
  const float* scales;  // (out, in / group)
  float* y;             // (rows, out)
  int64_t rows, in, out, group;
  int bits;
};

// Each computes y[:, o0:o1] for all rows.
void qmatmul_outputs_scalar(const QMatmulArgs& a, int64_t o0, int64_t o1);
void qmatmul_outputs_avx2(const QMatmulArgs& a, int64_t o0, int64_t o1);
void qmatmul_outputs_avx512(const QMatmulArgs& a, int64_t o0, int64_t o1);

// Weight bytes a thread must have to read before waking a second core pays for itself.
constexpr int64_t kMinThreadBytes = 48 << 10;

// Calls kernel(o0, o1) over blocks of outputs, across threads when the weights are big
// enough to pay for waking them (kMinThreadBytes each).
void for_output_blocks(const QMatmulShape& s, const std::function<void(int64_t, int64_t)>& kernel);

// Whether the SIMD kernels take this group size (the scalar one takes any valid shape).
inline bool qmatmul_avx2_fits(int bits, int64_t group) {
  return bits == 8 ? group % 8 == 0 : group % 16 == 0;
}
inline bool qmatmul_avx512_fits(int bits, int64_t group) {
  return bits == 8 ? group % 16 == 0 : group % 32 == 0;
}

// Weight rows are short (I bytes) and read a few at a time, interleaved: the hardware
// prefetchers do not follow that well (measured: ~4 GB/s from DRAM without software
// prefetch, 15-25 with). Loads prefetch the same position in a tile >= ~6 KB ahead.
inline int64_t prefetch_distance(int64_t tile_bytes) {
  constexpr int64_t kAheadBytes = 6 << 10;
  return tile_bytes * ((kAheadBytes + tile_bytes - 1) / tile_bytes);
}

// ---- int8 activations (Activations::kInt8) ----

// Activations quantized by qmatmul_q8 before the kernels run, per row, in the order the
// kernels consume 32-input blocks: natural, except int4 groups of 64+ where each 32
// packed bytes unpack to block j (low nibbles) and block j + group / 64 (high), so those
// two are stored next to each other. Per 4 inputs (one int32 lane of vpdpbusd):
//   xd: the block's scale d; xc: -offset * (sum of the 4 xq), offset 128 for int8
//   weights (fed to vpdpbusd as unsigned q ^ 0x80 = q + 128) and 8 for int4 (nibbles are
//   q + 8), so a dot started from xc gives sum xq * q exactly.
// xs: per block slot, the sum of its 8 xc lanes (where a whole block's dot starts).
struct Q8Args {
  const int8_t* xq;   // (rows, in)
  const float* xd;    // (rows, in / 4)
  const int32_t* xc;  // (rows, in / 4)
  const int32_t* xs;  // (rows, in / 32)
  const uint8_t* wq;  // as QMatmulArgs
  const float* scales;
  float* y;
  int64_t rows, in, out, group;
  int bits;
};

// Position, in kernel order within its group, of the group's natural block b.
inline int64_t q8_block_slot(int bits, int64_t group, int64_t b) {
  const int64_t half = group / 64;  // blocks per half group (int4, group >= 64)
  if (bits == 8 || half == 0) return b;
  return b < half ? 2 * b : 2 * (b - half) + 1;
}

// Quantizes x and runs the best integer kernel (s must fit: group % 32 == 0).
void qmatmul_q8(const QMatmulShape& s, const float* x, const void* wq, const float* scales,
                float* y);

// One block of 32 x into its slot: 32 xq, and 8 lanes each of xd and xc. The AVX2 one
// gives the same bytes (IEEE division, ties-to-even rounding), scalar for non-finite x.
void q8_quantize_block_scalar(const float* x, int32_t offset, int8_t* xq, float* xd, int32_t* xc);
void q8_quantize_block_avx2(const float* x, int32_t offset, int8_t* xq, float* xd, int32_t* xc);

// Each computes y[:, o0:o1] for all rows from prepared Q8Args.
void q8_outputs_scalar(const Q8Args& a, int64_t o0, int64_t o1);
void q8_outputs_avx2(const Q8Args& a, int64_t o0, int64_t o1);      // maddubs
void q8_outputs_avx_vnni(const Q8Args& a, int64_t o0, int64_t o1);  // VEX vpdpbusd
void q8_outputs_avx512_vnni(const Q8Args& a, int64_t o0, int64_t o1);

// Panel layout (qmatmul.h): y[:, 16 p0 : 16 p1] (clipped to out) for all rows, from
// prepared Q8Args whose wq / scales are the panels / panel_scales.
void q8_panels_scalar(const Q8Args& a, int64_t p0, int64_t p1);
void q8_panels_avx512_vnni(const Q8Args& a, int64_t p0, int64_t p1);

// Quantizes x and runs the panel kernel (s must fit qmatmul_panel_fits).
void qmatmul_q8_panel(const QMatmulShape& s, const float* x, const uint8_t* panels,
                      const float* panel_scales, float* y);

}  // namespace internal
}  // namespace mlforge

#endif  // MLFORGE_QMATMUL_KERNELS_H_
