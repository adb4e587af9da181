"""The KV cache: prefill + one-token decode steps give the full forward's logits."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepalign_jax.models import config_from_hf, create_model, init_cache
from tests.models.hf_fixtures import FAMILY_CONFIGS, left_padded_batch

PROMPT = 10
TOTAL = 26  # decoding runs well past the sliding window of 8


@nnx.jit
def _step(model, ids, mask, cache):
  return model(ids, attention_mask=mask, cache=cache)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_cached_decode_matches_full_forward(family):
  cfg = config_from_hf(FAMILY_CONFIGS[family]().to_dict())
  model = create_model(cfg, seed=1)
  # Left-padded prompts of different lengths, then every row continues.
  ids, mask, _ = left_padded_batch((10, 7, 3), TOTAL)
  mask[:, PROMPT:] = 1
  full = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))

  cache = init_cache(cfg, batch_size=3, max_length=TOTAL)
  logits, cache = _step(model, jnp.asarray(ids[:, :PROMPT]), jnp.asarray(mask[:, :PROMPT]), cache)
  pieces = [np.asarray(logits)]
  for t in range(PROMPT, TOTAL):
    logits, cache = _step(model, jnp.asarray(ids[:, t : t + 1]), jnp.asarray(mask[:, t : t + 1]), cache)
    pieces.append(np.asarray(logits))
  cached = np.concatenate(pieces, axis=1)
  real = mask.astype(bool)
  np.testing.assert_allclose(cached[real], full[real], atol=1e-5, rtol=0)
  assert int(cache.index) == TOTAL
  np.testing.assert_array_equal(np.asarray(cache.lengths), mask.sum(axis=1))


def _copied_shapes(hlo: str) -> list[tuple[int, ...]]:
  """The result shapes of every `copy` and `transpose` instruction in an optimized HLO module's text."""
  shapes = []
  for dims, op in re.findall(r"=\s*\w+\[([\d,]*)\][^ ]*\s+([\w-]+)\(", hlo):
    if op in ("copy", "transpose"):
      shapes.append(tuple(int(d) for d in dims.split(",") if d))
  return shapes


@pytest.mark.parametrize("scan_layers", [True, False])
def test_decode_step_writes_the_cache_in_place(scan_layers):
  # A decode step must write its one token's keys and values into the cache, not copy the cache:
  # a copy per step moves the whole cache through memory every token (the layer scan's stacked
  # outputs used to cost three such copies).
  cfg = config_from_hf(FAMILY_CONFIGS["llama"]().to_dict())
  model = create_model(cfg, seed=1)
  model.scan_layers = scan_layers
  cache = init_cache(cfg, batch_size=2, max_length=64)
  graphdef, state = nnx.split(model)

  def decode(state, cache, token):
    return nnx.merge(graphdef, state)(token, attention_mask=jnp.ones_like(token), cache=cache)

  token = jnp.ones((2, 1), jnp.int32)
  hlo = jax.jit(decode, donate_argnums=1).lower(state, cache, token).compile().as_text()
  # Nor copy or transpose a layer's slice (a slot-major cache had each layer transpose its keys and values
  # into the [B, K, S, H] the batched dots read): no copy has the whole cache's or one layer's dimensions.
  whole, one_layer = sorted(cache.keys.shape), sorted(cache.keys.shape[1:])
  copies = [sorted(shape) for shape in _copied_shapes(hlo)]
  assert whole not in copies and one_layer not in copies, copies
