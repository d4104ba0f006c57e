// CPU attention for training (see attention.h). One task per (batch, kv head): it
// transposes that head's keys and values to (D, T) once, so a query's scores against 16
// keys are 16-wide vector FMAs (no horizontal sums), and owns the key/value gradients of
// that head, so the backward needs no atomics. Loops are plain C++ that GCC vectorizes;
// target_clones builds AVX-512, AVX2 and baseline copies, picked at load time.
#include "mlforge/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlforge/parallel.h"

namespace mlforge {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MLFORGE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MLFORGE_CLONES
#endif
#define MLFORGE_INLINE inline __attribute__((always_inline))

namespace {

// exp(x) for x <= ~0 in float32 (relative error ~2e-7), written so loops over it vectorize:
// 2^n * p(r) with n = round(x / ln 2) and a degree-6 polynomial on |r| <= ln 2 / 2.
MLFORGE_INLINE float exp_approx(float x) {
  x = std::max(x, -87.0f);
  x = std::min(x, 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// Keys are scored kChunk at a time with the partial sums held in registers; transposed
// heads are padded to a multiple of it so a chunk never reads past its row.
constexpr int64_t kChunk = 32;

struct Dims {
  int64_t T, H, KVH, D, G, Tp;
  explicit Dims(const AttentionShape& s)
      : T(s.length),
        H(s.heads),
        KVH(s.kv_heads),
        D(s.head_dim),
        G(s.heads / s.kv_heads),
        Tp((s.length + kChunk - 1) / kChunk * kChunk) {}
  int64_t q_at(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * D; }
  int64_t kv_at(int64_t b, int64_t t, int64_t j) const { return ((b * T + t) * KVH + j) * D; }
};

// dst (D, Tp) = the (T, D) rows of kv head j in batch b, zero past T.
MLFORGE_INLINE void transpose_head(const Dims& n, const float* src, int64_t b, int64_t j,
                                   float* dst) {
  std::fill(dst, dst + n.D * n.Tp, 0.0f);
  for (int64_t t = 0; t < n.T; ++t) {
    const float* row = src + n.kv_at(b, t, j);
    for (int64_t d = 0; d < n.D; ++d) dst[d * n.Tp + t] = row[d];
  }
}

// out[0..keys) = scale * x . cols[:, s] for cols (D, Tp); whole chunks are written, so out
// holds Tp floats. Each chunk's sums stay in registers across the D loop.
MLFORGE_INLINE void dot_columns(const Dims& n, const float* x, const float* cols, float scale,
                                int64_t keys, float* out) {
  for (int64_t s0 = 0; s0 < keys; s0 += kChunk) {
    float acc[kChunk] = {};
    for (int64_t d = 0; d < n.D; ++d) {
      const float xd = x[d] * scale;
      const float* c = cols + d * n.Tp + s0;
      for (int64_t i = 0; i < kChunk; ++i) acc[i] += xd * c[i];
    }
    std::copy(acc, acc + kChunk, out + s0);
  }
}

// scores[0..t] = scale * q . k[s]; returns how many keys (t + 1) were scored.
MLFORGE_INLINE int64_t score_row(const Dims& n, const float* qr, const float* kt, float scale,
                                 int64_t t, float* scores) {
  const int64_t keys = t + 1;
  dot_columns(n, qr, kt, scale, keys, scores);
  return keys;
}

// acc (kD) += sum_s w[s] * rows[s] for rows of kD floats `stride` apart; kD = 0: n.D.
template <int kD>
MLFORGE_INLINE void weighted_rows(const Dims& n, const float* w, int64_t keys, const float* rows,
                                  int64_t stride, float* out) {
  constexpr int64_t kMax = kD > 0 ? kD : 1;
  if constexpr (kD > 0) {
    float acc[kMax] = {};
    for (int64_t s = 0; s < keys; ++s) {
      const float ws = w[s];
      const float* r = rows + s * stride;
      for (int64_t d = 0; d < kD; ++d) acc[d] += ws * r[d];
    }
    std::copy(acc, acc + kD, out);
  } else {
    std::fill(out, out + n.D, 0.0f);
    for (int64_t s = 0; s < keys; ++s) {
      const float ws = w[s];
      if (ws == 0.0f) continue;
      const float* r = rows + s * stride;
      for (int64_t d = 0; d < n.D; ++d) out[d] += ws * r[d];
    }
  }
}

MLFORGE_INLINE void weighted_rows_any(const Dims& n, const float* w, int64_t keys,
                                      const float* rows, int64_t stride, float* out) {
  if (n.D == 64) {
    weighted_rows<64>(n, w, keys, rows, stride, out);
  } else if (n.D == 128) {
    weighted_rows<128>(n, w, keys, rows, stride, out);
  } else {
    weighted_rows<0>(n, w, keys, rows, stride, out);
  }
}

MLFORGE_CLONES void forward_task(const Dims& n, float scale, const float* q, const float* k,
                                 const float* v, const int32_t* seg_all, float* out, float* lse,
                                 int64_t b, int64_t j) {
  std::vector<float> kt(n.D * n.Tp), scores(n.Tp), acc(n.D), mean(n.D, 0.0f);
  transpose_head(n, k, b, j, kt.data());
  const int32_t* seg = seg_all + b * n.T;
  bool any_padding = false;
  for (int64_t t = 0; t < n.T; ++t) any_padding |= seg[t] == 0;
  if (any_padding) {
    for (int64_t s = 0; s < n.T; ++s) {
      const float* vr = v + n.kv_at(b, s, j);
      for (int64_t d = 0; d < n.D; ++d) mean[d] += vr[d];
    }
    for (int64_t d = 0; d < n.D; ++d) mean[d] /= static_cast<float>(n.T);
  }
  for (int64_t g = 0; g < n.G; ++g) {
    const int64_t h = j * n.G + g;
    for (int64_t t = 0; t < n.T; ++t) {
      float* o = out + n.q_at(b, t, h);
      const int32_t st = seg[t];
      if (st == 0) {
        std::copy(mean.begin(), mean.end(), o);
        lse[(b * n.H + h) * n.T + t] = 0.0f;
        continue;
      }
      const int64_t keys = score_row(n, q + n.q_at(b, t, h), kt.data(), scale, t, scores.data());
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < keys; ++s) mx = seg[s] == st ? std::max(mx, scores[s]) : mx;
      float sum = 0.0f;
      for (int64_t s = 0; s < keys; ++s) {
        const float p = seg[s] == st ? exp_approx(scores[s] - mx) : 0.0f;
        scores[s] = p;
        sum += p;
      }
      weighted_rows_any(n, scores.data(), keys, v + n.kv_at(b, 0, j), n.KVH * n.D, acc.data());
      const float inv = 1.0f / sum;
      for (int64_t d = 0; d < n.D; ++d) o[d] = acc[d] * inv;
      lse[(b * n.H + h) * n.T + t] = mx + std::log(sum);
    }
  }
}

MLFORGE_CLONES void backward_task(const Dims& n, float scale, const float* q, const float* k,
                                  const float* v, const int32_t* seg_all, const float* out,
                                  const float* lse, const float* dout, float* dq, float* dk,
                                  float* dv, int64_t b, int64_t j) {
  std::vector<float> kt(n.D * n.Tp), vt(n.D * n.Tp), p(n.Tp), ds(n.Tp), dq_row(n.D);
  std::vector<float> dk_acc(n.T * n.D, 0.0f), dv_acc(n.T * n.D, 0.0f);
  transpose_head(n, k, b, j, kt.data());
  transpose_head(n, v, b, j, vt.data());
  const int32_t* seg = seg_all + b * n.T;
  const float inv_t = 1.0f / static_cast<float>(n.T);
  for (int64_t g = 0; g < n.G; ++g) {
    const int64_t h = j * n.G + g;
    for (int64_t t = 0; t < n.T; ++t) {
      const float* dor = dout + n.q_at(b, t, h);
      float* dqr = dq + n.q_at(b, t, h);
      const int32_t st = seg[t];
      if (st == 0) {  // uniform weights over all keys: only v gets a gradient
        for (int64_t s = 0; s < n.T; ++s) {
          float* dvs = dv_acc.data() + s * n.D;
          for (int64_t d = 0; d < n.D; ++d) dvs[d] += dor[d] * inv_t;
        }
        std::fill(dqr, dqr + n.D, 0.0f);
        continue;
      }
      const float* qr = q + n.q_at(b, t, h);
      const float* orow = out + n.q_at(b, t, h);
      const int64_t keys = score_row(n, qr, kt.data(), scale, t, p.data());
      const float row_lse = lse[(b * n.H + h) * n.T + t];
      for (int64_t s = 0; s < keys; ++s) p[s] = seg[s] == st ? exp_approx(p[s] - row_lse) : 0.0f;
      float di = 0.0f;
      for (int64_t d = 0; d < n.D; ++d) di += dor[d] * orow[d];
      dot_columns(n, dor, vt.data(), 1.0f, keys, ds.data());  // ds = dO . v[s]
      for (int64_t s = 0; s < keys; ++s) ds[s] = p[s] * (ds[s] - di) * scale;
      weighted_rows_any(n, ds.data(), keys, k + n.kv_at(b, 0, j), n.KVH * n.D, dq_row.data());
      for (int64_t s = 0; s < keys; ++s) {
        const float dss = ds[s], ps = p[s];
        if (ps == 0.0f) continue;
        float* dks = dk_acc.data() + s * n.D;
        float* dvs = dv_acc.data() + s * n.D;
        for (int64_t d = 0; d < n.D; ++d) {
          dks[d] += dss * qr[d];
          dvs[d] += ps * dor[d];
        }
      }
      std::copy(dq_row.begin(), dq_row.end(), dqr);
    }
  }
  for (int64_t s = 0; s < n.T; ++s) {
    std::copy(dk_acc.data() + s * n.D, dk_acc.data() + (s + 1) * n.D, dk + n.kv_at(b, s, j));
    std::copy(dv_acc.data() + s * n.D, dv_acc.data() + (s + 1) * n.D, dv + n.kv_at(b, s, j));
  }
}

}  // namespace

void check_attention_shape(const AttentionShape& s) {
  const std::pair<const char*, int64_t> dims[] = {{"batch", s.batch},
                                                  {"length", s.length},
                                                  {"heads", s.heads},
                                                  {"kv_heads", s.kv_heads},
                                                  {"head_dim", s.head_dim}};
  for (const auto& [name, value] : dims) {
    if (value <= 0) {
      throw std::invalid_argument(std::string("attention: ") + name + " must be positive, got " +
                                  std::to_string(value));
    }
  }
  if (s.heads % s.kv_heads != 0) {
    throw std::invalid_argument("attention: heads (" + std::to_string(s.heads) +
                                ") must be a multiple of kv_heads (" +
                                std::to_string(s.kv_heads) + ")");
  }
}

void attention_forward(const AttentionShape& s, float scale, const float* q, const float* k,
                       const float* v, const int32_t* segment_ids, float* out, float* lse) {
  check_attention_shape(s);
  const Dims n(s);
  parallel_for(s.batch * s.kv_heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      forward_task(n, scale, q, k, v, segment_ids, out, lse, task / s.kv_heads,
                   task % s.kv_heads);
    }
  });
}

void attention_backward(const AttentionShape& s, float scale, const float* q, const float* k,
                        const float* v, const int32_t* segment_ids, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  check_attention_shape(s);
  const Dims n(s);
  parallel_for(s.batch * s.kv_heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      backward_task(n, scale, q, k, v, segment_ids, out, lse, dout, dq, dk, dv,
                    task / s.kv_heads, task % s.kv_heads);
    }
  });
}

}  // namespace mlforge
