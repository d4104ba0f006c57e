import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reactor_core.formats.hf import load_hf_dir, save_hf_dir
from reactor_core.models import reference_testing as ref
from reactor_core.models.config import LlamaConfig
from reactor_core.models.kv_cache import KVCache
from reactor_core.models.llama import PREFILL_QUERY_BLOCK, Llama

# float32 vs PyTorch: max |diff| / max |logit| observed ~4e-7 on tiny configs.
TOLERANCE = 1e-5


@pytest.mark.parametrize("preset", ["tiny", "tiny-tied", "tiny-mha", "tiny-llama3", "tiny-linear-rope"])
def test_logits_match_transformers(preset, tmp_path):
    config = LlamaConfig.preset(preset)
    hf = ref.hf_model(config)
    hf.save_pretrained(tmp_path)
    model, _ = load_hf_dir(str(tmp_path))
    tokens = ref.random_tokens(config.vocab_size, (2, 80))  # past llama3's original 64 positions
    assert ref.max_rel_diff(model(jnp.asarray(tokens)), ref.hf_logits(hf, tokens)) < TOLERANCE


def test_packed_row_equals_sequences_run_alone():
    model = Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))
    a, b = ref.random_tokens(256, (1, 7), seed=1), ref.random_tokens(256, (1, 5), seed=2)
    packed = np.concatenate([a, b, np.zeros((1, 4), np.int32)], axis=1)  # (1, 16) incl. padding
    segments = np.array([[1] * 7 + [2] * 5 + [0] * 4])
    positions = np.array([list(range(7)) + list(range(5)) + [0] * 4])
    logits = model(jnp.asarray(packed), positions=jnp.asarray(positions), segment_ids=jnp.asarray(segments))
    assert logits.shape == (1, 16, 256)
    assert not np.isnan(np.asarray(logits)).any()
    np.testing.assert_allclose(logits[:, :7], model(jnp.asarray(a)), atol=1e-5)
    np.testing.assert_allclose(logits[:, 7:12], model(jnp.asarray(b)), atol=1e-5)


def test_cached_decode_equals_full_recompute():
    config = LlamaConfig.preset("tiny")
    model = Llama(config, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(ref.random_tokens(256, (2, 12)))
    full = model(tokens)  # (B, T, V)
    cache = KVCache.init(config, batch=2, max_length=16)
    ones = jnp.ones((2, 8), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
    logits, cache = model.forward_with_cache(tokens[:, :8], positions=pos, segment_ids=ones, cache=cache)
    np.testing.assert_allclose(logits, full[:, :8], atol=1e-5)
    for t in range(8, 12):
        step, cache = model.forward_with_cache(
            tokens[:, t : t + 1], positions=jnp.full((2, 1), t), segment_ids=ones[:, :1], cache=cache
        )
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)
    assert int(cache.index) == 12


@pytest.mark.parametrize("preset", ["tiny", "tiny-tied"])
def test_prefill_equals_full_forward_at_the_last_slot(preset):
    config = LlamaConfig.preset(preset)
    model = Llama(config, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(ref.random_tokens(256, (2, 12)))
    segments = jnp.asarray([[1] * 12, [0] * 4 + [1] * 8])  # row 1 left-padded by 4
    positions = jnp.asarray([list(range(12)), [0] * 4 + list(range(8))])
    logits, cache = model.prefill(tokens, positions=positions, segment_ids=segments, max_length=16)
    assert logits.shape == (2, 256) and cache.max_length == 16 and int(cache.index) == 12
    np.testing.assert_allclose(logits[0], model(tokens[:1])[0, -1], atol=1e-5)
    np.testing.assert_allclose(logits[1], model(tokens[1:, 4:])[0, -1], atol=1e-5)
    # The same cache as the general path leaves, so decoding carries on from it unchanged.
    full, want = model.forward_with_cache(
        tokens, positions=positions, segment_ids=segments, cache=KVCache.init(config, batch=2, max_length=16)
    )
    np.testing.assert_allclose(logits, full[:, -1], atol=1e-5)
    real = np.asarray(want.segment_ids != 0)  # (B, S); padding slots hold junk that attention never reads
    for got, expected in zip(cache.keys + cache.values, want.keys + want.values):
        np.testing.assert_allclose(np.asarray(got)[real], np.asarray(expected)[real], atol=1e-5)
    np.testing.assert_array_equal(cache.segment_ids, want.segment_ids)
    nxt = jnp.argmax(logits, axis=-1)[:, None]  # (B, 1)
    step, _ = model.forward_with_cache(
        nxt, positions=positions[:, -1:] + 1, segment_ids=jnp.ones((2, 1), jnp.int32), cache=cache
    )
    np.testing.assert_allclose(step[0, 0], model(jnp.concatenate([tokens[:1], nxt[:1]], 1))[0, -1], atol=1e-5)
    with pytest.raises(ValueError, match="max_length=8"):
        model.prefill(tokens, positions=positions, segment_ids=segments, max_length=8)


def test_long_prefill_in_query_blocks_equals_full_forward():
    config = LlamaConfig.preset("tiny")
    model = Llama(config, rngs=nnx.Rngs(0))
    t, pad = 2 * PREFILL_QUERY_BLOCK, 37  # two query blocks; row 1 left-padded across the first
    tokens = jnp.asarray(ref.random_tokens(256, (2, t), seed=3))
    segments = jnp.asarray([[1] * t, [0] * pad + [1] * (t - pad)])
    positions = jnp.asarray([list(range(t)), [0] * pad + list(range(t - pad))])
    logits, cache = model.prefill(tokens, positions=positions, segment_ids=segments, max_length=t + 8)
    np.testing.assert_allclose(logits[0], model(tokens[:1])[0, -1], atol=1e-5)
    np.testing.assert_allclose(logits[1], model(tokens[1:, pad:])[0, -1], atol=1e-5)
    _, want = model.forward_with_cache(
        tokens, positions=positions, segment_ids=segments, cache=KVCache.init(config, batch=2, max_length=t + 8)
    )
    real = np.asarray(want.segment_ids != 0)
    for got, expected in zip(cache.keys, want.keys):
        np.testing.assert_allclose(np.asarray(got)[real], np.asarray(expected)[real], atol=1e-5)


def test_remat_gives_same_logits_and_grads():
    config = LlamaConfig.preset("tiny")
    tokens = jnp.asarray(ref.random_tokens(256, (1, 8)))

    def loss(model):
        return model(tokens).mean()

    plain = Llama(config, rngs=nnx.Rngs(0))
    remat = Llama(config.replace(remat=True), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(loss(plain), loss(remat), rtol=1e-6)
    g1 = nnx.grad(loss)(plain)
    g2 = nnx.grad(loss)(remat)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_fused_cpu_attention_kernel_equals_xla_attention(monkeypatch):
    """Training forward: MLForge's attention kernel vs the einsum formulation, packed + padded rows."""
    from reactor_core.models import attention

    config = LlamaConfig.preset("tiny")
    tokens = jnp.asarray(ref.random_tokens(256, (3, 24)))
    segment_ids = np.ones((3, 24), np.int32)
    segment_ids[1, 10:] = 2  # two documents in one row
    segment_ids[2, 20:] = 0  # right padding
    positions = np.tile(np.arange(24, dtype=np.int32), (3, 1))
    positions[1, 10:] -= 10
    segment_ids, positions = jnp.asarray(segment_ids), jnp.asarray(positions)
    weights = (segment_ids != 0).astype(jnp.float32)[..., None]

    def loss(model):
        return (model(tokens, positions=positions, segment_ids=segment_ids) * weights).mean()

    def run():
        model = Llama(config, rngs=nnx.Rngs(0))
        hlo = jax.jit(lambda t: model(t, positions=positions, segment_ids=segment_ids)).lower(tokens).as_text()
        return loss(model), nnx.grad(loss)(model), hlo

    assert attention.kernel_enabled()
    fused_loss, fused_grads, fused_hlo = run()
    monkeypatch.setenv("REACTOR_ATTENTION", "xla")
    assert not attention.kernel_enabled()
    xla_loss, xla_grads, xla_hlo = run()
    assert "mlforge_attention" in fused_hlo and "mlforge_attention" not in xla_hlo
    np.testing.assert_allclose(fused_loss, xla_loss, rtol=1e-6)
    leaves = jax.tree.leaves_with_path(xla_grads)
    for (path, y), x in zip(leaves, jax.tree.leaves(fused_grads)):
        np.testing.assert_allclose(x, y, atol=2e-6, err_msg=jax.tree_util.keystr(path))


def test_bfloat16_compute_and_params(tmp_path):
    f32 = Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))
    save_hf_dir(f32, str(tmp_path))
    bf16, _ = load_hf_dir(str(tmp_path), dtype="bfloat16")
    assert bf16.model.layers[0].mlp.up_proj.kernel[...].dtype == jnp.bfloat16
    tokens = jnp.asarray(ref.random_tokens(256, (1, 8)))
    a, b = f32(tokens), bf16(tokens)
    assert b.dtype == jnp.float32  # logits come back in float32
    assert ref.max_rel_diff(b, a) < 0.05


def test_mixed_precision_keeps_float32_params():
    model = Llama(LlamaConfig.preset("tiny").replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    assert model.model.layers[0].self_attn.q_proj.kernel[...].dtype == jnp.float32
    assert model(jnp.ones((1, 4), jnp.int32)).shape == (1, 4, 256)


def test_every_param_has_logical_axes():
    model = nnx.eval_shape(lambda: Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0)))
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    flat = {p: tuple(s.get_value() if isinstance(s, nnx.Variable) else s) for p, s in nnx.to_flat_state(specs)}
    assert flat[("model", "embed_tokens", "embedding")] == ("vocab", "embed")
    assert flat[("model", "layers", 0, "self_attn", "q_proj", "kernel")] == ("embed", "heads")
    assert flat[("model", "layers", 0, "self_attn", "k_proj", "kernel")] == ("embed", "kv_heads")
    assert flat[("model", "layers", 1, "mlp", "down_proj", "kernel")] == ("mlp", "embed")
    assert flat[("lm_head", "kernel")] == ("embed", "vocab")
    for path, spec in flat.items():
        assert len(spec) >= 1 and all(spec), path


def test_hf_style_module_names():
    model = Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        assert isinstance(proj, nnx.Linear)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
