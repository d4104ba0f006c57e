"""MLForge kernels inside (jitted) JAX code, through the XLA FFI on CPU.

    from mlforge import jax_ops
    wq, scales = jax_ops.quantize_weight(w, bits=4, group_size=64)  # w (I, O) float
    y = jax_ops.qmatmul(x, wq, scales, bits=4, group_size=64)       # x (..., I) -> (..., O)
    w_hat = jax_ops.dequantize_weight(wq, scales, bits=4, group_size=64)  # (O, I)

`qmatmul` is `x @ w_hat.T` for int8/int4 weights without materialising w_hat: on CPU it
runs MLForge's kernel (memory-bound decode reads each weight byte once), by default with
x quantized to int8 blocks of 32 and integer dot products (activations="int8", llama.cpp's
Q8_0 scheme); activations="float" keeps x in float. On other platforms, and for
gradients, it falls back to float dequantize + dot. Weights are output-major with
symmetric per-group scales (layout and the int8 definition in mlforge/qmatmul.h).

Panel layout (int8 weights): `pack_panels` rearranges (wq, scales) once so that
`qmatmul_panel` streams them with one output per SIMD lane (AVX-512 VNNI: several times
fewer instructions per weight byte; bit for bit the same results as `qmatmul`'s int8
default). `panel_native()` says whether this CPU runs it natively.

`import mlforge` never imports jax; this module does, and registers the FFI target on
the first qmatmul call. Bad arguments raise ValueError naming the argument.
"""

from __future__ import annotations

import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "attention",
    "cache_attention",
    "dequantize_weight",
    "pack_panels",
    "panel_native",
    "qmatmul",
    "qmatmul_panel",
    "quantize_weight",
    "unpack_panels",
]

_QMATMUL_TARGETS = {"float": "mlforge_qmatmul", "int8": "mlforge_qmatmul_q8"}
PANEL = 16  # outputs per panel of the panel layout (mlforge/qmatmul.h)
_registered = False
_register_lock = threading.Lock()


def _register() -> None:
    global _registered
    with _register_lock:
        if _registered:
            return
        from mlforge import _mlforge_jax

        for name, capsule in _mlforge_jax.handlers().items():
            jax.ffi.register_ffi_target(name, capsule, platform="cpu")
        _registered = True


@functools.lru_cache(maxsize=None)
def _cpu_only() -> bool:
    """Whether JAX's only backend here is the CPU. Then a kernel call is traced as the FFI call
    alone: platform_dependent would also trace the float fallback each time, and a decode
    step's program holds hundreds of these calls (seconds of tracing at every launch)."""
    return jax.default_backend() == "cpu"


def _check_bits_group(bits: int, group_size: int, n_in: int) -> None:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8; got {bits!r}")
    if not isinstance(group_size, (int, np.integer)) or group_size <= 0 or n_in % group_size:
        raise ValueError(
            f"group_size ({group_size!r}) must be a positive divisor of the input size ({n_in})"
        )
    if bits == 4 and group_size % 2:
        raise ValueError(f"group_size ({group_size}) must be even for 4 bits")


def quantize_weight(w: jax.Array, *, bits: int, group_size: int) -> tuple[jax.Array, jax.Array]:
    """w (I, O) float -> (wq, scales): symmetric per output and group of `group_size` inputs.

    wq: int8 (O, I) for 8 bits; uint8 (O, I / 2) for 4 bits, each group's byte j holding
    input j (low nibble) and input j + group_size / 2 (high nibble) as q + 8.
    scales: float32 (O, I / group_size). q = clip(round(w / scale)), scale = max|w| / qmax.
    """
    w = jnp.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (in, out); got shape {w.shape}")
    n_in, n_out = w.shape
    _check_bits_group(bits, group_size, n_in)
    groups = n_in // group_size
    wt = w.astype(jnp.float32).T.reshape(n_out, groups, group_size)  # (O, G, g)
    qmax = 127.0 if bits == 8 else 7.0
    scale = jnp.max(jnp.abs(wt), axis=2, keepdims=True) / qmax  # (O, G, 1)
    scale = jnp.where(scale == 0, 1.0, scale)
    q = jnp.clip(jnp.round(wt / scale), -qmax - 1, qmax).astype(jnp.int8)  # (O, G, g)
    if bits == 8:
        return q.reshape(n_out, n_in), scale[..., 0]
    u = (q + 8).astype(jnp.uint8)  # (O, G, g) in [0, 15]
    half = group_size // 2
    packed = u[..., :half] | (u[..., half:] << 4)  # (O, G, g/2)
    return packed.reshape(n_out, n_in // 2), scale[..., 0]


def dequantize_weight(
    wq: jax.Array, scales: jax.Array, *, bits: int, group_size: int, dtype=jnp.float32
) -> jax.Array:
    """(wq, scales) -> W (O, I) in `dtype`, each value q * scale rounded once in `dtype`."""
    n_out, groups = scales.shape
    if bits == 4:
        u = wq.reshape(n_out, groups, group_size // 2)  # (O, G, g/2)
        lo = (u & 0xF).astype(jnp.int8) - 8
        hi = (u >> 4).astype(jnp.int8) - 8
        q = jnp.concatenate([lo, hi], axis=2)  # (O, G, g)
    else:
        q = wq.reshape(n_out, groups, group_size)  # (O, G, g)
    w = q.astype(dtype) * scales[..., None].astype(dtype)  # (O, G, g)
    return w.reshape(n_out, groups * group_size)


def _dot_dequantized(x2: jax.Array, wq, scales, bits: int, group_size: int) -> jax.Array:
    w = dequantize_weight(wq, scales, bits=bits, group_size=group_size)  # (O, I)
    return jax.lax.dot_general(x2, w, (((1,), (1,)), ((), ())))  # (M, O)


def _ffi(x2: jax.Array, wq, scales, bits: int, group_size: int, activations: str) -> jax.Array:
    out = jax.ShapeDtypeStruct((x2.shape[0], scales.shape[0]), jnp.float32)
    call = jax.ffi.ffi_call(_QMATMUL_TARGETS[activations], out, vmap_method="sequential")
    return call(x2, wq, scales, bits=np.int64(bits), group_size=np.int64(group_size))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _qmatmul_2d(x2: jax.Array, wq, scales, bits: int, group_size: int, activations: str) -> jax.Array:
    """x2 (M, I) float32 -> (M, O) float32."""
    if _cpu_only():
        return _ffi(x2, wq, scales, bits=bits, group_size=group_size, activations=activations)
    return jax.lax.platform_dependent(
        x2,
        wq,
        scales,
        cpu=functools.partial(_ffi, bits=bits, group_size=group_size, activations=activations),
        default=functools.partial(_dot_dequantized, bits=bits, group_size=group_size),
    )


def _qmatmul_fwd(x2, wq, scales, bits, group_size, activations):
    return _qmatmul_2d(x2, wq, scales, bits, group_size, activations), (wq, scales)


def _qmatmul_bwd(bits, group_size, activations, residuals, dy):
    wq, scales = residuals
    w = dequantize_weight(wq, scales, bits=bits, group_size=group_size)  # (O, I)
    dx = dy @ w  # (M, I)
    # The weights are frozen integers: no gradient (float0 for the integer input).
    return dx, np.zeros(wq.shape, jax.dtypes.float0), jnp.zeros_like(scales)


_qmatmul_2d.defvjp(_qmatmul_fwd, _qmatmul_bwd)


def qmatmul(
    x: jax.Array,
    wq: jax.Array,
    scales: jax.Array,
    *,
    bits: int,
    group_size: int,
    activations: str = "int8",
) -> jax.Array:
    """x (..., I) @ W.T for W = dequantize_weight(wq, scales) -> (..., O) in x's dtype.

    x: float32, bfloat16 or float16 (the kernel computes in float32). Works under jit,
    vmap and grad (with respect to x; the gradient is the float dy @ W). Leading dims of
    x are flattened into rows; the kernel is meant for few rows (decode); for many,
    dequantize + dot is as fast.
    activations: "int8" (default) quantizes each row per block of 32 inputs to int8 with
    a float scale and runs integer dots (each x moves by at most half its block's step,
    max|x| / 254, before the dot); it needs groups of whole blocks (int8: group_size
    % 32 == 0; int4: 32 or a multiple of 64) and runs the float path otherwise. "float":
    float dots of x with q * scale.
    """
    if activations not in _QMATMUL_TARGETS:
        raise ValueError(f'activations must be "int8" or "float"; got {activations!r}')
    x = jnp.asarray(x)
    if x.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
        raise ValueError(f"x must be float32, bfloat16 or float16; got {x.dtype}")
    if x.ndim < 1:
        raise ValueError("x must have at least one dimension (..., in_features)")
    if scales.ndim != 2 or scales.dtype != jnp.float32:
        raise ValueError(
            f"scales must be float32 (out, in / group_size); got {scales.dtype} {scales.shape}"
        )
    n_in, n_out = x.shape[-1], scales.shape[0]
    _check_bits_group(bits, group_size, n_in)
    want = (jnp.int8, (n_out, n_in)) if bits == 8 else (jnp.uint8, (n_out, n_in // 2))
    if wq.dtype != want[0] or tuple(wq.shape) != want[1]:
        raise ValueError(
            f"wq must be {jnp.dtype(want[0]).name} {want[1]} for x (..., {n_in}), bits={bits}, "
            f"{n_out} outputs; got {wq.dtype} {tuple(wq.shape)}"
        )
    if scales.shape[1] != n_in // group_size:
        raise ValueError(
            f"scales must be (out, {n_in // group_size}) for group_size {group_size}; got {scales.shape}"
        )
    return _over_rows(x, n_out, lambda x2: _qmatmul_2d(x2, wq, scales, int(bits), int(group_size), activations))


def _over_rows(x: jax.Array, n_out: int, fn) -> jax.Array:
    """Runs fn on x's leading dims flattened into float32 rows (M, I) -> (M, n_out); restores them."""
    lead = x.shape[:-1]
    rows = int(np.prod(lead, dtype=np.int64))
    if rows == 0:
        return jnp.zeros((*lead, n_out), x.dtype)
    _register()
    y = fn(x.reshape(rows, x.shape[-1]).astype(jnp.float32))
    return y.reshape(*lead, n_out).astype(x.dtype)


def panel_native() -> bool:
    """Whether `qmatmul_panel` runs SIMD code here (AVX-512 VNNI). Elsewhere it is a portable
    loop, slower than `qmatmul`'s row-layout kernels, so callers keep the row layout."""
    from mlforge import _mlforge_jax

    return bool(_mlforge_jax.panel_native())


def pack_panels(wq: jax.Array, scales: jax.Array) -> tuple[jax.Array, jax.Array]:
    """int8 wq (O, I) and scales (O, I / group) -> panels uint8 (P, I / 4, 16, 4) and
    panel_scales float32 (P, I / group, 16), P = ceil(O / 16), padding outputs zero."""
    if wq.ndim != 2 or wq.dtype != jnp.int8:
        raise ValueError(f"wq must be int8 (out, in); got {wq.dtype} {wq.shape}")
    n_out, n_in = wq.shape
    if n_in % 32 or scales.ndim != 2 or scales.shape[0] != n_out or (n_in // max(scales.shape[1], 1)) % 32:
        raise ValueError(
            f"the panel layout needs groups of a multiple of 32 inputs; got wq {wq.shape}, scales {scales.shape}"
        )
    panels = -(-n_out // PANEL)
    pad = ((0, panels * PANEL - n_out), (0, 0))
    u = (jnp.pad(wq, pad).astype(jnp.int16) + 128).astype(jnp.uint8)  # q ^ 0x80
    packed = u.reshape(panels, PANEL, n_in // 4, 4).transpose(0, 2, 1, 3)  # (P, I/4, 16, 4)
    packed_scales = jnp.pad(scales.astype(jnp.float32), pad).reshape(panels, PANEL, -1).transpose(0, 2, 1)
    return packed, packed_scales


def unpack_panels(panels: jax.Array, panel_scales: jax.Array, out_features: int) -> tuple[jax.Array, jax.Array]:
    """The inverse of `pack_panels`: (wq int8 (O, I), scales (O, I / group))."""
    n, words = panels.shape[:2]
    u = panels.transpose(0, 2, 1, 3).reshape(n * PANEL, words * 4)[:out_features]
    wq = (u.astype(jnp.int16) - 128).astype(jnp.int8)
    scales = panel_scales.transpose(0, 2, 1).reshape(n * PANEL, -1)[:out_features]
    return wq, scales


def _panel_dot_dequantized(x2, panels, panel_scales, out_features: int, group_size: int):
    wq, scales = unpack_panels(panels, panel_scales, out_features)
    return _dot_dequantized(x2, wq, scales, 8, group_size)


def _panel_ffi(x2, panels, panel_scales, out_features: int, group_size: int):
    out = jax.ShapeDtypeStruct((x2.shape[0], out_features), jnp.float32)
    call = jax.ffi.ffi_call("mlforge_qmatmul_panel", out, vmap_method="sequential")
    return call(x2, panels, panel_scales, group_size=np.int64(group_size))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _qmatmul_panel_2d(x2, panels, panel_scales, out_features: int, group_size: int):
    """x2 (M, I) float32 -> (M, O) float32."""
    if _cpu_only():
        return _panel_ffi(x2, panels, panel_scales, out_features=out_features, group_size=group_size)
    return jax.lax.platform_dependent(
        x2,
        panels,
        panel_scales,
        cpu=functools.partial(_panel_ffi, out_features=out_features, group_size=group_size),
        default=functools.partial(_panel_dot_dequantized, out_features=out_features, group_size=group_size),
    )


def _qmatmul_panel_fwd(x2, panels, panel_scales, out_features, group_size):
    return _qmatmul_panel_2d(x2, panels, panel_scales, out_features, group_size), (panels, panel_scales)


def _qmatmul_panel_bwd(out_features, group_size, residuals, dy):
    panels, panel_scales = residuals
    wq, scales = unpack_panels(panels, panel_scales, out_features)
    dx = dy @ dequantize_weight(wq, scales, bits=8, group_size=group_size)  # (M, I)
    return dx, np.zeros(panels.shape, jax.dtypes.float0), jnp.zeros_like(panel_scales)


_qmatmul_panel_2d.defvjp(_qmatmul_panel_fwd, _qmatmul_panel_bwd)


def qmatmul_panel(
    x: jax.Array, panels: jax.Array, panel_scales: jax.Array, *, out_features: int, group_size: int
) -> jax.Array:
    """x (..., I) @ W.T for int8 W in the panel layout -> (..., O) in x's dtype; activations
    quantized to int8 blocks of 32 as `qmatmul`'s default, with the same results."""
    x = jnp.asarray(x)
    if x.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16) or x.ndim < 1:
        raise ValueError(f"x must be float32, bfloat16 or float16 with a feature axis; got {x.dtype} {x.shape}")
    n_in = x.shape[-1]
    if panels.dtype != jnp.uint8 or panels.ndim != 4 or panels.shape[1:] != (n_in // 4, PANEL, 4):
        raise ValueError(f"panels must be uint8 (P, {n_in // 4}, {PANEL}, 4) for {n_in} inputs; got {panels.shape}")
    if not 0 < out_features <= panels.shape[0] * PANEL or panels.shape[0] != -(-out_features // PANEL):
        raise ValueError(f"out_features {out_features} does not fit {panels.shape[0]} panels")
    if group_size % 32 or n_in % group_size:
        raise ValueError(f"group_size ({group_size}) must be a multiple of 32 dividing the input size ({n_in})")
    if panel_scales.dtype != jnp.float32 or panel_scales.shape != (panels.shape[0], n_in // group_size, PANEL):
        raise ValueError(
            f"panel_scales must be float32 {(panels.shape[0], n_in // group_size, PANEL)}; got {panel_scales.shape}"
        )
    return _over_rows(
        x, out_features, lambda x2: _qmatmul_panel_2d(x2, panels, panel_scales, int(out_features), int(group_size))
    )


def _attention_ffi(q, k, v, segment_ids, scale: float):
    b, t, h, _ = q.shape
    out = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((b, h, t), jnp.float32))
    call = jax.ffi.ffi_call("mlforge_attention", out, vmap_method="sequential")
    return call(q, k, v, segment_ids, scale=np.float32(scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, segment_ids, scale: float):
    return _attention_ffi(q, k, v, segment_ids, scale)[0]


def _attention_fwd(q, k, v, segment_ids, scale):
    out, lse = _attention_ffi(q, k, v, segment_ids, scale)
    return out, (q, k, v, segment_ids, out, lse)


def _attention_bwd(scale, residuals, dout):
    q, k, v, segment_ids, out, lse = residuals
    shapes = (
        jax.ShapeDtypeStruct(q.shape, jnp.float32),
        jax.ShapeDtypeStruct(k.shape, jnp.float32),
        jax.ShapeDtypeStruct(v.shape, jnp.float32),
    )
    call = jax.ffi.ffi_call("mlforge_attention_bwd", shapes, vmap_method="sequential")
    dq, dk, dv = call(q, k, v, segment_ids, out, lse, dout.astype(jnp.float32), scale=np.float32(scale))
    return dq, dk, dv, np.zeros(segment_ids.shape, jax.dtypes.float0)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *, scale: float | None = None):
    """Causal self-attention over packed rows with MLForge's CPU kernel (forward and backward).

    q (B, T, H, D); k, v (B, T, KVH, D), H a multiple of KVH (grouped-query); segment_ids
    (B, T) int, 0 = padding. Query t sees key s when s <= t and both are in the same
    non-zero segment; a padding query averages all values (as a finite-mask softmax does).
    Returns (B, T, H, D) in q's dtype (computed in float32); differentiable in q, k, v.
    scale defaults to D ** -0.5. CPU only: other backends should use their own attention.
    """
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"q must be (B, T, H, D) and k, v (B, T, KVH, D); got {q.shape}, {k.shape}, {v.shape}")
    b, t, h, d = q.shape
    if k.shape[0] != b or k.shape[1] != t or k.shape[3] != d or h % k.shape[2]:
        raise ValueError(
            f"k/v {k.shape} do not fit q {q.shape}: same batch, length and head size, heads a multiple of kv heads"
        )
    if tuple(segment_ids.shape) != (b, t):
        raise ValueError(f"segment_ids must be {(b, t)}; got {tuple(segment_ids.shape)}")
    _register()
    scale = float(d**-0.5 if scale is None else scale)
    out = _attention(
        q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), segment_ids.astype(jnp.int32), scale
    )
    return out.astype(q.dtype)


def _cache_attention_ffi(q, k_cache, v_cache, slots, q_positions, scale: float):
    out = jax.ShapeDtypeStruct(q.shape, jnp.float32)
    call = jax.ffi.ffi_call("mlforge_cache_attention", out, vmap_method="sequential")
    return call(q, k_cache, v_cache, slots, q_positions, scale=np.float32(scale))


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _cache_attention(q, k_cache, v_cache, slots, q_positions, scale: float):
    return _cache_attention_ffi(q, k_cache, v_cache, slots, q_positions, scale)


@_cache_attention.defjvp
def _cache_attention_jvp(scale, primals, tangents):
    raise TypeError(
        "cache_attention is forward-only (inference) and cannot be differentiated; "
        "use jax_ops.attention for training"
    )


def cache_attention(
    q: jax.Array,
    k_cache: jax.Array,
    v_cache: jax.Array,
    slots: jax.Array,
    q_positions: jax.Array,
    *,
    scale: float | None = None,
) -> jax.Array:
    """Attention of new queries over a slot KV cache with MLForge's CPU kernel (forward only).

    q (B, T, H, D) float32; k_cache, v_cache (N, S, KVH, D), both float32 or both float16
    (converted to float32 as the kernel reads them: half the bytes per cached token for
    memory-bound decode), H a multiple of KVH (head h reads kv head h // (H // KVH));
    slots (B,) int: batch row b reads cache row slots[b]; q_positions (B, T) int: query (b, t) attends keys 0..q_positions[b, t] of
    that row (the caller has already written this step's keys), a negative position marks
    a padding query whose output is zeros. Returns (B, T, H, D) float32.

    Only the used part of each row is read, so a call costs time proportional to the
    conversation length, not to S. The caches are only read (safe to donate elsewhere).
    A slot outside [0, N) or a position >= S fails at run time with an error naming
    `slots` or `q_positions`. scale defaults to D ** -0.5. CPU only.
    """
    q, k_cache, v_cache = jnp.asarray(q), jnp.asarray(k_cache), jnp.asarray(v_cache)
    slots, q_positions = jnp.asarray(slots), jnp.asarray(q_positions)
    if q.ndim != 4 or q.dtype != jnp.float32:
        raise ValueError(f"q must be float32 (B, T, H, D); got {q.dtype} {q.shape}")
    if k_cache.ndim != 4 or k_cache.dtype not in (jnp.float32, jnp.float16):
        raise ValueError(
            "k_cache must be float32 or float16 (N, S, KVH, D); "
            f"got {k_cache.dtype} {k_cache.shape}"
        )
    if v_cache.dtype != k_cache.dtype:
        raise ValueError(
            f"v_cache must have k_cache's dtype {k_cache.dtype} (both float32 or both float16); "
            f"got {v_cache.dtype}"
        )
    b, t, h, d = q.shape
    n, s, kvh, _ = k_cache.shape
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache must have k_cache's shape {k_cache.shape}; got {v_cache.shape}")
    if k_cache.shape[3] != d or min(n, s, kvh, h, d) == 0 or h % kvh:
        raise ValueError(
            f"k_cache {k_cache.shape} does not fit q {q.shape}: same head size D, non-empty, "
            "and q's heads a multiple of the cache's kv heads"
        )
    if slots.shape != (b,) or not jnp.issubdtype(slots.dtype, jnp.integer):
        raise ValueError(f"slots must be integer ({b},); got {slots.dtype} {slots.shape}")
    if q_positions.shape != (b, t) or not jnp.issubdtype(q_positions.dtype, jnp.integer):
        raise ValueError(
            f"q_positions must be integer ({b}, {t}); got {q_positions.dtype} {q_positions.shape}"
        )
    if b * t == 0:
        return jnp.zeros(q.shape, jnp.float32)
    _register()
    scale = float(d**-0.5 if scale is None else scale)
    return _cache_attention(
        q, k_cache, v_cache, slots.astype(jnp.int32), q_positions.astype(jnp.int32), scale
    )
