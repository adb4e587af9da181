"""Response positions: where response token t is predicted, and statistics by position.

Position t (1-based, the paper's "token position") is the distribution over
the t-th response token y_t given the prompt and y_<t, i.e. the logits at
sequence index prompt_length + t − 2: position 1 is read at the last prompt
token, whatever the prompt's length, format or padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from deepalign_jax.losses import response_positions


def prediction_index(loss_mask: jax.Array, num_positions: int) -> tuple[jax.Array, jax.Array]:
  """Which sequence index predicts each of the first `num_positions` loss-mask tokens.

  Args:
    loss_mask: [B, L], 1 on response tokens (as `Rendered.loss_mask`).
    num_positions: N.
  Returns:
    (index [B, N] int32, valid [B, N] bool): index[b, t-1] is the sequence
    index whose logits predict row b's t-th loss-mask token (that token's
    index − 1); valid is False past the row's last loss-mask token (index 0
    there).
  """
  t = response_positions(loss_mask)  # [B, L]
  hits = t[:, None, :] == jnp.arange(1, num_positions + 1)[None, :, None]  # [B, N, L]
  valid = jnp.any(hits, axis=-1)
  index = jnp.where(valid, jnp.argmax(hits, axis=-1) - 1, 0)
  return index.astype(jnp.int32), valid


def gather_positions(x: jax.Array, index: jax.Array) -> jax.Array:
  """x[b, index[b, n]] for every row: [B, L, ...] with index [B, N] → [B, N, ...]."""
  index = index.astype(jnp.int32).reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


def position_stats(values: np.ndarray, valid: np.ndarray) -> dict[str, list]:
  """Mean, standard error and count per position, over the examples that reach it.

  Args:
    values: [n, N] per-example values (KL, loss, ...).
    valid: [n, N] whether example i has a response token at position t.
  Returns:
    {"mean": [N], "stderr": [N], "count": [N]} as lists; mean is None where
    no example reaches the position, stderr (sample std / sqrt(count)) is
    None below two examples.
  """
  values = np.asarray(values, np.float64)
  valid = np.asarray(valid, bool)
  count = valid.sum(axis=0)
  total = np.where(valid, values, 0.0).sum(axis=0)
  mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
  squares = np.where(valid, (values - mean) ** 2, 0.0).sum(axis=0)
  var = np.divide(squares, count - 1, out=np.zeros_like(total), where=count > 1)
  stderr = np.sqrt(var) / np.sqrt(np.maximum(count, 1))
  return {
    "mean": [float(m) if c > 0 else None for m, c in zip(mean, count)],
    "stderr": [float(s) if c > 1 else None for s, c in zip(stderr, count)],
    "count": [int(c) for c in count],
  }


__all__ = ["gather_positions", "position_stats", "prediction_index"]
