#include "mlforge/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace mlforge {
namespace {

Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

Isa cap_from_env() {
  const char* v = std::getenv("MLFORGE_MAX_ISA");
  if (v == nullptr) return Isa::kAvx512;
  if (std::strcmp(v, "scalar") == 0) return Isa::kScalar;
  if (std::strcmp(v, "avx2") == 0) return Isa::kAvx2;
  return Isa::kAvx512;
}

std::atomic<int>& cap() {
  static std::atomic<int> value{static_cast<int>(cap_from_env())};
  return value;
}

struct Vnni {
  bool avx512 = false, avx = false;
};

Vnni detect_vnni() {
  Vnni v;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  v.avx512 = __builtin_cpu_supports("avx512vnni");
  v.avx = __builtin_cpu_supports("avxvnni");
#endif
  return v;
}

std::atomic<bool>& vnni_enabled() {
  static std::atomic<bool> value{[] {
    const char* v = std::getenv("MLFORGE_VNNI");
    return v == nullptr || std::strcmp(v, "off") != 0;
  }()};
  return value;
}

const Vnni& detected_vnni() {
  static const Vnni v = detect_vnni();
  return v;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() {
  int c = cap().load(std::memory_order_relaxed);
  int d = static_cast<int>(detected_isa());
  return static_cast<Isa>(c < d ? c : d);
}

void set_max_isa(Isa isa) { cap().store(static_cast<int>(isa), std::memory_order_relaxed); }

bool avx512_vnni() {
  return detected_vnni().avx512 && active_isa() == Isa::kAvx512 &&
         vnni_enabled().load(std::memory_order_relaxed);
}

bool avx_vnni() {
  return detected_vnni().avx && active_isa() >= Isa::kAvx2 &&
         vnni_enabled().load(std::memory_order_relaxed);
}

void set_vnni(bool enabled) { vnni_enabled().store(enabled, std::memory_order_relaxed); }

}  // namespace mlforge
