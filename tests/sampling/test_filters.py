"""Sampling filters and statistics: top-k, top-p, temperature, greedy, seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from deepalign_jax.sampling import SamplingParams, choose_tokens, filter_logits, filters


def _hf_filter(logits, temperature, top_k, top_p):
  """transformers' warpers, applied in its order (temperature, top-k, top-p)."""
  scores = torch.as_tensor(np.array(logits))
  scores = TemperatureLogitsWarper(temperature)(None, scores)
  if top_k:
    scores = TopKLogitsWarper(top_k)(None, scores)
  if top_p < 1.0:
    scores = TopPLogitsWarper(top_p)(None, scores)
  return scores.numpy()


@pytest.mark.parametrize(
  "temperature, top_k, top_p",
  [
    (1.0, 0, 1.0),
    (0.7, 5, 1.0),
    (1.0, 0, 0.6),
    (0.9, 50, 0.6),
    (1.3, 3, 0.9),
    (0.05, 0, 0.3),
  ],
)
def test_filter_matches_transformers_warpers(temperature, top_k, top_p):
  logits = jax.random.normal(jax.random.key(0), (6, 300)) * 3.0
  params = SamplingParams.make(6, temperature=temperature, top_k=top_k, top_p=top_p)
  ours = np.asarray(filter_logits(logits, params))
  theirs = _hf_filter(logits, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
  kept = np.isfinite(ours)
  np.testing.assert_allclose(ours[kept], theirs[kept], rtol=1e-6)


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.9, 50, 0.6), (1.3, 3, 0.9), (0.7, 64, 1.0), (1.0, 1, 0.5)])
def test_ranking_only_the_top_candidates_matches_transformers(temperature, top_k, top_p):
  """top_k ≤ candidates: lax.top_k of the candidates instead of a vocabulary sort, same filter."""
  logits = jax.random.normal(jax.random.key(7), (6, 300)) * 3.0
  params = SamplingParams.make(6, temperature=temperature, top_k=top_k, top_p=top_p)
  ours = np.asarray(filter_logits(logits, params, candidates=64))
  theirs = _hf_filter(logits, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
  np.testing.assert_allclose(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], rtol=1e-6)
  # Ties (the k-th logit repeated): the shortcut keeps exactly what the full sort keeps.
  tied = logits.at[:, 10:20].set(logits[:, 10:11])
  np.testing.assert_array_equal(
    np.asarray(filter_logits(tied, params, candidates=64)), np.asarray(filter_logits(tied, params))
  )


def test_choose_tokens_draws_alike_with_and_without_the_candidate_shortcut():
  logits = jax.random.normal(jax.random.key(8), (5, 300)) * 2.0
  params = SamplingParams.make(5, temperature=0.9, top_k=[50, 5, 64, 2, 30], top_p=[0.6, 1.0, 0.9, 1.0, 0.3])
  keys = jax.random.split(jax.random.key(0), 200)
  fast = jax.vmap(lambda k: choose_tokens(k, logits, params))(keys)
  full = jax.vmap(lambda k: choose_tokens(k, logits, params, candidates=300))(keys)
  np.testing.assert_array_equal(np.asarray(fast), np.asarray(full))


def test_rows_of_one_batch_use_their_own_parameters():
  logits = jax.random.normal(jax.random.key(1), (3, 100)) * 2.0
  params = SamplingParams.make(3, temperature=[1.0, 0.5, 1.0], top_k=[0, 7, 0], top_p=[1.0, 1.0, 0.5])
  ours = np.asarray(filter_logits(logits, params))
  for row, (t, k, p) in enumerate([(1.0, 0, 1.0), (0.5, 7, 1.0), (1.0, 0, 0.5)]):
    theirs = _hf_filter(logits[row : row + 1], t, k, p)[0]
    np.testing.assert_array_equal(np.isfinite(ours[row]), np.isfinite(theirs))


def _draw(logits, params, n, seed=0):
  keys = jax.random.split(jax.random.key(seed), n)
  return np.asarray(jax.vmap(lambda k: choose_tokens(k, logits, params))(keys))  # [n, B]


def test_top_k_never_leaves_the_k_most_likely():
  logits = jax.random.normal(jax.random.key(2), (4, 200)) * 2.0
  draws = _draw(logits, SamplingParams.make(4, top_k=5), 2000)
  top5 = np.argsort(-np.asarray(logits), axis=-1)[:, :5]
  for row in range(4):
    assert set(draws[:, row]) <= set(top5[row])


def test_top_p_never_leaves_the_nucleus():
  logits = jax.random.normal(jax.random.key(3), (4, 200)) * 2.0
  draws = _draw(logits, SamplingParams.make(4, top_p=0.6), 2000)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  for row in range(4):
    order = np.argsort(-probs[row])
    mass_before = np.cumsum(probs[row][order]) - probs[row][order]
    nucleus = set(order[mass_before < 0.6])
    assert set(draws[:, row]) <= nucleus


def test_near_zero_temperature_is_greedy():
  logits = jax.random.normal(jax.random.key(4), (8, 500))
  draws = _draw(logits, SamplingParams.make(8, temperature=1e-4), 50)
  np.testing.assert_array_equal(draws, np.broadcast_to(np.argmax(logits, -1), draws.shape))
  greedy = _draw(logits, SamplingParams.make(8, temperature=5.0, greedy=True), 20)
  np.testing.assert_array_equal(greedy, np.broadcast_to(np.argmax(logits, -1), greedy.shape))


def test_empirical_frequencies_match_the_filtered_softmax():
  # 20 tokens, temperature 0.8, top-k 12, top-p 0.9: draw 40k samples and
  # compare frequencies with the filtered distribution (total variation).
  logits = jax.random.normal(jax.random.key(5), (1, 20)) * 1.5
  params = SamplingParams.make(1, temperature=0.8, top_k=12, top_p=0.9)
  expected = np.asarray(jax.nn.softmax(filter_logits(logits, params), axis=-1))[0]
  draws = _draw(logits, params, 40_000)[:, 0]
  observed = np.bincount(draws, minlength=20) / len(draws)
  assert observed[expected == 0].sum() == 0
  # TV of an exact sampler with n=40k over <=12 outcomes is ~0.01; a wrong
  # temperature or cut moves it by >0.05.
  assert 0.5 * np.abs(observed - expected).sum() < 0.02


def test_same_seed_same_tokens_other_seed_other_tokens():
  logits = jax.random.normal(jax.random.key(6), (16, 1000))
  params = SamplingParams.make(16)
  a = _draw(logits, params, 4, seed=1)
  np.testing.assert_array_equal(a, _draw(logits, params, 4, seed=1))
  assert (a != _draw(logits, params, 4, seed=2)).any()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_first_argmax_is_argmax_with_its_tie_break(dtype):
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(64, 301)).astype(np.float32)
  rows = np.arange(64)
  best = logits.argmax(-1)
  # Ties: a copy of the maximum before it in some rows, after it in others; rows masked to -inf past a limit.
  logits[rows[:16], (best[:16] + 7) % 301] = logits[rows[:16], best[:16]]
  logits[rows[16:32], (best[16:32] - 5) % 301] = logits[rows[16:32], best[16:32]]
  logits[32:40, 150:] = -np.inf
  logits[40:48] = np.round(logits[40:48])  # many ties
  x = jnp.asarray(logits, dtype)
  np.testing.assert_array_equal(filters.first_argmax(x), np.argmax(np.asarray(x.astype(jnp.float32)), -1))
  assert filters.first_argmax(x).dtype == jnp.int32


@pytest.mark.parametrize("layout, softcap", [("vd", None), ("vd", 5.0), ("dv", None)])
def test_vocabulary_major_token_logits_choose_what_the_rows_choose(layout, softcap):
  from deepalign_jax.models.head import OutputHead

  rng = np.random.default_rng(6)
  w = rng.normal(size=(300, 16) if layout == "vd" else (16, 300)).astype(np.float32)
  head = OutputHead(jnp.asarray(w), layout, softcap)
  hidden = jnp.asarray(rng.normal(size=(5, 16)), jnp.float32)
  logits, axis = head.token_logits(hidden)
  rows = np.asarray(head.logits(hidden[:, None])[:, 0])
  assert axis == (0 if layout == "vd" else 1)
  np.testing.assert_allclose(np.asarray(logits).T if axis == 0 else logits, rows, rtol=1e-6, atol=1e-6)
  # Greedy and sampled rows in one batch: the same tokens from either orientation, the same key.
  params = SamplingParams.make(5, temperature=0.9, top_k=[0, 5, 0, 50, 0], top_p=[1.0, 1.0, 0.6, 1.0, 1.0])
  params = params._replace(greedy=jnp.asarray([True, False, False, False, True]))
  key = jax.random.key(3)
  for k in jax.random.split(key, 4):
    np.testing.assert_array_equal(
      choose_tokens(k, logits, params, vocab_axis=axis), choose_tokens(k, jnp.asarray(rows), params)
    )
  chosen = np.asarray(choose_tokens(key, logits, params, vocab_axis=axis))
  np.testing.assert_array_equal(chosen[[0, 4]], rows.argmax(-1)[[0, 4]])
