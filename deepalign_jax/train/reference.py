"""Reference log-probabilities, computed once with the initial weights (SPEC §3).

The constrained objective compares the policy with the frozen initial model
token by token.  As in the reference code, those log-probabilities are
computed once before training and cached per example, so no second model is
held in memory while training.  The cache is written to the workdir
(atomically), so a resumed run reuses it instead of recomputing it with
weights that are no longer the initial ones.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from deepalign_jax.atomic import atomic_path
from deepalign_jax.data.examples import TokenizedExample
from deepalign_jax.data.pipeline import pad_rows
from deepalign_jax.train.step import target_logps


@functools.partial(jax.jit, static_argnames=("graphdef", "vocab_chunk"))
def _batch_logps(graphdef, params, input_ids, attention_mask, vocab_chunk=None):
  model = nnx.merge(graphdef, params)
  return target_logps(model, input_ids, attention_mask, vocab_chunk)


def compute_reference_logps(
  model,
  examples: Sequence[TokenizedExample],
  *,
  max_length: int,
  batch_size: int = 8,
  vocab_chunk: int | None = None,
  progress: bool = True,
) -> list[np.ndarray]:
  """Per example, log π(token t | tokens < t) for t >= 1, position 0 = 0 ([len] fp32)."""
  graphdef, params = nnx.split(model)
  out: list[np.ndarray] = []
  for start in tqdm(
    range(0, len(examples), batch_size), desc="reference log-probs", disable=not progress, unit="batch"
  ):
    chunk = examples[start : start + batch_size]
    batch = pad_rows(chunk, batch_size, max_length)
    logps = _batch_logps(
      graphdef, params, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]), vocab_chunk
    )
    if not logps.is_fully_addressable:  # several hosts: every process gets every row
      from jax.experimental import multihost_utils

      logps = multihost_utils.process_allgather(logps, tiled=True)
    logps = np.asarray(logps)
    for row, example in enumerate(chunk):
      values = np.zeros(len(example), np.float32)
      values[1:] = logps[row, : len(example) - 1]
      out.append(values)
  return out


def save_reference_logps(path: str | os.PathLike, logps: Sequence[np.ndarray], *, made_from: str = "") -> None:
  """Writes the cache as one .npz, via a temporary file renamed into place; `made_from`: the identity
  (a digest) of the model, data and settings it was computed from."""
  with atomic_path(path) as tmp:
    np.savez(
      tmp,
      lengths=np.array([len(x) for x in logps], np.int64),
      values=np.concatenate(logps) if logps else np.zeros(0, np.float32),
      made_from=np.array(made_from),
    )


def cache_identity(path: str | os.PathLike) -> str:
  """The `made_from` digest a cache was saved with ("" for a cache without one)."""
  with np.load(path) as data:
    return str(data["made_from"]) if "made_from" in data.files else ""


def load_reference_logps(path: str | os.PathLike, examples: Sequence[TokenizedExample]) -> list[np.ndarray]:
  """Reads a cache and checks it belongs to these examples (same count and lengths)."""
  with np.load(path) as data:
    lengths, values = data["lengths"], data["values"]
  expected = np.array([len(e) for e in examples])
  if lengths.shape != expected.shape or (lengths != expected).any():
    raise ValueError(
      f"{path}: cached reference log-probs do not match the training examples "
      f"({len(lengths)} cached, {len(expected)} examples); delete it to recompute "
      "(with the initial weights)"
    )
  return np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []
