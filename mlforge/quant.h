// Affine group-wise quantization, bit-for-bit compatible with mlx.core.quantize
// (mode "affine") and mlx.core.dequantize.
//
// Per group of `group_size` consecutive values in a row, with n = 2^bits - 1:
//   scale = max((max - min) / n, 1e-7), negated unless |min| > |max|
//   edge  = |min| > |max| ? min : max;  q0 = rint(edge / scale)
//   if q0 != 0: scale = edge / q0, bias = edge   else: bias = 0
//   q = clamp(rint((w - bias) / scale), 0, n)     dequantized: scale * q + bias
// q values form a little-endian bit stream, read as uint32 words (3, 5 and 6 bits
// straddle words). Rows of `cols` values pack into cols * bits / 32 words.
#ifndef MLFORGE_QUANT_H_
#define MLFORGE_QUANT_H_

#include <cstdint>

namespace mlforge {

// Throws std::invalid_argument naming `group_size` or `bits` when unsupported.
void check_affine_params(int group_size, int bits);

// uint32 words per packed row.
inline int64_t affine_packed_cols(int64_t cols, int bits) { return cols * bits / 32; }

// Quantizes the row-major (rows, cols) matrix w into wq (rows, packed_cols),
// scales and biases (rows, cols / group_size). Throws std::invalid_argument naming
// `w` for empty input, a column count not divisible by group_size, or NaN/Inf values.
void affine_quantize(const float* w, int64_t rows, int64_t cols, int group_size, int bits,
                     uint32_t* wq, float* scales, float* biases);

// The column count of the matrix that (wq, scales) describe; throws
// std::invalid_argument naming `wq` or `scales` when their shapes disagree.
int64_t affine_dequantized_cols(int64_t packed_cols, int64_t scale_cols, int group_size, int bits);

// Inverse of affine_quantize into out (rows, cols). With half_precision, every
// arithmetic step is rounded to binary16, as MLX does for float16 scales.
void affine_dequantize(const uint32_t* wq, const float* scales, const float* biases, int64_t rows,
                       int64_t cols, int group_size, int bits, float* out,
                       bool half_precision = false);

}  // namespace mlforge

#endif  // MLFORGE_QUANT_H_
