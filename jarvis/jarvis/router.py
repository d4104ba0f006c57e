"""Picks the PRIME model for a request: chat, reasoning or vision, and what to do when it is missing.

    router = Router(RouterConfig())
    route = router.route(kind="reasoning")      # or has_image=True, or model="prime-7b-chat-v1"
    for notice in route.notices: print(notice)  # e.g. a fallback to the installed chat model
    route.model.chat_stream(messages)

The kind comes from an explicit request (a model name, /reasoning on) or from the content
(an image goes to vision). Among catalogue models of that kind whose weights are here, the
largest that fits this machine's memory wins; when none is installed the chat model
answers instead and a notice says so.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import warnings

from jarvis_prime import ModelInfo, PrimeError, PrimeModel, list_models

KINDS = ("chat", "reasoning", "vision")
# Share of physical memory a model may take (Prime's catalogue uses the same budget).
MEMORY_BUDGET = 0.75


class NoModelError(PrimeError):
    """Nothing of the needed kind can be loaded; the message says what to install."""


@dataclasses.dataclass(frozen=True)
class RouterConfig:
    """`model`: the chat model (catalogue name or local HF dir); None picks the best installed."""

    model: str | None = None
    quantization: str | None = None
    device: str = "auto"
    backend: str = "auto"
    max_loaded: int = 2  # models kept in memory at once (least recently used is dropped)
    slots: int | None = None  # conversations each model caches and decodes together (Prime's default)

    def __post_init__(self):
        if self.max_loaded < 1:
            raise ValueError(f"RouterConfig.max_loaded must be >= 1, got {self.max_loaded}")


@dataclasses.dataclass(frozen=True)
class Route:
    name: str  # what was loaded (info.name, or the path of a local directory)
    kind: str
    model: PrimeModel
    notices: tuple[str, ...] = ()

    @property
    def info(self) -> ModelInfo:
        return self.model.info


def kind_of(info: ModelInfo) -> str:
    if "image" in info.modalities:
        return "vision"
    return "reasoning" if info.template == "reasoning" else "chat"


def short_status(info: ModelInfo) -> str:
    """The first sentence of a status: Prime's full reasons say where to put the weights."""
    first = info.status.split(". ", 1)[0].rstrip(".")
    first = first.removeprefix(info.name + " ").removeprefix(f"({info.description}) ").removeprefix("is ")
    return first or info.status


def _fits(info: ModelInfo, quantization: str | None) -> bool:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return True
    q = quantization if quantization is not None else info.default_quantization
    need = info.memory_bytes.get(q)
    return need is None or need <= MEMORY_BUDGET * total


class Router:
    """Loads models on demand and keeps the last `max_loaded` of them. Thread-safe."""

    def __init__(self, config: RouterConfig | None = None, *, catalogue=list_models, load=None):
        self.config = config or RouterConfig()
        self._catalogue_fn = catalogue
        self._load_fn = load or PrimeModel.from_pretrained
        self._catalogue: list[ModelInfo] | None = None
        self._loaded: collections.OrderedDict[str, PrimeModel] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    # ---- the catalogue ----

    def catalogue(self, refresh: bool = False) -> list[ModelInfo]:
        if self._catalogue is None or refresh:
            self._catalogue = list(self._catalogue_fn())
        return self._catalogue

    def info(self, name: str) -> ModelInfo | None:
        return next((i for i in self.catalogue() if i.name == name), None)

    def best(self, kind: str) -> ModelInfo | None:
        """The largest installed model of `kind` that fits this machine, or None."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        fit = [
            i
            for i in self.catalogue()
            if kind_of(i) == kind and i.status == "loadable" and _fits(i, self.config.quantization)
        ]
        return max(fit, key=lambda i: i.parameters, default=None)

    def chat_model_name(self) -> str:
        """The configured chat model, else the best installed one."""
        if self.config.model:
            return self.config.model
        best = self.best("chat")
        if best is None:
            reasons = "; ".join(f"{i.name}: {i.status}" for i in self.catalogue() if kind_of(i) == "chat")
            raise NoModelError(f"No chat model is installed ({reasons or 'the catalogue is empty'})")
        return best.name

    # ---- loading ----

    def load(self, name: str) -> tuple[PrimeModel, tuple[str, ...]]:
        """The loaded model called `name` (loading it once), and notices Prime raised on the way."""
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name], ()
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:  # one load per name at a time; others wait for it and reuse the result
            with self._lock:
                if name in self._loaded:
                    return self._loaded[name], ()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                extra = {"slots": self.config.slots} if self.config.slots is not None else {}
                model = self._load_fn(
                    name,
                    quantization=self.config.quantization,
                    device=self.config.device,
                    backend=self.config.backend,
                    **extra,
                )
            notices = tuple(str(w.message) for w in caught if issubclass(w.category, UserWarning))
            if model.info.name != name and not os.path.isdir(name) and not notices:
                notices += (f"{name} is not installed; {model.info.name} answers instead",)
            with self._lock:
                self._loaded[name] = model
                while len(self._loaded) > self.config.max_loaded:
                    self._loaded.popitem(last=False)
            return model, notices

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    # ---- routing ----

    def route(
        self,
        *,
        model: str | None = None,
        kind: str | None = None,
        has_image: bool = False,
        default: str | None = None,
    ) -> Route:
        """The model for one request. An image needs vision whatever else was asked; `model`
        names one model exactly; otherwise `kind` (default chat) picks the best installed.
        `default` is the chat model (else the configured or best installed one): it answers
        chat requests and stands in, with a notice, when the wanted kind is not installed."""
        notices: list[str] = []
        kind = kind or "chat"
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if has_image:
            named = self._kind_of_name(model) if model else None
            if named != "vision":
                best = self.best("vision")
                if best is None:
                    fallback = model or default or self.chat_model_name()
                    notices.append(self._missing("vision", fallback) + ": the image is left out")
                    return self._route(fallback, notices)
                model = best.name
        if model:
            return self._route(model, notices)
        chat = default or self.chat_model_name()
        if kind == "chat":
            return self._route(chat, notices)
        best = self.best(kind)
        if best is None:
            notices.append(self._missing(kind, chat))
            return self._route(chat, notices)
        return self._route(best.name, notices)

    def _route(self, name: str, notices: list[str]) -> Route:
        loaded, more = self.load(name)
        return Route(
            name=name if os.path.isdir(name) else loaded.info.name,
            kind=kind_of(loaded.info),
            model=loaded,
            notices=tuple(notices) + more,
        )

    def _kind_of_name(self, name: str) -> str | None:
        info = self.info(name)
        return kind_of(info) if info else None

    def _missing(self, kind: str, fallback: str) -> str:
        of_kind = [i for i in self.catalogue() if kind_of(i) == kind]
        why = "; ".join(f"{i.name}: {short_status(i)}" for i in of_kind) or "none in the catalogue"
        return (
            f"No {kind} model is installed ({why}); {os.path.basename(fallback.rstrip('/'))} answers instead"
        )
