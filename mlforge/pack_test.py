"""mlforge.pack: every token lands once, rows respect seq_len, masks carried.

bazel test //mlforge:pack_py_test
"""

import dataclasses
import sys

import numpy as np
import pytest

import mlforge


def _inputs(n: int, max_len: int, seed: int):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, n)
    tokens = rng.integers(0, 50_000, int(lengths.sum()), dtype=np.int32)
    mask = rng.integers(0, 2, tokens.size).astype(bool)
    return tokens, lengths, mask


def _check(result: mlforge.PackResult, tokens, lengths, seq_len, mask=None, pad_id=0):
    rows = result.tokens.shape[0]
    for name, dtype in [
        ("tokens", np.int32),
        ("segment_ids", np.int32),
        ("positions", np.int32),
        ("loss_mask", np.uint8),
    ]:
        arr = getattr(result, name)
        assert arr.dtype == dtype and arr.shape == (rows, seq_len), name
    assert result.placement.dtype == np.int64 and result.placement.shape == (len(lengths), 2)

    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    covered = np.zeros((rows, seq_len), np.int32)
    for i, (row, off) in enumerate(result.placement):
        n = min(int(lengths[i]), seq_len)
        assert 0 <= row < rows and 0 <= off and off + n <= seq_len
        src = slice(starts[i], starts[i] + n)
        dst = (row, slice(off, off + n))
        np.testing.assert_array_equal(result.tokens[dst], tokens[src])
        np.testing.assert_array_equal(result.positions[dst], np.arange(n))
        seg = result.segment_ids[dst]
        assert seg[0] >= 1 and (seg == seg[0]).all()
        expect_mask = np.ones(n, np.uint8) if mask is None else mask[src].astype(np.uint8)
        np.testing.assert_array_equal(result.loss_mask[dst], expect_mask)
        covered[dst] += 1
    assert covered.max() <= 1  # no cell holds two tokens
    real = covered.astype(bool)
    assert real.sum() == sum(min(int(n), seq_len) for n in lengths)  # every token exactly once
    pad = ~real
    assert (result.tokens[pad] == pad_id).all() and (result.segment_ids[pad] == 0).all()
    assert (result.positions[pad] == 0).all() and (result.loss_mask[pad] == 0).all()
    # Segments are numbered 1..k left to right, padding only at the end of a row.
    for r in range(rows):
        seg = result.segment_ids[r]
        used = int(real[r].sum())
        assert real[r, :used].all()
        assert seg[0] == 1 and (np.diff(seg[:used]) >= 0).all() and (np.diff(seg[:used]) <= 1).all()
    assert result.padding_fraction == pytest.approx(pad.sum() / pad.size)


def test_random_sequences_pack_exactly_once():
    tokens, lengths, mask = _inputs(3000, 200, seed=0)
    result = mlforge.pack(tokens, lengths, 256, loss_mask=mask, pad_id=-1)
    _check(result, tokens, lengths, 256, mask, pad_id=-1)
    assert result.num_truncated == 0
    assert result.padding_fraction < 0.02
    assert result.num_rows == result.tokens.shape[0]


def test_without_mask_every_real_token_counts():
    tokens, lengths, _ = _inputs(500, 64, seed=1)
    _check(mlforge.pack(tokens, lengths, 128), tokens, lengths, 128)


def test_is_deterministic_and_keeps_input_order_for_ties():
    tokens, lengths, _ = _inputs(2000, 50, seed=2)
    a = mlforge.pack(tokens, lengths, 100)
    b = mlforge.pack(tokens.copy(), list(lengths), 100)
    np.testing.assert_array_equal(a.placement, b.placement)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    same = mlforge.pack(np.arange(12, dtype=np.int32), [4, 4, 4], 8)
    np.testing.assert_array_equal(same.placement, [[0, 0], [0, 4], [1, 0]])


def test_truncate_cuts_long_sequences():
    tokens = np.arange(30, dtype=np.int32)
    lengths = np.array([12, 3, 15])
    with pytest.raises(ValueError, match=r"lengths\[0\] = 12 exceeds seq_len = 10"):
        mlforge.pack(tokens, lengths, 10)
    result = mlforge.pack(tokens, lengths, 10, truncate=True)
    assert result.num_truncated == 2
    _check(result, tokens, lengths, 10)


def test_other_integer_dtypes_and_masks():
    tokens, lengths, mask = _inputs(200, 30, seed=3)
    expect = mlforge.pack(tokens, lengths, 64, loss_mask=mask)
    got = mlforge.pack(
        tokens.astype(np.int64), lengths.astype(np.int32), 64, loss_mask=mask.astype(np.int64) * 5
    )
    np.testing.assert_array_equal(got.tokens, expect.tokens)
    np.testing.assert_array_equal(got.loss_mask, expect.loss_mask)
    np.testing.assert_array_equal(
        mlforge.pack(tokens, lengths, 64, loss_mask=mask.view(np.uint8)).loss_mask, expect.loss_mask
    )


def test_result_is_frozen():
    result = mlforge.pack(np.ones(4, np.int32), [4], 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.num_truncated = 3
    assert result.padding_fraction == 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lengths": [3, 0, 3]}, r"lengths\[1\]"),
        ({"lengths": [3, -1, 4]}, r"lengths\[1\]"),
        ({"lengths": [3, 2]}, r"sum\(lengths\) = 5 does not match len\(tokens\) = 6"),
        ({"lengths": [4, 4]}, r"len\(tokens\)"),
        ({"lengths": []}, "lengths must be non-empty"),
        ({"lengths": [[3, 3]]}, "lengths must be 1-D"),
        ({"lengths": [3.0, 3.0]}, "lengths must be an integer"),
        ({"tokens": np.ones(6, np.float32)}, "tokens must be an integer"),
        ({"tokens": np.ones((2, 3), np.int32)}, "tokens must be 1-D"),
        ({"tokens": np.full(6, 2**40)}, "tokens holds values"),
        ({"lengths": np.array([3, 2**63], np.uint64)}, "lengths holds values"),
        ({"tokens": np.ones(0, np.int32), "lengths": [1]}, "tokens must be non-empty"),
        ({"loss_mask": np.ones(5, bool)}, "loss_mask has 5 values"),
        ({"loss_mask": np.ones(6, np.float32)}, "loss_mask must be bool"),
        ({"seq_len": 0}, "seq_len"),
        ({"seq_len": 2.5}, "seq_len"),
        ({"pad_id": 2**40}, "pad_id"),
    ],
)
def test_rejects_bad_input(kwargs, match):
    args = {"tokens": np.arange(6, dtype=np.int32), "lengths": [3, 3], "seq_len": 8}
    args.update(kwargs)
    tokens, lengths, seq_len = args.pop("tokens"), args.pop("lengths"), args.pop("seq_len")
    with pytest.raises(ValueError, match=match):
        mlforge.pack(tokens, lengths, seq_len, **args)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
