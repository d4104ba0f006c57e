// Inference attention over a slot KV cache on the CPU, forward only. q and out are
// float32; the caches are float32 or IEEE float16 (converted as they are read, float32
// arithmetic: half the bytes per cached token for memory-bound decode).
//
// Layouts (row-major): q (B, T, H, D); k_cache, v_cache (N, S, KVH, D) with H a multiple
// of KVH (grouped-query: head h reads kv head h / (H / KVH)); slots (B,) and
// q_positions (B, T) int32. Query (b, t) attends keys 0..q_positions[b, t] of cache row
// slots[b]; a negative position marks a padding query, whose output is zeros.
//
// Only keys up to the largest position of a query block are read, so a call costs time
// proportional to the used part of each row, not to the capacity S. Work is split over
// (batch row, kv head, block of queries); each task reads its keys and values once for
// all G = H / KVH heads of the group and all its queries (online softmax over key blocks).
#ifndef MLFORGE_CACHE_ATTENTION_H_
#define MLFORGE_CACHE_ATTENTION_H_

#include <cstdint>

namespace mlforge {

struct CacheAttentionShape {
  int64_t batch, queries, heads, kv_heads, head_dim;
  int64_t rows, capacity;  // N cache rows (slots) of S positions
};

// Throws std::invalid_argument naming the field when a dimension is not positive or
// heads is not a multiple of kv_heads.
void check_cache_attention_shape(const CacheAttentionShape& s);

// Writes out (B, T, H, D). Throws std::invalid_argument naming `slots` or `q_positions`
// when a slot is outside [0, N) or a position is >= S, before anything is written.
void cache_attention(const CacheAttentionShape& s, float scale, const float* q,
                     const float* k_cache, const float* v_cache, const int32_t* slots,
                     const int32_t* q_positions, float* out);

// The same with float16 caches, given as their IEEE binary16 bits (mlforge/half.h).
void cache_attention(const CacheAttentionShape& s, float scale, const float* q,
                     const uint16_t* k_cache, const uint16_t* v_cache, const int32_t* slots,
                     const int32_t* q_positions, float* out);

// The same in float64, one query at a time: the tests' reference.
void cache_attention_reference(const CacheAttentionShape& s, float scale, const float* q,
                               const float* k_cache, const float* v_cache,
                               const int32_t* slots, const int32_t* q_positions, float* out);

}  // namespace mlforge

#endif  // MLFORGE_CACHE_ATTENTION_H_
