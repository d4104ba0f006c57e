// Causal self-attention over packed rows on the CPU, forward and backward, float32.
//
// Layouts (row-major): q (B, T, H, D); k, v (B, T, KVH, D) with H a multiple of KVH
// (grouped-query: head h reads kv head h / (H / KVH)); segment_ids (B, T) int32.
// Query t sees key s when s <= t and segment_ids[s] == segment_ids[t] != 0, the mask of
// reactor's attention_mask for a row without a cache. A padding query (segment 0) sees no
// key; like the reference's finite mask value, it then averages v over all T keys
// uniformly, and gets no gradient into q or k.
//
// Forward writes out (B, T, H, D) and lse (B, H, T), the log-sum-exp of each row's scaled
// scores (0 for padding rows), which the backward uses to recompute probabilities instead
// of storing (B, H, T, T) of them. Work is split over (batch, kv head) pairs.
#ifndef MLFORGE_ATTENTION_H_
#define MLFORGE_ATTENTION_H_

#include <cstdint>

namespace mlforge {

struct AttentionShape {
  int64_t batch, length, heads, kv_heads, head_dim;
};

// Throws std::invalid_argument naming the field when a dimension is not positive or
// heads is not a multiple of kv_heads.
void check_attention_shape(const AttentionShape& s);

void attention_forward(const AttentionShape& s, float scale, const float* q, const float* k,
                       const float* v, const int32_t* segment_ids, float* out, float* lse);

// dout (B, T, H, D) -> dq (B, T, H, D), dk, dv (B, T, KVH, D); every output is written.
void attention_backward(const AttentionShape& s, float scale, const float* q, const float* k,
                        const float* v, const int32_t* segment_ids, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv);

}  // namespace mlforge

#endif  // MLFORGE_ATTENTION_H_
