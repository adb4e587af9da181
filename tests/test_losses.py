"""The paper's losses against their formulas written out in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepalign_jax.losses import (
  BetaSchedule,
  chunked_token_logps,
  masked_nll,
  response_positions,
  token_constrained_loss,
  token_logps,
)
from deepalign_jax.models import OutputHead


def _np_log_softmax(x):
  x = x.astype(np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _np_softplus(x):
  return np.logaddexp(0.0, x)


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_betas(mask, beta=0.1, first=5.0, early=20.0, early_length=5):
  """β per token: t counted among the row's mask tokens, by a plain loop."""
  out = np.zeros(mask.shape)
  for row in range(mask.shape[0]):
    t = 0
    for col in range(mask.shape[1]):
      if mask[row, col]:
        t += 1
        out[row, col] = beta * first if t == 1 else beta * early if t <= early_length else beta
  return out


def _batch(seed=0):
  """Rows with different prompt lengths, left and right padding, an empty row."""
  rng = np.random.default_rng(seed)
  policy = np.log(rng.uniform(0.01, 1.0, (4, 12)))
  ref = np.log(rng.uniform(0.01, 1.0, (4, 12)))
  mask = np.zeros((4, 12), np.int32)
  mask[0, 3:10] = 1  # prompt of 3, right padding
  mask[1, 7:12] = 1  # left padding + long prompt
  mask[2, 1:12] = 1  # response longer than the early window
  return policy.astype(np.float32), ref.astype(np.float32), mask  # row 3: no response


def test_token_logps_matches_numpy():
  logits = np.random.default_rng(1).normal(size=(2, 5, 33)).astype(np.float32) * 4
  targets = np.random.default_rng(2).integers(0, 33, (2, 5))
  expected = np.take_along_axis(_np_log_softmax(logits), targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(token_logps(logits, targets), expected, atol=1e-5)
  assert token_logps(jnp.asarray(logits, jnp.bfloat16), targets).dtype == jnp.float32


@pytest.mark.parametrize("layout, softcap, chunk", [("dv", None, 16), ("vd", 3.0, 7), ("dv", None, 1000)])
def test_chunked_token_logps_equals_full_values_and_gradients(layout, softcap, chunk):
  rng = np.random.default_rng(3)
  hidden = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(8, 50)) if layout == "dv" else rng.normal(size=(50, 8)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 50, (2, 6)))

  def full(hidden, head):
    w = head if layout == "dv" else head.T
    logits = hidden @ w
    if softcap is not None:
      logits = jnp.tanh(logits / softcap) * softcap
    return token_logps(logits, targets)

  def chunked(hidden, head):
    return chunked_token_logps(hidden, OutputHead(head, layout, softcap), targets, vocab_chunk=chunk)

  np.testing.assert_allclose(chunked(hidden, head), full(hidden, head), atol=1e-5)
  weights = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
  g_full = jax.grad(lambda h, w: (full(h, w) * weights).sum(), argnums=(0, 1))(hidden, head)
  g_chunk = jax.grad(lambda h, w: (chunked(h, w) * weights).sum(), argnums=(0, 1))(hidden, head)
  for a, b in zip(g_chunk, g_full):
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("layout, chunk", [("dv", 16), ("vd", 7), ("dv", 1000)])
def test_chunked_greedy_match_is_argmax_with_its_tie_break(layout, chunk):
  # Columns 3, 20 and 41 are one column repeated (chunks of 16 and 7 put them in different chunks, and 41 in
  # the last, slid-back one): where they hold the maximum, only the lowest id, 3, is the argmax.
  rng = np.random.default_rng(4)
  w = rng.normal(size=(8, 50))
  w[:, 20] = w[:, 41] = w[:, 3]
  hidden = rng.normal(size=(3, 40, 8))
  logits = hidden @ w
  tied = logits.argmax(-1) == 3
  assert tied.sum() >= 2
  targets = np.where(tied, np.array([3, 20, 41])[:, None], rng.integers(0, 50, (3, 40)))
  targets[0, :5] = logits[0, :5].argmax(-1)  # plain hits too
  head = OutputHead(jnp.asarray(w if layout == "dv" else w.T, jnp.float32), layout)
  logps, greedy = chunked_token_logps(
    jnp.asarray(hidden, jnp.float32), head, jnp.asarray(targets), vocab_chunk=chunk, greedy=True
  )
  np.testing.assert_array_equal(greedy, np.argmax(np.asarray(logits, np.float32), -1) == targets)
  assert greedy[0][tied[0]].all() and not greedy[1:][tied[1:]].any() and greedy[0, :5].all()
  np.testing.assert_allclose(
    logps, np.take_along_axis(_np_log_softmax(logits), targets[..., None], -1)[..., 0], atol=1e-4
  )


def test_beta_schedule_is_the_papers():
  np.testing.assert_allclose(BetaSchedule().values(8), [0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.1, 0.1], rtol=1e-6)
  np.testing.assert_allclose(
    BetaSchedule(beta=0.2, first_token_factor=1.0, early_factor=3.0, early_length=2).values(4),
    [0.2, 0.6, 0.2, 0.2],
    rtol=1e-6,
  )
  # .at() takes positions of any shape; 0 (not a response token) gets β.
  np.testing.assert_allclose(BetaSchedule().at(jnp.asarray([[0, 1, 5, 6]])), [[0.1, 0.5, 2.0, 0.1]], rtol=1e-6)


def test_response_positions_count_from_the_first_response_token():
  _, _, mask = _batch()
  positions = np.asarray(response_positions(jnp.asarray(mask)))
  assert positions[0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 0, 0]
  assert positions[1].tolist() == [0] * 7 + [1, 2, 3, 4, 5]
  assert not positions[3].any()


@pytest.mark.parametrize("min_weight", [0.0, 1e-3, 0.5])
def test_constrained_loss_value_and_gradient_match_the_formula(min_weight):
  policy, ref, mask = _batch()
  betas = _np_betas(mask)
  delta = ref.astype(np.float64) - policy
  safe_betas = np.where(mask == 1, betas, 1.0)
  expected = ((2 / safe_betas) * _np_softplus(safe_betas * delta) * mask).sum()
  expected_grad = -np.maximum(2 * _np_sigmoid(safe_betas * delta), min_weight) * mask

  def loss(p):
    total, count = token_constrained_loss(p, jnp.asarray(ref), jnp.asarray(mask), min_weight=min_weight)
    return total, count

  (total, count), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(policy))
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert count == mask.sum()
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
  if min_weight == 0.5:  # the clamp is active somewhere, so this case tests it
    assert (2 * _np_sigmoid(safe_betas * delta) < 0.5)[mask == 1].any()


def test_loss_at_equal_policy_and_reference():
  # Δ = 0: each token contributes (2/β_t)·log 2 and its gradient weight is 1.
  _, ref, mask = _batch()
  total, count = token_constrained_loss(jnp.asarray(ref), jnp.asarray(ref), jnp.asarray(mask))
  np.testing.assert_allclose(total, (2 / _np_betas(mask)[mask == 1] * np.log(2)).sum(), rtol=1e-6)
  grad = jax.grad(lambda p: token_constrained_loss(p, jnp.asarray(ref), jnp.asarray(mask))[0])(jnp.asarray(ref))
  np.testing.assert_allclose(grad, -mask, rtol=1e-6)


def test_explicit_betas_and_small_beta_limit():
  policy, ref, mask = _batch(5)
  custom = jnp.asarray([1.0, 0.3])  # positions >= 2 use 0.3
  betas = np.where(response_positions(jnp.asarray(mask)) == 1, 1.0, 0.3)
  delta = ref - policy
  expected = ((2 / betas) * _np_softplus(betas * delta) * mask).sum()
  total, _ = token_constrained_loss(jnp.asarray(policy), jnp.asarray(ref), jnp.asarray(mask), betas=custom)
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  # β → 0: the gradient becomes plain cross-entropy's (−1 on every response token).
  grad_small = jax.grad(
    lambda p: token_constrained_loss(p, jnp.asarray(ref), jnp.asarray(mask), betas=jnp.asarray([1e-4]))[0]
  )(jnp.asarray(policy))
  grad_nll = jax.grad(lambda p: masked_nll(p, jnp.asarray(mask))[0])(jnp.asarray(policy))
  np.testing.assert_allclose(grad_small, grad_nll, atol=1e-3)


def test_masked_nll():
  policy, _, mask = _batch()
  total, count = masked_nll(jnp.asarray(policy), jnp.asarray(mask))
  np.testing.assert_allclose(total, -(policy * mask).sum(), rtol=1e-6)
  assert count == mask.sum()


def test_sums_over_micro_batches_equal_the_whole_batch():
  # Returning (sum, count) lets micro-batches be combined exactly.
  policy, ref, mask = _batch()
  whole = token_constrained_loss(jnp.asarray(policy), jnp.asarray(ref), jnp.asarray(mask))
  parts = [
    token_constrained_loss(jnp.asarray(policy[i : i + 2]), jnp.asarray(ref[i : i + 2]), jnp.asarray(mask[i : i + 2]))
    for i in (0, 2)
  ]
  np.testing.assert_allclose(sum(p[0] for p in parts) / sum(p[1] for p in parts), whole[0] / whole[1], rtol=1e-6)


# -- DPO ---------------------------------------------------------------------------------------------


def test_dpo_loss_is_the_formula_in_numpy():
  from deepalign_jax.losses import dpo_loss, sequence_logps

  rng = np.random.default_rng(0)
  token = -rng.gamma(2.0, 0.5, size=(8, 10))
  mask = (rng.random((8, 10)) < 0.7).astype(np.float32)
  seq = np.asarray(sequence_logps(jnp.asarray(token), jnp.asarray(mask)))
  np.testing.assert_allclose(seq, (token * mask).sum(1), rtol=1e-6)
  ref = seq + rng.normal(0, 1.0, 8)
  pair_mask = np.array([1, 1, 0, 1], np.float32)
  for beta in (0.1, 2.0):
    total, count = dpo_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], beta=beta, pair_mask=pair_mask)
    margin = (seq[0::2] - ref[0::2]) - (seq[1::2] - ref[1::2])
    expected = -np.log(1.0 / (1.0 + np.exp(-beta * margin)))
    np.testing.assert_allclose(float(total), (expected * pair_mask).sum(), rtol=1e-5)
    assert float(count) == 3.0


def test_dpo_loss_equals_trls_on_the_same_log_probs():
  """TRL 1.16's DPOTrainer on the same per-token log-probs and reference log-probs (golden values written by
  tests/golden/make_trl_dpo_values.py): the loss, with and without its SFT term, and the reward metrics."""
  import json
  from pathlib import Path

  from deepalign_jax.losses import dpo_loss, masked_nll, sequence_logps

  golden = json.loads((Path(__file__).parent / "golden/trl_dpo_values.json").read_text())
  data, pairs = golden["inputs"], golden["pairs"]
  mask = jnp.asarray(np.asarray(data["completion_mask"])[:, 1:], jnp.float32)  # TRL's shifted completion mask
  token = jnp.asarray(data["token_logps"], jnp.float32)
  seq = sequence_logps(token, mask)  # TRL's rows: the chosen ones, then the rejected ones
  ref_c, ref_r = jnp.asarray(data["ref_chosen_logps"]), jnp.asarray(data["ref_rejected_logps"])
  assert len(golden["cases"]) == 3
  for case in golden["cases"]:
    beta, trl = case["beta"], case["trl"]
    total, count = dpo_loss(seq[:pairs], seq[pairs:], ref_c, ref_r, beta=beta)
    loss = total / count
    if "sft" in case["loss_types"]:
      nll, tokens = masked_nll(token[:pairs], mask[:pairs])
      loss = loss + case["loss_weights"][1] * nll / tokens
    np.testing.assert_allclose(float(loss), trl["loss"], rtol=1e-6)
    chosen, rejected = beta * (seq[:pairs] - ref_c), beta * (seq[pairs:] - ref_r)
    np.testing.assert_allclose(float(chosen.mean()), trl["rewards/chosen"], rtol=1e-5)
    np.testing.assert_allclose(float(rejected.mean()), trl["rewards/rejected"], rtol=1e-5)
    np.testing.assert_allclose(float((chosen - rejected).mean()), trl["rewards/margins"], rtol=1e-5)
    np.testing.assert_allclose(float((chosen > rejected).mean()), trl["rewards/accuracies"], rtol=1e-6)
