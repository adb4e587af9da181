"""Per-position cross-entropy and gradient norm against transformers' PyTorch model of the same weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepalign_jax.analysis import per_position_grad_norms, per_position_nll, prediction_index
from deepalign_jax.models import create_model, save_pretrained
from tests.analysis.conftest import tiny_config, torch_model

VOCAB, LENGTH, N = 97, 16, 6
ROWS = ((4, 5), (7, 3), (2, 4))  # (prompt tokens, response tokens); no row reaches position 6


def _torch_reference(model_dir, ids, attention):
  """Per row and position t: the loss of the t-th response token, and ‖∇ mean loss at t‖ over all parameters."""
  import torch

  model = torch_model(model_dir)
  params = list(model.parameters())
  logps = torch.log_softmax(
    model(input_ids=torch.as_tensor(ids, dtype=torch.long), attention_mask=torch.as_tensor(attention)).logits, dim=-1
  )
  nll, norms = np.zeros((len(ROWS), N)), np.zeros(N)
  for t in range(N):
    rows = [row for row, (_, length) in enumerate(ROWS) if t < length]
    if not rows:
      continue
    # Response token t + 1 of a row sits at prompt + t and is predicted at prompt + t - 1.
    terms = torch.stack([-logps[row, ROWS[row][0] + t - 1, int(ids[row, ROWS[row][0] + t])] for row in rows])
    nll[rows, t] = terms.detach().numpy()
    grads = torch.autograd.grad(terms.mean(), params, retain_graph=True)
    norms[t] = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
  return nll, norms


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  cfg = tiny_config(VOCAB)
  model = create_model(cfg, seed=0)
  rng = np.random.default_rng(0)
  ids = np.zeros((len(ROWS), LENGTH), np.int32)
  attention = np.zeros_like(ids)
  loss_mask = np.zeros_like(ids)
  for row, (prompt, response) in enumerate(ROWS):
    ids[row, : prompt + response] = rng.integers(3, VOCAB, prompt + response)
    attention[row, : prompt + response] = 1
    loss_mask[row, prompt : prompt + response] = 1
  model_dir = save_pretrained(model, cfg, tmp_path_factory.mktemp("dynamics") / "model")
  nll, norms = _torch_reference(model_dir, ids, attention)
  return model, jnp.asarray(ids), jnp.asarray(attention), jnp.asarray(loss_mask), nll, norms


def test_prediction_index():
  loss_mask = jnp.asarray([[0, 0, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0]])
  index, valid = prediction_index(loss_mask, 4)
  np.testing.assert_array_equal(np.asarray(valid), [[1, 1, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(index)[np.asarray(valid)], [1, 2, 3, 0])


@functools.partial(jax.jit, static_argnums=(0, 5))
def _nll(graphdef, state, ids, attention, loss_mask, num_positions):
  return per_position_nll(nnx.merge(graphdef, state), ids, attention, loss_mask, num_positions)


def test_per_position_nll_matches_the_whole_sequence_loss(setup):
  model, ids, attention, loss_mask, expected, _ = setup
  # Full logits here; the vocabulary-chunked path is checked with the gradient norms below.
  nll, valid = _nll(*nnx.split(model), ids, attention, loss_mask, N)
  np.testing.assert_array_equal(np.asarray(valid), expected > 0)
  np.testing.assert_allclose(np.asarray(nll), expected, rtol=1e-5, atol=1e-5)


def test_grad_norm_per_position_matches_one_backward_per_position(setup):
  model, ids, attention, loss_mask, expected_nll, expected = setup
  assert expected[-1] == 0.0 and (expected[:-1] > 0).all()
  graphdef, params = nnx.split(model, nnx.Param)
  run = jax.jit(per_position_grad_norms, static_argnums=(0, 5), static_argnames=("position_batch", "vocab_chunk"))
  # Backward passes vectorised 3 at a time, log-probs in vocabulary chunks.
  norms, nll, valid = run(graphdef, params, ids, attention, loss_mask, N, position_batch=3, vocab_chunk=16)
  np.testing.assert_allclose(np.asarray(norms), expected, rtol=2e-4, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(valid).sum(axis=0), [3, 3, 3, 2, 1, 0])
  np.testing.assert_allclose(np.asarray(nll), expected_nll, rtol=1e-5, atol=1e-5)
