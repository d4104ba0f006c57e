"""Tokenizer: a model directory's `tokenizer.json` through the `tokenizers` library, with
its chat template rendered by jinja2 the way transformers renders it.

Loading this way takes a fraction of a second; `transformers.AutoTokenizer` imports
torch (several seconds). Directories that ship only a SentencePiece `tokenizer.model`
fall back to transformers, which converts it.

    tok = load_tokenizer("/path/to/model")
    ids = tok.encode("Hello", add_special_tokens=True)
    text = tok.apply_chat_template(messages, add_generation_prompt=True)
"""

from __future__ import annotations

import json
import os

from jarvis_prime.errors import ModelNotAvailableError


def _content(token) -> str | None:
    """tokenizer_config values are a string or an AddedToken dict {"content": ...}."""
    if isinstance(token, dict):
        return token.get("content")
    return token if isinstance(token, str) else None


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    return value if isinstance(value, dict) else {}


def _chat_template(path: str, config: dict) -> str | None:
    jinja = os.path.join(path, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    template = config.get("chat_template") or _read_json(os.path.join(path, "chat_template.json")).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


class Tokenizer:
    """The subset of a Hugging Face tokenizer Prime uses: encode, decode, chat template, ids."""

    def __init__(
        self, backend, *, bos_token: str | None, eos_token: str | None, add_bos: bool, chat_template: str | None
    ):
        self._tok = backend  # tokenizers.Tokenizer
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id = backend.token_to_id(bos_token) if bos_token else None
        self.eos_token_id = backend.token_to_id(eos_token) if eos_token else None
        self.add_bos = add_bos
        self.chat_template = chat_template

    @classmethod
    def from_dir(cls, path: str) -> Tokenizer:
        from tokenizers import Tokenizer as Backend

        config = _read_json(os.path.join(path, "tokenizer_config.json"))
        special = _read_json(os.path.join(path, "special_tokens_map.json"))
        backend = Backend.from_file(os.path.join(path, "tokenizer.json"))
        return cls(
            backend,
            bos_token=_content(config.get("bos_token")) or _content(special.get("bos_token")),
            eos_token=_content(config.get("eos_token")) or _content(special.get("eos_token")),
            add_bos=bool(config.get("add_bos_token", False)),
            chat_template=_chat_template(path, config),
        )

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.add_bos and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids, skip_special_tokens: bool = True, clean_up_tokenization_spaces: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages, *, chat_template: str | None = None, tokenize: bool = False, add_generation_prompt: bool = True
    ):
        text = render_template(
            chat_template or self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text


def render_template(template: str, messages, **variables) -> str:
    """Renders a Hugging Face chat template (sandboxed jinja2, trim/lstrip blocks, tojson)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent, ensure_ascii=False)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, **variables)


def load_tokenizer(path: str):
    """tokenizer.json through `tokenizers`; a bare SentencePiece model through transformers."""
    try:
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            return Tokenizer.from_dir(path)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except ImportError as err:
        raise ModelNotAvailableError(
            f"Loading the tokenizer of {path} needs {err.name}: pip install {err.name}"
        ) from None
    except Exception as err:  # noqa: BLE001 - malformed tokenizer.json / tokenizer_config.json
        raise ModelNotAvailableError(
            f"Model directory {path} is not usable: its tokenizer does not load ({type(err).__name__}: {err})"
        ) from None
