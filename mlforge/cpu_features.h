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

}  // namespace mlforge

#endif  // MLFORGE_CPU_FEATURES_H_
