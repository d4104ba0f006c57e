#include "mlforge/gguf_codec.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "mlforge/half.h"
#include "mlforge/parallel.h"

namespace mlforge {
namespace {

constexpr int kBlock = 32;
constexpr int64_t kGrainBlocks = 4096;  // ~128K values per thread chunk

inline void store_half(uint8_t* p, float f) {
  uint16_t h = float_to_half(f);
  std::memcpy(p, &h, 2);
}

inline float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

inline bool all_finite(const float* x) {
  uint32_t bad = 0;
  for (int i = 0; i < kBlock; ++i) bad |= (float_bits(x[i]) & 0x7f800000u) == 0x7f800000u;
  return bad == 0;
}

// clip(trunc(t), 0, 15) as gguf-py computes it (NaN from inf - inf gives 0). Clamping
// first keeps the int conversion in range; it then truncates, and it vectorizes.
inline uint8_t clamp_trunc15(float t) {
  t = t >= 0.0f ? t : 0.0f;
  t = t < 15.0f ? t : 15.0f;
  return static_cast<uint8_t>(static_cast<int32_t>(t));
}

// The reciprocal gguf-py multiplies by: 0 for an all-zero block.
inline float inverse(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

void quantize_q8_0(const float* x, uint8_t* out) {
  float amax = 0.0f;
  for (int i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  float d = amax / 127.0f;
  float id = inverse(d);
  store_half(out, d);
  int8_t q[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    // Round half away from zero (ggml's roundf). |t| <= ~127, so the truncating
    // conversion is exact and a - whole is the exact fraction; this form vectorizes.
    float t = x[i] * id;
    float a = std::fabs(t);
    int32_t whole = static_cast<int32_t>(a);
    int32_t r = whole + (a - static_cast<float>(whole) >= 0.5f ? 1 : 0);
    q[i] = static_cast<int8_t>(t < 0.0f ? -r : r);
  }
  std::memcpy(out + 2, q, kBlock);
}

void quantize_q4_0(const float* x, uint8_t* out) {
  // The signed value of largest magnitude; the first one wins ties.
  float amax = std::fabs(x[0]), max = x[0];
  for (int i = 1; i < kBlock; ++i) {
    float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      max = x[i];
    }
  }
  float d = max / -8.0f;
  float id = inverse(d);
  store_half(out, d);
  uint8_t q[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    float t = x[i] * id + 8.5f;
    q[i] = clamp_trunc15(t);
  }
  for (int j = 0; j < kBlock / 2; ++j) out[2 + j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}

void quantize_q4_1(const float* x, uint8_t* out) {
  // Among equal extremes the last wins, as in numpy's min/max: it decides the sign of
  // a zero min (and of d) in blocks that mix +0.0 and -0.0.
  float lo = x[0], hi = x[0];
  for (int i = 1; i < kBlock; ++i) {
    lo = x[i] <= lo ? x[i] : lo;
    hi = x[i] >= hi ? x[i] : hi;
  }
  float d = (hi - lo) / 15.0f;
  float id = inverse(d);
  store_half(out, d);
  store_half(out + 2, lo);
  uint8_t q[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    float t = (x[i] - lo) * id + 0.5f;
    q[i] = clamp_trunc15(t);
  }
  for (int j = 0; j < kBlock / 2; ++j) out[4 + j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}

void dequantize_q8_0(const uint8_t* in, float* out) {
  float d = load_half(in);
  for (int i = 0; i < kBlock; ++i) out[i] = static_cast<float>(static_cast<int8_t>(in[2 + i])) * d;
}

void dequantize_q4_0(const uint8_t* in, float* out) {
  float d = load_half(in);
  for (int j = 0; j < kBlock / 2; ++j) {
    out[j] = d * static_cast<float>((in[2 + j] & 0x0f) - 8);
    out[j + 16] = d * static_cast<float>((in[2 + j] >> 4) - 8);
  }
}

void dequantize_q4_1(const uint8_t* in, float* out) {
  float d = load_half(in), m = load_half(in + 2);
  for (int j = 0; j < kBlock / 2; ++j) {
    out[j] = d * static_cast<float>(in[4 + j] & 0x0f) + m;
    out[j + 16] = d * static_cast<float>(in[4 + j] >> 4) + m;
  }
}

}  // namespace

GgufTypeInfo gguf_type_info(GgufType type) {
  switch (type) {
    case GgufType::kQ4_0:
      return {"Q4_0", kBlock, 18};
    case GgufType::kQ4_1:
      return {"Q4_1", kBlock, 20};
    default:
      return {"Q8_0", kBlock, 34};
  }
}

GgufType gguf_type_from_name(const std::string& name) {
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper == "Q8_0") return GgufType::kQ8_0;
  if (upper == "Q4_0") return GgufType::kQ4_0;
  if (upper == "Q4_1") return GgufType::kQ4_1;
  throw std::invalid_argument("qtype must be \"Q8_0\", \"Q4_0\" or \"Q4_1\"; got \"" + name + "\"");
}

GgufType gguf_type_from_id(int64_t id) {
  if (id == 8) return GgufType::kQ8_0;
  if (id == 2) return GgufType::kQ4_0;
  if (id == 3) return GgufType::kQ4_1;
  throw std::invalid_argument("qtype must be Q8_0 (8), Q4_0 (2) or Q4_1 (3); got type id " +
                              std::to_string(id));
}

void gguf_quantize(const float* x, int64_t n, GgufType type, uint8_t* out) {
  if (n <= 0 || n % kBlock != 0) {
    throw std::invalid_argument("x must hold a positive multiple of 32 values per row; got " +
                                std::to_string(n) + " values");
  }
  const int type_size = gguf_type_info(type).type_size;
  auto block_fn = type == GgufType::kQ8_0   ? quantize_q8_0
                  : type == GgufType::kQ4_0 ? quantize_q4_0
                                            : quantize_q4_1;
  const int64_t blocks = n / kBlock;
  std::atomic<int64_t> bad{blocks};
  parallel_for(blocks, kGrainBlocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (!all_finite(x + b * kBlock)) {
        int64_t seen = bad.load();
        while (b < seen && !bad.compare_exchange_weak(seen, b)) {
        }
        return;
      }
      block_fn(x + b * kBlock, out + b * type_size);
    }
  });
  if (bad.load() < blocks) {
    throw std::invalid_argument("x contains NaN or Inf (first near flat index " +
                                std::to_string(bad.load() * kBlock) +
                                "); quantize needs finite values");
  }
}

void gguf_dequantize(const uint8_t* data, int64_t nbytes, GgufType type, float* out) {
  const GgufTypeInfo info = gguf_type_info(type);
  if (nbytes <= 0 || nbytes % info.type_size != 0) {
    throw std::invalid_argument("data must hold a positive multiple of " +
                                std::to_string(info.type_size) + " bytes (one " + info.name +
                                " block) per row; got " + std::to_string(nbytes));
  }
  auto block_fn = type == GgufType::kQ8_0   ? dequantize_q8_0
                  : type == GgufType::kQ4_0 ? dequantize_q4_0
                                            : dequantize_q4_1;
  const int64_t blocks = nbytes / info.type_size;
  parallel_for(blocks, kGrainBlocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) block_fn(data + b * info.type_size, out + b * kBlock);
  });
}

}  // namespace mlforge
