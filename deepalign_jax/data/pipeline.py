"""Batches for training: padding, a deterministic order that resumes exactly, and the grain pipeline.

The content of training step s is a pure function of (seed, s): epoch
e = s // steps_per_epoch is shuffled by a permutation seeded with (seed, e),
and step s takes the next `batch_size` indices of it.  Resuming at step s
therefore needs nothing but s (stored with the checkpoint), and a resumed run
sees exactly the batches of an uninterrupted one.  The last batch of an epoch
may be short; it is padded with rows whose loss mask is zero, which
contribute nothing (the train step normalises by real token counts), so no
example is dropped and shapes stay static.

`step_dataset` wraps that in a grain `MapDataset` whose element s is the
batch of step s, cut to the rows this host feeds; its iterator prefetches
on background threads (tokenising and padding overlap the device step) and
its state is saved with each Orbax checkpoint.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import grain
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
    return order[position * self.batch_size : (position + 1) * self.batch_size]


def pad_rows(
  examples: Sequence[TokenizedExample | None],
  rows: int,
  max_length: int,
  pad_id: int = 0,
  ref_logps: Sequence[np.ndarray] | None = None,
  groups: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
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


def host_rows(batch: Mapping[str, np.ndarray], process_index: int, process_count: int) -> dict[str, np.ndarray]:
  """This host's block of each micro-batch ([M, b, ...] → [M, b / process_count, ...]).

  Rows are laid over the mesh's (data, fsdp) devices in order and a host's
  devices are contiguous there, so host p feeds the p-th block of rows.
  """
  rows = next(iter(batch.values())).shape[1]
  if rows % process_count:
    raise ValueError(f"micro-batches of {rows} rows do not split over {process_count} hosts")
  per_host = rows // process_count
  return {k: v[:, process_index * per_host : (process_index + 1) * per_host] for k, v in batch.items()}


def step_dataset(
  rows_for: Callable[[int], Mapping[str, np.ndarray]],
  num_steps: int,
  num_micro: int,
  *,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.MapDataset:
  """Element s: step s's rows from `rows_for(s)`, as micro-batches, this host's share."""

  def make(step):
    return host_rows(as_micro_batches(rows_for(int(step)), num_micro), process_index, process_count)

  return grain.MapDataset.range(num_steps).map(make)


def step_iterator(dataset: grain.MapDataset, prefetch: int = 2) -> grain.DatasetIterator:
  """A checkpointable iterator over `dataset`, `prefetch` steps ahead on background threads."""
  options = grain.ReadOptions(num_threads=max(prefetch, 1), prefetch_buffer_size=max(prefetch, 1))
  return iter(dataset.to_iter_dataset(options))
