"""Prepare training data: validated, normalised messages / preference JSONL.

  bazel run //reactor:prepare -- --source=chatterbot --output=/tmp/chatterbot_data
  bazel run //reactor:prepare -- --source=my_data.jsonl --output=/tmp/my_data
  bazel run //reactor:prepare -- --source=my_data.jsonl            # validate only

--source=chatterbot converts the chatterbot-corpus package (English YAML files) into
  train.jsonl / eval.jsonl             {"messages": [...]} conversations
  preference_train.jsonl / _eval.jsonl {"prompt": [...], "chosen", "rejected"} pairs
Each corpus conversation becomes user/assistant turns (a trailing unanswered line is
dropped); exact duplicates are kept once. The preference pairs are synthetic: chosen is
the corpus answer, rejected is the final answer of a conversation from a *different*
category, picked by a hash of the conversation, so it is fluent but off-topic. They are
easy pairs, meant to exercise DPO end to end, not to teach fine preferences.

--source=PATH validates any JSONL in the formats of reactor_core.data.schema, prints the
counts per format and the bad lines, and with --output writes the normalised examples
(alpaca becomes messages) to train.jsonl / eval.jsonl, or preference_train.jsonl /
preference_eval.jsonl for preference data.

The eval split is chosen by a hash of each conversation (reactor_core.data.dataset.
holdout_score), so it is stable across runs and machines. Relative paths are taken
from the directory `bazel run` was started in.
"""

import dataclasses
import glob
import hashlib
import importlib.util
import json
import os
import sys

import yaml
from absl import app, flags

from reactor_core.data import dataset, jsonl, schema
from reactor_core.data import stats as stats_lib

CHATTERBOT = "chatterbot"
SFT_FILES = ("train.jsonl", "eval.jsonl")
PREFERENCE_FILES = ("preference_train.jsonl", "preference_eval.jsonl")


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Attributes:
    source: "chatterbot" or a JSONL path.
    output: directory to write; empty = validate only (a JSONL source).
    eval_fraction: share of conversations held out for eval, in [0, 1).
    skip_bad_lines: report bad JSONL lines instead of stopping at the first.
    overwrite: replace existing output files.
    language: chatterbot corpus language folder.
    """

    source: str
    output: str = ""
    eval_fraction: float = 0.05
    skip_bad_lines: bool = False
    overwrite: bool = False
    language: str = "english"

    def __post_init__(self):
        if not self.source:
            raise ValueError("PrepareConfig.source is empty: pass 'chatterbot' or a JSONL path.")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(
                f"PrepareConfig.eval_fraction must be in [0, 1), got {self.eval_fraction}."
            )
        if self.source == CHATTERBOT and not self.output:
            raise ValueError(
                "PrepareConfig.output is empty: --source=chatterbot needs --output=DIR."
            )


@dataclasses.dataclass
class PrepareReport:
    kind: str  # "sft" or "preference" (chatterbot: both)
    stats: stats_lib.DataStats  # lines, formats, bad lines of the source
    files: dict = dataclasses.field(default_factory=dict)  # written path -> examples
    notes: list = dataclasses.field(default_factory=list)  # skipped corpus entries etc.

    def summary(self):
        out = [self.stats.report()]
        out.extend(f"note: {n}" for n in self.notes)
        out.extend(f"wrote {n:6d} examples to {p}" for p, n in self.files.items())
        return "\n".join(out)


def prepare(config):
    """Runs one preparation; returns its PrepareReport. Raises DataError on bad data."""
    if config.source == CHATTERBOT:
        return _prepare_chatterbot(config)
    return _prepare_jsonl(config)


def chatterbot_conversations(language="english"):
    """[(category, messages JSON list)] from the corpus, plus notes on skipped entries."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "--source=chatterbot needs the PyPI package chatterbot-corpus "
            "(pip install chatterbot-corpus)"
        )
    directory = os.path.join(list(spec.submodule_search_locations)[0], "data", language)
    files = sorted(glob.glob(os.path.join(directory, "*.yml")))
    if not files:
        raise FileNotFoundError(f"No chatterbot corpus files in {directory}; check --language.")
    out, notes, seen = [], [], set()
    duplicates = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        name = os.path.basename(path)
        category = (doc.get("categories") or [os.path.splitext(name)[0]])[0]
        for k, conv in enumerate(doc.get("conversations") or []):
            if (
                not isinstance(conv, list)
                or len(conv) < 2
                or not all(isinstance(s, str) for s in conv)
            ):
                notes.append(f"skipped {name} conversation {k}: not a list of two or more strings")
                continue
            turns = conv[: len(conv) // 2 * 2]  # end on an answer
            messages = [
                {"role": ("user", "assistant")[i % 2], "content": s.strip()}
                for i, s in enumerate(turns)
            ]
            try:
                schema.parse_example({"messages": messages})
            except schema.DataError as e:
                notes.append(f"skipped {name} conversation {k}: {e.reason}")
                continue
            key = json.dumps(messages)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            out.append((str(category), messages))
    if duplicates:
        notes.append(f"kept one copy of {duplicates} duplicated conversations")
    return out, notes


def chatterbot_preferences(conversations):
    """Preference pairs: the corpus answer over another category's answer (module doc)."""
    answers = sorted({(cat, msgs[-1]["content"]) for cat, msgs in conversations})
    others = {}
    pairs = []
    for category, messages in conversations:
        if category not in others:
            others[category] = [a for c, a in answers if c != category]
        candidates = others[category]
        chosen = messages[-1]["content"]
        if not candidates:
            continue
        digest = hashlib.sha256(json.dumps(messages).encode("utf-8")).digest()
        i = int.from_bytes(digest[:8], "big") % len(candidates)
        while candidates[i] == chosen:  # the same answer can sit in two categories
            i = (i + 1) % len(candidates)
        pairs.append({"prompt": messages[:-1], "chosen": chosen, "rejected": candidates[i]})
    return pairs


def _prepare_chatterbot(config):
    conversations, notes = chatterbot_conversations(config.language)
    stats = stats_lib.DataStats()
    stats.lines = len(conversations)
    stats.formats["messages"] = len(conversations)
    report = PrepareReport("sft+preference", stats, notes=notes)
    sft = [{"messages": msgs} for _, msgs in conversations]
    pairs = chatterbot_preferences(conversations)
    stats.formats["preference"] = len(pairs)
    # Pairs follow their conversation into the same split.
    in_eval = [dataset.holdout_score(obj) < config.eval_fraction for obj in sft]
    pair_eval = [
        dataset.holdout_score(
            {"messages": p["prompt"] + [{"role": "assistant", "content": p["chosen"]}]}
        )
        < config.eval_fraction
        for p in pairs
    ]
    _write_split(config, SFT_FILES, sft, in_eval, report)
    _write_split(config, PREFERENCE_FILES, pairs, pair_eval, report)
    return report


def _prepare_jsonl(config):
    stats = stats_lib.DataStats()
    records = jsonl.read_jsonl(config.source, skip_bad_lines=config.skip_bad_lines, stats=stats)
    preference = bool(records) and records[0].is_preference
    report = PrepareReport("preference" if preference else "sft", stats)
    if config.output:
        objs = [schema.to_json(r) for r in records]
        in_eval = [dataset.holdout_score(o) < config.eval_fraction for o in objs]
        _write_split(config, PREFERENCE_FILES if preference else SFT_FILES, objs, in_eval, report)
    return report


def _write_split(config, names, objs, in_eval, report):
    os.makedirs(config.output, exist_ok=True)
    splits = [(names[0], [o for o, e in zip(objs, in_eval) if not e])]
    if config.eval_fraction > 0:
        splits.append((names[1], [o for o, e in zip(objs, in_eval) if e]))
    for name, rows in splits:
        path = os.path.join(config.output, name)
        if os.path.exists(path) and not config.overwrite:
            raise FileExistsError(
                f"Cannot write {path}: it exists. "
                "Delete it, pass --overwrite or choose another --output."
            )
        jsonl.write_jsonl(path, rows)
        report.files[path] = len(rows)


# -- command line ------------------------------------------------------------------------

_SOURCE = flags.DEFINE_string(
    "source", None, "'chatterbot' or a JSONL file to validate and normalise."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Directory for the JSONL files (omit to validate only)."
)
_EVAL_FRACTION = flags.DEFINE_float(
    "eval_fraction", None, "Held-out share of conversations (default 0.05)."
)
_SKIP_BAD_LINES = flags.DEFINE_bool("skip_bad_lines", None, "Report bad lines instead of stopping.")
_OVERWRITE = flags.DEFINE_bool("overwrite", None, "Replace existing output files.")
_LANGUAGE = flags.DEFINE_string("language", None, "chatterbot corpus language (default english).")


def _resolve(path):
    """Relative paths are relative to where `bazel run` started, not the runfiles tree."""
    base = os.environ.get("BUILD_WORKING_DIRECTORY")
    if path and base and not os.path.isabs(path):
        return os.path.join(base, path)
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _SOURCE.value:
        raise app.UsageError("Pass --source=chatterbot or --source=PATH.jsonl")
    overrides = {
        "output": _resolve(_OUTPUT.value) if _OUTPUT.value else None,
        "eval_fraction": _EVAL_FRACTION.value,
        "skip_bad_lines": _SKIP_BAD_LINES.value,
        "overwrite": _OVERWRITE.value,
        "language": _LANGUAGE.value,
    }
    source = _SOURCE.value if _SOURCE.value == CHATTERBOT else _resolve(_SOURCE.value)
    config = PrepareConfig(source=source, **{k: v for k, v in overrides.items() if v is not None})
    try:
        report = prepare(config)
    except (schema.DataError, FileExistsError, FileNotFoundError) as e:
        print(f"prepare: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    app.run(main)
