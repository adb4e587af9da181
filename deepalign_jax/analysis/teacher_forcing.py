"""Models run teacher-forced over a dataset of (prompt, response) token ids.

One example is a prompt (token ids, rendered in the model's own format) and
a response (token ids shared by every model compared).  A model reads
`prompt + response[:N-1]` and only the final hidden states that predict the
first N response tokens are kept, [n, N, D] on the host: the logits are
formed later, a vocabulary chunk at a time (`kl.chunked_per_token_kl`), and
only one model at a time needs to be in device memory.

    hidden_p, valid = response_hidden_states(model_p, prompts_p, responses, N)
    hidden_q, _ = response_hidden_states(model_q, prompts_q, responses, N)
    kl = kl_from_hidden(hidden_p, hidden_q, valid, head_p, head_q)   # [n, N]

`kl_by_position` does the three steps for two models already loaded.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepalign_jax.analysis.kl import chunked_per_token_kl, per_token_kl
from deepalign_jax.analysis.positions import gather_positions
from deepalign_jax.models.head import OutputHead


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _hidden_at(graphdef, state, input_ids, attention_mask, index):
  model = nnx.merge(graphdef, state)
  hidden, _ = model.hidden_states(input_ids, attention_mask=attention_mask)
  return gather_positions(hidden, index)


def _batches(n: int, batch_size: int):
  """Row indices of each batch; the last one is filled up with its last row (static shapes)."""
  for start in range(0, n, batch_size):
    rows = list(range(start, min(start + batch_size, n)))
    yield rows, rows + [rows[-1]] * (batch_size - len(rows))


def response_hidden_states(
  model,
  prompts: Sequence[Sequence[int]],
  responses: Sequence[Sequence[int]],
  num_positions: int,
  *,
  batch_size: int = 8,
  bucket: int = 64,
  pad_id: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Final hidden states that predict the first `num_positions` tokens of each response.

  Args:
    model: a `Transformer`.
    prompts: n token-id lists, each non-empty.
    responses: n token-id lists (teacher-forced targets).
    num_positions: N.
    batch_size: rows per forward pass.
    bucket: sequence widths are rounded up to a multiple of this, so a
      dataset compiles a handful of shapes.
  Returns:
    (hidden [n, N, D] numpy in the model's dtype, valid [n, N] bool):
    hidden[i, t-1] predicts responses[i][t-1]; valid is False past the end
    of a response (hidden there is a copy of position 1's, never used).
  """
  if len(prompts) != len(responses):
    raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
  if not prompts:
    raise ValueError("no examples")
  if any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token (position 1 is read at its last token)")
  n = len(prompts)
  graphdef, state = nnx.split(model)
  counts = np.array([min(num_positions, len(r)) for r in responses])
  valid = np.arange(num_positions)[None, :] < counts[:, None]
  out = None
  for rows, padded in _batches(n, batch_size):
    # Response token t is predicted from prompt + y_<t: the last response token needed as input is y_{N-1}.
    seqs = [list(prompts[i]) + list(responses[i][: max(counts[i] - 1, 0)]) for i in padded]
    width = max(bucket, -(-max(len(s) for s in seqs) // bucket) * bucket)
    ids = np.full((batch_size, width), pad_id, np.int32)
    mask = np.zeros((batch_size, width), np.int32)
    index = np.zeros((batch_size, num_positions), np.int32)
    for row, (i, seq) in enumerate(zip(padded, seqs)):
      ids[row, : len(seq)] = seq
      mask[row, : len(seq)] = 1
      index[row] = np.where(valid[i], len(prompts[i]) - 1 + np.arange(num_positions), len(prompts[i]) - 1)
    hidden = np.asarray(_hidden_at(graphdef, state, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(index)))
    if out is None:
      out = np.zeros((n,) + hidden.shape[1:], hidden.dtype)
    out[rows] = hidden[: len(rows)]
  return out, valid


@functools.partial(
  jax.jit, static_argnames=("p_layout", "p_softcap", "q_layout", "q_softcap", "vocab_chunk", "position_chunk")
)
def _kl_batch(
  p_hidden,
  q_hidden,
  p_weights,
  q_weights,
  mask,
  *,
  p_layout,
  p_softcap,
  q_layout,
  q_softcap,
  vocab_chunk,
  position_chunk,
):
  p_head = OutputHead(p_weights, p_layout, p_softcap)
  q_head = OutputHead(q_weights, q_layout, q_softcap)
  if vocab_chunk:
    return chunked_per_token_kl(
      p_hidden, q_hidden, p_head, q_head, mask, vocab_chunk=vocab_chunk, position_chunk=position_chunk
    )
  # Full logits: faster for small vocabularies.
  return per_token_kl(p_head.logits(p_hidden), q_head.logits(q_hidden), mask)


def kl_from_hidden(
  p_hidden: np.ndarray,
  q_hidden: np.ndarray,
  valid: np.ndarray,
  p_head: OutputHead,
  q_head: OutputHead,
  *,
  batch_size: int = 8,
  vocab_chunk: int | None = 8192,
  position_chunk: int | None = None,
) -> np.ndarray:
  """KL(p ‖ q) per example and position from `response_hidden_states` outputs.

  Args:
    p_hidden: [n, N, Dp]; q_hidden: [n, N, Dq]; valid: [n, N].
    p_head, q_head: the models' `OutputHead`s (host or device arrays).
    vocab_chunk: columns per step of the vocabulary scan; 0 or None builds
      the full [batch, N, V] logits instead.
    position_chunk: positions per block (None: all N at once).
  Returns:
    [n, N] float32, 0 where not valid.
  """
  n = p_hidden.shape[0]
  if q_hidden.shape[:2] != p_hidden.shape[:2] or valid.shape != p_hidden.shape[:2]:
    raise ValueError(
      f"p_hidden {p_hidden.shape}, q_hidden {q_hidden.shape} and valid {valid.shape} must agree on [n, N]"
    )
  if p_head.vocab_size != q_head.vocab_size:
    raise ValueError(
      f"the two models have different vocabularies ({p_head.vocab_size} vs {q_head.vocab_size} output columns)"
    )
  p_weights, q_weights = jnp.asarray(p_head.weights), jnp.asarray(q_head.weights)
  static = dict(
    p_layout=p_head.layout,
    p_softcap=p_head.softcap,
    q_layout=q_head.layout,
    q_softcap=q_head.softcap,
    vocab_chunk=vocab_chunk or 0,
    position_chunk=position_chunk,
  )
  out = np.zeros(p_hidden.shape[:2], np.float32)
  for rows, padded in _batches(n, batch_size):
    kl = _kl_batch(
      jnp.asarray(p_hidden[padded]),
      jnp.asarray(q_hidden[padded]),
      p_weights,
      q_weights,
      jnp.asarray(valid[padded]),
      **static,
    )
    out[rows] = np.asarray(kl)[: len(rows)]
  return out


def kl_by_position(
  p_model,
  q_model,
  p_prompts: Sequence[Sequence[int]],
  q_prompts: Sequence[Sequence[int]],
  responses: Sequence[Sequence[int]],
  num_positions: int,
  *,
  batch_size: int = 8,
  vocab_chunk: int | None = 8192,
  position_chunk: int | None = None,
  bucket: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
  """KL(π_p ‖ π_q) at response positions 1..N, teacher-forced on the same response ids.

  Args:
    p_model, q_model: `Transformer`s sharing a vocabulary.
    p_prompts, q_prompts: each model's rendering of the n prompts (ids).
    responses: n response id lists, the same for both models.
    num_positions: N.
  Returns:
    (kl [n, N] float32, valid [n, N] bool).
  """
  p_hidden, valid = response_hidden_states(
    p_model, p_prompts, responses, num_positions, batch_size=batch_size, bucket=bucket
  )
  q_hidden, _ = response_hidden_states(
    q_model, q_prompts, responses, num_positions, batch_size=batch_size, bucket=bucket
  )
  kl = kl_from_hidden(
    p_hidden,
    q_hidden,
    valid,
    p_model.output_head(),
    q_model.output_head(),
    batch_size=batch_size,
    vocab_chunk=vocab_chunk,
    position_chunk=position_chunk,
  )
  return kl, valid


__all__ = ["kl_by_position", "kl_from_hidden", "response_hidden_states"]
