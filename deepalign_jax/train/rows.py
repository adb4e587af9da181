"""The rows of every training step, for each objective: one interface, three implementations.

`SupervisedRows` (sft, constrained_sft): `batch_size` tokenised conversations
a step, with their cached reference log-probabilities for the constrained
objective.  `AugmentedRows` (augmented, paper Eq. 2): `safety_per_step`
safety-recovery examples — k re-drawn every epoch — then `utility_per_step`
utility rows, each kind in its fixed row range (group 0, then group 1).
`PreferenceRows` (dpo): `batch_size` preference pairs a step, as rows
(chosen, rejected, chosen, rejected, ...) with their reference log-probs.

Both are pure functions of (seed, step) for `rows_for`, so a resumed run
takes exactly the rows of an uninterrupted one; `training_rows(config, …)`
reads the config's files and picks the class.
"""

from __future__ import annotations

import threading
from typing import Sequence

import ml_collections
import numpy as np

from deepalign_jax.data import (
  ChatRenderer,
  RecoveryExample,
  TokenizedExample,
  as_exchange,
  as_preference,
  prepare_recovery,
  recovery_epoch,
  tokenize_conversation,
)
from deepalign_jax.data.pipeline import StepOrder, pad_rows
from deepalign_jax.data.tables import parse_columns
from deepalign_jax.data.tfds_builders import load_records

OBJECTIVES = ("sft", "constrained_sft", "augmented", "dpo")


class SupervisedRows:
  """Tokenised (prompt, response) examples, `batch_size` a step in a shuffled pass per epoch.

  ref_logps: the reference log-probs of each example (constrained objective), set before training.
  """

  def __init__(
    self,
    examples: Sequence[TokenizedExample],
    batch_size: int,
    seed: int,
    max_length: int,
    pad_id: int,
    truncated: int = 0,
  ):
    self.examples = list(examples)
    self.order = StepOrder(len(self.examples), batch_size, seed)
    self.rows, self.max_length, self.pad_id = batch_size, max_length, pad_id
    self.truncated = truncated
    self.ref_logps: list[np.ndarray] | None = None

  @property
  def num_examples(self) -> int:
    return len(self.examples)

  def rows_for(self, step: int) -> dict[str, np.ndarray]:
    index = self.order.indices(step)
    refs = None if self.ref_logps is None else [self.ref_logps[i] for i in index]
    return pad_rows([self.examples[i] for i in index], self.rows, self.max_length, self.pad_id, ref_logps=refs)


class PreferenceRows(SupervisedRows):
  """Preference pairs, `batch_size` a step in a shuffled pass per epoch; `examples` holds them flattened
  (chosen of pair i at 2i, its rejected at 2i + 1), which is also the rows' order within a step."""

  def __init__(
    self,
    examples: Sequence[TokenizedExample],
    batch_size: int,
    seed: int,
    max_length: int,
    pad_id: int,
    truncated: int = 0,
  ):
    super().__init__(examples, batch_size, seed, max_length, pad_id, truncated)
    self.order = StepOrder(len(self.examples) // 2, batch_size, seed)
    self.rows = 2 * batch_size

  @property
  def num_examples(self) -> int:
    return len(self.examples) // 2

  def rows_for(self, step: int) -> dict[str, np.ndarray]:
    index = [row for pair in self.order.indices(step) for row in (2 * pair, 2 * pair + 1)]
    refs = None if self.ref_logps is None else [self.ref_logps[i] for i in index]
    return pad_rows([self.examples[i] for i in index], self.rows, self.max_length, self.pad_id, ref_logps=refs)


class AugmentedRows:
  """Safety-recovery triplets (k ~ P_k re-drawn per epoch) and utility examples, in fixed row ranges."""

  def __init__(
    self,
    triplets: Sequence[RecoveryExample],
    utility: Sequence[TokenizedExample],
    *,
    safety_per_step: int,
    utility_per_step: int,
    seed: int,
    C: int,
    p_zero: float,
    max_length: int,
    pad_id: int,
    truncated: int = 0,
  ):
    self.triplets, self.utility = list(triplets), list(utility)
    self.order = StepOrder(len(self.triplets), safety_per_step, seed)
    self.utility_order = StepOrder(len(self.utility), utility_per_step, seed + 1)
    self.n_safety, self.n_utility = safety_per_step, utility_per_step
    self.rows = safety_per_step + utility_per_step
    self.seed, self.C, self.p_zero = seed, C, p_zero
    self.max_length, self.pad_id = max_length, pad_id
    self.truncated = truncated
    self._epochs: dict[int, list] = {}
    self._lock = threading.Lock()  # grain prepares steps on several threads

  @property
  def num_examples(self) -> int:
    return len(self.triplets)

  def _epoch(self, epoch: int) -> list[TokenizedExample]:
    with self._lock:
      # Prefetching threads may straddle an epoch boundary: keep two epochs' draws.
      if epoch not in self._epochs:
        draws = recovery_epoch(
          self.triplets, epoch, self.seed, C=self.C, p_zero=self.p_zero, max_length=self.max_length
        )
        self.truncated += sum(d.truncated for d in draws)
        self._epochs = {e: v for e, v in self._epochs.items() if e >= epoch - 1}
        self._epochs[epoch] = [d.example for d in draws]
      return self._epochs[epoch]

  def rows_for(self, step: int) -> dict[str, np.ndarray]:
    epoch_examples = self._epoch(self.order.epoch_of(step))
    safety = [epoch_examples[i] for i in self.order.indices(step)]
    utility = [self.utility[i] for i in self.utility_order.indices(step)]
    # A short batch of either kind leaves empty rows in its range.
    examples = safety + [None] * (self.n_safety - len(safety)) + utility + [None] * (self.n_utility - len(utility))
    return pad_rows(
      examples, self.rows, self.max_length, self.pad_id, groups=[0] * self.n_safety + [1] * self.n_utility
    )


def _tokenize(renderer: ChatRenderer, records, max_length: int) -> tuple[list[TokenizedExample], int]:
  examples, truncated = [], 0
  for record in map(as_exchange, records):
    if record.response is None:
      raise ValueError(f"{record.source}: a training record needs a response")
    example, cut = tokenize_conversation(
      renderer, record.system, record.prompt, record.response, max_length=max_length, source=record.source
    )
    examples.append(example)
    truncated += cut
  return examples, truncated


def _tokenize_pairs(renderer: ChatRenderer, records, max_length: int) -> tuple[list[TokenizedExample], int]:
  examples, truncated = [], 0
  for pair in map(as_preference, records):
    for response in (pair.chosen, pair.rejected):
      example, cut = tokenize_conversation(
        renderer, pair.system, pair.prompt, response, max_length=max_length, source=pair.source
      )
      examples.append(example)
      truncated += cut
  return examples, truncated


def training_rows(
  config: ml_collections.ConfigDict, renderer: ChatRenderer, pad_id: int
) -> SupervisedRows | AugmentedRows | PreferenceRows:
  """The rows of the config's objective, from the files `config.data` names."""
  data, seed = config.data, config.train.seed
  if data.every_nth < 1:
    raise ValueError(f"config.data.every_nth must be >= 1, got {data.every_nth}")
  read_formats = (data.utility_format,) if config.objective == "augmented" else (data.format,)
  if parse_columns(data.get("columns"), "config.data.columns") and "table" not in read_formats:
    raise ValueError(
      f"config.data.columns is set, but no data file of the {config.objective} objective is read with format "
      f"'table' (formats: {', '.join(read_formats)}); the mapping names a table's columns"
    )

  def read(key: str, fmt: str):
    path = data[key]
    if not path:
      raise ValueError(f"config.data.{key} is empty: the {config.objective} objective reads {fmt} records from it")
    # The column mapping is format table's: a file in a format of its own is read by its own field names.
    columns = parse_columns(data.get("columns"), "config.data.columns") if fmt == "table" else None
    records = load_records(path, fmt, split=data.split, data_dir=data.tfds_data_dir or None, columns=columns)
    return records[:: data.every_nth]

  if config.objective in ("sft", "constrained_sft"):
    examples, truncated = _tokenize(renderer, read("path", data.format), data.max_length)
    return SupervisedRows(examples, config.train.batch_size, seed, data.max_length, pad_id, truncated)
  if config.objective == "dpo":
    examples, truncated = _tokenize_pairs(renderer, read("path", data.format), data.max_length)
    return PreferenceRows(examples, config.train.batch_size, seed, data.max_length, pad_id, truncated)
  if config.objective == "augmented":
    triplets = [
      prepare_recovery(renderer, t.instruction, t.harmful, t.refusal, source=t.source)
      for t in read("safety_path", "triplets")
    ]
    utility, truncated = _tokenize(renderer, read("utility_path", data.utility_format), data.max_length)
    return AugmentedRows(
      triplets,
      utility,
      safety_per_step=data.safety_per_step,
      utility_per_step=data.utility_per_step,
      seed=seed,
      C=data.recovery_C,
      p_zero=data.recovery_p_zero,
      max_length=data.max_length,
      pad_id=pad_id,
      truncated=truncated,
    )
  raise ValueError(f"config.objective must be one of {OBJECTIVES}, got {config.objective!r}")


__all__ = ["AugmentedRows", "OBJECTIVES", "PreferenceRows", "SupervisedRows", "training_rows"]
