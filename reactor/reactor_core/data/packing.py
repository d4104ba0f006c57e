"""Rows for the model: packed (MLForge) or one example per padded row, with shifted targets.

Every row dict holds (R = rows, T = seq_len):
  tokens       (R, T) int32    model input
  segment_ids  (R, T) int32    1..k for the k examples in a row, 0 = padding
  positions    (R, T) int32    position inside its example (0 in padding)
  targets      (R, T) int32    targets[:, t] = tokens[:, t + 1]; the last column is pad_id
  weights      (R, T) float32  1 where targets[:, t] is trained, else 0

The next-token shift: logits[:, t] predicts targets[:, t]. So the loss over all T
positions with `weights` equals the loss of logits[:, :-1] against tokens[:, 1:] with
weights[:, :-1] (weights[:, -1] is always 0). No weight crosses a segment boundary or
points into padding, so attention masked by segment_ids gives each example exactly the
loss it would have alone.
"""

import numpy as np

import mlforge

ROW_KEYS = ("tokens", "segment_ids", "positions", "targets", "weights")


def shift_targets(tokens, segment_ids, loss_mask, *, pad_id=0):
    """Next-token targets and weights from rows of (tokens, segment_ids, loss_mask).

    Args:
      tokens: (R, T) ints.
      segment_ids: (R, T) ints, 0 = padding.
      loss_mask: (R, T), nonzero where the token is a target (see chat.py).
      pad_id: the target id written where there is nothing to predict.

    Returns:
      targets (R, T) int32 and weights (R, T) float32 as described in the module doc.
    """
    tokens = np.asarray(tokens)
    segment_ids = np.asarray(segment_ids)
    loss_mask = np.asarray(loss_mask)
    targets = np.full(tokens.shape, pad_id, np.int32)
    targets[:, :-1] = tokens[:, 1:]
    same_segment = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] != 0)
    weights = np.zeros(tokens.shape, np.float32)
    weights[:, :-1] = (loss_mask[:, 1:] != 0) & same_segment
    return targets, weights


def pack_examples(input_ids, loss_masks, seq_len, *, pad_id=0):
    """Packs examples (each <= seq_len tokens) into rows with MLForge.

    Returns (rows dict, padding_fraction). Row order is MLForge's.
    """
    lengths = np.asarray([len(x) for x in input_ids], np.int64)
    if len(lengths) and lengths.max() > seq_len:
        raise ValueError(
            f"an example has {lengths.max()} tokens > seq_len={seq_len}; truncate or drop it first"
        )
    tokens = np.concatenate(input_ids).astype(np.int32) if len(input_ids) else np.zeros(0, np.int32)
    mask = np.concatenate(loss_masks).astype(np.uint8) if len(loss_masks) else np.zeros(0, np.uint8)
    packed = mlforge.pack(tokens, lengths, seq_len, loss_mask=mask, pad_id=pad_id)
    return _rows(
        packed.tokens, packed.segment_ids, packed.positions, packed.loss_mask, pad_id
    ), float(packed.padding_fraction)


def pad_examples(input_ids, loss_masks, seq_len, *, pad_id=0):
    """One example per row, right-padded to seq_len. Returns (rows dict, padding_fraction)."""
    n = len(input_ids)
    tokens = np.full((n, seq_len), pad_id, np.int32)
    segment_ids = np.zeros((n, seq_len), np.int32)
    positions = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.uint8)
    used = 0
    for i, (ids, m) in enumerate(zip(input_ids, loss_masks)):
        k = len(ids)
        if k > seq_len:
            raise ValueError(
                f"an example has {k} tokens > seq_len={seq_len}; truncate or drop it first"
            )
        tokens[i, :k] = ids
        segment_ids[i, :k] = 1
        positions[i, :k] = np.arange(k)
        mask[i, :k] = m
        used += k
    padding = 1.0 - used / (n * seq_len) if n else 0.0
    return _rows(tokens, segment_ids, positions, mask, pad_id), padding


def empty_rows(n, seq_len, *, pad_id=0):
    """n all-padding rows (zero weights), to fill the last batch of a finite pass."""
    z = np.zeros((n, seq_len), np.int32)
    return _rows(np.full((n, seq_len), pad_id, np.int32), z, z, z, pad_id)


def _rows(tokens, segment_ids, positions, loss_mask, pad_id):
    tokens = np.asarray(tokens, np.int32)
    segment_ids = np.asarray(segment_ids, np.int32)
    targets, weights = shift_targets(tokens, segment_ids, loss_mask, pad_id=pad_id)
    return {
        "tokens": tokens,
        "segment_ids": segment_ids,
        "positions": np.asarray(positions, np.int32),
        "targets": targets,
        "weights": weights,
    }
