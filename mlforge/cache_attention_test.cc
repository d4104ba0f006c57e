#include "mlforge/cache_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mlforge/cpu_features.h"
#include "mlforge/half.h"

namespace mlforge {
namespace {

struct Case {
  CacheAttentionShape shape;
  std::vector<float> q, k, v;
  std::vector<int32_t> slots, pos;
};

// Random q and caches; each batch row gets a random used length, its queries the last
// positions of it (a chunk), with the first query of row 0 set to padding when T > 1.
Case make_case(const CacheAttentionShape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Case c{s, {}, {}, {}, {}, {}};
  c.q.resize(s.batch * s.queries * s.heads * s.head_dim);
  c.k.resize(s.rows * s.capacity * s.kv_heads * s.head_dim);
  c.v.resize(c.k.size());
  for (auto* x : {&c.q, &c.k, &c.v}) {
    for (float& f : *x) f = normal(rng);
  }
  for (int64_t b = 0; b < s.batch; ++b) {
    c.slots.push_back(static_cast<int32_t>((b * 7 + seed) % s.rows));
    const int64_t last = std::uniform_int_distribution<int64_t>(s.queries - 1, s.capacity - 1)(rng);
    for (int64_t t = 0; t < s.queries; ++t) {
      c.pos.push_back(static_cast<int32_t>(last - (s.queries - 1 - t)));
    }
  }
  if (s.queries > 1) c.pos[0] = -1;
  return c;
}

std::vector<float> run(const Case& c, bool reference, float scale = 0.0f) {
  if (scale == 0.0f) scale = 1.0f / std::sqrt(static_cast<float>(c.shape.head_dim));
  std::vector<float> out(c.q.size(), std::numeric_limits<float>::quiet_NaN());
  using Fn = void (*)(const CacheAttentionShape&, float, const float*, const float*,
                     const float*, const int32_t*, const int32_t*, float*);
  const Fn fn = reference ? Fn(cache_attention_reference) : Fn(cache_attention);
  fn(c.shape, scale, c.q.data(), c.k.data(), c.v.data(), c.slots.data(), c.pos.data(),
     out.data());
  return out;
}

// The case with its caches rounded to float16, and those caches' bits: the float64
// reference on the rounded floats is what the float16 kernel must match.
struct HalfCase {
  Case c;
  std::vector<uint16_t> k, v;
};

HalfCase to_half(Case c) {
  HalfCase h{std::move(c), {}, {}};
  for (auto [f, bits] : {std::pair{&h.c.k, &h.k}, std::pair{&h.c.v, &h.v}}) {
    for (float& x : *f) {
      bits->push_back(float_to_half(x));
      x = half_to_float(bits->back());
    }
  }
  return h;
}

std::vector<float> run_half(const HalfCase& h, float scale = 0.0f) {
  const Case& c = h.c;
  if (scale == 0.0f) scale = 1.0f / std::sqrt(static_cast<float>(c.shape.head_dim));
  std::vector<float> out(c.q.size(), std::numeric_limits<float>::quiet_NaN());
  cache_attention(c.shape, scale, c.q.data(), h.k.data(), h.v.data(), c.slots.data(),
                  c.pos.data(), out.data());
  return out;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 2e-6f + 2e-5f * std::abs(want[i])) << what << " at " << i;
  }
}

class CacheAttentionIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (GetParam() > detected_isa()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
    set_max_isa(GetParam());
  }
  void TearDown() override { set_max_isa(Isa::kAvx512); }
};

// {batch, queries, heads, kv_heads, head_dim, rows, capacity}
const CacheAttentionShape kShapes[] = {
    {5, 1, 9, 3, 64, 4, 300},     // decode, SmolLM2 heads
    {3, 1, 32, 32, 128, 3, 200},  // decode, Llama heads
    {4, 1, 8, 2, 8, 2, 70},       // rows share slots
    {1, 64, 9, 3, 64, 2, 400},    // chunked prefill
    {1, 37, 4, 1, 128, 1, 150},   // chunk, G = 4, ragged query blocks
    {2, 16, 6, 6, 20, 3, 90},     // D not a multiple of any vector width
    {2, 3, 4, 2, 5, 2, 9},        // tiny
    {1, 256, 2, 2, 64, 1, 256},   // chunk filling the whole cache
};

TEST_P(CacheAttentionIsa, MatchesFloat64Reference) {
  uint32_t seed = 1;
  for (const auto& s : kShapes) {
    const Case c = make_case(s, seed++);
    expect_close(run(c, false), run(c, true), "shape #" + std::to_string(seed - 1));
  }
}

TEST_P(CacheAttentionIsa, Float16CachesMatchFloat64ReferenceOnTheRoundedValues) {
  uint32_t seed = 1;
  for (const auto& s : kShapes) {
    const HalfCase h = to_half(make_case(s, seed++));
    expect_close(run_half(h), run(h.c, true), "float16 shape #" + std::to_string(seed - 1));
  }
}

TEST_P(CacheAttentionIsa, PositionZeroAndLastAndPadding) {
  Case c = make_case({2, 4, 6, 2, 64, 2, 130}, 11);
  c.pos = {0, -1, 129, 64, -1, -1, -1, -1};  // row 1 is all padding
  const std::vector<float> got = run(c, false);
  expect_close(got, run(c, true), "edges");
  const int64_t hd = 6 * 64;
  for (int64_t t : {1, 4, 5, 6, 7}) {
    for (int64_t i = 0; i < hd; ++i) ASSERT_EQ(got[t * hd + i], 0.0f) << t;
  }
  // Position 0 sees one key: the output is that value row.
  const int64_t slot = c.slots[0];
  for (int64_t h = 0; h < 6; ++h) {
    for (int64_t d = 0; d < 64; ++d) {
      ASSERT_NEAR(got[h * 64 + d], c.v[(slot * 130 * 2 + h / 3) * 64 + d], 1e-6f);
    }
  }
}

TEST_P(CacheAttentionIsa, ReadsOnlyTheUsedPartOfEachRow) {
  const CacheAttentionShape s{3, 5, 4, 2, 64, 3, 500};
  Case c = make_case(s, 5);
  const std::vector<float> want = run(c, true);
  // NaN after each row's last position would poison any output that read it.
  const int64_t kvs = s.kv_heads * s.head_dim;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int32_t last = c.pos[b * s.queries + s.queries - 1];
    for (int64_t p = last + 1; p < s.capacity; ++p) {
      for (int64_t i = 0; i < kvs; ++i) {
        c.k[(c.slots[b] * s.capacity + p) * kvs + i] = std::nanf("");
        c.v[(c.slots[b] * s.capacity + p) * kvs + i] = std::nanf("");
      }
    }
  }
  expect_close(run(c, false), want, "NaN tail");
}

TEST_P(CacheAttentionIsa, Float16PositionZeroAndLastAndPadding) {
  Case c = make_case({2, 4, 6, 2, 64, 2, 130}, 12);
  c.pos = {0, -1, 129, 64, -1, -1, -1, -1};  // row 1 is all padding
  const HalfCase h = to_half(std::move(c));
  const std::vector<float> got = run_half(h);
  expect_close(got, run(h.c, true), "float16 edges");
  const int64_t hd = 6 * 64;
  for (int64_t t : {1, 4, 5, 6, 7}) {
    for (int64_t i = 0; i < hd; ++i) ASSERT_EQ(got[t * hd + i], 0.0f) << t;
  }
  // Position 0 sees one key: the output is that value row, widened exactly.
  const int64_t slot = h.c.slots[0];
  for (int64_t hh = 0; hh < 6; ++hh) {
    for (int64_t d = 0; d < 64; ++d) {
      ASSERT_NEAR(got[hh * 64 + d], half_to_float(h.v[(slot * 130 * 2 + hh / 3) * 64 + d]),
                  1e-6f);
    }
  }
}

TEST_P(CacheAttentionIsa, Float16ReadsOnlyTheUsedPartOfEachRow) {
  const CacheAttentionShape s{3, 5, 4, 2, 64, 3, 500};
  HalfCase h = to_half(make_case(s, 6));
  const std::vector<float> want = run(h.c, true);
  const int64_t kvs = s.kv_heads * s.head_dim;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int32_t last = h.c.pos[b * s.queries + s.queries - 1];
    for (int64_t p = last + 1; p < s.capacity; ++p) {
      for (int64_t i = 0; i < kvs; ++i) {
        h.k[(h.c.slots[b] * s.capacity + p) * kvs + i] = 0x7e00;  // float16 NaN
        h.v[(h.c.slots[b] * s.capacity + p) * kvs + i] = 0x7e00;
      }
    }
  }
  expect_close(run_half(h), want, "float16 NaN tail");
}

INSTANTIATE_TEST_SUITE_P(AllIsas, CacheAttentionIsa,
                         ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(CacheAttention, ScaleIsApplied) {
  const Case c = make_case({2, 2, 4, 2, 16, 2, 40}, 3);
  expect_close(run(c, false, 0.37f), run(c, true, 0.37f), "scale");
}

TEST(CacheAttention, Float16ScaleIsApplied) {
  const HalfCase h = to_half(make_case({2, 2, 4, 2, 16, 2, 40}, 3));
  expect_close(run_half(h, 0.37f), run(h.c, true, 0.37f), "float16 scale");
}

TEST(CacheAttention, BadIndicesNameTheArgument) {
  Case c = make_case({2, 1, 4, 2, 8, 3, 16}, 4);
  std::vector<float> out(c.q.size());
  auto call = [&] {
    cache_attention(c.shape, 1.0f, c.q.data(), c.k.data(), c.v.data(), c.slots.data(),
                    c.pos.data(), out.data());
  };
  auto expect_error = [&](const std::string& name) {
    try {
      call();
      FAIL() << "no error for " << name;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  c.slots[1] = 3;
  expect_error("slots[1]");
  c.slots[1] = -1;
  expect_error("slots[1]");
  c.slots[1] = 0;
  c.pos[0] = 16;
  expect_error("q_positions[0, 0]");
  c.pos[0] = 15;
  EXPECT_NO_THROW(call());
  // The float16 entry point checks the same before reading.
  const std::vector<uint16_t> k16(c.k.size()), v16(c.v.size());
  c.slots[0] = 3;
  EXPECT_THROW(cache_attention(c.shape, 1.0f, c.q.data(), k16.data(), v16.data(),
                               c.slots.data(), c.pos.data(), out.data()),
               std::invalid_argument);
}

TEST(CacheAttention, BadShapesNameTheField) {
  EXPECT_THROW(check_cache_attention_shape({1, 1, 6, 4, 8, 1, 1}), std::invalid_argument);
  try {
    check_cache_attention_shape({1, 1, 4, 2, 8, 1, 0});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("capacity"), std::string::npos);
  }
}

}  // namespace
}  // namespace mlforge
