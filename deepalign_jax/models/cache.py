"""The key/value cache.

One cache serves every family: keys and values for all layers stacked on a
leading layer axis (the layer scan carries the stack and each layer writes its
own slots in place, so a decode step never copies the cache), heads before
slots ([L, B, K, S, H]: a layer's [B, K, S, H] is what the attention's
batched dots read as they stand, where a slot-major cache had every layer
transpose its whole slice every decode step), the
position of the token held in each slot (-1 for an empty or padding slot),
the next slot to write, and the number of real tokens each row has seen.

Slots are shared by the batch (row b's token j of a call goes to slot
`index + j` in every row), so prompts of different lengths are left-padded
and the padding slots keep position -1: they are never attended to and the
positions of real tokens stay 0, 1, 2, ... in every row.  Sliding-window
layers mask by position distance, so a full-length cache serves them too.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
  keys: jax.Array  # [L, B, K, S, H]
  values: jax.Array  # [L, B, K, S, H]
  positions: jax.Array  # [B, S] int32, -1 = empty or padding
  index: jax.Array  # [] int32, next slot to write
  lengths: jax.Array  # [B] int32, real tokens written per row

  @property
  def max_length(self) -> int:
    return self.keys.shape[3]


def init_cache(cfg, batch_size: int, max_length: int, dtype=jnp.float32) -> KVCache:
  """An empty cache for `batch_size` rows of up to `max_length` tokens."""
  shape = (cfg.num_layers, batch_size, cfg.num_kv_heads, max_length, cfg.head_dim)
  return KVCache(
    keys=jnp.zeros(shape, dtype),
    values=jnp.zeros(shape, dtype),
    positions=jnp.full((batch_size, max_length), -1, jnp.int32),
    index=jnp.zeros((), jnp.int32),
    lengths=jnp.zeros((batch_size,), jnp.int32),
  )
