"""Batches for training: padding, and a deterministic order that resumes exactly.

The content of training step s is a pure function of (seed, s): epoch
e = s // steps_per_epoch is shuffled by a permutation seeded with (seed, e),
and step s takes the next `batch_size` indices of it.  Resuming at step s
therefore needs nothing but s (stored with the checkpoint), and a resumed run
sees exactly the batches of an uninterrupted one.  The last batch of an epoch
may be short; it is padded with rows whose loss mask is zero, which
contribute nothing (the train step normalises by real token counts), so no
example is dropped and shapes stay static.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from deepalign_jax.data.examples import TokenizedExample

_ORDER_STREAM_TAG = 0x6F726472  # "ordr": keeps shuffling apart from other seeded streams


class StepOrder:
  """Which examples each step uses: `indices(step)`, a shuffled pass per epoch."""

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples < 1:
      raise ValueError("no training examples")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = math.ceil(num_examples / batch_size)

  def epoch_of(self, step: int) -> int:
    return step // self.steps_per_epoch

  def indices(self, step: int) -> np.ndarray:
    epoch, position = divmod(step, self.steps_per_epoch)
    order = np.random.default_rng([_ORDER_STREAM_TAG, self.seed, epoch]).permutation(self.num_examples)
    return order[position * self.batch_size:(position + 1) * self.batch_size]


def pad_rows(examples: Sequence[TokenizedExample | None], rows: int, max_length: int, pad_id: int = 0,
             ref_logps: Sequence[np.ndarray] | None = None,
             groups: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """Right-padded arrays [rows, max_length] (+ `group` [rows]); extra and None rows are empty.

  Keys: input_ids, attention_mask, loss_mask, and ref_logps / group when given.
  """
  if len(examples) > rows:
    raise ValueError(f"{len(examples)} examples do not fit {rows} rows")
  batch = {
      "input_ids": np.full((rows, max_length), pad_id, np.int32),
      "attention_mask": np.zeros((rows, max_length), np.int32),
      "loss_mask": np.zeros((rows, max_length), np.int32),
  }
  if ref_logps is not None:
    batch["ref_logps"] = np.zeros((rows, max_length), np.float32)
  if groups is not None:
    batch["group"] = np.zeros((rows,), np.int32)
  for row, example in enumerate(examples):
    if groups is not None:
      batch["group"][row] = groups[row]
    if example is None:
      continue
    n = len(example)
    if n > max_length:
      raise ValueError(f"{example.source}: {n} tokens exceed max_length={max_length}")
    batch["input_ids"][row, :n] = example.input_ids
    batch["attention_mask"][row, :n] = 1
    batch["loss_mask"][row, :n] = example.loss_mask
    if ref_logps is not None:
      batch["ref_logps"][row, :n] = ref_logps[row]
  return batch


def as_micro_batches(batch: Mapping[str, np.ndarray], num_micro: int) -> dict[str, np.ndarray]:
  """[rows, ...] → [num_micro, rows // num_micro, ...] for gradient accumulation."""
  rows = next(iter(batch.values())).shape[0]
  if rows % num_micro:
    raise ValueError(f"batch of {rows} rows does not split into {num_micro} micro-batches")
  return {k: v.reshape((num_micro, rows // num_micro) + v.shape[1:]) for k, v in batch.items()}
