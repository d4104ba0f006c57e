// Weight-only quantized matrix multiply for decode: y (M, O) = x (M, I) @ W^T, small M.
//
// W is stored output-major, one contiguous row of I values per output, so every output
// is a streamed dot product (decode is memory-bound: the kernel reads each weight byte
// once per call). Symmetric per-group scales, W[o, i] = q[o, i] * scales[o, i / group]:
//   bits 8: wq int8 (O, I), q = wq.
//   bits 4: wq uint8 (O, I / 2). Within each group of `group` inputs, byte j holds
//           input j in its low nibble and input j + group / 2 in its high nibble, both
//           stored as q + 8 (q in [-8, 7]). Halves of a group unpack with one mask and
//           one shift, no interleave.
// Activations::kFloat: products q * scale are rounded to float before the dot, exactly
// as a float reference `x @ (q * scale)` does, so results differ from it only in
// summation order.
// Activations::kInt8 (llama.cpp's Q8_0 x Q8_0/Q4 dots): each row of x is quantized per
// block of 32 inputs, d[m, b] = max|x| / 127 and xq = rint(x / d) (float32, ties to even;
// d = 0 gives xq = 0), then
//   y[m, o] = sum_g scales[o, g] * sum_{b in g} d[m, b] * sum_{i in b} xq[m, i] * q[o, i]
// with the innermost sums exact in int32 (AVX-512 VNNI, AVX-VNNI or AVX2 maddubs). It
// needs whole blocks per group (qmatmul_int8_fits: int8 group % 32 == 0, int4 group 32 or
// a multiple of 64); other shapes run the float path.
#ifndef MLFORGE_QMATMUL_H_
#define MLFORGE_QMATMUL_H_

#include <cstdint>

namespace mlforge {

struct QMatmulShape {
  int64_t rows;      // M: activation rows (any; tuned for decode and prefill chunks)
  int64_t in;        // I: input features
  int64_t out;       // O: output features
  int bits;          // 8 or 4
  int64_t group;     // inputs per scale; divides `in` (even for 4 bits)
};

// Throws std::invalid_argument naming the bad field.
void check_qmatmul_shape(const QMatmulShape& s);

// Bytes of wq for the shape: out * in (8 bits) or out * in / 2 (4 bits).
int64_t qmatmul_weight_bytes(const QMatmulShape& s);

enum class Activations { kFloat, kInt8 };

// Whether Activations::kInt8 takes the shape (else it runs the float path).
bool qmatmul_int8_fits(const QMatmulShape& s);

// The kernel kInt8 runs now: "avx512_vnni", "avx_vnni", "avx2" (maddubs) or "scalar".
const char* qmatmul_int8_kernel();

// x (rows, in) float32, wq as above, scales (out, in / group) float32 -> y (rows, out).
// Threads over output rows with parallel_for; SIMD level from active_isa() (and, for
// kInt8, avx512_vnni() / avx_vnni()).
void qmatmul(const QMatmulShape& s, const float* x, const void* wq, const float* scales, float* y,
             Activations act = Activations::kFloat);

// Panel layout (int8 weights, Activations::kInt8, group % 32 == 0): the weights rearranged
// once, when a model is quantized, so that a decode call streams them contiguously with
// one output per SIMD lane: no per-call transpose, no horizontal sums (about 5x fewer
// instructions per weight byte than the row layout's one-row kernel). Outputs go in
// panels of kPanelOutputs, `out` padded up to whole panels with zero rows:
//   panels u8 (P, in / 4, 16, 4): byte e of lane k of word j of panel p is
//     q[16 p + k, 4 j + e] + 128 (q ^ 0x80, the unsigned operand of vpdpbusd);
//   panel_scales f32 (P, in / group, 16): scales[16 p + k, g], 0 for padding rows.
// qmatmul_panel gives exactly (bit for bit) what qmatmul(..., Activations::kInt8) gives on
// the row layout where the CPU has AVX-512 VNNI; elsewhere it runs a portable loop.
constexpr int64_t kPanelOutputs = 16;

// Panels for `out` outputs: ceil(out / 16).
int64_t qmatmul_panel_count(int64_t out);

// Whether the panel layout takes the shape: bits 8 and group % 32 == 0.
bool qmatmul_panel_fits(const QMatmulShape& s);

// Whether qmatmul_panel runs a SIMD kernel on this CPU (AVX-512 VNNI), not the portable loop.
bool qmatmul_panel_native();

// Row layout (wq int8 (out, in), scales (out, in / group)) -> panel layout.
void qmatmul_pack_panels(const QMatmulShape& s, const int8_t* wq, const float* scales,
                         uint8_t* panels, float* panel_scales);

// x (rows, in) float32 -> y (rows, out), int8 activations as Activations::kInt8.
// Throws std::invalid_argument when the shape does not fit the panel layout.
void qmatmul_panel(const QMatmulShape& s, const float* x, const uint8_t* panels,
                   const float* panel_scales, float* y);

// Single-threaded scalar definition of the kFloat result, for tests.
void qmatmul_reference(const QMatmulShape& s, const float* x, const void* wq, const float* scales,
                       float* y);

}  // namespace mlforge

#endif  // MLFORGE_QMATMUL_H_
