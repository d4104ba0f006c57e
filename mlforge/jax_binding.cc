// The private module `_mlforge_jax`: MLForge kernels as XLA FFI handlers (CPU), handed
// to jax.ffi.register_ffi_target as PyCapsules by mlforge/jax_ops.py. Kept apart from
// `_mlforge` so the core binding needs no XLA headers and mlforge imports without jax.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>

#include "mlforge/attention.h"
#include "mlforge/cache_attention.h"
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
// Two targets: mlforge_qmatmul (float activations), mlforge_qmatmul_q8 (int8 blocks).
template <Activations kAct>
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
  qmatmul(shape, x.typed_data(), wq.untyped_data(), scales.typed_data(), y->typed_data(), kAct);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(QMatmulHandler, QMatmulImpl<Activations::kFloat>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("bits")
                                  .Attr<int64_t>("group_size"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(QMatmulQ8Handler, QMatmulImpl<Activations::kInt8>,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("bits")
                                  .Attr<int64_t>("group_size"));

// x (M, I) f32, panels u8 (P, I / 4, 16, 4), panel_scales f32 (P, I / group, 16) -> y (M, O)
// f32: int8 weights in the panel layout (qmatmul.h), int8 activations.
ffi::Error QMatmulPanelImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> panels,
                            ffi::Buffer<ffi::F32> panel_scales, ffi::ResultBuffer<ffi::F32> y,
                            int64_t group_size) {
  auto xd = x.dimensions(), pd = panels.dimensions(), sd = panel_scales.dimensions(),
       yd = y->dimensions();
  if (xd.size() != 2 || pd.size() != 4 || sd.size() != 3 || yd.size() != 2) {
    return ffi::Error::InvalidArgument(
        "mlforge_qmatmul_panel: x and y must be 2-D, panels 4-D, panel_scales 3-D");
  }
  const QMatmulShape shape{xd[0], xd[1], yd[1], 8, group_size};
  try {
    check_qmatmul_shape(shape);
    if (!qmatmul_panel_fits(shape)) throw std::invalid_argument("group_size must be a multiple of 32");
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(std::string("mlforge_qmatmul_panel: ") + e.what());
  }
  const int64_t n_panels = qmatmul_panel_count(shape.out);
  if (pd[0] != n_panels || pd[1] != shape.in / 4 || pd[2] != kPanelOutputs || pd[3] != 4 ||
      sd[0] != n_panels || sd[1] != shape.in / group_size || sd[2] != kPanelOutputs ||
      yd[0] != shape.rows) {
    return ffi::Error::InvalidArgument("mlforge_qmatmul_panel: shapes do not fit: x " +
                                       dims_str(xd) + ", panels " + dims_str(pd) +
                                       ", panel_scales " + dims_str(sd) + ", y " + dims_str(yd));
  }
  qmatmul_panel(shape, x.typed_data(), panels.typed_data(), panel_scales.typed_data(),
                y->typed_data());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(QMatmulPanelHandler, QMatmulPanelImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("group_size"));

// q (B, T, H, D), k/v (B, T, KVH, D), segment_ids (B, T) -> out (B, T, H, D), lse (B, H, T).
ffi::Error attention_shape(ffi::Span<const int64_t> qd, ffi::Span<const int64_t> kd,
                           ffi::Span<const int64_t> vd, ffi::Span<const int64_t> sd,
                           AttentionShape* shape) {
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || sd.size() != 2 || kd[0] != qd[0] ||
      kd[1] != qd[1] || kd[3] != qd[3] || vd[0] != kd[0] || vd[1] != kd[1] || vd[2] != kd[2] ||
      vd[3] != kd[3] || sd[0] != qd[0] || sd[1] != qd[1]) {
    return ffi::Error::InvalidArgument("mlforge_attention: shapes do not fit: q " + dims_str(qd) +
                                       ", k " + dims_str(kd) + ", v " + dims_str(vd) +
                                       ", segment_ids " + dims_str(sd));
  }
  *shape = AttentionShape{qd[0], qd[1], qd[2], kd[2], qd[3]};
  try {
    check_attention_shape(*shape);
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(std::string("mlforge_attention: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error AttentionFwdImpl(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> seg,
                            ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse,
                            float scale) {
  AttentionShape shape;
  if (auto err = attention_shape(q.dimensions(), k.dimensions(), v.dimensions(),
                                 seg.dimensions(), &shape);
      err.failure()) {
    return err;
  }
  if (out->element_count() != q.element_count() ||
      static_cast<int64_t>(lse->element_count()) != shape.batch * shape.heads * shape.length) {
    return ffi::Error::InvalidArgument("mlforge_attention: result buffers do not fit");
  }
  attention_forward(shape, scale, q.typed_data(), k.typed_data(), v.typed_data(),
                    seg.typed_data(), out->typed_data(), lse->typed_data());
  return ffi::Error::Success();
}

ffi::Error AttentionBwdImpl(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> seg,
                            ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse,
                            ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                            ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv,
                            float scale) {
  AttentionShape shape;
  if (auto err = attention_shape(q.dimensions(), k.dimensions(), v.dimensions(),
                                 seg.dimensions(), &shape);
      err.failure()) {
    return err;
  }
  if (out.element_count() != q.element_count() || dout.element_count() != q.element_count() ||
      static_cast<int64_t>(lse.element_count()) != shape.batch * shape.heads * shape.length ||
      dq->element_count() != q.element_count() || dk->element_count() != k.element_count() ||
      dv->element_count() != v.element_count()) {
    return ffi::Error::InvalidArgument("mlforge_attention_bwd: buffers do not fit");
  }
  attention_backward(shape, scale, q.typed_data(), k.typed_data(), v.typed_data(),
                     seg.typed_data(), out.typed_data(), lse.typed_data(), dout.typed_data(),
                     dq->typed_data(), dk->typed_data(), dv->typed_data());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(AttentionFwdHandler, AttentionFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AttentionBwdHandler, AttentionBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));

// q (B, T, H, D), k/v cache (N, S, KVH, D) both f32 or both f16, slots (B,),
// q_positions (B, T) -> out like q (f32). Slots and positions are checked by the core
// before it reads the caches.
ffi::Error CacheAttentionImpl(ffi::Buffer<ffi::F32> q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                              ffi::Buffer<ffi::S32> slots, ffi::Buffer<ffi::S32> pos,
                              ffi::ResultBuffer<ffi::F32> out, float scale) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(), sd = slots.dimensions(),
       pd = pos.dimensions();
  const auto bad = [&](const char* what) {
    return ffi::Error::InvalidArgument(
        std::string("mlforge_cache_attention: ") + what + ": q " + dims_str(qd) + ", k_cache " +
        dims_str(kd) + ", v_cache " + dims_str(vd) + ", slots " + dims_str(sd) +
        ", q_positions " + dims_str(pd));
  };
  const ffi::DataType kt = k.element_type();
  if (kt != ffi::F32 && kt != ffi::F16) return bad("k_cache must be float32 or float16");
  if (v.element_type() != kt) {
    return bad(kt == ffi::F32 ? "v_cache must be float32 like k_cache"
                              : "v_cache must be float16 like k_cache");
  }
  if (qd.size() != 4) return bad("q must be (B, T, H, D)");
  if (kd.size() != 4 || kd[3] != qd[3]) return bad("k_cache must be (N, S, KVH, D)");
  if (vd.size() != 4 || vd[0] != kd[0] || vd[1] != kd[1] || vd[2] != kd[2] || vd[3] != kd[3]) {
    return bad("v_cache must have k_cache's shape");
  }
  if (sd.size() != 1 || sd[0] != qd[0]) return bad("slots must be (B,)");
  if (pd.size() != 2 || pd[0] != qd[0] || pd[1] != qd[1]) return bad("q_positions must be (B, T)");
  if (out->element_count() != q.element_count()) return bad("out must have q's shape");
  const CacheAttentionShape shape{qd[0], qd[1], qd[2], kd[2], qd[3], kd[0], kd[1]};
  try {
    if (kt == ffi::F16) {
      cache_attention(shape, scale, q.typed_data(), k.reinterpret_data<uint16_t>(),
                      v.reinterpret_data<uint16_t>(), slots.typed_data(), pos.typed_data(),
                      out->typed_data());
    } else {
      cache_attention(shape, scale, q.typed_data(), k.typed_data<float>(),
                      v.typed_data<float>(), slots.typed_data(), pos.typed_data(),
                      out->typed_data());
    }
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(std::string("mlforge_cache_attention: ") + e.what());
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(CacheAttentionHandler, CacheAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));

}  // namespace
}  // namespace mlforge

PYBIND11_MODULE(_mlforge_jax, m) {
  m.doc() = "MLForge XLA FFI handlers (private; use mlforge.jax_ops)";
  m.def("panel_native", [] { return mlforge::qmatmul_panel_native(); },
        "Whether the panel-layout kernel runs SIMD code on this CPU (AVX-512 VNNI)");
  m.def("handlers", [] {
    py::dict d;
    d["mlforge_qmatmul"] = py::capsule(reinterpret_cast<void*>(mlforge::QMatmulHandler));
    d["mlforge_qmatmul_q8"] = py::capsule(reinterpret_cast<void*>(mlforge::QMatmulQ8Handler));
    d["mlforge_qmatmul_panel"] =
        py::capsule(reinterpret_cast<void*>(mlforge::QMatmulPanelHandler));
    d["mlforge_attention"] = py::capsule(reinterpret_cast<void*>(mlforge::AttentionFwdHandler));
    d["mlforge_attention_bwd"] =
        py::capsule(reinterpret_cast<void*>(mlforge::AttentionBwdHandler));
    d["mlforge_cache_attention"] =
        py::capsule(reinterpret_cast<void*>(mlforge::CacheAttentionHandler));
    return d;
  });
}
