"""Per-position cross-entropy and gradient norm against whole-sequence computations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from deepalign_jax.analysis import per_position_grad_norms, per_position_nll, prediction_index
from deepalign_jax.losses import response_positions, token_logps
from deepalign_jax.models import create_model
from tests.analysis.conftest import forward, tiny_config

VOCAB, LENGTH, N = 97, 16, 6
ROWS = ((4, 5), (7, 3), (2, 4))  # (prompt tokens, response tokens); no row reaches position 6


@pytest.fixture(scope="module")
def setup():
  model = create_model(tiny_config(VOCAB), seed=0)
  rng = np.random.default_rng(0)
  ids = np.zeros((len(ROWS), LENGTH), np.int32)
  attention = np.zeros_like(ids)
  loss_mask = np.zeros_like(ids)
  for row, (prompt, response) in enumerate(ROWS):
    ids[row, :prompt + response] = rng.integers(3, VOCAB, prompt + response)
    attention[row, :prompt + response] = 1
    loss_mask[row, prompt:prompt + response] = 1
  # The expected losses, from whole-sequence logits (right padding does not change the first tokens').
  logits = np.concatenate([forward(model, row, width=LENGTH)[0] for row in ids]).astype(np.float64)
  expected = np.zeros((len(ROWS), N))
  for row, (prompt, response) in enumerate(ROWS):
    for t in range(min(response, N)):
      target = prompt + t
      row_logits = logits[row, target - 1]
      log_z = np.log(np.exp(row_logits - row_logits.max()).sum()) + row_logits.max()
      expected[row, t] = log_z - row_logits[ids[row, target]]
  return model, jnp.asarray(ids), jnp.asarray(attention), jnp.asarray(loss_mask), expected


def test_prediction_index():
  loss_mask = jnp.asarray([[0, 0, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0]])
  index, valid = prediction_index(loss_mask, 4)
  np.testing.assert_array_equal(np.asarray(valid), [[1, 1, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(index)[np.asarray(valid)], [1, 2, 3, 0])


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _nll(graphdef, state, ids, attention, loss_mask, num_positions, vocab_chunk):
  return per_position_nll(nnx.merge(graphdef, state), ids, attention, loss_mask, num_positions,
                          vocab_chunk=vocab_chunk)


def test_per_position_nll_matches_the_whole_sequence_loss(setup):
  model, ids, attention, loss_mask, expected = setup
  for vocab_chunk in (None, 10):
    nll, valid = _nll(*nnx.split(model), ids, attention, loss_mask, N, vocab_chunk)
    np.testing.assert_array_equal(np.asarray(valid), expected > 0)
    np.testing.assert_allclose(np.asarray(nll), expected, rtol=1e-5, atol=1e-5)


@functools.partial(jax.jit, static_argnums=0)
def _position_loss_grad_norm(graphdef, params, ids, attention, loss_mask, t):
  """‖∇ mean NLL of the t-th response tokens‖ from whole-sequence log-probs: an independent path."""
  def loss(params):
    logps = token_logps(nnx.merge(graphdef, params)(ids, attention_mask=attention)[:, :-1], ids[:, 1:])
    selected = (response_positions(loss_mask)[:, 1:] == t).astype(jnp.float32)
    return -(logps * selected).sum() / jnp.maximum(selected.sum(), 1.0)
  return optax.global_norm(jax.grad(loss)(params))


def test_grad_norm_per_position_matches_one_gradient_per_position(setup):
  model, ids, attention, loss_mask, expected_nll = setup
  graphdef, params = nnx.split(model, nnx.Param)
  expected = np.array([float(_position_loss_grad_norm(graphdef, params, ids, attention, loss_mask, t))
                       for t in range(1, N + 1)])
  assert expected[-1] == 0.0 and (expected[:-1] > 0).all()
  run = jax.jit(per_position_grad_norms, static_argnums=(0, 5),
                static_argnames=("position_batch", "vocab_chunk"))
  # Backward passes vectorised 3 at a time, log-probs in vocabulary chunks.
  norms, nll, valid = run(graphdef, params, ids, attention, loss_mask, N, position_batch=3, vocab_chunk=16)
  np.testing.assert_allclose(np.asarray(norms), expected, rtol=2e-4, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(valid).sum(axis=0), [3, 3, 3, 2, 1, 0])
  np.testing.assert_allclose(np.asarray(nll), expected_nll, rtol=1e-5, atol=1e-5)
