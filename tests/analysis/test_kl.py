"""per_token_kl and its vocabulary-chunked path against the formula written out in numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from deepalign_jax.analysis import OutputHead, chunked_per_token_kl, per_token_kl


def numpy_kl(p_logits, q_logits):
  """Σ_v p_v (log p_v − log q_v) in float64, one position at a time."""
  p_logits = np.asarray(p_logits, np.float64)
  q_logits = np.asarray(q_logits, np.float64)
  out = np.zeros(p_logits.shape[:-1])
  for index in np.ndindex(*out.shape):
    a, b = p_logits[index], q_logits[index]
    log_p = a - a.max() - np.log(np.exp(a - a.max()).sum())
    log_q = b - b.max() - np.log(np.exp(b - b.max()).sum())
    out[index] = np.sum(np.exp(log_p) * (log_p - log_q))
  return out


def random_logits(seed, shape, scale=3.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def test_per_token_kl_matches_numpy_and_respects_the_mask():
  p, q = random_logits(0, (3, 7, 50)), random_logits(1, (3, 7, 50))
  mask = np.ones((3, 7), bool)
  mask[1, 4:] = False
  mask[2, 0] = False
  expected = numpy_kl(p, q) * mask
  got = np.asarray(per_token_kl(jnp.asarray(p), jnp.asarray(q), jnp.asarray(mask)))
  assert got.dtype == np.float32 and got.shape == (3, 7)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert (got[~mask] == 0).all() and (got[mask] > 0).all()
  # Non-finite logits at masked positions do not leak into the result.
  p_bad = p.copy()
  p_bad[~mask] = np.inf
  np.testing.assert_array_equal(np.asarray(per_token_kl(jnp.asarray(p_bad), jnp.asarray(q), jnp.asarray(mask))), got)


def test_per_token_kl_upcasts_bf16_and_ignores_zero_probability_columns():
  p, q = random_logits(2, (2, 3, 20)), random_logits(3, (2, 3, 20))
  got = per_token_kl(jnp.asarray(p, jnp.bfloat16), jnp.asarray(q, jnp.bfloat16))
  assert got.dtype == jnp.float32
  expected = numpy_kl(
    np.asarray(jnp.asarray(p, jnp.bfloat16), np.float32), np.asarray(jnp.asarray(q, jnp.bfloat16), np.float32)
  )
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)
  # A column both models exclude (-inf, e.g. a padded vocabulary entry) contributes 0, not NaN.
  p[..., 5], q[..., 5] = -np.inf, -np.inf
  got = np.asarray(per_token_kl(jnp.asarray(p), jnp.asarray(q)))
  np.testing.assert_allclose(got, numpy_kl(np.delete(p, 5, -1), np.delete(q, 5, -1)), rtol=1e-5, atol=1e-6)


def test_kl_of_a_distribution_with_itself_is_exactly_zero():
  p = random_logits(4, (2, 5, 33), scale=10.0)
  assert np.asarray(per_token_kl(jnp.asarray(p), jnp.asarray(p))).max() == 0.0
  hidden = jnp.asarray(random_logits(5, (2, 5, 8)))
  head = OutputHead(jnp.asarray(random_logits(6, (8, 33))), "dv", 2.0)
  kl = chunked_per_token_kl(hidden, hidden, head, head, vocab_chunk=7, position_chunk=2)
  assert np.asarray(kl).max() == 0.0


@pytest.mark.parametrize(
  "p_layout, q_layout, p_cap, q_cap, vocab_chunk, position_chunk",
  [
    ("dv", "dv", None, None, 8, None),  # V = 37 is not a multiple of the chunk
    ("vd", "dv", None, 3.0, 37, 4),  # one chunk; T = 9 not a multiple of the position block
    ("dv", "vd", 5.0, None, 5, 9),
    ("vd", "vd", None, None, 1000, 1),  # chunk larger than V is clipped
  ],
)
def test_chunked_equals_unchunked(p_layout, q_layout, p_cap, q_cap, vocab_chunk, position_chunk):
  batch, length, vocab = 2, 9, 37
  p_hidden = random_logits(7, (batch, length, 16), 1.0)
  q_hidden = random_logits(8, (batch, length, 12), 1.0)  # the two models may differ in width
  p_weights = random_logits(9, (16, vocab) if p_layout == "dv" else (vocab, 16), 1.0)
  q_weights = random_logits(10, (12, vocab) if q_layout == "dv" else (vocab, 12), 1.0)

  def logits(hidden, weights, layout, cap):
    out = hidden @ (weights if layout == "dv" else weights.T)
    return out if cap is None else np.tanh(out / cap) * cap

  mask = np.ones((batch, length), bool)
  mask[0, 6:] = False
  expected = numpy_kl(logits(p_hidden, p_weights, p_layout, p_cap), logits(q_hidden, q_weights, q_layout, q_cap)) * mask
  got = chunked_per_token_kl(
    jnp.asarray(p_hidden),
    jnp.asarray(q_hidden),
    OutputHead(jnp.asarray(p_weights), p_layout, p_cap),
    OutputHead(jnp.asarray(q_weights), q_layout, q_cap),
    jnp.asarray(mask),
    vocab_chunk=vocab_chunk,
    position_chunk=position_chunk,
  )
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
  assert (np.asarray(got)[~mask] == 0).all()


def test_chunked_refuses_different_vocabularies():
  hidden = jnp.zeros((1, 2, 4))
  with pytest.raises(ValueError, match="different vocabularies"):
    chunked_per_token_kl(hidden, hidden, OutputHead(jnp.zeros((4, 10)), "dv"), OutputHead(jnp.zeros((11, 4)), "vd"))
