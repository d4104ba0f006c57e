"""Loading the base to train: dtypes, quantise-on-read (QLoRA), the Hub fallback's error."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reactor_core.formats import hf
from reactor_core.lora import lora
from reactor_core.lora.quant import QuantizedLinear
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.train import base_model
from reactor_core.train.config import ModelConfig, QuantConfig

CFG = LlamaConfig.preset("tiny")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny_hf"))
    hf.save_hf_dir(Llama(CFG, rngs=nnx.Rngs(0)), path)
    return path


def _logits(model):
    tokens = jax.random.randint(jax.random.key(0), (2, 10), 0, CFG.vocab_size)
    return np.asarray(nnx.jit(lambda m, t: m(t))(model, tokens))


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_quantise_on_read_equals_quantising_a_loaded_model(hf_dir, mode):
    quant = QuantConfig(mode=mode, block_size=32)
    model_config = ModelConfig(name="tiny", path=hf_dir, dtype="float32")
    streamed, tokenizer, path = base_model.load_base(
        model_config, full_finetune=False, tokenizer=False, quant_config=quant
    )
    assert tokenizer is None and path == hf_dir
    layers = streamed.model.layers
    assert all(
        isinstance(getattr(layer.mlp, n), QuantizedLinear) for layer in layers for n in ("gate_proj", "down_proj")
    )
    assert isinstance(streamed.lm_head, nnx.Linear)  # the head stays float
    dense, _, _ = base_model.load_base(model_config, full_finetune=False, tokenizer=False)
    lora.quantize_base(dense, quant)
    np.testing.assert_array_equal(_logits(streamed), _logits(dense))


@pytest.mark.parametrize("full, expected", [(False, jnp.bfloat16), (True, jnp.float32)])
def test_frozen_base_sits_in_the_compute_dtype(hf_dir, full, expected):
    model, _, _ = base_model.load_base(
        ModelConfig(name="tiny", path=hf_dir, dtype="bfloat16"), full_finetune=full, tokenizer=False
    )
    assert model.model.layers[0].self_attn.q_proj.kernel.get_value().dtype == expected
    assert model.config.dtype == "bfloat16"


def test_presets_known_offline_count_params():
    assert base_model.num_params(ModelConfig(name="llama-2-7b")) == 6_738_415_616
    assert base_model.num_params(ModelConfig(name="tiny", path="/some/dir")) is None


def test_missing_weights_say_what_to_pass(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="model_path"):
        base_model.load_base(ModelConfig(name="llama-2-7b"), full_finetune=False)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
