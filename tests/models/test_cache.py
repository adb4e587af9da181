"""The KV cache: prefill + one-token decode steps give the full forward's logits."""

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
