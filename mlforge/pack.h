// Sequence packing for training: whole sequences into fixed-length rows by
// best-fit-decreasing (longest first; each goes to the fullest row that still fits).
#ifndef MLFORGE_PACK_H_
#define MLFORGE_PACK_H_

#include <cstdint>
#include <vector>

namespace mlforge {

enum class CapacityIndexKind { kAuto, kDense, kSparse };

struct PackPlan {
  int64_t seq_len = 0;
  int64_t num_rows = 0;
  int64_t num_truncated = 0;
  int64_t num_tokens = 0;           // tokens placed, after truncation
  std::vector<int64_t> row_start;   // num_rows + 1 offsets into row_seqs
  std::vector<int64_t> row_seqs;    // sequence ids, each row's in offset order
  std::vector<int64_t> src_offset;  // where each sequence starts in the flat tokens
  std::vector<int32_t> length;      // each sequence's packed length (after truncation)

  double padding_fraction() const {
    double cells = static_cast<double>(num_rows) * static_cast<double>(seq_len);
    return cells == 0 ? 0.0 : 1.0 - static_cast<double>(num_tokens) / cells;
  }
};

// Places n sequences of the given lengths (summing to num_tokens) into rows of seq_len
// and writes (row, offset) of each, in input order, to placement[2 * i], [2 * i + 1].
// Equal lengths are placed in input order, so the result is deterministic. Throws
// std::invalid_argument naming `lengths` (with the index), `seq_len` or `tokens`.
PackPlan plan_packing(const int64_t* lengths, int64_t n, int64_t num_tokens, int64_t seq_len,
                      bool truncate, int64_t* placement,
                      CapacityIndexKind index = CapacityIndexKind::kAuto);

struct PackedRows {
  int32_t* tokens;       // (num_rows, seq_len), pad_id in padding
  int32_t* segment_ids;  // 1..k within each row, 0 in padding
  int32_t* positions;    // 0-based within each sequence, 0 in padding
  uint8_t* loss_mask;    // the given mask (as 0/1), or 1; 0 in padding
};

// Writes every cell of the packed rows; loss_mask may be null (all real tokens count).
void fill_packed(const PackPlan& plan, const int32_t* tokens, const uint8_t* loss_mask,
                 int32_t pad_id, const PackedRows& out);

}  // namespace mlforge

#endif  // MLFORGE_PACK_H_
