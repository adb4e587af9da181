"""The output head — final hidden states to logits — whole, or one vocabulary chunk at a time.

One definition serves the model's logits, the losses' chunked log-probabilities
(`losses.chunked_token_logps`) and the analyses' chunked KL
(`analysis.kl.chunked_per_token_kl`).  `scan_vocabulary` walks the
vocabulary `vocab_chunk` columns at a time without padding or copying the
head: the last chunk is slid back to end at V, and the columns it shares with
the chunk before are marked not `fresh`, so a reduction counts every column
once.  At Gemma's 256k vocabulary and 512 positions, that is what keeps the
[B, T, V] fp32 logits (1 GiB per row) from ever existing.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from deepalign_jax.models.layers import softcap as apply_softcap


class OutputHead(NamedTuple):
  """A model's output projection.

  weights: [D, V] (`layout="dv"`) or the tied embedding table [V, D] (`"vd"`).
  softcap: the final-logit soft-cap (Gemma 2), or None.
  """

  weights: jax.Array
  layout: str
  softcap: float | None = None

  @property
  def vocab_size(self) -> int:
    return self.weights.shape[1] if self.layout == "dv" else self.weights.shape[0]

  def check(self) -> "OutputHead":
    if self.layout not in ("dv", "vd"):
      raise ValueError(f"head layout must be 'dv' or 'vd', got {self.layout!r}")
    return self

  def _project(self, hidden: jax.Array, weights: jax.Array) -> jax.Array:
    # Tied: contract with the [V, D] table directly, no transposed copy.
    spec = "btd,dv->btv" if self.layout == "dv" else "btd,vd->btv"
    acc = jnp.promote_types(jnp.float32, hidden.dtype)
    logits = jnp.einsum(spec, hidden, weights.astype(hidden.dtype), preferred_element_type=acc)
    return apply_softcap(logits, self.softcap)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """[B, T, V] logits (fp32 or wider) of hidden states [B, T, D]."""
    return self._project(hidden, self.weights)

  def token_logits(self, hidden: jax.Array) -> tuple[jax.Array, int]:
    """(logits, vocab axis) of one position's hidden states [B, D]: [V, B] for a tied table, else [B, V].

    A tied [V, D] table is contracted as the left operand, each row read in order: on CPU a decode
    step's [8, 576] × [49152, 576]ᵀ ran at ~20 GB/s that way round and ~30 GB/s this way (the [V, B]
    result is not transposed back: the token choice reduces over axis 0).
    """
    acc = jnp.promote_types(jnp.float32, hidden.dtype)
    if self.layout == "vd":
      logits = jnp.einsum("vd,bd->vb", self.weights.astype(hidden.dtype), hidden, preferred_element_type=acc)
      return apply_softcap(logits, self.softcap), 0
    return self.logits(hidden[:, None])[:, 0], 1

  def chunk_logits(self, hidden: jax.Array, start, size: int) -> jax.Array:
    """[B, T, size] logits of the columns [start, start + size) (a slice of the head, no copy)."""
    axis = 1 if self.layout == "dv" else 0
    return self._project(hidden, jax.lax.dynamic_slice_in_dim(self.weights, start, size, axis=axis))


def scan_vocabulary(
  step: Callable[..., Any],
  init: Any,
  heads: Sequence[tuple[jax.Array, OutputHead]],
  vocab_chunk: int,
  *,
  remat: bool = False,
) -> Any:
  """Folds `step` over the vocabulary, `vocab_chunk` columns at a time; returns the final carry.

  step(carry, logits, columns, fresh) → carry, where `logits` holds one
  [B, T, C] chunk per (hidden, head) pair of `heads` (all heads must share a
  vocabulary), `columns` [C] are the chunk's token ids and `fresh` [C] is
  False for columns an earlier chunk already covered (the slid-back last
  chunk).  remat: recompute each chunk in the backward pass, so that only the
  carries are saved — the memory of one chunk instead of all of them.
  """
  vocab = heads[0][1].vocab_size
  for _, head in heads:
    head.check()
    if head.vocab_size != vocab:
      raise ValueError(f"the output heads have different vocabularies ({vocab} vs {head.vocab_size} columns)")
  chunk = max(1, min(int(vocab_chunk), vocab))

  def body(carry, index):
    start = jnp.minimum(index * chunk, vocab - chunk)
    columns = start + jnp.arange(chunk)
    fresh = columns >= index * chunk
    logits = tuple(head.chunk_logits(hidden, start, chunk) for hidden, head in heads)
    return step(carry, logits, columns, fresh), None

  if remat:
    body = jax.checkpoint(body)
  carry, _ = jax.lax.scan(body, init, jnp.arange(-(-vocab // chunk)))
  return carry


__all__ = ["OutputHead", "scan_vocabulary"]
