"""The device mesh: named axes (`data`, `fsdp`, `tensor`) sized from a config string.

    cfg = MeshConfig.parse("data:1,fsdp:-1,tensor:1", strategy="fsdp")
    mesh = make_mesh(cfg)  # jax.sharding.Mesh over all (global) devices

One axis may be -1: it takes every device the others leave. The strategy names the
rules table (see sharding.py) that maps the model's logical axes onto these mesh axes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

AXES = ("data", "fsdp", "tensor")
STRATEGIES = ("dp", "fsdp", "fsdp_tp")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes (-1 on at most one axis: "the rest") and the sharding strategy.

    dp: parameters replicated, batch split over data x fsdp.
    fsdp: parameters and optimizer state split over fsdp along `embed`; batch over data x fsdp.
    fsdp_tp: fsdp plus `heads`/`kv_heads`/`mlp`/`vocab` split over tensor.
    """

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    strategy: str = "fsdp"

    def __post_init__(self):
        for name in AXES:
            size = getattr(self, name)
            if not isinstance(size, int) or isinstance(size, bool) or (size < 1 and size != -1):
                raise ValueError(
                    f"MeshConfig.{name} (--mesh={name}:N or --mesh_{name}) must be a positive int or -1 "
                    f"(the rest), got {size!r}"
                )
        auto = [name for name in AXES if getattr(self, name) == -1]
        if len(auto) > 1:
            raise ValueError(f"MeshConfig: only one axis may be -1, got {auto}; give the others sizes in --mesh")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"MeshConfig.strategy (--mesh_strategy) must be one of {STRATEGIES}, got {self.strategy!r}"
            )
        if self.tensor not in (1, -1) and self.strategy != "fsdp_tp":
            raise ValueError(
                f"MeshConfig.tensor is {self.tensor} but strategy {self.strategy!r} does not split over "
                "`tensor`: use strategy='fsdp_tp' (--mesh_strategy=fsdp_tp) or tensor=1"
            )

    @classmethod
    def parse(cls, spec: str, *, strategy: str = "fsdp") -> MeshConfig:
        """Parses `--mesh` strings like "data:1,fsdp:-1,tensor:1"; omitted axes keep their default."""
        sizes: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition(":")
            name = name.strip()
            if not sep or name not in AXES:
                raise ValueError(f"--mesh: bad entry {part!r}; expected AXIS:SIZE with AXIS in {AXES}")
            if name in sizes:
                raise ValueError(f"--mesh: axis {name!r} given twice in {spec!r}")
            try:
                sizes[name] = int(value)
            except ValueError:
                raise ValueError(f"--mesh: size of {name!r} must be an int, got {value!r}") from None
        return cls(**sizes, strategy=strategy)

    def __str__(self) -> str:
        return ",".join(f"{name}:{getattr(self, name)}" for name in AXES)

    def resolve(self, num_devices: int) -> dict[str, int]:
        """Concrete axis sizes for `num_devices`; raises if they do not multiply out."""
        sizes = {name: getattr(self, name) for name in AXES}
        fixed = math.prod(s for s in sizes.values() if s != -1)
        auto = [name for name, s in sizes.items() if s == -1]
        if auto:
            if num_devices % fixed:
                raise ValueError(
                    f"MeshConfig {self}: {num_devices} devices are not divisible by the fixed axes' product {fixed}"
                )
            sizes[auto[0]] = num_devices // fixed
        elif fixed != num_devices:
            raise ValueError(f"MeshConfig {self} needs {fixed} devices, but {num_devices} are available")
        return sizes


def make_mesh(config: MeshConfig, devices: Sequence | None = None):
    """A jax Mesh with axes (data, fsdp, tensor) over `devices` (default: all global devices)."""
    import jax

    devices = list(jax.devices() if devices is None else devices)
    sizes = config.resolve(len(devices))
    shape = tuple(sizes[name] for name in AXES)
    # Auto axes: XLA propagates shardings from our in/out shardings and logical constraints.
    axis_types = (jax.sharding.AxisType.Auto,) * len(AXES)
    # make_mesh orders devices for the physical topology (ICI/DCN aware on TPU and GPU).
    return jax.make_mesh(shape, AXES, axis_types, devices=devices)
