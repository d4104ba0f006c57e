#include "mlforge/gguf_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlforge/half.h"

namespace mlforge {
namespace {

TEST(Half, KnownConversions) {
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);  // the tie rounds to even: infinity
  EXPECT_EQ(float_to_half(1e10f), 0x7c00);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);         // tie to even
  EXPECT_EQ(float_to_half(std::ldexp(3.0f, -25)), 0x0002);         // tie to even
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -14)), 0x0400);         // smallest normal
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(3.0f, -11)), 0x3c02);
  EXPECT_EQ(float_to_half(-0.0f), 0x8000);
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::quiet_NaN()) & 0x7e00, 0x7e00);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(half_to_float(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(half_to_float(0xfc00)));
}

TEST(Half, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) continue;  // NaN payloads
    EXPECT_EQ(float_to_half(half_to_float(static_cast<uint16_t>(h))), h);
  }
}

TEST(Half, MidpointsRoundToEven) {
  // Between consecutive halves a and b, the midpoint goes to the even one, and one
  // float ulp either side goes to the nearer one.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    float a = half_to_float(static_cast<uint16_t>(h));
    float b = half_to_float(static_cast<uint16_t>(h + 1));
    float mid = a + (b - a) / 2;
    uint16_t even = (h % 2 == 0) ? h : h + 1;
    ASSERT_EQ(float_to_half(mid), even) << h;
    ASSERT_EQ(float_to_half(std::nextafter(mid, 0.0f)), h) << h;
    ASSERT_EQ(float_to_half(std::nextafter(mid, 1e9f)), h + 1) << h;
  }
}

std::vector<float> random_blocks(int64_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(gen);
  return x;
}

TEST(GgufCodec, TypeInfoAndParsing) {
  EXPECT_EQ(gguf_type_info(GgufType::kQ8_0).type_size, 34);
  EXPECT_EQ(gguf_type_info(GgufType::kQ4_0).type_size, 18);
  EXPECT_EQ(gguf_type_info(GgufType::kQ4_1).type_size, 20);
  EXPECT_EQ(gguf_type_from_name("q4_1"), GgufType::kQ4_1);
  EXPECT_EQ(gguf_type_from_id(8), GgufType::kQ8_0);
  EXPECT_THROW(gguf_type_from_name("Q5_K"), std::invalid_argument);
  EXPECT_THROW(gguf_type_from_id(0), std::invalid_argument);
}

TEST(GgufCodec, Q8_0KnownBlock) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i - 16) / 16.0f * 127.0f;  // amax 127
  uint8_t out[34];
  gguf_quantize(x.data(), 32, GgufType::kQ8_0, out);
  uint16_t d;
  std::memcpy(&d, out, 2);
  EXPECT_EQ(d, 0x3c00);  // d = 1
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(static_cast<int8_t>(out[2 + i]), static_cast<int>(std::round(x[i]))) << i;
  }
}

TEST(GgufCodec, Q4_0UsesSignedMaxAndNibbleOrder) {
  std::vector<float> x(32, 0.0f);
  x[3] = -8.0f;  // largest magnitude, negative: d = -8 / -8 = 1
  x[20] = 7.0f;
  uint8_t out[18];
  gguf_quantize(x.data(), 32, GgufType::kQ4_0, out);
  uint16_t d;
  std::memcpy(&d, out, 2);
  EXPECT_EQ(d, 0x3c00);
  EXPECT_EQ(out[2 + 3] & 0x0f, 0);  // -8 -> 0
  EXPECT_EQ(out[2 + 4] >> 4, 15);   // x[20] = 7 -> 15, high nibble of byte 4
  EXPECT_EQ(out[2 + 0] & 0x0f, 8);  // 0 -> 8
  std::vector<float> back(32);
  gguf_dequantize(out, 18, GgufType::kQ4_0, back.data());
  EXPECT_EQ(back[3], -8.0f);
  EXPECT_EQ(back[20], 7.0f);
  EXPECT_EQ(back[0], 0.0f);
}

TEST(GgufCodec, ZeroBlocks) {
  std::vector<float> x(64, 0.0f), back(64, 1.0f);
  for (GgufType t : {GgufType::kQ8_0, GgufType::kQ4_0, GgufType::kQ4_1}) {
    std::vector<uint8_t> out(2 * gguf_type_info(t).type_size);
    gguf_quantize(x.data(), 64, t, out.data());
    gguf_dequantize(out.data(), static_cast<int64_t>(out.size()), t, back.data());
    for (float v : back) EXPECT_EQ(v, 0.0f);
  }
}

TEST(GgufCodec, RoundTripErrorBounds) {
  const int64_t n = 32 * 4096;  // enough blocks to run on several threads
  const std::vector<float> x = random_blocks(n, 5);
  for (GgufType t : {GgufType::kQ8_0, GgufType::kQ4_0, GgufType::kQ4_1}) {
    std::vector<uint8_t> q(static_cast<size_t>(n / 32 * gguf_type_info(t).type_size));
    std::vector<float> back(static_cast<size_t>(n));
    gguf_quantize(x.data(), n, t, q.data());
    gguf_dequantize(q.data(), static_cast<int64_t>(q.size()), t, back.data());
    for (int64_t b = 0; b < n / 32; ++b) {
      float lo = x[b * 32], hi = x[b * 32], amax = 0;
      for (int i = 0; i < 32; ++i) {
        lo = std::min(lo, x[b * 32 + i]);
        hi = std::max(hi, x[b * 32 + i]);
        amax = std::max(amax, std::fabs(x[b * 32 + i]));
      }
      float step = t == GgufType::kQ8_0   ? amax / 127
                   : t == GgufType::kQ4_0 ? amax / 8
                                          : (hi - lo) / 15;
      for (int i = 0; i < 32; ++i) {
        ASSERT_LE(std::fabs(back[b * 32 + i] - x[b * 32 + i]), step * 1.01f + 1e-3f)
            << gguf_type_info(t).name << " block " << b;
      }
    }
  }
}

TEST(GgufCodec, RejectsBadInput) {
  std::vector<float> x(64, 1.0f);
  std::vector<uint8_t> out(200);
  EXPECT_THROW(gguf_quantize(x.data(), 48, GgufType::kQ8_0, out.data()), std::invalid_argument);
  EXPECT_THROW(gguf_quantize(x.data(), 0, GgufType::kQ8_0, out.data()), std::invalid_argument);
  x[40] = std::numeric_limits<float>::quiet_NaN();
  try {
    gguf_quantize(x.data(), 64, GgufType::kQ4_1, out.data());
    ADD_FAILURE() << "NaN accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("x contains NaN"), std::string::npos) << e.what();
  }
  std::vector<float> back(64);
  EXPECT_THROW(gguf_dequantize(out.data(), 35, GgufType::kQ8_0, back.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace mlforge
