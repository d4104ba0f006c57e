import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reactor_core.generation.generate import Generator
from reactor_core.models import reference_testing as ref
from reactor_core.models.config import LlamaConfig
from reactor_core.models.llama import Llama
from reactor_core.models.quant import QuantizedLinear, quantize_model


@pytest.mark.parametrize("bits,group_size,tol", [(8, None, 0.01), (8, 32, 0.01), (4, 32, 0.1)])
def test_dequantized_weights_are_close(bits, group_size, tol):
    kernel = jnp.asarray(np.random.RandomState(0).randn(64, 48).astype(np.float32))
    q = QuantizedLinear(kernel, bits=bits, group_size=group_size, dtype=jnp.float32)
    err = np.abs(np.asarray(q.dequantized()) - np.asarray(kernel)).max() / np.abs(np.asarray(kernel)).max()
    assert err < tol
    if bits == 4:
        assert q.qweight[...].dtype == jnp.uint8 and q.qweight[...].size == kernel.size // 2


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_model_runs_and_generates(bits):
    config = LlamaConfig.preset("tiny")
    tokens = jnp.asarray(ref.random_tokens(256, (1, 16)))
    reference = Llama(config, rngs=nnx.Rngs(0))(tokens)
    model = quantize_model(Llama(config, rngs=nnx.Rngs(0)), bits=bits, group_size=32)
    assert isinstance(model.model.layers[0].mlp.down_proj, QuantizedLinear)
    assert isinstance(model.lm_head, QuantizedLinear)
    assert not any(isinstance(v, nnx.Param) and v[...].dtype in (jnp.int8, jnp.uint8) for _, v in nnx.iter_graph(model))
    assert ref.max_rel_diff(model(tokens), reference) < (0.02 if bits == 8 else 0.3)
    out = Generator(model).generate([[5, 6, 7]], max_new_tokens=4)
    assert len(out.tokens[0]) == 4


def test_bad_group_size_is_rejected():
    with pytest.raises(ValueError, match="group_size"):
        QuantizedLinear(jnp.ones((10, 4)), bits=4, group_size=3, dtype=jnp.float32)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
