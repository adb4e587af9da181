"""KL by position on tiny models whose difference, and so the KL profile, is known."""

import jax.numpy as jnp
import numpy as np
import pytest

from deepalign_jax.analysis import kl_by_position, position_stats, response_hidden_states
from deepalign_jax.models import create_model
from tests.analysis.conftest import forward, tiny_config
from tests.analysis.test_kl import numpy_kl

VOCAB = 97
MARK = 42  # the one token whose input embedding differs between the two models
MARK_AT = 3  # ... and the response position where it occurs
N = 12
# One batch shape and chunking for every test of the module: one compilation each of the forward and the KL.
KW = dict(batch_size=2, vocab_chunk=10, position_chunk=4, bucket=32)


@pytest.fixture(scope="module")
def models():
  """p; q identical except its input embedding of MARK (untied: the output head is p's); r: other weights."""
  cfg = tiny_config(VOCAB)
  p, q = create_model(cfg, seed=0), create_model(cfg, seed=0)
  embed = np.asarray(q.embed[...]).copy()
  embed[MARK] += 1.0
  q.embed[...] = jnp.asarray(embed)
  return p, q, create_model(cfg, seed=1)


def _data(seed=0, n=5):
  rng = np.random.default_rng(seed)
  tokens = [t for t in range(3, VOCAB) if t != MARK]
  prompts = [list(rng.choice(tokens, size=int(rng.integers(2, 9)))) for _ in range(n)]
  responses = []
  for i in range(n):
    response = list(rng.choice(tokens, size=int(rng.integers(5, 14))))
    response[MARK_AT - 1] = MARK
    responses.append(response)
  responses[0] = responses[0][:4]  # one short response: positions past it are not valid
  return prompts, responses


def test_kl_is_zero_before_the_changed_token_and_positive_after(models):
  p, q, _ = models
  prompts, responses = _data()
  kl, valid = kl_by_position(p, q, prompts, prompts, responses, N, **KW)
  assert kl.shape == valid.shape == (5, N)
  np.testing.assert_array_equal(valid.sum(axis=1), [min(len(r), N) for r in responses])
  # MARK is read as input at response position MARK_AT: the distributions of
  # positions 1..MARK_AT are computed before it (causal), those after it are not.
  assert np.abs(kl[:, :MARK_AT]).max() < 1e-6
  assert (kl[:, MARK_AT:][valid[:, MARK_AT:]] > 1e-4).all()
  assert (kl[~valid] == 0).all()


def test_kl_by_position_equals_full_logits_of_each_example(models):
  """Independent path: each example alone, whole-sequence logits, the KL in numpy, then indexing."""
  p, _, q = models
  prompts, responses = _data(seed=1)
  q_prompts = [prompt[1:] + [7, 8] for prompt in prompts]  # q reads its own prompt format
  kl, valid = kl_by_position(p, q, prompts, q_prompts, responses, N, **KW)
  for i, response in enumerate(responses):
    # Logits at prompt_length - 1 + j predict response[j].
    p_logits = forward(p, prompts[i] + response)[0][0, len(prompts[i]) - 1 : -1]
    q_logits = forward(q, q_prompts[i] + response)[0][0, len(q_prompts[i]) - 1 : -1]
    expected = numpy_kl(p_logits, q_logits)[:N]
    np.testing.assert_allclose(kl[i, : len(expected)], expected, rtol=1e-4, atol=2e-6)
    assert valid[i].sum() == len(expected)


def test_hidden_states_at_positions_and_stats(models):
  p = models[0]
  prompts, responses = _data(seed=2, n=3)
  hidden, valid = response_hidden_states(p, prompts, responses, N, batch_size=KW["batch_size"], bucket=KW["bucket"])
  for i in range(3):
    full = forward(p, prompts[i] + responses[i])[1]
    start, count = len(prompts[i]) - 1, min(len(responses[i]), N)
    assert valid[i].sum() == count
    np.testing.assert_allclose(hidden[i, :count], full[0, start : start + count], rtol=1e-5, atol=1e-5)
  stats = position_stats(
    np.array([[1.0, 2.0], [3.0, 0.0], [5.0, 0.0]]), np.array([[True, True], [True, False], [True, False]])
  )
  assert stats["count"] == [3, 1] and stats["mean"] == [3.0, 2.0]
  assert np.isclose(stats["stderr"][0], np.std([1, 3, 5], ddof=1) / np.sqrt(3)) and stats["stderr"][1] is None
