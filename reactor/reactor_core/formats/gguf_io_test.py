import sys

import gguf as gguf_pkg
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reactor_core.formats import gguf_io as gguf
from reactor_core.formats.hf import CheckpointError
from reactor_core.models import reference_testing as ref
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama

Q = gguf_pkg.GGMLQuantizationType


@pytest.mark.parametrize("qtype,tol", [("F16", 1e-3), ("BF16", 1e-2), ("Q8_0", 2e-2), ("Q4_0", 0.3), ("Q4_1", 0.2)])
def test_dequantize_round_trips_simple_codecs(qtype, tol):
    x = np.random.RandomState(0).randn(6, 64).astype(np.float32)
    data = gguf_pkg.quants.quantize(x, Q[qtype])
    out = gguf.dequantize(data, qtype, x.shape)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.abs(out - x).max() < tol


def _k_blocks(qtype: str, rows: int, rng) -> np.ndarray:
    """Random but valid super-blocks: random bytes with sane float16 scale fields."""
    block_bytes = {"Q4_K": 144, "Q6_K": 210}[qtype]
    data = rng.randint(0, 256, size=(rows, block_bytes), dtype=np.uint8)
    scales = np.array([0.01, 0.002], np.float16).view(np.uint8)
    if qtype == "Q4_K":
        data[:, 0:4] = scales  # d, dmin lead the block
    else:
        data[:, -2:] = scales[:2]  # d ends the block
    return data


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K"])
def test_dequantize_k_quants(qtype):
    data = _k_blocks(qtype, rows=3, rng=np.random.RandomState(1))  # one 256-wide super-block per row
    out = gguf.dequantize(data, qtype, (3, 256))
    expected = gguf_pkg.quants.dequantize(data, Q[qtype])
    assert np.isfinite(out).all() and np.abs(out).max() > 0
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_mlforge_codecs_match_gguf(qtype):
    mlforge = pytest.importorskip("mlforge")
    if not hasattr(mlforge, "gguf_dequantize"):
        pytest.skip("mlforge has no gguf_dequantize yet")
    x = np.random.RandomState(2).randn(4, 96).astype(np.float32)
    data = gguf_pkg.quants.quantize(x, Q[qtype])
    np.testing.assert_allclose(gguf.dequantize(data, qtype, x.shape), gguf_pkg.quants.dequantize(data, Q[qtype]), atol=1e-6)


def test_qk_permutation_inverts():
    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(8 * 4, 3)  # 4 heads of dim 8
    assert not np.array_equal(gguf.permute_qk(w, 4), w)
    np.testing.assert_array_equal(gguf.unpermute_qk(gguf.permute_qk(w, 4), 4), w)


@pytest.mark.parametrize("preset", ["tiny", "tiny-tied"])
def test_gguf_round_trip_exact_in_f32(preset, tmp_path):
    model = Llama(LlamaConfig.preset(preset), rngs=nnx.Rngs(0))
    path = str(tmp_path / "m.gguf")
    gguf.save_gguf(model, path)
    loaded, config = gguf.load_gguf(path)
    assert config.num_kv_heads == 2 and config.tie_word_embeddings == model.config.tie_word_embeddings
    tokens = jnp.asarray(ref.random_tokens(256, (1, 12)))
    np.testing.assert_allclose(loaded(tokens), model(tokens), atol=1e-6)


def test_gguf_quantized_file_loads_close(tmp_path):
    model = Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))
    path = str(tmp_path / "m.gguf")
    gguf.save_gguf(model, path, qtype="Q8_0")
    loaded, _ = gguf.load_gguf(path)
    tokens = jnp.asarray(ref.random_tokens(256, (1, 12)))
    assert ref.max_rel_diff(loaded(tokens), model(tokens)) < 0.02


def test_truncated_gguf_names_file(tmp_path):
    path = tmp_path / "t.gguf"
    gguf.save_gguf(Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0)), str(path))
    with open(path, "r+b") as f:
        f.truncate(f.seek(0, 2) - 1000)
    with pytest.raises(CheckpointError, match=r"t\.gguf: truncated GGUF file: tensor 'blk\.1\.\w+\.weight'"):
        gguf.load_gguf(str(path))


def test_non_llama_architecture_is_rejected(tmp_path):
    path = str(tmp_path / "g.gguf")
    writer = gguf_pkg.GGUFWriter(path, "gpt2")
    writer.add_tensor("token_embd.weight", np.ones((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match=r"g\.gguf.*'gpt2'"):
        gguf.load_gguf(path)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
