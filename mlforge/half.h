// IEEE binary16 conversions, round-to-nearest-even (numpy's astype(float16) semantics).
#ifndef MLFORGE_HALF_H_
#define MLFORGE_HALF_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mlforge {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_half(float f) {
  uint32_t x = float_bits(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((ax >> 13) & 0x3ffu);
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {
    // Half subnormal: units of 2^-24; the scaling is exact and nearbyint rounds to even.
    float units = std::nearbyint(bits_float(ax) * 16777216.0f);
    return sign | static_cast<uint16_t>(units);
  }
  uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
}

inline float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return bits_float(float_bits(v) | sign);
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// The float nearest to f that a binary16 can hold.
inline float round_to_half(float f) { return half_to_float(float_to_half(f)); }

}  // namespace mlforge

#endif  // MLFORGE_HALF_H_
