import json
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reactor_core.formats import hf
from reactor_core.models import reference_testing as ref
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama

TOLERANCE = 1e-5


@pytest.mark.parametrize("preset", ["tiny", "tiny-tied"])
def test_our_save_loads_in_transformers(preset, tmp_path):
    from transformers import LlamaForCausalLM

    model = Llama(LlamaConfig.preset(preset), rngs=nnx.Rngs(0))
    hf.save_hf_dir(model, str(tmp_path))
    theirs = LlamaForCausalLM.from_pretrained(str(tmp_path)).eval()
    tokens = ref.random_tokens(256, (2, 10))
    assert ref.max_rel_diff(model(jnp.asarray(tokens)), ref.hf_logits(theirs, tokens)) < TOLERANCE


def test_sharded_save_and_load(tmp_path):
    model = Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0))
    hf.save_hf_dir(model, str(tmp_path), max_shard_bytes=100_000)
    index = json.loads((tmp_path / hf.INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (tmp_path / hf.SINGLE_FILE).exists()
    loaded, _ = hf.load_hf_dir(str(tmp_path))
    tokens = jnp.asarray(ref.random_tokens(256, (1, 6)))
    np.testing.assert_array_equal(loaded(tokens), model(tokens))


def test_sharded_checkpoint_from_transformers(tmp_path):
    theirs = ref.hf_model(LlamaConfig.preset("tiny-mha"))
    theirs.save_pretrained(str(tmp_path), max_shard_size="100KB")
    assert (tmp_path / hf.INDEX_FILE).exists()
    ours, config = hf.load_hf_dir(str(tmp_path))
    assert config.num_kv_heads == 4
    tokens = ref.random_tokens(256, (1, 9))
    assert ref.max_rel_diff(ours(jnp.asarray(tokens)), ref.hf_logits(theirs, tokens)) < TOLERANCE


def test_missing_shard_is_named(tmp_path):
    hf.save_hf_dir(Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0)), str(tmp_path), max_shard_bytes=100_000)
    second = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))[1]
    os.remove(tmp_path / second)
    with pytest.raises(hf.CheckpointError, match=rf"{second}.*missing"):
        hf.load_hf_dir(str(tmp_path))


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    hf.save_hf_dir(Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0)), str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(hf.CheckpointError, match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight'"):
        hf.load_hf_dir(str(tmp_path))


def test_missing_tensor_is_named(tmp_path):
    from reactor_core.formats import safetensors_io

    hf.save_hf_dir(Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0)), str(tmp_path))
    path = str(tmp_path / hf.SINGLE_FILE)
    tensors = {k: np.array(v) for k, v in safetensors_io.load(path).items() if k != "model.norm.weight"}
    safetensors_io.save(tensors, path)
    with pytest.raises(hf.CheckpointError, match="model.norm.weight"):
        hf.load_hf_dir(str(tmp_path))


def test_unknown_model_type_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 8}))
    with pytest.raises(ValueError, match=r"config\.json.*'bert'"):
        hf.load_hf_dir(str(tmp_path))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
