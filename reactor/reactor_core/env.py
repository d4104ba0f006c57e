"""Where are we running, and what should training default to here?

    env = detect()          # Apple Silicon / GCP VM (spot or on-demand) / TPU VM / CUDA / CPU
    prof = profile(env)     # defaults for whatever the user did not set
    if not prof.training_allowed: raise SystemExit(prof.reason)

Safe for every part of the monorepo: standard library only, nothing touches the network at
import time, and off GCP `detect()` makes no network call at all (the DMI product name is
checked first; GCE_METADATA_HOST forces a metadata probe, which is how tests fake a VM).
Every metadata request has a short timeout, so even a broken network answers within ~1 s.

Profiles (`profile(env)`):
| machine                      | training | defaults                                              |
|------------------------------|----------|-------------------------------------------------------|
| Apple Silicon (M1 16 GB)     | off      | MLX, 4-bit (8-bit from 24 GB), inference only         |
| GCP VM, CPU, >= 30 GB        | on       | LoRA/QLoRA/DPO/full, fsdp over host devices, resume   |
| GCP VM, CPU, smaller         | on       | LoRA/QLoRA/DPO, 8-bit base, resume                    |
| GPU / TPU (GCP or not)       | on       | all methods, fsdp; resume on GCP                      |
| plain CPU box                | on       | small models, dp, no auto-resume, 2 x 512-token steps |
Spot VMs checkpoint more often than on-demand ones (they get ~30 s notice).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import urllib.error
import urllib.request

DEFAULT_METADATA_HOST = "metadata.google.internal"
DMI_PRODUCT_NAME = "/sys/class/dmi/id/product_name"
KINDS = ("apple_silicon", "tpu_vm", "gcp_vm", "cuda", "cpu")


# ---- GCE metadata server ----


def metadata_host() -> str:
    return os.environ.get("GCE_METADATA_HOST") or DEFAULT_METADATA_HOST


def metadata_get(path: str, *, timeout: float = 0.5, host: str | None = None) -> str | None:
    """GET computeMetadata/v1/<path> from the metadata server; None when absent or unreachable."""
    url = f"http://{host or metadata_host()}/computeMetadata/v1/{path}"
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.headers.get("Metadata-Flavor") not in (None, "Google"):
                return None
            return response.read().decode("utf-8").strip()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def on_gce() -> bool:
    """True on a Compute Engine VM (DMI says so) or when GCE_METADATA_HOST points at a server."""
    if os.environ.get("GCE_METADATA_HOST"):
        return True
    try:
        with open(DMI_PRODUCT_NAME, encoding="utf-8") as f:
            return "Google Compute Engine" in f.read()
    except OSError:
        return False


# ---- what we found ----


@dataclasses.dataclass(frozen=True)
class Accelerator:
    kind: str  # "cuda" | "tpu" | "metal"
    name: str
    count: int
    memory_bytes: int | None = None  # per device, when known


@dataclasses.dataclass(frozen=True)
class GcpInstance:
    name: str | None
    zone: str | None
    machine_type: str | None
    project: str | None
    provisioning_model: str | None  # "SPOT" | "STANDARD" (None on old images)
    preemptible: bool
    accelerator_type: str | None  # TPU VMs: e.g. "v5litepod-8"

    @property
    def spot(self) -> bool:
        return self.preemptible or (self.provisioning_model or "").upper() == "SPOT"


@dataclasses.dataclass(frozen=True)
class Environment:
    kind: str  # one of KINDS, most specific first
    system: str  # platform.system()
    machine: str  # platform.machine()
    cpu_count: int
    memory_bytes: int
    accelerators: tuple[Accelerator, ...] = ()
    gcp: GcpInstance | None = None

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / 2**30

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["memory_gb"] = round(self.memory_gb, 1)
        if self.gcp is not None:
            out["gcp"]["spot"] = self.gcp.spot
        return out


def _memory_bytes() -> int:
    if platform.system() == "Darwin":
        out = _run(["sysctl", "-n", "hw.memsize"])
        return int(out) if out and out.isdigit() else 0
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _run(argv: list[str], timeout: float = 2.0) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None


def _cuda_gpus() -> tuple[Accelerator, ...]:
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    if out:
        rows = [r.split(",") for r in out.splitlines() if r.strip()]
        names = {r[0].strip() for r in rows}
        mem = int(float(rows[0][1])) * 2**20 if len(rows[0]) > 1 and rows[0][1].strip() else None
        return (Accelerator("cuda", " / ".join(sorted(names)), len(rows), mem),)
    gpus = "/proc/driver/nvidia/gpus"
    if os.path.isdir(gpus) and os.listdir(gpus):
        return (Accelerator("cuda", "NVIDIA GPU", len(os.listdir(gpus))),)
    return ()


def tpu_chip_count() -> int:
    """Cloud TPU chips visible as /dev/accel*."""
    try:
        return len([d for d in os.listdir("/dev") if re.fullmatch(r"accel\d+", d)])
    except OSError:
        return 0


def _gcp_instance(timeout: float) -> GcpInstance | None:
    def get(path):
        return metadata_get(path, timeout=timeout)

    name = get("instance/name")
    if name is None:  # no metadata server after all: stop here (one timeout, not seven)
        return None
    zone = get("instance/zone")
    machine_type = get("instance/machine-type")
    return GcpInstance(
        name=name,
        zone=zone.rsplit("/", 1)[-1] if zone else None,
        machine_type=machine_type.rsplit("/", 1)[-1] if machine_type else None,
        project=get("project/project-id"),
        provisioning_model=get("instance/scheduling/provisioning-model"),
        preemptible=(get("instance/scheduling/preemptible") or "").upper() == "TRUE",
        accelerator_type=get("instance/attributes/accelerator-type"),
    )


def detect(*, metadata_timeout: float = 0.3) -> Environment:
    """Probes this machine. Off GCP it makes no network call; on GCP a handful of short ones."""
    system, machine = platform.system(), platform.machine()
    base = dict(system=system, machine=machine, cpu_count=os.cpu_count() or 1, memory_bytes=_memory_bytes())
    if system == "Darwin" and machine in ("arm64", "aarch64"):
        chip = _run(["sysctl", "-n", "machdep.cpu.brand_string"]) or "Apple Silicon"
        return Environment(kind="apple_silicon", accelerators=(Accelerator("metal", chip, 1),), **base)

    gcp = _gcp_instance(metadata_timeout) if on_gce() else None
    accelerators = list(_cuda_gpus())
    tpu_chips = tpu_chip_count()
    if tpu_chips or (gcp and gcp.accelerator_type):
        name = gcp.accelerator_type if gcp and gcp.accelerator_type else "TPU"
        accelerators.append(Accelerator("tpu", name, tpu_chips or 1))
    if any(a.kind == "tpu" for a in accelerators):
        kind = "tpu_vm"
    elif gcp is not None:
        kind = "gcp_vm"
    elif accelerators:
        kind = "cuda"
    else:
        kind = "cpu"
    return Environment(kind=kind, accelerators=tuple(accelerators), gcp=gcp, **base)


# ---- what to do here ----


@dataclasses.dataclass(frozen=True)
class Profile:
    """Defaults for this machine; the trainer uses a field only where the user set nothing."""

    name: str
    training_allowed: bool
    reason: str
    backend: str  # "mlx" | "jax"
    quantization: str | None  # default inference quantization: "4bit" | "8bit" | None
    methods: tuple[str, ...]  # training methods that fit: "lora", "qlora", "dpo", "full"
    mesh: str  # suggested --mesh
    sharding: str  # suggested strategy: "dp" | "fsdp" | "fsdp_tp"
    auto_resume: bool  # resume from the newest checkpoint without asking
    micro_batch_size: int
    max_seq_len: int
    checkpoint_every_steps: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def profile(env: Environment) -> Profile:
    """Picks defaults from the environment (the table in this module's docstring)."""
    mem = env.memory_gb
    if env.kind == "apple_silicon":
        return Profile(
            name="apple-silicon",
            training_allowed=False,
            reason="Apple Silicon: inference-only mode (MLX backend); train on a GCP VM or a Linux box",
            backend="mlx",
            quantization="4bit" if mem < 24 else "8bit",
            methods=(),
            mesh="data:1,fsdp:1,tensor:1",
            sharding="dp",
            auto_resume=False,
            micro_batch_size=1,
            max_seq_len=2048,
            checkpoint_every_steps=0,
        )
    devices = sum(a.count for a in env.accelerators if a.kind in ("cuda", "tpu"))
    accel_mem = min((a.memory_bytes for a in env.accelerators if a.memory_bytes), default=None)
    spot = bool(env.gcp and env.gcp.spot)
    if env.kind in ("tpu_vm", "cuda") or (env.kind == "gcp_vm" and devices):
        per_device = (accel_mem or 16 * 2**30) / 2**30
        return Profile(
            name=f"{env.kind}{'-spot' if spot else ''}",
            training_allowed=True,
            reason=f"{devices} accelerator(s): LoRA/QLoRA/DPO and full fine-tuning under FSDP",
            backend="jax",
            quantization=None,
            methods=("lora", "qlora", "dpo", "full"),
            mesh="data:1,fsdp:-1,tensor:1",
            sharding="fsdp",
            auto_resume=env.gcp is not None,
            micro_batch_size=8 if per_device >= 40 else 4,
            max_seq_len=4096 if per_device >= 40 else 2048,
            checkpoint_every_steps=100 if spot else 500,
        )
    if env.kind == "gcp_vm":
        big = mem >= 30
        return Profile(
            name=f"gcp-cpu{'-spot' if spot else ''}",
            training_allowed=True,
            reason=f"GCP VM ({mem:.0f} GB, CPU): LoRA/DPO with FSDP over host devices; checkpoints survive preemption",
            backend="jax",
            quantization=None if big else "8bit",
            methods=("lora", "qlora", "dpo") + (("full",) if big else ()),
            mesh="data:1,fsdp:-1,tensor:1",
            sharding="fsdp",
            auto_resume=True,
            micro_batch_size=4 if big else 2,
            max_seq_len=2048 if big else 1024,
            checkpoint_every_steps=50 if spot else 200,
        )
    small = mem < 16
    return Profile(
        name="cpu",
        training_allowed=True,
        reason=f"CPU only ({mem:.0f} GB): small models (SmolLM2-135M size)",
        backend="jax",
        quantization="8bit" if small else None,
        methods=("lora", "qlora", "dpo") if small else ("lora", "qlora", "dpo", "full"),
        mesh="data:1,fsdp:1,tensor:1",
        sharding="dp",
        auto_resume=False,
        # 2 x 512 tokens: a step of seconds for the 135M model on 2 cores (~140 tokens/s), not a minute.
        micro_batch_size=1 if small else 2,
        max_seq_len=512,
        checkpoint_every_steps=200,
    )


def report(env: Environment, prof: Profile) -> str:
    """Human-readable summary for `bazel run //reactor:env`."""
    lines = [
        f"machine     {env.kind} ({env.system} {env.machine}, {env.cpu_count} CPUs, {env.memory_gb:.1f} GB)",
    ]
    for a in env.accelerators:
        mem = f", {a.memory_bytes / 2**30:.0f} GB each" if a.memory_bytes else ""
        lines.append(f"accelerator {a.count} x {a.name} ({a.kind}{mem})")
    if env.gcp:
        g = env.gcp
        lines.append(
            f"gcp         {g.name} in {g.zone} ({g.machine_type}), "
            f"{'SPOT' if g.spot else 'on-demand'}, project {g.project}"
        )
    lines.append(f"profile     {prof.name}: {prof.reason}")
    allowed = "allowed" if prof.training_allowed else "off"
    lines.append(f"training    {allowed}; methods {', '.join(prof.methods) or '-'}")
    lines.append(
        f"defaults    backend={prof.backend} quantization={prof.quantization} mesh={prof.mesh} "
        f"sharding={prof.sharding} auto_resume={prof.auto_resume} micro_batch_size={prof.micro_batch_size} "
        f"max_seq_len={prof.max_seq_len} checkpoint_every_steps={prof.checkpoint_every_steps}"
    )
    return "\n".join(lines)


def as_json(env: Environment, prof: Profile) -> str:
    return json.dumps({"environment": env.to_json(), "profile": prof.to_json()}, indent=2)
