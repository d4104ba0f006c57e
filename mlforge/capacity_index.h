// Open rows of a packing, indexed by remaining capacity, so best-fit finds the
// fullest row that still fits a sequence without scanning rows.
#ifndef MLFORGE_CAPACITY_INDEX_H_
#define MLFORGE_CAPACITY_INDEX_H_

#include <cstdint>
#include <map>
#include <vector>

namespace mlforge {

// Capacities 1..max_capacity in a 64-ary bit tree (find-next-set in O(log64 L)) plus a
// LIFO list of rows per capacity. Memory ~9 bytes per capacity; for seq_len up to a
// few million. Among rows of equal capacity the most recently put one is taken.
class DenseCapacityIndex {
 public:
  explicit DenseCapacityIndex(int64_t max_capacity);

  // Removes and returns a row with the smallest capacity >= need (setting *capacity),
  // or returns -1 when no row has room.
  int64_t take_at_least(int64_t need, int64_t* capacity);

  // Adds row (not already present) with remaining capacity in [1, max_capacity].
  void put(int64_t row, int64_t capacity);

 private:
  int64_t find_next(int64_t i) const;
  void set_bit(int64_t i);
  void clear_bit(int64_t i);

  std::vector<std::vector<uint64_t>> levels_;  // levels_[0]: one bit per capacity
  std::vector<int64_t> head_;                  // per capacity: first row, or -1
  std::vector<int64_t> next_;                  // per row: next row of equal capacity
};

// The same contract over an ordered map, for huge seq_len with few sequences.
class SparseCapacityIndex {
 public:
  int64_t take_at_least(int64_t need, int64_t* capacity);
  void put(int64_t row, int64_t capacity);

 private:
  std::map<int64_t, std::vector<int64_t>> rows_by_capacity_;
};

// --- implementation ---------------------------------------------------------------

inline DenseCapacityIndex::DenseCapacityIndex(int64_t max_capacity)
    : head_(static_cast<size_t>(max_capacity + 1), -1) {
  int64_t bits = max_capacity + 1;
  do {
    int64_t words = (bits + 63) / 64;
    levels_.emplace_back(static_cast<size_t>(words), 0);
    bits = words;
  } while (bits > 1);
}

inline int64_t DenseCapacityIndex::find_next(int64_t i) const {
  const int top = static_cast<int>(levels_.size());
  int level = 0;
  int64_t pos = i;
  for (; level < top; ++level) {
    const std::vector<uint64_t>& words = levels_[level];
    int64_t w = pos >> 6;
    if (w >= static_cast<int64_t>(words.size())) return -1;
    uint64_t bits = words[w] & (~uint64_t{0} << (pos & 63));
    if (bits != 0) {
      pos = (w << 6) + __builtin_ctzll(bits);
      break;
    }
    pos = w + 1;  // continue from the next word, one level up
  }
  if (level == top) return -1;
  for (; level > 0; --level) pos = (pos << 6) + __builtin_ctzll(levels_[level - 1][pos]);
  return pos;
}

inline void DenseCapacityIndex::set_bit(int64_t i) {
  for (auto& words : levels_) {
    uint64_t& w = words[i >> 6];
    bool was_empty = w == 0;
    w |= uint64_t{1} << (i & 63);
    if (!was_empty) return;
    i >>= 6;
  }
}

inline void DenseCapacityIndex::clear_bit(int64_t i) {
  for (auto& words : levels_) {
    uint64_t& w = words[i >> 6];
    w &= ~(uint64_t{1} << (i & 63));
    if (w != 0) return;
    i >>= 6;
  }
}

inline int64_t DenseCapacityIndex::take_at_least(int64_t need, int64_t* capacity) {
  int64_t c = find_next(need);
  if (c < 0) return -1;
  int64_t row = head_[c];
  head_[c] = next_[row];
  if (head_[c] < 0) clear_bit(c);
  *capacity = c;
  return row;
}

inline void DenseCapacityIndex::put(int64_t row, int64_t capacity) {
  if (row >= static_cast<int64_t>(next_.size())) next_.resize(static_cast<size_t>(row + 1) * 2, -1);
  next_[row] = head_[capacity];
  if (head_[capacity] < 0) set_bit(capacity);
  head_[capacity] = row;
}

inline int64_t SparseCapacityIndex::take_at_least(int64_t need, int64_t* capacity) {
  auto it = rows_by_capacity_.lower_bound(need);
  if (it == rows_by_capacity_.end()) return -1;
  int64_t row = it->second.back();
  *capacity = it->first;
  it->second.pop_back();
  if (it->second.empty()) rows_by_capacity_.erase(it);
  return row;
}

inline void SparseCapacityIndex::put(int64_t row, int64_t capacity) {
  rows_by_capacity_[capacity].push_back(row);
}

}  // namespace mlforge

#endif  // MLFORGE_CAPACITY_INDEX_H_
