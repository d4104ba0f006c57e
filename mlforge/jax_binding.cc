// The private module `_mlforge_jax`: MLForge kernels as XLA FFI handlers (CPU), handed
// to jax.ffi.register_ffi_target as PyCapsules by mlforge/jax_ops.py. Kept apart from
// `_mlforge` so the core binding needs no XLA headers and mlforge imports without jax.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <exception>
#include <string>

#include "mlforge/qmatmul.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
namespace py = pybind11;

namespace mlforge {
namespace {

std::string dims_str(ffi::Span<const int64_t> d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + ")";
}

// x (M, I) f32, wq (O, I) s8 or (O, I / 2) u8, scales (O, I / group) f32 -> y (M, O) f32.
// jax_ops.py flattens leading dims and checks shapes first; these checks guard the
// handler against any other caller, since a wrong shape here would read out of bounds.
ffi::Error QMatmulImpl(ffi::Buffer<ffi::F32> x, ffi::AnyBuffer wq, ffi::Buffer<ffi::F32> scales,
                       ffi::ResultBuffer<ffi::F32> y, int64_t bits, int64_t group_size) {
  auto xd = x.dimensions(), wd = wq.dimensions(), sd = scales.dimensions(),
       yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 2 || sd.size() != 2 || yd.size() != 2) {
    return ffi::Error::InvalidArgument("mlforge_qmatmul: x, wq, scales and y must be 2-D");
  }
  const QMatmulShape shape{xd[0], xd[1], wd[0], static_cast<int>(bits), group_size};
  try {
    check_qmatmul_shape(shape);
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(std::string("mlforge_qmatmul: ") + e.what());
  }
  const ffi::DataType want = bits == 8 ? ffi::S8 : ffi::U8;
  const int64_t packed = bits == 8 ? shape.in : shape.in / 2;
  if (wq.element_type() != want || wd[1] != packed || sd[0] != shape.out ||
      sd[1] != shape.in / group_size || yd[0] != shape.rows || yd[1] != shape.out) {
    return ffi::Error::InvalidArgument(
        "mlforge_qmatmul: shapes do not fit: x " + dims_str(xd) + ", wq " + dims_str(wd) +
        ", scales " + dims_str(sd) + ", y " + dims_str(yd) + ", bits " + std::to_string(bits) +
        ", group_size " + std::to_string(group_size));
  }
  qmatmul(shape, x.typed_data(), wq.untyped_data(), scales.typed_data(), y->typed_data());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(QMatmulHandler, QMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("bits")
                                  .Attr<int64_t>("group_size"));

}  // namespace
}  // namespace mlforge

PYBIND11_MODULE(_mlforge_jax, m) {
  m.doc() = "MLForge XLA FFI handlers (private; use mlforge.jax_ops)";
  m.def("handlers", [] {
    py::dict d;
    d["mlforge_qmatmul"] = py::capsule(reinterpret_cast<void*>(mlforge::QMatmulHandler));
    return d;
  });
}
