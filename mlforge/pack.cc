#include "mlforge/pack.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include "mlforge/capacity_index.h"
#include "mlforge/parallel.h"

namespace mlforge {
namespace {

// Dense structures cost O(seq_len); use them unless seq_len dwarfs the input.
bool prefer_dense(int64_t n, int64_t seq_len) { return seq_len <= 4 * n + (int64_t{1} << 22); }

// Sequence ids by length, longest first, ties in input order.
std::vector<int64_t> order_by_length(const std::vector<int32_t>& length, int64_t seq_len) {
  const int64_t n = static_cast<int64_t>(length.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  if (prefer_dense(n, seq_len)) {
    // Counting sort: bucket b holds length seq_len - b, so buckets run longest first.
    std::vector<int64_t> start(static_cast<size_t>(seq_len + 1), 0);
    for (int32_t len : length) ++start[seq_len - len];
    int64_t sum = 0;
    for (auto& s : start) {
      int64_t c = s;
      s = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) order[start[seq_len - length[i]]++] = i;
  } else {
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return length[a] > length[b]; });
  }
  return order;
}

template <class Index>
void best_fit(Index& index, const std::vector<int64_t>& order, PackPlan& plan, int64_t* placement,
              std::vector<int64_t>& row_of) {
  const int64_t seq_len = plan.seq_len;
  std::vector<int64_t> row_count;
  for (int64_t s : order) {
    const int64_t len = plan.length[s];
    int64_t capacity = 0;
    int64_t row = len == seq_len ? -1 : index.take_at_least(len, &capacity);
    if (row < 0) {
      row = static_cast<int64_t>(row_count.size());
      row_count.push_back(0);
      capacity = seq_len;
    }
    placement[2 * s] = row;
    placement[2 * s + 1] = seq_len - capacity;
    row_of[s] = row;
    ++row_count[row];
    if (capacity > len) index.put(row, capacity - len);
  }
  plan.num_rows = static_cast<int64_t>(row_count.size());
  plan.row_start.assign(static_cast<size_t>(plan.num_rows + 1), 0);
  for (int64_t r = 0; r < plan.num_rows; ++r)
    plan.row_start[r + 1] = plan.row_start[r] + row_count[r];
}

}  // namespace

PackPlan plan_packing(const int64_t* lengths, int64_t n, int64_t num_tokens, int64_t seq_len,
                      bool truncate, int64_t* placement, CapacityIndexKind index) {
  if (seq_len < 1 || seq_len > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("seq_len must be in [1, 2147483647]; got " +
                                std::to_string(seq_len));
  }
  if (n <= 0) throw std::invalid_argument("lengths must be non-empty");

  PackPlan plan;
  plan.seq_len = seq_len;
  plan.length.resize(static_cast<size_t>(n));
  plan.src_offset.resize(static_cast<size_t>(n));
  int64_t offset = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = lengths[i];
    if (len <= 0) {
      throw std::invalid_argument("lengths[" + std::to_string(i) + "] is " + std::to_string(len) +
                                  "; every sequence needs at least one token");
    }
    if (len > seq_len) {
      if (!truncate) {
        throw std::invalid_argument("lengths[" + std::to_string(i) + "] = " + std::to_string(len) +
                                    " exceeds seq_len = " + std::to_string(seq_len) +
                                    "; pass truncate=True to cut long sequences");
      }
      ++plan.num_truncated;
    }
    if (len > num_tokens - offset) {
      throw std::invalid_argument(
          "sum(lengths) exceeds len(tokens) = " + std::to_string(num_tokens) + " (at lengths[" +
          std::to_string(i) + "])");
    }
    plan.src_offset[i] = offset;
    plan.length[i] = static_cast<int32_t>(std::min(len, seq_len));
    plan.num_tokens += plan.length[i];
    offset += len;
  }
  if (offset != num_tokens) {
    throw std::invalid_argument("sum(lengths) = " + std::to_string(offset) +
                                " does not match len(tokens) = " + std::to_string(num_tokens));
  }

  const std::vector<int64_t> order = order_by_length(plan.length, seq_len);
  std::vector<int64_t> row_of(static_cast<size_t>(n));
  bool dense = index == CapacityIndexKind::kDense ||
               (index == CapacityIndexKind::kAuto && prefer_dense(n, seq_len));
  if (dense) {
    DenseCapacityIndex idx(seq_len);
    best_fit(idx, order, plan, placement, row_of);
  } else {
    SparseCapacityIndex idx;
    best_fit(idx, order, plan, placement, row_of);
  }

  // Group sequence ids by row; placement order is offset order within a row.
  plan.row_seqs.resize(static_cast<size_t>(n));
  std::vector<int64_t> cursor(plan.row_start.begin(), plan.row_start.end() - 1);
  for (int64_t s : order) plan.row_seqs[cursor[row_of[s]]++] = s;
  return plan;
}

void fill_packed(const PackPlan& plan, const int32_t* tokens, const uint8_t* loss_mask,
                 int32_t pad_id, const PackedRows& out) {
  const int64_t seq_len = plan.seq_len;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / seq_len);
  parallel_for(plan.num_rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * seq_len;
      int32_t* tok = out.tokens + base;
      int32_t* seg = out.segment_ids + base;
      int32_t* pos = out.positions + base;
      uint8_t* mask = out.loss_mask + base;
      int64_t o = 0;
      int32_t segment = 0;
      for (int64_t k = plan.row_start[r]; k < plan.row_start[r + 1]; ++k) {
        const int64_t s = plan.row_seqs[k];
        const int32_t len = plan.length[s];
        const int64_t src = plan.src_offset[s];
        ++segment;
        std::memcpy(tok + o, tokens + src, sizeof(int32_t) * static_cast<size_t>(len));
        for (int32_t j = 0; j < len; ++j) {
          seg[o + j] = segment;
          pos[o + j] = j;
        }
        if (loss_mask != nullptr) {
          for (int32_t j = 0; j < len; ++j) mask[o + j] = loss_mask[src + j] != 0;
        } else {
          std::memset(mask + o, 1, static_cast<size_t>(len));
        }
        o += len;
      }
      std::fill(tok + o, tok + seq_len, pad_id);
      std::fill(seg + o, seg + seq_len, 0);
      std::fill(pos + o, pos + seq_len, 0);
      std::fill(mask + o, mask + seq_len, uint8_t{0});
    }
  });
}

}  // namespace mlforge
