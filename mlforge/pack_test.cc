#include "mlforge/pack.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlforge/capacity_index.h"

namespace mlforge {
namespace {

struct Packed {
  PackPlan plan;
  std::vector<int64_t> placement;
  std::vector<int32_t> tokens, segment_ids, positions;
  std::vector<uint8_t> loss_mask;
};

Packed run_pack(const std::vector<int64_t>& lengths, const std::vector<int32_t>& tokens,
                int64_t seq_len, bool truncate = false, const uint8_t* mask = nullptr,
                CapacityIndexKind kind = CapacityIndexKind::kAuto) {
  Packed p;
  p.placement.resize(lengths.size() * 2);
  p.plan = plan_packing(lengths.data(), static_cast<int64_t>(lengths.size()),
                        static_cast<int64_t>(tokens.size()), seq_len, truncate, p.placement.data(),
                        kind);
  size_t cells = static_cast<size_t>(p.plan.num_rows * seq_len);
  p.tokens.assign(cells, -7);
  p.segment_ids.assign(cells, -7);
  p.positions.assign(cells, -7);
  p.loss_mask.assign(cells, 7);
  fill_packed(p.plan, tokens.data(), mask, -1,
              {p.tokens.data(), p.segment_ids.data(), p.positions.data(), p.loss_mask.data()});
  return p;
}

TEST(CapacityIndex, DenseAndSparseMatchBruteForce) {
  std::mt19937_64 gen(3);
  const int64_t max_cap = 5000;  // three levels of the bit tree
  DenseCapacityIndex dense(max_cap);
  SparseCapacityIndex sparse;
  std::multimap<int64_t, int64_t> brute;  // capacity -> row
  int64_t next_row = 0;
  for (int step = 0; step < 20000; ++step) {
    if (gen() % 2) {
      int64_t cap = 1 + static_cast<int64_t>(gen() % max_cap);
      dense.put(next_row, cap);
      sparse.put(next_row, cap);
      brute.emplace(cap, next_row);
      ++next_row;
    } else {
      int64_t need = 1 + static_cast<int64_t>(gen() % max_cap);
      int64_t cd = -1, cs = -1;
      int64_t rd = dense.take_at_least(need, &cd);
      int64_t rs = sparse.take_at_least(need, &cs);
      auto it = brute.lower_bound(need);
      if (it == brute.end()) {
        ASSERT_EQ(rd, -1);
        ASSERT_EQ(rs, -1);
        continue;
      }
      ASSERT_EQ(cd, it->first);
      ASSERT_EQ(cs, it->first);
      ASSERT_EQ(rd, rs);  // both take the most recently put row of that capacity
      auto range = brute.equal_range(it->first);
      bool found = false;
      for (auto j = range.first; j != range.second; ++j) {
        if (j->second == rd) {
          brute.erase(j);
          found = true;
          break;
        }
      }
      ASSERT_TRUE(found);
    }
  }
}

TEST(Pack, BestFitDecreasingFillsRowsExactly) {
  std::vector<int64_t> lengths = {1, 2, 3, 4, 5, 6};
  std::vector<int32_t> tokens(21);
  for (int i = 0; i < 21; ++i) tokens[i] = i;
  Packed p = run_pack(lengths, tokens, 7);
  EXPECT_EQ(p.plan.num_rows, 3);
  EXPECT_EQ(p.plan.padding_fraction(), 0.0);
  // 6 opens row 0, 5 row 1, 4 row 2; then 3 -> row 2, 2 -> row 1, 1 -> row 0.
  std::vector<int64_t> expect = {0, 6, 1, 5, 2, 4, 2, 0, 1, 0, 0, 0};
  EXPECT_EQ(p.placement, expect);
  EXPECT_EQ(p.segment_ids[0 * 7 + 6], 2);  // the 1-token sequence is row 0's second
  EXPECT_EQ(p.tokens[0 * 7 + 6], 0);
}

TEST(Pack, EqualLengthsKeepInputOrder) {
  std::vector<int64_t> lengths = {4, 4, 4, 4, 4};
  std::vector<int32_t> tokens(20, 1);
  Packed p = run_pack(lengths, tokens, 8);
  std::vector<int64_t> expect = {0, 0, 0, 4, 1, 0, 1, 4, 2, 0};
  EXPECT_EQ(p.placement, expect);
  EXPECT_NEAR(p.plan.padding_fraction(), 4.0 / 24.0, 1e-12);
  for (int j = 4; j < 8; ++j) {  // row 2's padding
    EXPECT_EQ(p.tokens[16 + j], -1);
    EXPECT_EQ(p.segment_ids[16 + j], 0);
    EXPECT_EQ(p.positions[16 + j], 0);
    EXPECT_EQ(p.loss_mask[16 + j], 0);
  }
}

void check_invariants(const std::vector<int64_t>& lengths, const std::vector<int32_t>& tokens,
                      const std::vector<uint8_t>& mask, int64_t seq_len, const Packed& p) {
  const int64_t n = static_cast<int64_t>(lengths.size());
  std::vector<int64_t> used(static_cast<size_t>(p.plan.num_rows), 0);
  int64_t src = 0, real = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t row = p.placement[2 * i], off = p.placement[2 * i + 1];
    int64_t len = std::min(lengths[i], seq_len);
    ASSERT_GE(row, 0);
    ASSERT_LT(row, p.plan.num_rows);
    ASSERT_LE(off + len, seq_len);
    int32_t seg = p.segment_ids[row * seq_len + off];
    ASSERT_GE(seg, 1);
    for (int64_t j = 0; j < len; ++j) {
      int64_t cell = row * seq_len + off + j;
      ASSERT_EQ(p.tokens[cell], tokens[src + j]) << "sequence " << i;
      ASSERT_EQ(p.positions[cell], j);
      ASSERT_EQ(p.segment_ids[cell], seg);  // contiguous, one id per sequence
      ASSERT_EQ(p.loss_mask[cell], mask.empty() ? 1 : (mask[src + j] != 0));
    }
    used[row] += len;
    real += len;
    src += lengths[i];
  }
  // Rows: sequences from offset 0, ids 1..k in order, padding only at the end.
  for (int64_t r = 0; r < p.plan.num_rows; ++r) {
    ASSERT_GT(used[r], 0);
    int32_t prev = 1;
    for (int64_t j = 0; j < seq_len; ++j) {
      int64_t cell = r * seq_len + j;
      if (j < used[r]) {
        ASSERT_TRUE(p.segment_ids[cell] == prev || p.segment_ids[cell] == prev + 1);
        prev = p.segment_ids[cell];
      } else {
        ASSERT_EQ(p.segment_ids[cell], 0);
        ASSERT_EQ(p.tokens[cell], -1);
        ASSERT_EQ(p.loss_mask[cell], 0);
        ASSERT_EQ(p.positions[cell], 0);
      }
    }
  }
  EXPECT_EQ(real, p.plan.num_tokens);
  double pad = 1.0 - static_cast<double>(real) / (p.plan.num_rows * seq_len);
  EXPECT_NEAR(p.plan.padding_fraction(), pad, 1e-12);
}

TEST(Pack, RandomInputKeepsEveryTokenOnce) {
  std::mt19937_64 gen(9);
  const int64_t seq_len = 512;
  std::vector<int64_t> lengths(5000);
  int64_t total = 0;
  for (auto& l : lengths) total += (l = 1 + static_cast<int64_t>(gen() % 300));
  std::vector<int32_t> tokens(static_cast<size_t>(total));
  std::vector<uint8_t> mask(static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i) {
    tokens[i] = static_cast<int32_t>(gen() % 100000);
    mask[i] = static_cast<uint8_t>(gen() % 3);  // 2 counts as 1
  }
  Packed p = run_pack(lengths, tokens, seq_len, false, mask.data());
  check_invariants(lengths, tokens, mask, seq_len, p);
  EXPECT_LT(p.plan.padding_fraction(), 0.01);
  // Sparse index gives the same placement.
  Packed q = run_pack(lengths, tokens, seq_len, false, mask.data(), CapacityIndexKind::kSparse);
  EXPECT_EQ(p.placement, q.placement);
  EXPECT_EQ(p.tokens, q.tokens);
}

TEST(Pack, TruncateKeepsTheFirstTokens) {
  std::vector<int64_t> lengths = {3, 10, 2, 8};
  std::vector<int32_t> tokens(23);
  for (int i = 0; i < 23; ++i) tokens[i] = 100 + i;
  Packed p = run_pack(lengths, tokens, 6, /*truncate=*/true);
  EXPECT_EQ(p.plan.num_truncated, 2);
  check_invariants(lengths, tokens, {}, 6, p);
}

TEST(Pack, HugeSeqLenUsesSparsePath) {
  std::vector<int64_t> lengths = {5, 3, 7};
  std::vector<int32_t> tokens(15, 2);
  const int64_t seq_len = (1 << 22) + 64;  // just past the dense structures' limit
  Packed p = run_pack(lengths, tokens, seq_len);
  EXPECT_EQ(p.plan.num_rows, 1);
  check_invariants(lengths, tokens, {}, seq_len, p);
}

void expect_invalid(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no exception; wanted one naming " << needle;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Pack, RejectsBadInput) {
  std::vector<int64_t> placement(8);
  std::vector<int64_t> zero = {3, 2, 0, 1};
  expect_invalid([&] { plan_packing(zero.data(), 4, 6, 8, false, placement.data()); },
                 "lengths[2]");
  std::vector<int64_t> negative = {3, -2};
  expect_invalid([&] { plan_packing(negative.data(), 2, 5, 8, false, placement.data()); },
                 "lengths[1]");
  std::vector<int64_t> long_one = {3, 9, 1};
  expect_invalid([&] { plan_packing(long_one.data(), 3, 13, 8, false, placement.data()); },
                 "lengths[1] = 9 exceeds seq_len");
  std::vector<int64_t> ok = {3, 2};
  expect_invalid([&] { plan_packing(ok.data(), 2, 6, 8, false, placement.data()); }, "len(tokens)");
  expect_invalid([&] { plan_packing(ok.data(), 2, 4, 8, false, placement.data()); }, "len(tokens)");
  expect_invalid([&] { plan_packing(ok.data(), 2, 5, 0, false, placement.data()); }, "seq_len");
  expect_invalid([&] { plan_packing(ok.data(), 0, 0, 8, false, placement.data()); }, "lengths");
}

}  // namespace
}  // namespace mlforge
