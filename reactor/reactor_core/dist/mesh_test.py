"""MeshConfig parsing/validation and mesh construction (8 simulated CPU devices)."""

import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax
import pytest

from reactor_core.dist.mesh import MeshConfig, make_mesh


def test_parse_defaults_and_str_roundtrip():
    cfg = MeshConfig.parse("data:2,fsdp:-1,tensor:1")
    assert (cfg.data, cfg.fsdp, cfg.tensor, cfg.strategy) == (2, -1, 1, "fsdp")
    assert MeshConfig.parse(str(cfg)) == cfg
    assert MeshConfig.parse("fsdp:4") == MeshConfig(data=1, fsdp=4, tensor=1)


@pytest.mark.parametrize(
    "spec, strategy, message",
    [
        ("data:0", "fsdp", "MeshConfig.data"),
        ("fsdp:-1,data:-1", "fsdp", "only one axis may be -1"),
        ("tensor:2", "fsdp", "MeshConfig.tensor"),
        ("pipeline:2", "fsdp", "bad entry 'pipeline:2'"),
        ("data:x", "fsdp", "size of 'data' must be an int"),
        ("data:1", "zero3", "MeshConfig.strategy"),
        ("data:1,data:2", "fsdp", "given twice"),
    ],
)
def test_parse_errors_name_the_field(spec, strategy, message):
    with pytest.raises(ValueError, match=message):
        MeshConfig.parse(spec, strategy=strategy)


def test_resolve():
    assert MeshConfig(data=2, fsdp=-1).resolve(8) == {"data": 2, "fsdp": 4, "tensor": 1}
    with pytest.raises(ValueError, match="not divisible"):
        MeshConfig(data=3, fsdp=-1).resolve(8)
    with pytest.raises(ValueError, match="needs 4 devices, but 8"):
        MeshConfig(data=2, fsdp=2).resolve(8)


def test_make_mesh_on_eight_devices():
    assert jax.device_count() == 8
    mesh = make_mesh(MeshConfig.parse("data:2,fsdp:2,tensor:2", strategy="fsdp_tp"))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:4])
    assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 1}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
