"""Tests for the batch iterators: determinism, coverage, exact resume."""

import json
import sys

import numpy as np
import pytest

from reactor_core.data import config as config_lib
from reactor_core.data import dataset, iterator
from reactor_core.data import stats as stats_lib


def sft_data(n=37, seed=0):
    """Examples whose first token is their index + 1000, so batches show who is where."""
    rng = np.random.default_rng(seed)
    ids, masks = [], []
    for i in range(n):
        k = int(rng.integers(3, 15))
        ids.append(np.concatenate([[1000 + i], rng.integers(1, 50, k - 1)]).astype(np.int32))
        masks.append(np.concatenate([[0], rng.random(k - 1) < 0.8]).astype(np.uint8))
    return dataset.SFTDataset(ids, masks, stats_lib.DataStats())


def pref_data(n=13):
    rng = np.random.default_rng(3)
    make = lambda i, base: np.concatenate(
        [[base + i], rng.integers(1, 50, int(rng.integers(2, 10)))]
    ).astype(np.int32)  # noqa: E731
    chosen = [make(i, 1000) for i in range(n)]
    rejected = [make(i, 2000) for i in range(n)]
    mask = lambda x: np.concatenate([[0], np.ones(len(x) - 1)]).astype(np.uint8)  # noqa: E731
    return dataset.PreferenceDataset(
        chosen,
        [mask(x) for x in chosen],
        rejected,
        [mask(x) for x in rejected],
        stats_lib.DataStats(),
    )


def config(**kw):
    base = dict(seq_len=32, batch_size=3, pack=True, pack_window=10, seed=5)
    base.update(kw)
    return config_lib.DataConfig(**base)


def take(it, k):
    return [next(it) for _ in range(k)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        flat_x, flat_y = iterator._map(lambda v: v, x), iterator._map(lambda v: v, y)
        iterator._map(np.testing.assert_array_equal, flat_x, flat_y)


def example_ids(batch):
    starts = (batch["positions"] == 0) & (batch["segment_ids"] > 0)
    return sorted(int(t) - 1000 for t in batch["tokens"][starts])


@pytest.mark.parametrize("pack", [True, False])
def test_each_epoch_visits_every_example_once(pack):
    data = sft_data()
    it = iterator.SFTBatches(data, config(pack=pack))
    seen = []
    while it.epoch == 0:
        batch = next(it)
        assert batch["tokens"].shape == (3, 32) and batch["weights"].dtype == np.float32
        seen += example_ids(batch)
    # The batch that crossed into epoch 1 holds some epoch-1 rows too.
    assert set(seen) == set(range(len(data)))
    assert len(seen) - len(data) < 3 * (32 // 3 + 1)


def test_same_seed_same_batches_other_seed_or_epoch_differs():
    data = sft_data()
    a = take(iterator.SFTBatches(data, config()), 6)
    b = take(iterator.SFTBatches(data, config()), 6)
    c = take(iterator.SFTBatches(data, config(seed=6)), 6)
    assert_batches_equal(a, b)
    assert any(not np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, c))
    one = iterator.SFTBatches(data, config(pack=False, batch_size=37))
    epoch0, epoch1 = next(one), next(one)
    assert example_ids(epoch0) == example_ids(epoch1) == list(range(37))
    assert not np.array_equal(epoch0["tokens"], epoch1["tokens"])  # reshuffled per epoch


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("skip", [0, 2, 5, 9])
def test_resume_gives_exactly_the_same_batches(pack, skip):
    data = sft_data()
    reference = iterator.SFTBatches(data, config(pack=pack))
    take(reference, skip)
    state = json.loads(json.dumps(reference.state()))
    expected = take(reference, 8)  # crosses at least one epoch boundary
    resumed = iterator.SFTBatches(data, config(pack=pack, seed=99))  # the state carries the seed
    take(resumed, 1)
    resumed.restore(state)
    assert_batches_equal(take(resumed, 8), expected)
    assert resumed.state() == reference.state()


def test_one_pass_pads_the_last_batch_and_stops():
    data = sft_data(n=10)
    it = iterator.SFTBatches(data, config(pack=False, batch_size=4), shuffle=False, repeat=False)
    batches = list(it)
    assert len(batches) == 3
    assert example_ids(batches[0]) == [0, 1, 2, 3]
    last = batches[-1]
    assert last["tokens"].shape == (4, 32)
    assert last["weights"][2:].sum() == 0 and last["segment_ids"][2:].sum() == 0
    assert sum(b["weights"].sum() for b in batches) == sum(
        int(m[1:].sum()) for m in data.loss_masks
    )
    with pytest.raises(StopIteration):
        next(it)


def test_restore_rejects_other_data_or_kind():
    it = iterator.SFTBatches(sft_data(), config())
    state = it.state()
    with pytest.raises(ValueError, match="different data"):
        iterator.SFTBatches(sft_data(seed=1), config()).restore(state)
    with pytest.raises(ValueError, match="different data"):
        iterator.SFTBatches(sft_data(), config(seq_len=64)).restore(state)
    with pytest.raises(ValueError, match="preference"):
        iterator.PreferenceBatches(pref_data(), config()).restore(state)
    with pytest.raises(ValueError, match="missing"):
        it.restore({"epoch": 0})


def test_preference_batches_shapes_and_resume():
    data = pref_data()
    it = iterator.PreferenceBatches(data, config(batch_size=4))
    batch = next(it)
    assert set(batch) == {"chosen", "rejected", "valid"}
    for side in ("chosen", "rejected"):
        assert set(batch[side]) == {"tokens", "segment_ids", "positions", "targets", "weights"}
        assert batch[side]["tokens"].shape == (4, 32)
    # Pairs stay pairs: row i of chosen and rejected come from the same example.
    np.testing.assert_array_equal(
        batch["chosen"]["tokens"][:, 0] - 1000, batch["rejected"]["tokens"][:, 0] - 2000
    )
    take(it, 2)
    state = json.loads(json.dumps(it.state()))
    expected = take(it, 5)
    again = iterator.PreferenceBatches(data, config(batch_size=4))
    again.restore(state)
    assert_batches_equal(take(again, 5), expected)
    final = list(iterator.PreferenceBatches(data, config(batch_size=4), repeat=False))
    assert len(final) == 4 and final[-1]["valid"].tolist() == [1, 0, 0, 0]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
