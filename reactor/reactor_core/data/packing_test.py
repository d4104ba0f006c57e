"""Tests for packing and the next-token shift: packed loss == unpacked loss."""

import sys

import numpy as np
import pytest

from reactor_core.data import packing

VOCAB = 11


def random_examples(n, rng, max_len=9):
    ids, masks = [], []
    for _ in range(n):
        k = int(rng.integers(2, max_len + 1))
        ids.append(rng.integers(1, VOCAB, k).astype(np.int32))
        masks.append((rng.random(k) < 0.7).astype(np.uint8))
    return ids, masks


def test_shift_targets_by_hand():
    tokens = np.array([[5, 6, 7, 8, 9, 0]])
    segments = np.array([[1, 1, 1, 2, 2, 0]])
    mask = np.array([[1, 1, 0, 1, 1, 0]])
    targets, weights = packing.shift_targets(tokens, segments, mask, pad_id=0)
    np.testing.assert_array_equal(targets, [[6, 7, 8, 9, 0, 0]])
    # 5->6 trained, 6->7 masked out, 7->8 crosses a boundary, 8->9 trained, 9->pad no.
    np.testing.assert_array_equal(weights, [[1, 0, 0, 1, 0, 0]])
    assert targets.dtype == np.int32 and weights.dtype == np.float32


@pytest.mark.parametrize(
    "make", [packing.pack_examples, packing.pad_examples], ids=["packed", "padded"]
)
def test_rows_hold_every_example_once(make):
    rng = np.random.default_rng(0)
    ids, masks = random_examples(40, rng)
    rows, padding = make(ids, masks, 16, pad_id=0)
    assert set(rows) == set(packing.ROW_KEYS)
    assert all(v.shape == rows["tokens"].shape and v.shape[1] == 16 for v in rows.values())
    assert 0.0 <= padding < 1.0
    if make is packing.pack_examples:
        assert rows["tokens"].shape[0] < 40
    found = []
    for r in range(rows["tokens"].shape[0]):
        for s in range(1, rows["segment_ids"][r].max() + 1):
            sel = rows["segment_ids"][r] == s
            np.testing.assert_array_equal(rows["positions"][r][sel], np.arange(sel.sum()))
            found.append(tuple(rows["tokens"][r][sel]))
    assert sorted(found) == sorted(tuple(x) for x in ids)
    assert rows["weights"].sum() == sum(int(m[1:].sum()) for m in masks)
    assert (rows["weights"][:, -1] == 0).all()


def toy_logits(tokens, segment_ids, positions):
    """A causal, segment-aware stand-in model: logits from a decayed prefix sum of
    token embeddings within the segment, plus a position embedding."""
    table = np.random.default_rng(42).normal(size=(VOCAB, VOCAB))
    pos_table = np.random.default_rng(7).normal(size=(64, VOCAB))
    R, T = tokens.shape
    out = np.zeros((R, T, VOCAB))
    for r in range(R):
        state = np.zeros(VOCAB)
        for t in range(T):
            if t == 0 or segment_ids[r, t] != segment_ids[r, t - 1]:
                state = np.zeros(VOCAB)
            state = 0.5 * state + table[tokens[r, t]]
            out[r, t] = state + pos_table[positions[r, t]]
    return out


def weighted_ce(logits, targets, weights):
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    return (nll * weights).sum(), weights.sum()


def test_packed_loss_equals_unpacked_loss():
    rng = np.random.default_rng(1)
    ids, masks = random_examples(30, rng, max_len=12)
    packed, _ = packing.pack_examples(ids, masks, 24)
    p_sum, p_count = weighted_ce(
        toy_logits(packed["tokens"], packed["segment_ids"], packed["positions"]),
        packed["targets"],
        packed["weights"],
    )
    u_sum, u_count = 0.0, 0.0
    for x, m in zip(ids, masks):
        tokens = x[None]
        # Unpacked reference: logits[:, :-1] against tokens[:, 1:] with the mask of the targets.
        logits = toy_logits(tokens, np.ones_like(tokens), np.arange(len(x))[None])
        s, c = weighted_ce(logits[:, :-1], tokens[:, 1:], m[None, 1:].astype(np.float64))
        u_sum, u_count = u_sum + s, u_count + c
    assert p_count == u_count
    np.testing.assert_allclose(p_sum / p_count, u_sum / u_count, rtol=1e-12)


def test_too_long_example_is_rejected():
    with pytest.raises(ValueError, match="seq_len"):
        packing.pack_examples([np.arange(10, dtype=np.int32)], [np.ones(10, np.uint8)], 8)
    with pytest.raises(ValueError, match="seq_len"):
        packing.pad_examples([np.arange(10, dtype=np.int32)], [np.ones(10, np.uint8)], 8)


def test_empty_rows_train_nothing():
    rows = packing.empty_rows(3, 8, pad_id=2)
    assert rows["tokens"].shape == (3, 8) and (rows["tokens"] == 2).all()
    assert rows["weights"].sum() == 0 and rows["segment_ids"].sum() == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
