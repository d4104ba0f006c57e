"""Batch iterators with exact resume: SFTBatches (packed or padded) and PreferenceBatches.

Each epoch visits the examples in the order np.random.default_rng([seed, epoch]) gives,
in windows of `pack_window` examples; a window becomes rows (packed, then its rows
shuffled, or one example per row). Batches take the next `batch_size` rows. With
repeat=True the stream is endless and a batch may span two epochs; with repeat=False
it is one pass and the last batch is filled with padding rows (zero weights).

`state()` is a small JSON-able dict (epoch, position = rows consumed in the epoch,
seed, ...); `restore(state)` continues with exactly the batches that would have come.
"""

import math
import zlib

import numpy as np

from reactor_core.data import chat, packing
from reactor_core.data import dataset as dataset_lib

STATE_VERSION = 1


def sft_batches(config, tokenizer, *, split="train"):
    """Reads, tokenizes and batches SFT data; train is shuffled and endless, eval one pass.

    The returned iterator's `stats` (DataStats) tells what was read, skipped and dropped.
    """
    data = dataset_lib.build_sft_dataset(config, tokenizer, split=split)
    return _batches(SFTBatches, data, config, tokenizer, split)


def preference_batches(config, tokenizer, *, split="train"):
    """Like sft_batches, for preference pairs (DPO)."""
    data = dataset_lib.build_preference_dataset(config, tokenizer, split=split)
    return _batches(PreferenceBatches, data, config, tokenizer, split)


def _batches(cls, data, config, tokenizer, split):
    train = split == "train"
    batches = cls(data, config, pad_id=chat.pad_token_id(tokenizer), shuffle=config.shuffle and train, repeat=train)
    batches.stats = data.stats
    return batches


class _Batches:
    kind = ""

    def __init__(self, lengths, *, seq_len, batch_size, seed, shuffle, repeat, window, layout):
        if len(lengths) == 0:
            raise ValueError("no examples to batch")
        self._n = len(lengths)
        self._seq_len = seq_len
        self._batch_size = batch_size
        self._seed = seed
        self._shuffle = shuffle
        self._repeat = repeat
        self._window_size = window
        lengths = np.asarray(lengths, np.int64)
        self._fingerprint = zlib.crc32(lengths.tobytes() + f"{layout},{seq_len},{window}".encode())
        self.stats = None  # the DataStats of the data, when built by sft/preference_batches
        self._epoch = 0
        self._position = 0
        self._order = None  # (epoch, permutation)
        self._reset_cursor()

    # -- state ---------------------------------------------------------------------------

    def state(self):
        """JSON-able iterator state; pass it to restore() to resume exactly."""
        return {
            "version": STATE_VERSION,
            "kind": self.kind,
            "epoch": self._epoch,
            "position": self._position,
            "seed": self._seed,
            "num_examples": self._n,
            "fingerprint": self._fingerprint,
        }

    def restore(self, state):
        """Continues from a state() of an iterator over the same data and layout."""
        for key in ("version", "kind", "epoch", "position", "seed", "num_examples", "fingerprint"):
            if key not in state:
                raise ValueError(f"iterator state is missing {key!r}: {state}")
        if state["version"] != STATE_VERSION or state["kind"] != self.kind:
            raise ValueError(
                f"iterator state is for {state['kind']!r} v{state['version']}, not {self.kind!r} v1"
            )
        if state["num_examples"] != self._n or state["fingerprint"] != self._fingerprint:
            raise ValueError(
                "iterator state was saved for different data or layout "
                f"({state['num_examples']} examples, fingerprint {state['fingerprint']}; "
                f"now {self._n}, {self._fingerprint}). Resume with the same data file, "
                "tokenizer, seq_len, pack and pack_window."
            )
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._seed = int(state["seed"])
        self._order = None
        self._reset_cursor()

    @property
    def epoch(self):
        return self._epoch

    # -- iteration -----------------------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self):
        parts = []
        need = self._batch_size
        while need:
            if not self._load():
                if self._repeat:
                    self._epoch += 1
                    self._position = 0
                    self._reset_cursor()
                    continue
                break
            offset = self._position - self._block_start
            take = min(need, _num_rows(self._block) - offset)
            parts.append(_map(_slicer(offset, offset + take), self._block))
            self._position += take
            need -= take
        if need == self._batch_size:
            raise StopIteration
        if need:
            parts.append(self._empty_rows(need))
        return _map(lambda *a: np.concatenate(a), *parts)

    def _reset_cursor(self):
        self._next_window = 0
        self._block = None
        self._block_start = 0  # epoch row index of the block's first row

    def _load(self):
        """Makes the current block hold row `position`; False when the epoch is done."""
        while self._block is None or self._position >= self._block_start + _num_rows(self._block):
            if self._block is not None:
                self._block_start += _num_rows(self._block)
                self._block = None
            if self._next_window >= math.ceil(self._n / self._window_size):
                return False
            w = self._next_window
            indices = self._epoch_order()[w * self._window_size : (w + 1) * self._window_size]
            self._block = self._make_rows(
                indices, np.random.default_rng([self._seed, self._epoch, w])
            )
            self._next_window += 1
        return True

    def _epoch_order(self):
        if self._order is None or self._order[0] != self._epoch:
            order = np.arange(self._n)
            if self._shuffle:
                order = np.random.default_rng([self._seed, self._epoch]).permutation(self._n)
            self._order = (self._epoch, order)
        return self._order[1]

    def _make_rows(self, indices, rng):
        raise NotImplementedError

    def _empty_rows(self, n):
        raise NotImplementedError


class SFTBatches(_Batches):
    """Batches of SFT rows: dict of (batch_size, seq_len) arrays, keys packing.ROW_KEYS.

    Args:
      dataset: a dataset.SFTDataset.
      config: the DataConfig (seq_len, batch_size, pack, pack_window, seed, shuffle).
      pad_id: token id for padding (chat.pad_token_id(tokenizer)).
      shuffle: overrides config.shuffle (eval: False).
      repeat: endless epochs (train) or one pass (eval).
    """

    kind = "sft"

    def __init__(self, dataset, config, *, pad_id=0, shuffle=None, repeat=True):
        self._data = dataset
        self._pack = config.pack
        self._pad_id = pad_id
        self.padding_fraction = 0.0  # of the last window made
        super().__init__(
            [len(x) for x in dataset.input_ids],
            seq_len=config.seq_len,
            batch_size=config.batch_size,
            seed=config.seed,
            shuffle=config.shuffle if shuffle is None else shuffle,
            repeat=repeat,
            window=config.pack_window,
            layout="packed" if config.pack else "padded",
        )

    def _make_rows(self, indices, rng):
        ids = [self._data.input_ids[i] for i in indices]
        masks = [self._data.loss_masks[i] for i in indices]
        make = packing.pack_examples if self._pack else packing.pad_examples
        rows, self.padding_fraction = make(ids, masks, self._seq_len, pad_id=self._pad_id)
        if self._pack and self._shuffle:
            # MLForge may order rows by fill; keep batches free of that order.
            perm = rng.permutation(_num_rows(rows))
            rows = _map(lambda a: a[perm], rows)
        return rows

    def _empty_rows(self, n):
        return packing.empty_rows(n, self._seq_len, pad_id=self._pad_id)


class PreferenceBatches(_Batches):
    """Batches of preference pairs, one sequence per padded row.

    Each batch is {"chosen": rows, "rejected": rows, "valid": (B,) float32}, where rows
    is a dict of (batch_size, seq_len) arrays with keys packing.ROW_KEYS and the weights
    mark response tokens. valid is 0 for the padding pairs of a finite pass's last batch.
    """

    kind = "preference"

    def __init__(self, dataset, config, *, pad_id=0, shuffle=None, repeat=True):
        self._data = dataset
        self._pad_id = pad_id
        lengths = np.stack(
            [[len(x) for x in dataset.chosen_ids], [len(x) for x in dataset.rejected_ids]], 1
        )
        super().__init__(
            lengths,
            seq_len=config.seq_len,
            batch_size=config.batch_size,
            seed=config.seed,
            shuffle=config.shuffle if shuffle is None else shuffle,
            repeat=repeat,
            window=config.pack_window,
            layout="pairs",
        )

    def _make_rows(self, indices, rng):
        d = self._data
        chosen, _ = packing.pad_examples(
            [d.chosen_ids[i] for i in indices],
            [d.chosen_masks[i] for i in indices],
            self._seq_len,
            pad_id=self._pad_id,
        )
        rejected, _ = packing.pad_examples(
            [d.rejected_ids[i] for i in indices],
            [d.rejected_masks[i] for i in indices],
            self._seq_len,
            pad_id=self._pad_id,
        )
        return {"chosen": chosen, "rejected": rejected, "valid": np.ones(len(indices), np.float32)}

    def _empty_rows(self, n):
        empty = packing.empty_rows(n, self._seq_len, pad_id=self._pad_id)
        return {"chosen": empty, "rejected": dict(empty), "valid": np.zeros(n, np.float32)}


def _map(fn, *trees):
    """fn over the leaves of equally structured nested dicts of arrays."""
    if isinstance(trees[0], dict):
        return {k: _map(fn, *(t[k] for t in trees)) for k in trees[0]}
    return fn(*trees)


def _slicer(start, stop):
    return lambda a: a[start:stop]


def _num_rows(tree):
    while isinstance(tree, dict):
        tree = next(iter(tree.values()))
    return len(tree)
