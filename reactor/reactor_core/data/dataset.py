"""Tokenized datasets: JSONL file -> records -> split -> (input_ids, loss_mask) arrays.

Examples longer than seq_len are truncated or dropped (DataConfig.overlong); examples
left without a trained token are dropped. Both are counted in DataStats.
"""

import dataclasses
import hashlib
import json

from reactor_core.data import chat, jsonl, schema
from reactor_core.data import stats as stats_lib

SPLITS = ("train", "eval")


@dataclasses.dataclass
class SFTDataset:
    """Tokenized SFT examples; input_ids[i] and loss_masks[i] have equal length <= seq_len."""

    input_ids: list  # list[np.ndarray int32]
    loss_masks: list  # list[np.ndarray uint8], 1 = target token (see chat.py)
    stats: stats_lib.DataStats

    def __len__(self):
        return len(self.input_ids)


@dataclasses.dataclass
class PreferenceDataset:
    """Tokenized preference pairs; the masks mark response tokens."""

    chosen_ids: list
    chosen_masks: list
    rejected_ids: list
    rejected_masks: list
    stats: stats_lib.DataStats

    def __len__(self):
        return len(self.chosen_ids)


def holdout_score(obj):
    """A stable number in [0, 1) from an example's normalised JSON (for eval splits)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") / 2.0**64


def load_records(config, *, split="train", stats=None):
    """The records of one split: eval_path, or a hash-chosen eval_fraction of path."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    stats = stats if stats is not None else stats_lib.DataStats()
    if split == "eval" and config.eval_path:
        return jsonl.read_jsonl(config.eval_path, skip_bad_lines=config.skip_bad_lines, stats=stats)
    if not config.path:
        raise ValueError(
            "DataConfig.path is empty: set it to a JSONL file (see `bazel run //reactor:prepare`)."
        )
    if split == "eval" and config.eval_fraction == 0:
        raise ValueError("No eval data: set DataConfig.eval_path or DataConfig.eval_fraction > 0.")
    records = jsonl.read_jsonl(config.path, skip_bad_lines=config.skip_bad_lines, stats=stats)
    if config.eval_fraction == 0:
        return records
    keep = []
    for r in records:
        in_eval = holdout_score(schema.to_json(r)) < config.eval_fraction
        if in_eval == (split == "eval"):
            keep.append(r)
        else:
            stats.held_out += 1
    return keep


def build_sft_dataset(config, tokenizer, *, split="train"):
    """Reads, validates, splits and tokenizes SFT data (text, messages, alpaca).

    Raises DataError for bad lines (unless config.skip_bad_lines), for preference data,
    and when no example is left.
    """
    stats = stats_lib.DataStats()
    records = load_records(config, split=split, stats=stats)
    template = chat.ChatTemplate(tokenizer)
    ids_list, mask_list = [], []
    for r in records:
        if r.is_preference:
            raise schema.DataError(
                "holds preference pairs; SFT needs text/messages/alpaca data", path=r.path
            )
        try:
            if r.format == "text":
                ids, mask = chat.encode_text(tokenizer, r.example.text)
            else:
                ids, mask = chat.encode_chat(template, r.example.messages, loss_on=config.loss_on)
        except schema.DataError as e:
            _bad(config, stats, r, e)
            continue
        if len(ids) > config.seq_len:
            if config.overlong == "drop":
                stats.dropped_overlong += 1
                continue
            ids, mask = ids[: config.seq_len], mask[: config.seq_len]
            stats.truncated += 1
        targets = int(mask[1:].sum())
        if targets == 0:
            stats.dropped_no_targets += 1
            continue
        ids_list.append(ids)
        mask_list.append(mask)
        stats.tokens += len(ids)
        stats.target_tokens += targets
    stats.examples = len(ids_list)
    _check_not_empty(config, stats, split)
    return SFTDataset(ids_list, mask_list, stats)


def build_preference_dataset(config, tokenizer, *, split="train"):
    """Reads, validates, splits and tokenizes preference pairs for DPO."""
    stats = stats_lib.DataStats()
    records = load_records(config, split=split, stats=stats)
    template = chat.ChatTemplate(tokenizer)
    out = PreferenceDataset([], [], [], [], stats)
    for r in records:
        if not r.is_preference:
            raise schema.DataError(
                f"holds '{r.format}' SFT data; DPO needs prompt/chosen/rejected pairs", path=r.path
            )
        try:
            pair = chat.encode_preference(template, r.example)
        except schema.DataError as e:
            _bad(config, stats, r, e)
            continue
        if max(len(ids) for ids, _ in pair) > config.seq_len:
            if config.overlong == "drop":
                stats.dropped_overlong += 1
                continue
            pair = tuple((ids[: config.seq_len], mask[: config.seq_len]) for ids, mask in pair)
            stats.truncated += 1
        if any(int(mask[1:].sum()) == 0 for _, mask in pair):
            stats.dropped_no_targets += 1
            continue
        (c_ids, c_mask), (r_ids, r_mask) = pair
        out.chosen_ids.append(c_ids)
        out.chosen_masks.append(c_mask)
        out.rejected_ids.append(r_ids)
        out.rejected_masks.append(r_mask)
        stats.tokens += len(c_ids) + len(r_ids)
        stats.target_tokens += int(c_mask[1:].sum() + r_mask[1:].sum())
    stats.examples = len(out)
    _check_not_empty(config, stats, split)
    return out


def _bad(config, stats, record, error):
    if not config.skip_bad_lines:
        raise schema.DataError(error.reason, path=record.path, line=record.line) from None
    stats.add_bad_line(record.path, record.line, error.reason)


def _check_not_empty(config, stats, split):
    if stats.examples == 0:
        raise schema.DataError(
            f"no {split} examples left (seq_len={config.seq_len}, "
            f"overlong={config.overlong!r}):\n{stats.report()}",
            path=config.eval_path if split == "eval" and config.eval_path else config.path,
        )
