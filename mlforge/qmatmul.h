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
// Products q * scale are rounded to float before the dot, exactly as a float reference
// `x @ (q * scale)` does, so results differ from it only in summation order.
#ifndef MLFORGE_QMATMUL_H_
#define MLFORGE_QMATMUL_H_

#include <cstdint>

namespace mlforge {

struct QMatmulShape {
  int64_t rows;      // M: activation rows (any; the kernel is tuned for 1..8)
  int64_t in;        // I: input features
  int64_t out;       // O: output features
  int bits;          // 8 or 4
  int64_t group;     // inputs per scale; divides `in` (even for 4 bits)
};

// Throws std::invalid_argument naming the bad field.
void check_qmatmul_shape(const QMatmulShape& s);

// Bytes of wq for the shape: out * in (8 bits) or out * in / 2 (4 bits).
int64_t qmatmul_weight_bytes(const QMatmulShape& s);

// x (rows, in) float32, wq as above, scales (out, in / group) float32 -> y (rows, out).
// Threads over output rows with parallel_for; SIMD level from active_isa().
void qmatmul(const QMatmulShape& s, const float* x, const void* wq, const float* scales, float* y);

// Single-threaded scalar definition of the same result, for tests.
void qmatmul_reference(const QMatmulShape& s, const float* x, const void* wq, const float* scales,
                       float* y);

}  // namespace mlforge

#endif  // MLFORGE_QMATMUL_H_
