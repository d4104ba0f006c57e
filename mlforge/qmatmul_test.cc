#include "mlforge/qmatmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlforge/cpu_features.h"

namespace mlforge {
namespace {

struct Case {
  QMatmulShape shape;
  std::vector<float> x, scales;
  std::vector<uint8_t> wq;
};

Case random_case(int64_t rows, int64_t in, int64_t out, int bits, int64_t group, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> byte(0, 255);
  Case c{{rows, in, out, bits, group}, {}, {}, {}};
  c.x.resize(static_cast<size_t>(rows * in));
  for (float& v : c.x) v = normal(rng);
  c.scales.resize(static_cast<size_t>(out * (in / group)));
  for (float& v : c.scales) v = 0.01f + std::fabs(normal(rng)) * 0.02f;
  c.wq.resize(static_cast<size_t>(qmatmul_weight_bytes(c.shape)));
  for (uint8_t& v : c.wq) v = static_cast<uint8_t>(byte(rng));
  return c;
}

std::vector<float> run(const Case& c) {
  std::vector<float> y(static_cast<size_t>(c.shape.rows * c.shape.out), NAN);
  qmatmul(c.shape, c.x.data(), c.wq.data(), c.scales.data(), y.data());
  return y;
}

std::vector<float> run_reference(const Case& c) {
  std::vector<float> y(static_cast<size_t>(c.shape.rows * c.shape.out), NAN);
  qmatmul_reference(c.shape, c.x.data(), c.wq.data(), c.scales.data(), y.data());
  return y;
}

// Float sums in another order: allow a few ulps of the sum of |terms| (bounded by
// |x| * |w| summed, which the caller passes as `magnitude`).
void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  float magnitude, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 2e-6f * magnitude) << what << " at flat index " << i;
  }
}

float magnitude(const Case& c) {
  float xmax = 0, smax = 0;
  for (float v : c.x) xmax = std::max(xmax, std::fabs(v));
  for (float v : c.scales) smax = std::max(smax, v);
  return xmax * smax * 128.0f * static_cast<float>(c.shape.in);
}

class EveryIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override { set_max_isa(GetParam()); }
  void TearDown() override { set_max_isa(Isa::kAvx512); }
};

TEST_P(EveryIsa, MatchesReferenceForAllShapes) {
  struct Params {
    int bits;
    int64_t in, group;
  };
  // Groups that fit every SIMD width, per-channel int8, and groups only scalar takes.
  const Params params[] = {{8, 192, 192}, {8, 192, 32}, {8, 96, 16}, {8, 60, 10},
                           {4, 192, 64},  {4, 192, 32}, {4, 96, 96}, {4, 48, 16},
                           {4, 36, 6}};
  for (const Params& p : params) {
    for (int64_t rows : {1, 2, 3, 4, 5, 8, 9}) {
      for (int64_t out : {1, 4, 37}) {
        Case c = random_case(rows, p.in, out, p.bits, p.group, 17);
        SCOPED_TRACE(::testing::Message() << "bits=" << p.bits << " in=" << p.in
                                          << " group=" << p.group << " rows=" << rows
                                          << " out=" << out);
        expect_close(run(c), run_reference(c), magnitude(c), "y");
      }
    }
  }
}

TEST_P(EveryIsa, RowsDoNotDependOnBatchOrThreads) {
  // 3072 outputs x 512 inputs is enough weight bytes to split across threads.
  for (int bits : {8, 4}) {
    Case batch = random_case(7, 512, 3072, bits, 64, 5);
    std::vector<float> all = run(batch);
    Case one = batch;
    one.shape.rows = 1;
    for (int64_t m : {0, 3, 6}) {
      one.x.assign(batch.x.begin() + m * 512, batch.x.begin() + (m + 1) * 512);
      std::vector<float> y = run(one);
      for (int64_t o = 0; o < 3072; ++o) ASSERT_EQ(y[o], all[m * 3072 + o]) << "row " << m;
    }
    expect_close(all, run_reference(batch), magnitude(batch), "threaded");
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, EveryIsa,
                         ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(QMatmul, Int4LayoutIsHalvesOfEachGroup) {
  // One output, in = 4, group = 4: byte 0 holds inputs 0 (low) and 2 (high), byte 1
  // inputs 1 and 3, each as q + 8. q = (-8, 7, 1, -3) -> bytes 0x90 | 0x00, 0x50 | 0x0f.
  const uint8_t wq[2] = {0x90, 0x5f};
  const float scale = 0.5f, x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  float y = 0;
  qmatmul({1, 4, 1, 4, 4}, x, wq, &scale, &y);
  EXPECT_FLOAT_EQ(y, 0.5f * (-8 * 1 + 7 * 2 + 1 * 3 + -3 * 4));
}

TEST(QMatmul, Int8IsSignedWithPerGroupScales) {
  const int8_t wq[4] = {-128, 127, 3, -1};
  const float scales[2] = {0.25f, 2.0f}, x[4] = {1.0f, 1.0f, 2.0f, 5.0f};
  float y = 0;
  qmatmul({1, 4, 1, 8, 2}, x, wq, scales, &y);
  EXPECT_FLOAT_EQ(y, 0.25f * (-128 + 127) + 2.0f * (3 * 2 + -1 * 5));
}

TEST(QMatmul, RejectsBadShapes) {
  float x = 0, y = 0, s = 1;
  uint8_t w = 0;
  EXPECT_THROW(qmatmul({1, 4, 1, 3, 4}, &x, &w, &s, &y), std::invalid_argument);  // bits
  EXPECT_THROW(qmatmul({1, 6, 1, 8, 4}, &x, &w, &s, &y), std::invalid_argument);  // group
  EXPECT_THROW(qmatmul({1, 6, 1, 4, 3}, &x, &w, &s, &y), std::invalid_argument);  // odd
  EXPECT_THROW(qmatmul({1, 0, 1, 8, 1}, &x, &w, &s, &y), std::invalid_argument);  // in
  try {
    qmatmul({1, 6, 1, 8, 4}, &x, &w, &s, &y);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("group_size (4) must divide the input size (6)"),
              std::string::npos);
  }
}

TEST(QMatmul, ZeroRowsIsANoOp) {
  float y = 42;
  uint8_t w = 0;
  float s = 1;
  qmatmul({0, 2, 1, 8, 2}, nullptr, &w, &s, &y);
  EXPECT_EQ(y, 42);
}

}  // namespace
}  // namespace mlforge
