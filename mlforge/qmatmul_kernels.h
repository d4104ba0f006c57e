// Internal: the per-instruction-set entry points of qmatmul. Included by qmatmul*.cc only.
#ifndef MLFORGE_QMATMUL_KERNELS_H_
#define MLFORGE_QMATMUL_KERNELS_H_

#include <cstdint>

namespace mlforge {
namespace internal {

struct QMatmulArgs {
  const float* x;       // (rows, in)
  const uint8_t* wq;    // (out, in * bits / 8), see qmatmul.h
  const float* scales;  // (out, in / group)
  float* y;             // (rows, out)
  int64_t rows, in, out, group;
  int bits;
};

// Each computes y[:, o0:o1] for all rows.
void qmatmul_outputs_scalar(const QMatmulArgs& a, int64_t o0, int64_t o1);
void qmatmul_outputs_avx2(const QMatmulArgs& a, int64_t o0, int64_t o1);
void qmatmul_outputs_avx512(const QMatmulArgs& a, int64_t o0, int64_t o1);

// Whether the SIMD kernels take this group size (the scalar one takes any valid shape).
inline bool qmatmul_avx2_fits(int bits, int64_t group) {
  return bits == 8 ? group % 8 == 0 : group % 16 == 0;
}
inline bool qmatmul_avx512_fits(int bits, int64_t group) {
  return bits == 8 ? group % 16 == 0 : group % 32 == 0;
}

}  // namespace internal
}  // namespace mlforge

#endif  // MLFORGE_QMATMUL_KERNELS_H_
