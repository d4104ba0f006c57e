"""PrimeModel: load a catalogue model (or a local directory) on the right backend and generate.

    from jarvis_prime import PrimeModel
    model = PrimeModel.from_pretrained("prime-7b-chat-v1", quantization="8bit")
    response = model.generate("What is machine learning?")
    print(response)                       # str(result) is the text
    for piece in model.stream("Tell me a joke"):
        print(piece, end="", flush=True)

Where the 7B weights are absent, "prime-7b-chat-v1" loads the offline default
(prime-135m-chat-v1) with a PrimeWarning that says where to put the 7B; pass
fallback=False for an error instead.
"""

from __future__ import annotations

import dataclasses
import json
import os

from jarvis_prime import backends, catalogue, sources, templates
from jarvis_prime.catalogue import Machine, ModelInfo
from jarvis_prime.errors import ModelNotAvailableError, PrimeError
from jarvis_prime.sampling import Sampling
from jarvis_prime.store import Store
from jarvis_prime.stream import GenerationResult, TextStream
from jarvis_prime.tokenizer import load_tokenizer

_SAMPLING_NAMES = tuple(f.name for f in dataclasses.fields(Sampling))


class PrimeModel:
    """A loaded model: tokenizer + chat template + one backend. Build with `from_pretrained`."""

    def __init__(self, *, info: ModelInfo, engine, tokenizer, path: str, source: str, requested: str, eos_token_ids):
        self.info = info
        self.engine = engine  # the backend object (JaxBackend / MLXBackend)
        self.tokenizer = tokenizer
        self.path = path  # the model directory the weights and tokenizer came from
        self.source = source  # "directory" | "store" | "package" | "gs" | "hub"
        self.requested = requested  # what the caller asked for (differs after a fallback)
        self.eos_token_ids = frozenset(eos_token_ids)

    @property
    def backend(self) -> str:
        return self.engine.name

    @property
    def quantization(self) -> str | None:
        return self.engine.quantization

    @property
    def context_length(self) -> int:
        """Tokens one conversation may hold here (prompt + answer): the model's window, or less
        where the backend's per-conversation cache is smaller."""
        return min(self.info.context_length, getattr(self.engine, "context_length", self.info.context_length))

    def __repr__(self) -> str:
        return f"PrimeModel({self.info.name!r}, backend={self.backend!r}, quantization={self.quantization!r})"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        quantization: str | None = None,
        device: str = "auto",
        backend: str = "auto",
        adapter: str | None = None,
        *,
        fallback: bool = True,
        store: Store | None = None,
        slots: int | None = None,
    ) -> PrimeModel:
        """Loads a catalogue name or a local Hugging Face directory.

        quantization: None = this machine's default for the model (`info.default_quantization`:
        full precision where it fits, else 8/4-bit), "none" = full precision, "8bit", "4bit".
        backend: "auto" (MLX on Apple Silicon, JAX elsewhere), "jax" or "mlx".
        adapter: a PEFT LoRA directory merged on top of the base (cached in the store).
        slots: conversations the JAX engine keeps cached and decodes together (default 4; a
        server passes its concurrency).
        """
        quant = catalogue.check_quantization(quantization)
        machine = Machine.detect()
        chosen = backends.choose(backend, machine)
        store = store or Store.default()
        resolved = sources.resolve(name_or_path, store=store, fallback=fallback, machine=machine)
        if quantization is None:
            quant = resolved.info.default_quantization
        path = resolved.path
        if adapter is not None:
            from jarvis_prime import adapter as adapters

            path = adapters.merged(path, os.fspath(adapter), store)
        tokenizer = load_tokenizer(resolved.path)
        try:
            engine = backends.load(
                chosen,
                path,
                resolved.hf_config,
                quantization=quant,
                device=device,
                store=store,
                slots=slots,
            )
        except PrimeError:
            raise
        except MemoryError:
            raise ModelNotAvailableError(
                f"Out of memory loading {resolved.info.name} on the {chosen} backend; "
                f"try quantization='4bit' (estimate {resolved.info.memory_bytes['4bit'] / 2**30:.1f} GiB)"
            ) from None
        except Exception as err:  # noqa: BLE001 - a library failing deep inside: say which model, backend and why
            raise ModelNotAvailableError(
                f"Loading {path} on the {chosen} backend failed: {type(err).__name__}: {err}"
            ) from None
        return cls(
            info=resolved.info,
            engine=engine,
            tokenizer=tokenizer,
            path=resolved.path,
            source=resolved.source,
            requested=resolved.requested,
            eos_token_ids=_eos_ids(resolved.path, resolved.hf_config, tokenizer),
        )

    # ---- tokens ----

    def encode_chat(self, messages) -> list[int]:
        return templates.render(self.tokenizer, messages, kind=self.info.template)

    def encode_prompt(self, prompt: str, *, raw: bool = False) -> list[int]:
        if not isinstance(prompt, str):
            raise PrimeError(f"prompt must be a string, got {type(prompt).__name__}; use chat() for messages")
        if raw:
            return self.tokenizer.encode(prompt, add_special_tokens=True)
        return self.encode_chat([{"role": "user", "content": prompt}])

    def count_tokens(self, messages_or_text, *, raw: bool = False) -> int:
        """Tokens the model would read, after the chat template (for trimming conversations).

        A string counts as one user turn, as `generate` reads it; raw=True counts it as is.
        """
        if isinstance(messages_or_text, str):
            return len(self.encode_prompt(messages_or_text, raw=raw))
        return len(self.encode_chat(messages_or_text))

    # ---- generation ----

    def stream(self, prompt: str, *, raw: bool = False, **sampling) -> TextStream:
        """Streams the answer to `prompt` (one user turn under the chat template; raw=True: as is)."""
        return self._stream(self.encode_prompt(prompt, raw=raw), sampling)

    def chat_stream(self, messages, **sampling) -> TextStream:
        return self._stream(self.encode_chat(messages), sampling)

    def stream_ids(self, prompt_ids: list[int], **sampling) -> TextStream:
        """Streams from already tokenized input (benchmarks, callers with their own template)."""
        if not prompt_ids or not all(isinstance(i, int) and 0 <= i < len(self.tokenizer) for i in prompt_ids):
            raise PrimeError(f"prompt_ids must be a non-empty list of token ids below {len(self.tokenizer)}")
        return self._stream(list(prompt_ids), sampling)

    def generate(self, prompt: str, *, raw: bool = False, **sampling) -> GenerationResult:
        return _drain(self.stream(prompt, raw=raw, **sampling))

    def chat(self, messages, **sampling) -> GenerationResult:
        return _drain(self.chat_stream(messages, **sampling))

    def _stream(self, prompt_ids: list[int], sampling: dict) -> TextStream:
        unknown = sorted(set(sampling) - set(_SAMPLING_NAMES))
        if unknown:
            raise PrimeError(f"Unknown sampling option(s) {unknown}; known: {', '.join(_SAMPLING_NAMES)}")
        try:
            params = Sampling(**sampling)
        except ValueError as e:
            raise PrimeError(str(e).replace("SamplingConfig.", "")) from None
        if not prompt_ids:
            raise PrimeError("The prompt is empty after tokenization; pass some text")
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise PrimeError(
                f"The prompt is {len(prompt_ids)} tokens; {self.info.name} reads at most "
                f"{self.context_length} here. Trim the conversation (count_tokens() measures it)."
            )
        if params.max_tokens > room:
            params = dataclasses.replace(params, max_tokens=room)
        return TextStream(
            self.engine.tokens(prompt_ids, params, stop_ids=self.eos_token_ids),
            tokenizer=self.tokenizer,
            prompt_tokens=len(prompt_ids),
            max_tokens=params.max_tokens,
            eos_token_ids=self.eos_token_ids,
            stop=params.stop,
        )


def _drain(stream: TextStream) -> GenerationResult:
    for _ in stream:
        pass
    return stream.result


def _eos_ids(path: str, hf_config: dict, tokenizer) -> set[int]:
    """End-of-turn ids: config.json, generation_config.json and the tokenizer's EOS."""
    ids: set[int] = set()

    def add(value):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))

    add(hf_config.get("eos_token_id"))
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.isfile(gen_path):
        try:
            with open(gen_path) as f:
                add(json.load(f).get("eos_token_id"))
        except (json.JSONDecodeError, AttributeError):
            pass
    add(tokenizer.eos_token_id)
    return ids
