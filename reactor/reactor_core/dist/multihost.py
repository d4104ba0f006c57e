"""Multi-host start-up through JAX's own distributed runtime (`jax.distributed`).

Every host runs the same program; `initialize()` must run before anything touches a JAX
device. Then `jax.devices()` lists the devices of all hosts, the mesh spans them, and each
jitted step runs SPMD across hosts (XLA collectives: ICI/DCN on TPU, NCCL on GPU, gloo on CPU).

Where the settings come from, first match wins:
  1. a DistributedConfig built from flags (`--coordinator_address=10.0.0.2:8476
     --num_processes=4 --process_id=0`),
  2. the environment: REACTOR_COORDINATOR_ADDRESS, REACTOR_NUM_PROCESSES, REACTOR_PROCESS_ID
     (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID are read too),
  3. a Cloud TPU VM slice: nothing to set; JAX finds its peers from the TPU metadata,
  4. otherwise: one process, nothing to initialize.

Running on N GCP VMs (GPU or CPU):
  1. Create the VMs in one VPC and zone, tagged `reactor` (e.g. `gcloud compute instances
     create reactor-0 reactor-1 ... --tags=reactor`, or `bazel run //reactor:gcp -- launch
     --dry-run` for a request body to reuse). Open the coordinator port inside the network:
     `gcloud compute firewall-rules create reactor-jax --network=default --allow=tcp:8476
     --source-tags=reactor --target-tags=reactor`. Mount one shared directory (a Filestore
     NFS share) at the same path on every VM, e.g. /mnt/shared.
  2. Pick host 0's internal IP as coordinator (`gcloud compute instances describe reactor-0
     --format='get(networkInterfaces[0].networkIP)'`).
  3. On every host i, with the same code, data and flags:
         REACTOR_COORDINATOR_ADDRESS=10.128.0.2:8476 REACTOR_NUM_PROCESSES=N \
         REACTOR_PROCESS_ID=i bazel run //reactor:train -- --mesh=data:1,fsdp:-1,tensor:1 \
         --checkpoint_dir=/mnt/shared/run1 ...
     Host 0 listens on the port; the others connect (initialization waits up to
     `initialization_timeout_s` for everyone).
  4. Every host feeds the same global batch order (the data iterator is deterministic; see
     sharding.shard_batch). Checkpoints go to the shared directory: Orbax writes each host's
     shards there and commits once all are in (gs:// mirroring is single-host for now).
  5. Preemption of any host stops all of them after the same step (preemption.should_stop),
     they save, and on restart every host resumes from the newest complete checkpoint.
On a TPU VM slice, skip 2-3's variables: `gcloud compute tpus tpu-vm ssh NAME --worker=all
--command="bazel run //reactor:train -- ..."` and JAX discovers the slice itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

from reactor_core import env as env_lib

log = logging.getLogger(__name__)

_ENV = {
    "coordinator_address": ("REACTOR_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("REACTOR_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("REACTOR_PROCESS_ID", "JAX_PROCESS_ID"),
}


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins the others. All three of address/count/id, or none of them."""

    coordinator_address: str | None = None  # "host:port" of process 0
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None  # e.g. one process per GPU
    initialization_timeout_s: int = 300
    cpu_collectives: str = "gloo"  # cross-process collectives on CPU: "gloo" | "mpi"

    def __post_init__(self):
        given = {k: getattr(self, k) for k in _ENV if getattr(self, k) is not None}
        if given and len(given) != len(_ENV):
            missing = sorted(set(_ENV) - set(given))
            raise ValueError(f"DistributedConfig: {sorted(given)} set but {missing} missing; set all three or none")
        if self.coordinator_address is not None:
            host, sep, port = self.coordinator_address.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(
                    f"DistributedConfig.coordinator_address must be HOST:PORT, got {self.coordinator_address!r}"
                )
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"DistributedConfig.num_processes must be >= 1, got {self.num_processes}")
        if self.process_id is not None and not 0 <= self.process_id < (self.num_processes or 0):
            raise ValueError(
                f"DistributedConfig.process_id must be in [0, {self.num_processes}), got {self.process_id}"
            )
        if self.initialization_timeout_s <= 0:
            raise ValueError(
                f"DistributedConfig.initialization_timeout_s must be > 0, got {self.initialization_timeout_s}"
            )
        if self.cpu_collectives not in ("gloo", "mpi"):
            raise ValueError(f"DistributedConfig.cpu_collectives must be 'gloo' or 'mpi', got {self.cpu_collectives!r}")

    @property
    def explicit(self) -> bool:
        return self.coordinator_address is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> DistributedConfig:
        """Reads REACTOR_* (then JAX_*) variables; keyword overrides (from flags) win."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for field, names in _ENV.items():
            raw = next((environ[n] for n in names if environ.get(n)), None)
            if raw is None:
                continue
            if field == "coordinator_address":
                values[field] = raw
            else:
                try:
                    values[field] = int(raw)
                except ValueError:
                    raise ValueError(f"{names[0]} must be an int, got {raw!r}") from None
        ids = environ.get("JAX_LOCAL_DEVICE_IDS")
        if ids:
            values["local_device_ids"] = tuple(int(i) for i in ids.split(","))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def on_tpu_vm() -> bool:
    """A Cloud TPU VM (chips under /dev/accel*, or the TPU runtime's environment)."""
    tpu_env = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_ACCELERATOR_TYPE")
    return bool(env_lib.tpu_chip_count() or tpu_env)


def initialize(config: DistributedConfig | None = None) -> int:
    """Joins the other processes (if any) and returns the process count. Idempotent.

    Must run before the first JAX computation of the process.
    """
    import jax

    if jax.distributed.is_initialized():
        return jax.process_count()
    config = DistributedConfig.from_env() if config is None else config
    if config.explicit:
        if config.num_processes == 1:
            return 1
        jax.config.update("jax_cpu_collectives_implementation", config.cpu_collectives)
        log.info(
            "jax.distributed: process %d/%d, coordinator %s",
            config.process_id,
            config.num_processes,
            config.coordinator_address,
        )
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
            local_device_ids=list(config.local_device_ids) if config.local_device_ids else None,
            initialization_timeout=config.initialization_timeout_s,
        )
    elif on_tpu_vm():
        jax.distributed.initialize(initialization_timeout=config.initialization_timeout_s)
    else:
        return 1
    log.info(
        "jax.distributed up: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return jax.process_count()


def is_primary() -> bool:
    """Process 0: the one that writes logs, markers and other single-writer files."""
    import jax

    return jax.process_index() == 0
