"""Next-token choice: greedy, temperature, top-k, top-p — per row, as arrays.

Every decoding parameter is an array with one entry per batch row, so one
compiled decode loop serves a whole sweep (the decoding-parameter exploit
puts ~50 configurations side by side) and rows of one batch may differ.
Filters compose as transformers applies them: temperature, then top-k, then
top-p, each on the previous one's output.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_MIN_TEMPERATURE = 1e-6


class SamplingParams(NamedTuple):
  """Decoding parameters, each [B].

  temperature: > 0 (values below 1e-6 are treated as 1e-6).
  top_k: keep the k most likely tokens; 0 disables.
  top_p: keep the smallest set of most likely tokens whose mass reaches p;
    1.0 disables.
  greedy: take the argmax of the raw logits, ignoring the rest.
  """
  temperature: jax.Array
  top_k: jax.Array
  top_p: jax.Array
  greedy: jax.Array

  @classmethod
  def make(cls, batch_size: int, *, temperature=1.0, top_k=0, top_p=1.0, greedy=False):
    """Broadcasts scalars or per-row sequences to [batch_size] arrays."""
    def row(value, dtype):
      return jnp.broadcast_to(jnp.asarray(value, dtype), (batch_size,))
    return cls(row(temperature, jnp.float32), row(top_k, jnp.int32), row(top_p, jnp.float32),
               row(greedy, jnp.bool_))


def filter_logits(logits: jax.Array, params: SamplingParams) -> jax.Array:
  """Temperature, top-k and top-p applied to fp32 logits [B, V]; removed → -inf."""
  logits = logits.astype(jnp.float32) / jnp.maximum(params.temperature, _MIN_TEMPERATURE)[:, None]
  vocab = logits.shape[-1]
  descending = -jnp.sort(-logits, axis=-1)
  # top-k: everything below the k-th largest logit goes (ties with it stay).
  k = jnp.clip(params.top_k, 1, vocab)
  kth = jnp.take_along_axis(descending, (k - 1)[:, None], axis=-1)
  keep_k = (params.top_k[:, None] <= 0) | (logits >= kth)
  logits = jnp.where(keep_k, logits, -jnp.inf)
  descending = jnp.where((params.top_k[:, None] <= 0) | (descending >= kth), descending, -jnp.inf)
  # top-p: keep a token while the mass strictly before it is below p (the most
  # likely token always stays), i.e. transformers' "cumsum <= 1 - p" removal.
  probs = jax.nn.softmax(descending, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  kept_sorted = (mass_before < params.top_p[:, None]) | (jnp.arange(vocab) == 0)
  cutoff = jnp.min(jnp.where(kept_sorted, descending, jnp.inf), axis=-1, keepdims=True)
  keep_p = (params.top_p[:, None] >= 1.0) | (logits >= cutoff)
  return jnp.where(keep_p, logits, -jnp.inf)


def choose_tokens(key: jax.Array, logits: jax.Array, params: SamplingParams) -> jax.Array:
  """Next token ids [B] from logits [B, V].

  The vocabulary sort that top-k/top-p need costs more than a small model's
  decode step on a CPU, so it only runs when some sampled row asks for it,
  and nothing is sampled when every row is greedy.
  """
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def sample(_):
    sampled_rows = ~params.greedy
    needs_cut = jnp.any(sampled_rows & ((params.top_k > 0) | (params.top_p < 1.0)))
    scaled = lambda x: x.astype(jnp.float32) / jnp.maximum(params.temperature, _MIN_TEMPERATURE)[:, None]
    filtered = jax.lax.cond(needs_cut, lambda x: filter_logits(x, params), scaled, logits)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)

  sampled = jax.lax.cond(jnp.all(params.greedy), lambda _: greedy, sample, None)
  return jnp.where(params.greedy, greedy, sampled)
