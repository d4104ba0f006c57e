#include "mlforge/qmatmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
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

// ---- Activations::kInt8 ----

// The definition in qmatmul.h, in double from float32-quantized activations: y, the
// sum of |terms| (for a cancellation-proof tolerance) and the bound on |y - float path|
// from rounding x to its blocks (each |x - xq * d| <= d / 2).
struct Int8Reference {
  std::vector<double> y, magnitude, rounding;
};

int weight_q(const Case& c, int64_t o, int64_t i) {
  const QMatmulShape& s = c.shape;
  if (s.bits == 8) return static_cast<int8_t>(c.wq[o * s.in + i]);
  const int64_t g = i / s.group, j = i % s.group, half = s.group / 2;
  const uint8_t byte = c.wq[o * (s.in / 2) + g * half + j % half];
  return (j < half ? byte & 0x0f : byte >> 4) - 8;
}

Int8Reference int8_reference(const Case& c) {
  const QMatmulShape& s = c.shape;
  Int8Reference r;
  r.y.assign(static_cast<size_t>(s.rows * s.out), 0.0);
  r.magnitude = r.rounding = r.y;
  std::vector<float> xq(static_cast<size_t>(s.in)), d(static_cast<size_t>(s.in / 32));
  for (int64_t m = 0; m < s.rows; ++m) {
    const float* x = c.x.data() + m * s.in;
    for (int64_t b = 0; b < s.in / 32; ++b) {
      float amax = 0;
      for (int64_t i = b * 32; i < b * 32 + 32; ++i) amax = std::max(amax, std::fabs(x[i]));
      d[b] = amax / 127.0f;
      for (int64_t i = b * 32; i < b * 32 + 32; ++i) {
        xq[i] = d[b] > 0 ? std::nearbyint(x[i] / d[b]) : 0.0f;
      }
    }
    for (int64_t o = 0; o < s.out; ++o) {
      double y = 0, mag = 0, rounding = 0;
      for (int64_t i = 0; i < s.in; ++i) {
        const double w = static_cast<double>(c.scales[o * (s.in / s.group) + i / s.group]) *
                         weight_q(c, o, i);
        y += w * d[i / 32] * xq[i];
        mag += std::fabs(w * d[i / 32] * xq[i]);
        rounding += std::fabs(w) * d[i / 32] / 2;
      }
      r.y[m * s.out + o] = y;
      r.magnitude[m * s.out + o] = mag;
      r.rounding[m * s.out + o] = rounding;
    }
  }
  return r;
}

std::vector<float> run_int8(const Case& c) {
  std::vector<float> y(static_cast<size_t>(c.shape.rows * c.shape.out), NAN);
  qmatmul(c.shape, c.x.data(), c.wq.data(), c.scales.data(), y.data(), Activations::kInt8);
  return y;
}

struct IntPath {
  const char* kernel;
  Isa isa;
  bool vnni;
};

class EveryIntPath : public ::testing::TestWithParam<IntPath> {
 protected:
  void SetUp() override {
    set_max_isa(GetParam().isa);
    set_vnni(GetParam().vnni);
    if (std::string(qmatmul_int8_kernel()) != GetParam().kernel) {
      GTEST_SKIP() << "this CPU has no " << GetParam().kernel << " (got "
                   << qmatmul_int8_kernel() << ")";
    }
  }
  void TearDown() override {
    set_max_isa(Isa::kAvx512);
    set_vnni(true);
  }
};

TEST_P(EveryIntPath, MatchesTheDefinitionAndTheFloatPath) {
  struct Params {
    int bits;
    int64_t in, group;
  };
  // int8 per channel and per group (96: a zmm step of 32), int4 groups of 32, 64 and I.
  const Params params[] = {{8, 64, 64},    {8, 576, 576},  {8, 1536, 1536}, {8, 576, 32},
                           {8, 576, 64},   {8, 576, 96},   {4, 64, 32},     {4, 64, 64},
                           {4, 576, 32},   {4, 576, 64},   {4, 576, 192},   {4, 1536, 64},
                           {4, 1536, 1536}};
  for (const Params& p : params) {
    // Prefill chunks of 4, 16 and 64 rows; 13 and 33 leave row-tile tails of 5 and 1.
    for (int64_t rows : {1, 2, 3, 4, 5, 6, 7, 8, 13, 16, 33, 64}) {
      for (int64_t out : {1, 5, 37}) {
        if (rows > 8 && out != 37) continue;
        Case c = random_case(rows, p.in, out, p.bits, p.group, 23 + static_cast<uint32_t>(rows));
        SCOPED_TRACE(::testing::Message() << "bits=" << p.bits << " in=" << p.in
                                          << " group=" << p.group << " rows=" << rows
                                          << " out=" << out);
        ASSERT_TRUE(qmatmul_int8_fits(c.shape));
        const std::vector<float> got = run_int8(c), floats = run_reference(c);
        const Int8Reference want = int8_reference(c);
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_NEAR(got[i], want.y[i], 1e-5 * want.magnitude[i] + 1e-30) << "at " << i;
          ASSERT_LE(std::fabs(got[i] - floats[i]), 1.001 * want.rounding[i] + 1e-6)
              << "float path at " << i;
        }
      }
    }
  }
}

TEST_P(EveryIntPath, RowsDoNotDependOnBatchOrThreads) {
  for (int bits : {8, 4}) {
    for (int64_t rows : {7, 64}) {
      Case batch = random_case(rows, 512, 3072, bits, 64, 5);
      std::vector<float> all = run_int8(batch);
      Case one = batch;
      one.shape.rows = 1;
      for (int64_t m : {int64_t{0}, int64_t{3}, rows - 1}) {
        one.x.assign(batch.x.begin() + m * 512, batch.x.begin() + (m + 1) * 512);
        std::vector<float> y = run_int8(one);
        for (int64_t o = 0; o < 3072; ++o) ASSERT_EQ(y[o], all[m * 3072 + o]) << "row " << m;
      }
    }
  }
}

TEST_P(EveryIntPath, ZeroAndNonFiniteBlocks) {
  Case c = random_case(2, 64, 9, 4, 64, 3);
  for (int64_t i = 0; i < 32; ++i) c.x[i] = 0;  // row 0: a block of zeros, d = 0
  c.x[64 + 40] = INFINITY;                       // row 1: inf -> NaN, as the float path
  const std::vector<float> got = run_int8(c);
  const Int8Reference want = int8_reference(c);
  for (int64_t o = 0; o < 9; ++o) {
    EXPECT_NEAR(got[o], want.y[o], 1e-5 * want.magnitude[o] + 1e-30);
    EXPECT_TRUE(std::isnan(got[9 + o]));
  }
}

INSTANTIATE_TEST_SUITE_P(Kernel, EveryIntPath,
                         ::testing::Values(IntPath{"scalar", Isa::kScalar, false},
                                           IntPath{"avx2", Isa::kAvx2, false},
                                           IntPath{"avx_vnni", Isa::kAvx2, true},
                                           IntPath{"avx512_vnni", Isa::kAvx512, true}),
                         [](const auto& info) { return std::string(info.param.kernel); });

TEST(QMatmul, Int8ActivationsFallBackToFloatForOtherGroups) {
  for (auto [bits, group] : {std::pair<int, int64_t>{8, 16}, {4, 96}, {4, 6}}) {
    Case c = random_case(3, 192, 11, bits, group, 9);
    ASSERT_FALSE(qmatmul_int8_fits(c.shape));
    EXPECT_EQ(run_int8(c), run(c)) << "bits=" << bits << " group=" << group;
  }
}

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

// Row layout -> panels, then qmatmul_panel.
std::vector<float> run_panel(const Case& c) {
  const QMatmulShape& s = c.shape;
  const int64_t panels = qmatmul_panel_count(s.out);
  std::vector<uint8_t> packed(static_cast<size_t>(panels * kPanelOutputs * s.in));
  std::vector<float> packed_scales(static_cast<size_t>(panels * kPanelOutputs * (s.in / s.group)));
  qmatmul_pack_panels(s, reinterpret_cast<const int8_t*>(c.wq.data()), c.scales.data(),
                      packed.data(), packed_scales.data());
  std::vector<float> y(static_cast<size_t>(s.rows * s.out), NAN);
  qmatmul_panel(s, c.x.data(), packed.data(), packed_scales.data(), y.data());
  return y;
}

TEST(QMatmulPanel, EqualsTheRowLayoutBitForBitAndTheDefinition) {
  // Per channel and per group; outputs in whole panels, one, and ragged tails.
  const std::pair<int64_t, int64_t> params[] = {{64, 64}, {576, 576}, {576, 32}, {576, 96}, {1536, 1536}};
  for (const auto& [in, group] : params) {
    for (int64_t rows : {1, 2, 5, 8, 13, 64}) {
      for (int64_t out : {1, 16, 37, 50}) {
        Case c = random_case(rows, in, out, 8, group, 41 + static_cast<uint32_t>(rows + out));
        SCOPED_TRACE(::testing::Message() << "in=" << in << " group=" << group << " rows=" << rows
                                          << " out=" << out);
        ASSERT_TRUE(qmatmul_panel_fits(c.shape));
        const std::vector<float> panel = run_panel(c);
        const Int8Reference want = int8_reference(c);
        for (size_t i = 0; i < panel.size(); ++i) {
          ASSERT_NEAR(panel[i], want.y[i], 1e-5 * want.magnitude[i] + 1e-30) << "at " << i;
        }
        set_vnni(false);  // the portable panel loop
        const std::vector<float> portable = run_panel(c);
        set_vnni(true);
        ASSERT_EQ(portable, panel) << "portable and SIMD panel kernels differ";
        if (qmatmul_panel_native() && std::string(qmatmul_int8_kernel()) == "avx512_vnni") {
          ASSERT_EQ(panel, run_int8(c)) << "panel and row layouts differ";
        }
      }
    }
  }
}

TEST(QMatmulPanel, LayoutIsFourInputsOfSixteenOutputsPerWord) {
  Case c = random_case(1, 64, 20, 8, 32, 3);
  std::vector<uint8_t> packed(2 * 16 * 64);
  std::vector<float> scales(2 * 2 * 16, -1.0f);
  qmatmul_pack_panels(c.shape, reinterpret_cast<const int8_t*>(c.wq.data()), c.scales.data(),
                      packed.data(), scales.data());
  const auto q = [&](int64_t o, int64_t i) { return static_cast<int8_t>(c.wq[o * 64 + i]); };
  EXPECT_EQ(packed[0], static_cast<uint8_t>(q(0, 0) + 128));
  EXPECT_EQ(packed[3 * 4 + 2], static_cast<uint8_t>(q(3, 2) + 128));     // word 0, lane 3, byte 2
  EXPECT_EQ(packed[5 * 64 + 7 * 4 + 1], static_cast<uint8_t>(q(7, 21) + 128));  // word 5
  EXPECT_EQ(packed[16 * 64 + 2 * 64 + 3 * 4], static_cast<uint8_t>(q(19, 8) + 128));  // panel 1
  EXPECT_EQ(packed[16 * 64 + 4 * 4], 128);  // output 20: padding, q = 0
  EXPECT_EQ(scales[1 * 16 + 2], c.scales[2 * 2 + 1]);  // panel 0, group 1, lane 2
  EXPECT_EQ(scales[(2 + 1) * 16 + 4], 0.0f);            // padding output's scale
}

TEST(QMatmulPanel, RejectsShapesItDoesNotTake) {
  Case c = random_case(1, 64, 4, 4, 32, 1);
  EXPECT_THROW(run_panel(c), std::invalid_argument);
  Case odd = random_case(1, 48, 4, 8, 16, 1);
  EXPECT_FALSE(qmatmul_panel_fits(odd.shape));
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
