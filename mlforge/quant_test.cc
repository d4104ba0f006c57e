#include "mlforge/quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlforge/cpu_features.h"

namespace mlforge {
namespace {

// A direct transcription of the MLX formulas, one value at a time, bits written one by one.
struct Reference {
  std::vector<uint32_t> wq;
  std::vector<float> scales, biases;
};

Reference reference_quantize(const std::vector<float>& w, int64_t rows, int64_t cols, int gs,
                             int bits) {
  Reference r;
  r.wq.assign(static_cast<size_t>(rows * cols * bits / 32), 0);
  const float nbins = static_cast<float>((1 << bits) - 1);
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t g = 0; g < cols / gs; ++g) {
      const float* x = &w[row * cols + g * gs];
      float lo = x[0], hi = x[0];
      for (int i = 0; i < gs; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
      bool neg = std::fabs(lo) > std::fabs(hi);
      float scale = std::max((hi - lo) / nbins, 1e-7f);
      if (!neg) scale = -scale;
      float edge = neg ? lo : hi;
      float q0 = std::rint(edge / scale);
      float bias = 0;
      if (q0 != 0) {
        scale = edge / q0;
        bias = edge;
      }
      r.scales.push_back(scale);
      r.biases.push_back(bias);
      for (int i = 0; i < gs; ++i) {
        float q = std::rint((x[i] - bias) / scale);
        uint32_t v = static_cast<uint32_t>(std::min(std::max(q, 0.0f), nbins));
        int64_t bit = (row * cols + g * gs + i) * bits;
        for (int b = 0; b < bits; ++b, ++bit) {
          if ((v >> b) & 1) r.wq[bit / 32] |= 1u << (bit % 32);
        }
      }
    }
  }
  return r;
}

std::vector<float> random_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> mag(-3.0f, 3.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    float scale = std::pow(10.0f, mag(gen));
    for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = normal(gen) * scale;
  }
  // Edge rows: zeros, a constant, all negative, tiny, huge.
  for (int64_t c = 0; c < cols; ++c) {
    w[0 * cols + c] = 0.0f;
    w[1 * cols + c] = 3.5f;
    w[2 * cols + c] = -std::fabs(w[2 * cols + c]);
    w[3 * cols + c] *= 1e-30f;
    w[4 * cols + c] = (c % 2 ? 1 : -1) * 3e38f;
  }
  return w;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class QuantTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(GetParam()) > static_cast<int>(detected_isa())) {
      GTEST_SKIP() << isa_name(GetParam()) << " not supported here";
    }
    set_max_isa(GetParam());
  }
  void TearDown() override { set_max_isa(Isa::kAvx512); }
};

TEST_P(QuantTest, MatchesReferenceForEveryGroupSizeAndBits) {
  const int64_t rows = 9, cols = 384;
  const std::vector<float> w = random_matrix(rows, cols, 7);
  for (int gs : {32, 64, 128}) {
    for (int bits : {2, 3, 4, 5, 6, 8}) {
      SCOPED_TRACE("group_size=" + std::to_string(gs) + " bits=" + std::to_string(bits));
      Reference ref = reference_quantize(w, rows, cols, gs, bits);
      std::vector<uint32_t> wq(ref.wq.size());
      std::vector<float> scales(ref.scales.size()), biases(ref.biases.size());
      affine_quantize(w.data(), rows, cols, gs, bits, wq.data(), scales.data(), biases.data());
      EXPECT_EQ(wq, ref.wq);
      EXPECT_TRUE(bits_equal(scales, ref.scales));
      EXPECT_TRUE(bits_equal(biases, ref.biases));

      std::vector<float> out(w.size()), expect(w.size());
      affine_dequantize(wq.data(), scales.data(), biases.data(), rows, cols, gs, bits, out.data());
      for (int64_t i = 0; i < rows * cols; ++i) {
        int64_t bit = i * bits;
        uint64_t word;
        std::memcpy(&word, reinterpret_cast<const uint8_t*>(wq.data()) + bit / 8,
                    std::min<int64_t>(8, static_cast<int64_t>(wq.size()) * 4 - bit / 8));
        float q = static_cast<float>((word >> (bit % 8)) & ((1u << bits) - 1));
        int64_t group = i / gs;
        float p = scales[group] * q;  // two roundings, as MLX does
        expect[i] = p + biases[group];
      }
      EXPECT_TRUE(bits_equal(out, expect));
    }
  }
}

TEST_P(QuantTest, LargeInputSplitsAcrossThreadsIdentically) {
  const int64_t rows = 300, cols = 1024;
  const std::vector<float> w = random_matrix(rows, cols, 11);
  Reference ref = reference_quantize(w, rows, cols, 64, 4);
  std::vector<uint32_t> wq(ref.wq.size());
  std::vector<float> scales(ref.scales.size()), biases(ref.biases.size());
  affine_quantize(w.data(), rows, cols, 64, 4, wq.data(), scales.data(), biases.data());
  EXPECT_EQ(wq, ref.wq);
  EXPECT_TRUE(bits_equal(scales, ref.scales));
}

INSTANTIATE_TEST_SUITE_P(AllIsas, QuantTest,
                         ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(Quant, KnownGroup) {
  // 0..31 at 4 bits: max wins the edge, so the scale is negative and q runs backwards.
  std::vector<float> w(32);
  for (int i = 0; i < 32; ++i) w[i] = static_cast<float>(i);
  uint32_t wq[4];
  float scale, bias;
  affine_quantize(w.data(), 1, 32, 32, 4, wq, &scale, &bias);
  EXPECT_EQ(scale, 31.0f / -15.0f);
  EXPECT_EQ(bias, 31.0f);
  EXPECT_EQ(wq[0] & 0xf, 15u);  // w = 0
  EXPECT_EQ(wq[3] >> 28, 0u);   // w = 31
}

TEST(Quant, ConstantAndZeroRowsRoundTripExactly) {
  for (float value : {0.0f, 3.5f, -2.25f, 1e-3f}) {
    std::vector<float> w(64, value), out(64);
    uint32_t wq[8];
    float scale, bias;
    affine_quantize(w.data(), 1, 64, 64, 4, wq, &scale, &bias);
    affine_dequantize(wq, &scale, &bias, 1, 64, 64, 4, out.data());
    for (float v : out) EXPECT_EQ(v, value);
  }
  // Below half the 1e-7 minimum scale a constant group snaps to zero, as in MLX.
  std::vector<float> w(32, 1e-20f), out(32);
  uint32_t wq[4];
  float scale, bias;
  affine_quantize(w.data(), 1, 32, 32, 4, wq, &scale, &bias);
  affine_dequantize(wq, &scale, &bias, 1, 32, 32, 4, out.data());
  EXPECT_EQ(bias, 0.0f);
  EXPECT_EQ(out[0], 0.0f);
}

TEST(Quant, RoundTripErrorWithinOneStep) {
  // MLX snaps the scale so the larger-magnitude extreme is exact; the other end may then
  // clip, but by less than one step (max - min) / (2^bits - 1).
  const std::vector<float> w = random_matrix(8, 256, 3);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    std::vector<uint32_t> wq(8 * 256 * bits / 32);
    std::vector<float> scales(8 * 4), biases(8 * 4), out(w.size());
    affine_quantize(w.data(), 8, 256, 64, bits, wq.data(), scales.data(), biases.data());
    affine_dequantize(wq.data(), scales.data(), biases.data(), 8, 256, 64, bits, out.data());
    for (int64_t g = 5 * 4; g < 8 * 4; ++g) {  // the ordinary random rows
      const float* x = &w[g * 64];
      float lo = *std::min_element(x, x + 64), hi = *std::max_element(x, x + 64);
      float step = std::max((hi - lo) / ((1 << bits) - 1), 0.5f * std::fabs(scales[g]));
      for (int i = 0; i < 64; ++i) {
        EXPECT_LE(std::fabs(out[g * 64 + i] - x[i]), step * 1.001f) << "bits=" << bits;
      }
    }
  }
}

TEST(Quant, ThreeBitValuesStraddleWords) {
  // Eleven 3-bit values fill 33 bits: value 10 sits in bits 30..32.
  std::vector<float> w(32, 0.0f);
  w[10] = 7.0f;  // with min 0 and max 7: scale -1, bias 7, so q(7) = 0 and q(0) = 7
  uint32_t wq[3];
  float scale, bias;
  affine_quantize(w.data(), 1, 32, 32, 3, wq, &scale, &bias);
  EXPECT_EQ(scale, -1.0f);
  EXPECT_EQ(bias, 7.0f);
  EXPECT_EQ(wq[0], 0x3fffffffu);  // values 0..9 are 7; value 10 is 0
  EXPECT_EQ(wq[1] & 1u, 0u);
  EXPECT_EQ((wq[1] >> 1) & 7u, 7u);
}

void expect_invalid(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no exception; wanted one naming " << needle;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Quant, RejectsBadArguments) {
  std::vector<float> w(128, 1.0f);
  std::vector<uint32_t> wq(128);
  std::vector<float> s(8), b(8);
  expect_invalid([&] { affine_quantize(w.data(), 1, 128, 16, 4, wq.data(), s.data(), b.data()); },
                 "group_size");
  expect_invalid([&] { affine_quantize(w.data(), 1, 128, 64, 7, wq.data(), s.data(), b.data()); },
                 "bits");
  expect_invalid([&] { affine_quantize(w.data(), 2, 48, 32, 4, wq.data(), s.data(), b.data()); },
                 "group_size");
  expect_invalid([&] { affine_quantize(w.data(), 0, 128, 64, 4, wq.data(), s.data(), b.data()); },
                 "w must be non-empty");
  w[77] = std::numeric_limits<float>::quiet_NaN();
  expect_invalid([&] { affine_quantize(w.data(), 2, 64, 64, 4, wq.data(), s.data(), b.data()); },
                 "row 1");
  w[77] = std::numeric_limits<float>::infinity();
  expect_invalid([&] { affine_quantize(w.data(), 1, 128, 64, 4, wq.data(), s.data(), b.data()); },
                 "NaN or Inf");
  expect_invalid([] { affine_dequantized_cols(5, 2, 64, 3); }, "wq.shape[1]");
  expect_invalid([] { affine_dequantized_cols(8, 3, 32, 4); }, "scales.shape[1]");
  EXPECT_EQ(affine_dequantized_cols(8, 2, 32, 4), 64);
}

}  // namespace
}  // namespace mlforge
