"""DataConfig: what the training data pipeline reads and how it batches it.

Self-contained (no imports from the rest of reactor_core) so TrainingConfig can nest it.
"""

import dataclasses

LOSS_ON = ("assistant", "all")
OVERLONG = ("truncate", "drop")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training data settings.

    Attributes:
      path: train JSONL file. Empty means "not set"; loading then fails with a message.
      eval_path: optional eval JSONL file. Mutually exclusive with eval_fraction > 0.
      eval_fraction: fraction of `path` held out for eval, chosen by a hash of each
        example (stable across runs and machines, independent of line order).
      seq_len: tokens per row (SFT) or per sequence (preference).
      batch_size: rows per batch (preference: pairs per batch).
      pack: SFT only. Pack several examples per row (segment-aware) instead of one
        example per padded row.
      pack_window: examples packed together at a time; rows are shuffled inside it.
      seed: seed of the per-epoch shuffle.
      shuffle: shuffle the example order every epoch.
      loss_on: "assistant" trains on assistant turns only; "all" on every token.
        `{"text"}` rows always train on all tokens.
      overlong: what to do with examples longer than seq_len: "truncate" keeps the
        first seq_len tokens, "drop" leaves the example out. Both are counted in stats.
      skip_bad_lines: count and report bad JSONL lines instead of stopping at the first.
    """

    path: str = ""
    eval_path: str = ""
    eval_fraction: float = 0.0
    seq_len: int = 1024
    batch_size: int = 8
    pack: bool = True
    pack_window: int = 4096
    seed: int = 0
    shuffle: bool = True
    loss_on: str = "assistant"
    overlong: str = "truncate"
    skip_bad_lines: bool = False

    def __post_init__(self):
        _check_type(self, "path", str)
        _check_type(self, "eval_path", str)
        _check_type(self, "eval_fraction", (int, float))
        for name in ("seq_len", "batch_size", "pack_window", "seed"):
            _check_type(self, name, int)
        for name in ("pack", "shuffle", "skip_bad_lines"):
            _check_type(self, name, bool)
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(
                f"DataConfig.eval_fraction must be in [0, 1), got {self.eval_fraction}."
            )
        if self.eval_path and self.eval_fraction > 0:
            raise ValueError(
                "DataConfig.eval_fraction must be 0 when DataConfig.eval_path is set: "
                "use either a separate eval file or a held-out fraction, not both."
            )
        if self.seq_len < 2:
            raise ValueError(f"DataConfig.seq_len must be >= 2, got {self.seq_len}.")
        if self.batch_size < 1:
            raise ValueError(f"DataConfig.batch_size must be >= 1, got {self.batch_size}.")
        if self.pack_window < 1:
            raise ValueError(f"DataConfig.pack_window must be >= 1, got {self.pack_window}.")
        if self.seed < 0:
            raise ValueError(f"DataConfig.seed must be >= 0, got {self.seed}.")
        if self.loss_on not in LOSS_ON:
            raise ValueError(f"DataConfig.loss_on must be one of {LOSS_ON}, got {self.loss_on!r}.")
        if self.overlong not in OVERLONG:
            raise ValueError(
                f"DataConfig.overlong must be one of {OVERLONG}, got {self.overlong!r}."
            )


def _check_type(config, name, types):
    value = getattr(config, name)
    # bool is an int subclass; True is not a sequence length.
    wrong_bool = isinstance(value, bool) and bool not in (
        types if isinstance(types, tuple) else (types,)
    )
    if wrong_bool or not isinstance(value, types):
        expected = (
            types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        )
        raise ValueError(
            f"DataConfig.{name} must be {expected}, got {type(value).__name__} {value!r}."
        )
