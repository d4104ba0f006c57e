// GGUF (ggml) block codecs Q8_0, Q4_0 and Q4_1, byte-equal to gguf.quants (gguf-py).
//
// Every block holds 32 values; its float16 fields are little-endian:
//   Q8_0 (34 bytes): d, then 32 int8 q;           x = d * q,        d = amax / 127
//   Q4_0 (18 bytes): d, then 16 bytes of nibbles;  x = d * (q - 8),  d = max / -8
//   Q4_1 (20 bytes): d, m, then 16 bytes;          x = d * q + m,    d = (max - min) / 15
// Nibbles: byte j holds value j in its low half and value j + 16 in its high half.
#ifndef MLFORGE_GGUF_CODEC_H_
#define MLFORGE_GGUF_CODEC_H_

#include <cstdint>
#include <string>

namespace mlforge {

// Values are ggml's type ids (gguf.GGMLQuantizationType).
enum class GgufType : int { kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8 };

struct GgufTypeInfo {
  const char* name;
  int block_size;  // values per block
  int type_size;   // bytes per block
};

GgufTypeInfo gguf_type_info(GgufType type);

// Parse "Q8_0" / "q4_0" / ... or a ggml type id; throws std::invalid_argument naming
// `qtype` for anything unsupported.
GgufType gguf_type_from_name(const std::string& name);
GgufType gguf_type_from_id(int64_t id);

// Quantizes n floats (n a positive multiple of 32) into n / 32 blocks at out.
// Throws std::invalid_argument naming `x` for a bad n or NaN/Inf values.
void gguf_quantize(const float* x, int64_t n, GgufType type, uint8_t* out);

// Decodes nbytes (a positive multiple of the block size) into nbytes / type_size * 32
// floats at out. Throws std::invalid_argument naming `data` for a bad nbytes.
void gguf_dequantize(const uint8_t* data, int64_t nbytes, GgufType type, float* out);

}  // namespace mlforge

#endif  // MLFORGE_GGUF_CODEC_H_
