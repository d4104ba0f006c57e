// pybind11 binding: the private module `_mlforge` behind the `mlforge` facade.
// It checks Python-level types and shapes, takes and returns numpy arrays without
// copying when their dtype and layout already fit, and releases the GIL in kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlforge/cpu_features.h"
#include "mlforge/gguf_codec.h"
#include "mlforge/pack.h"
#include "mlforge/parallel.h"
#include "mlforge/qmatmul.h"
#include "mlforge/quant.h"

namespace py = pybind11;

namespace mlforge {
namespace {

using Shape = std::vector<py::ssize_t>;

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    s += std::to_string(a.shape(i));
    if (i + 1 < a.ndim() || a.ndim() == 1) s += ",";
    if (i + 1 < a.ndim()) s += " ";
  }
  return s + ")";
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

py::array as_array(const py::handle& obj, const char* name) {
  if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
  py::array a = py::array::ensure(obj);
  if (a) return a;
  throw std::invalid_argument(std::string(name) + " must be a numpy array (or convertible)");
}

void require_ndim(const py::array& a, const char* name, py::ssize_t ndim, const char* what) {
  if (a.ndim() != ndim) {
    throw std::invalid_argument(std::string(name) + " must be " + what + "; got shape " +
                                shape_str(a));
  }
}

void require_nonempty(const py::array& a, const char* name) {
  if (a.size() == 0) {
    throw std::invalid_argument(std::string(name) + " must be non-empty; got shape " +
                                shape_str(a));
  }
}

bool is_kind(const py::array& a, char kind, py::ssize_t itemsize) {
  return a.dtype().kind() == kind && a.dtype().itemsize() == itemsize;
}

bool is_integer(const py::array& a) {
  char k = a.dtype().kind();
  return k == 'i' || k == 'u';
}

// The array as a C-contiguous T array: the same object when it already is one.
template <class T>
py::array_t<T> contiguous(const py::array& a) {
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
}

template <class T>
py::array_t<T> require_dtype(const py::array& a, const char* name, char kind, const char* want) {
  if (!is_kind(a, kind, sizeof(T))) {
    throw std::invalid_argument(std::string(name) + " must have dtype " + want + "; got " +
                                dtype_str(a));
  }
  return contiguous<T>(a);
}

// --- affine (MLX) -------------------------------------------------------------------

py::tuple affine_quantize_py(const py::object& w_obj, int group_size, int bits) {
  py::array w = as_array(w_obj, "w");
  if (!is_kind(w, 'f', 4)) {
    throw std::invalid_argument("w must be float32 (or float16); got dtype " + dtype_str(w));
  }
  require_ndim(w, "w", 2, "2-D (rows, cols)");
  require_nonempty(w, "w");
  check_affine_params(group_size, bits);
  const int64_t rows = w.shape(0), cols = w.shape(1);
  if (cols % group_size != 0) {
    throw std::invalid_argument("w.shape[1] (" + std::to_string(cols) +
                                ") must be divisible by group_size (" + std::to_string(group_size) +
                                ")");
  }
  py::array_t<float> wc = contiguous<float>(w);
  py::array_t<uint32_t> wq(Shape{rows, affine_packed_cols(cols, bits)});
  py::array_t<float> scales(Shape{rows, cols / group_size});
  py::array_t<float> biases(Shape{rows, cols / group_size});
  const float* src = wc.data();
  uint32_t* q = wq.mutable_data();
  float* s = scales.mutable_data();
  float* b = biases.mutable_data();
  {
    py::gil_scoped_release release;
    affine_quantize(src, rows, cols, group_size, bits, q, s, b);
  }
  return py::make_tuple(wq, scales, biases);
}

py::array affine_dequantize_py(const py::object& wq_obj, const py::object& scales_obj,
                               const py::object& biases_obj, int group_size, int bits,
                               bool half_precision) {
  py::array wq = as_array(wq_obj, "wq");
  py::array scales = as_array(scales_obj, "scales");
  py::array biases = as_array(biases_obj, "biases");
  require_ndim(wq, "wq", 2, "2-D (rows, packed cols)");
  require_nonempty(wq, "wq");
  require_ndim(scales, "scales", 2, "2-D (rows, groups)");
  py::array_t<uint32_t> wqc = require_dtype<uint32_t>(wq, "wq", 'u', "uint32");
  py::array_t<float> sc = require_dtype<float>(scales, "scales", 'f', "float32 (or float16)");
  py::array_t<float> bc = require_dtype<float>(biases, "biases", 'f', "float32 like scales");
  if (scales.shape(0) != wq.shape(0)) {
    throw std::invalid_argument("scales has " + std::to_string(scales.shape(0)) +
                                " rows but wq has " + std::to_string(wq.shape(0)));
  }
  if (biases.ndim() != 2 || biases.shape(0) != scales.shape(0) ||
      biases.shape(1) != scales.shape(1)) {
    throw std::invalid_argument("biases must have the shape of scales " + shape_str(scales) +
                                "; got " + shape_str(biases));
  }
  const int64_t rows = wq.shape(0);
  const int64_t cols = affine_dequantized_cols(wq.shape(1), scales.shape(1), group_size, bits);
  py::array_t<float> out(Shape{rows, cols});
  const uint32_t* q = wqc.data();
  const float* s = sc.data();
  const float* b = bc.data();
  float* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    affine_dequantize(q, s, b, rows, cols, group_size, bits, o, half_precision);
  }
  return out;
}

// --- GGUF ---------------------------------------------------------------------------

GgufType parse_qtype(const py::object& qtype) {
  if (py::isinstance<py::str>(qtype)) return gguf_type_from_name(qtype.cast<std::string>());
  if (!py::isinstance<py::bool_>(qtype) && PyIndex_Check(qtype.ptr())) {
    return gguf_type_from_id(py::int_(qtype).cast<int64_t>());
  }
  throw std::invalid_argument(
      "qtype must be \"Q8_0\", \"Q4_0\", \"Q4_1\" or a gguf.GGMLQuantizationType; got " +
      py::repr(qtype).cast<std::string>());
}

py::array gguf_quantize_py(const py::object& x_obj, const py::object& qtype_obj) {
  const GgufType qtype = parse_qtype(qtype_obj);
  const GgufTypeInfo info = gguf_type_info(qtype);
  py::array x = as_array(x_obj, "x");
  if (x.dtype().kind() != 'f') {
    throw std::invalid_argument("x must be a float array; got dtype " + dtype_str(x));
  }
  if (x.ndim() < 1) throw std::invalid_argument("x must have at least one dimension");
  require_nonempty(x, "x");
  const int64_t last = x.shape(x.ndim() - 1);
  if (last % info.block_size != 0) {
    throw std::invalid_argument("x.shape[-1] (" + std::to_string(last) +
                                ") must be a multiple of " + std::to_string(info.block_size) +
                                " (the " + info.name + " block size)");
  }
  py::array_t<float> xc = contiguous<float>(x);  // gguf-py also quantizes from float32
  Shape shape(x.shape(), x.shape() + x.ndim());
  shape.back() = last / info.block_size * info.type_size;
  py::array_t<uint8_t> out(shape);
  const float* src = xc.data();
  uint8_t* dst = out.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release release;
    gguf_quantize(src, n, qtype, dst);
  }
  return out;
}

py::array gguf_dequantize_py(const py::object& data_obj, const py::object& qtype_obj,
                             const py::object& shape_obj) {
  const GgufType qtype = parse_qtype(qtype_obj);
  const GgufTypeInfo info = gguf_type_info(qtype);
  py::array data = as_array(data_obj, "data");
  py::array_t<uint8_t> dc = require_dtype<uint8_t>(data, "data", 'u', "uint8");
  if (data.ndim() < 1) throw std::invalid_argument("data must have at least one dimension");
  require_nonempty(data, "data");
  const int64_t last = data.shape(data.ndim() - 1);
  if (last % info.type_size != 0) {
    throw std::invalid_argument("data.shape[-1] (" + std::to_string(last) +
                                ") must be a multiple of " + std::to_string(info.type_size) +
                                " (the bytes of one " + info.name + " block)");
  }
  const int64_t values = data.size() / info.type_size * info.block_size;
  Shape shape(data.shape(), data.shape() + data.ndim());
  shape.back() = last / info.type_size * info.block_size;
  if (!shape_obj.is_none()) {
    shape.clear();
    int64_t product = 1;
    for (const py::handle& d : py::iter(shape_obj)) {
      if (py::isinstance<py::bool_>(d) || !PyIndex_Check(d.ptr())) {
        throw std::invalid_argument("shape must be a sequence of ints");
      }
      int64_t v = py::int_(py::reinterpret_borrow<py::object>(d)).cast<int64_t>();
      if (v < 0) throw std::invalid_argument("shape must not hold negative sizes");
      shape.push_back(v);
      if (__builtin_mul_overflow(product, v, &product)) {
        throw std::invalid_argument("shape holds more values than data decodes to");
      }
    }
    if (product != values) {
      throw std::invalid_argument("shape holds " + std::to_string(product) +
                                  " values but data decodes to " + std::to_string(values));
    }
  }
  py::array_t<float> out(shape);
  const uint8_t* src = dc.data();
  float* dst = out.mutable_data();
  const int64_t nbytes = data.size();
  {
    py::gil_scoped_release release;
    gguf_dequantize(src, nbytes, qtype, dst);
  }
  return out;
}

// --- packing ------------------------------------------------------------------------

// An integer array whose dtype can hold values outside [lo, hi] must not hold any.
void require_range(const py::array& a, const char* name, int64_t lo, int64_t hi) {
  const int bits = static_cast<int>(a.dtype().itemsize()) * 8;
  const bool is_signed = a.dtype().kind() == 'i';
  const double dtype_min = is_signed ? -std::ldexp(1.0, bits - 1) : 0.0;
  const double dtype_max = std::ldexp(1.0, is_signed ? bits - 1 : bits) - 1.0;
  if (dtype_min >= static_cast<double>(lo) && dtype_max <= static_cast<double>(hi)) return;
  py::int_ min_v = a.attr("min")(), max_v = a.attr("max")();
  if (min_v < py::int_(lo) || max_v > py::int_(hi)) {
    throw std::invalid_argument(std::string(name) + " holds values in [" +
                                py::str(min_v).cast<std::string>() + ", " +
                                py::str(max_v).cast<std::string>() + "], outside [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
}

py::tuple pack_py(const py::object& tokens_obj, const py::object& lengths_obj, int64_t seq_len,
                  const py::object& loss_mask_obj, bool truncate, int64_t pad_id) {
  py::array tokens = as_array(tokens_obj, "tokens");
  py::array lengths = as_array(lengths_obj, "lengths");
  require_ndim(tokens, "tokens", 1, "1-D (all sequences concatenated)");
  require_ndim(lengths, "lengths", 1, "1-D");
  require_nonempty(tokens, "tokens");
  require_nonempty(lengths, "lengths");
  if (!is_integer(tokens)) {
    throw std::invalid_argument("tokens must be an integer array (int32); got dtype " +
                                dtype_str(tokens));
  }
  if (!is_integer(lengths)) {
    throw std::invalid_argument("lengths must be an integer array; got dtype " +
                                dtype_str(lengths));
  }
  if (pad_id < std::numeric_limits<int32_t>::min() ||
      pad_id > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("pad_id must fit in int32; got " + std::to_string(pad_id));
  }
  const int64_t num_tokens = tokens.size();

  // int32 tokens and int64 lengths are used in place; other integer dtypes are
  // converted (a copy) after a range check.
  require_range(tokens, "tokens", std::numeric_limits<int32_t>::min(),
                std::numeric_limits<int32_t>::max());
  require_range(lengths, "lengths", std::numeric_limits<int64_t>::min(),
                std::numeric_limits<int64_t>::max());
  py::array_t<int32_t> tok32 = contiguous<int32_t>(tokens);
  py::array_t<int64_t> len64 = contiguous<int64_t>(lengths);

  // bool/uint8/int8 masks are read in place; wider integer masks become 0/1 bytes.
  py::array_t<uint8_t> mask8;  // stays unused (empty) without a mask
  const bool has_mask = !loss_mask_obj.is_none();
  if (has_mask) {
    py::array mask = as_array(loss_mask_obj, "loss_mask");
    require_ndim(mask, "loss_mask", 1, "1-D like tokens");
    if (mask.size() != num_tokens) {
      throw std::invalid_argument("loss_mask has " + std::to_string(mask.size()) +
                                  " values but tokens has " + std::to_string(num_tokens));
    }
    char k = mask.dtype().kind();
    if (k != 'b' && k != 'i' && k != 'u') {
      throw std::invalid_argument("loss_mask must be bool or integer; got dtype " +
                                  dtype_str(mask));
    }
    // Same memory for 1-byte masks (the kernel reads nonzero as 1).
    py::array bytes = mask.dtype().itemsize() == 1 ? mask : py::array(mask.attr("__ne__")(0));
    mask8 = contiguous<uint8_t>(bytes.view("uint8"));
  }

  const int64_t n = lengths.size();
  py::array_t<int64_t> placement(Shape{n, 2});
  PackPlan plan;
  {
    const int64_t* lp = len64.data();
    int64_t* pp = placement.mutable_data();
    py::gil_scoped_release release;
    plan = plan_packing(lp, n, num_tokens, seq_len, truncate, pp);
  }
  const Shape rows_shape{plan.num_rows, seq_len};
  py::array_t<int32_t> out_tokens(rows_shape), segment_ids(rows_shape), positions(rows_shape);
  py::array_t<uint8_t> out_mask(rows_shape);
  PackedRows out{out_tokens.mutable_data(), segment_ids.mutable_data(), positions.mutable_data(),
                 out_mask.mutable_data()};
  const int32_t* tp = tok32.data();
  const uint8_t* mp = has_mask ? mask8.data() : nullptr;
  {
    py::gil_scoped_release release;
    fill_packed(plan, tp, mp, static_cast<int32_t>(pad_id), out);
  }
  return py::make_tuple(out_tokens, segment_ids, positions, out_mask, placement, plan.num_truncated,
                        plan.padding_fraction());
}

// --- weight-only quantized matmul (layout in qmatmul.h) ------------------------------

py::array qmatmul_py(const py::object& x_obj, const py::object& wq_obj,
                     const py::object& scales_obj, int bits, int64_t group_size,
                     const std::string& activations) {
  if (activations != "int8" && activations != "float") {
    throw std::invalid_argument("activations must be \"int8\" or \"float\"; got \"" +
                                activations + "\"");
  }
  const Activations act = activations == "int8" ? Activations::kInt8 : Activations::kFloat;
  py::array x = as_array(x_obj, "x");
  py::array wq = as_array(wq_obj, "wq");
  py::array scales = as_array(scales_obj, "scales");
  require_ndim(x, "x", 2, "2-D (rows, in)");
  require_ndim(wq, "wq", 2, "2-D (out, packed in)");
  require_ndim(scales, "scales", 2, "2-D (out, in / group_size)");
  py::array_t<float> xc = require_dtype<float>(x, "x", 'f', "float32");
  py::array_t<float> sc = require_dtype<float>(scales, "scales", 'f', "float32");
  if (bits == 8 && !is_kind(wq, 'i', 1)) {
    throw std::invalid_argument("wq must have dtype int8 for bits=8; got " + dtype_str(wq));
  }
  if (bits == 4 && !is_kind(wq, 'u', 1)) {
    throw std::invalid_argument("wq must have dtype uint8 for bits=4; got " + dtype_str(wq));
  }
  const QMatmulShape shape{x.shape(0), x.shape(1), wq.shape(0), bits, group_size};
  check_qmatmul_shape(shape);
  const int64_t packed = bits == 8 ? shape.in : shape.in / 2;
  if (wq.shape(1) != packed || scales.shape(0) != shape.out ||
      scales.shape(1) != shape.in / group_size) {
    throw std::invalid_argument("for x " + shape_str(x) + ", bits=" + std::to_string(bits) +
                                ", group_size=" + std::to_string(group_size) + ": wq must be (" +
                                std::to_string(shape.out) + ", " + std::to_string(packed) +
                                ") and scales (" + std::to_string(shape.out) + ", " +
                                std::to_string(shape.in / group_size) + "); got " +
                                shape_str(wq) + " and " + shape_str(scales));
  }
  py::array wqc = py::array::ensure(wq, py::array::c_style);
  py::array_t<float> y(Shape{shape.rows, shape.out});
  const float* xp = xc.data();
  const void* wp = wqc.data();
  const float* sp = sc.data();
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    qmatmul(shape, xp, wp, sp, yp, act);
  }
  return y;
}

Isa parse_isa(const std::string& name) {
  if (name == "scalar") return Isa::kScalar;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "avx512") return Isa::kAvx512;
  throw std::invalid_argument("isa must be \"scalar\", \"avx2\" or \"avx512\"; got \"" + name +
                              "\"");
}

}  // namespace
}  // namespace mlforge

PYBIND11_MODULE(_mlforge, m) {
  using namespace mlforge;
  m.doc() = "Private native module of mlforge; import mlforge instead.";

  // The one place C++ errors become Python exceptions: bad arguments -> ValueError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("affine_quantize", &affine_quantize_py, py::arg("w"), py::arg("group_size"),
        py::arg("bits"));
  m.def("affine_dequantize", &affine_dequantize_py, py::arg("wq"), py::arg("scales"),
        py::arg("biases"), py::arg("group_size"), py::arg("bits"),
        py::arg("half_precision") = false);
  m.def("gguf_quantize", &gguf_quantize_py, py::arg("x"), py::arg("qtype"));
  m.def("gguf_dequantize", &gguf_dequantize_py, py::arg("data"), py::arg("qtype"),
        py::arg("shape") = py::none());
  m.def("pack", &pack_py, py::arg("tokens"), py::arg("lengths"), py::arg("seq_len"),
        py::arg("loss_mask"), py::arg("truncate"), py::arg("pad_id"));
  m.def("qmatmul", &qmatmul_py, py::arg("x"), py::arg("wq"), py::arg("scales"), py::arg("bits"),
        py::arg("group_size"), py::arg("activations"));
  m.def("runtime_info", [] {
    py::dict info;
    info["isa"] = isa_name(active_isa());
    info["detected_isa"] = isa_name(detected_isa());
    info["threads"] = num_threads();
    info["int8_kernel"] = qmatmul_int8_kernel();
    return info;
  });
  m.def(
      "set_max_isa", [](const std::string& name) { set_max_isa(parse_isa(name)); }, py::arg("isa"));
  m.def("set_vnni", &set_vnni, py::arg("enabled"));
}
