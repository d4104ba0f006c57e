// Runtime choice of the SIMD instruction set used by the kernels.
#ifndef MLFORGE_CPU_FEATURES_H_
#define MLFORGE_CPU_FEATURES_H_

namespace mlforge {

// Ordered: a kernel may use any level up to active_isa().
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);

// The best level this CPU supports (always kScalar off x86).
Isa detected_isa();

// min(detected_isa(), the cap set by set_max_isa() or the env MLFORGE_MAX_ISA).
Isa active_isa();

// Caps the level for this process; tests use it to check every path against scalar.
void set_max_isa(Isa isa);

// Integer dot-product extensions, apart from Isa because they do not nest with it
// (Cascade Lake has AVX512-VNNI but no AVX-VNNI; Alder Lake the reverse; Zen 2 neither).
// Each is detected support, within the Isa cap, and not turned off by set_vnni(false) or
// the env MLFORGE_VNNI=off (tests use that to reach the AVX2 maddubs path on VNNI CPUs).
bool avx512_vnni();  // vpdpbusd on zmm: needs active_isa() == kAvx512
bool avx_vnni();     // VEX vpdpbusd on ymm: needs active_isa() >= kAvx2
void set_vnni(bool enabled);

}  // namespace mlforge

#endif  // MLFORGE_CPU_FEATURES_H_
