"""Training examples: conversation rows, safety-recovery examples (Eq. 2), P_k, per-epoch k.

Masks are checked against the text they cover (decoding the masked ids gives
the answer and its end-of-turn token) and against a second code path (the
renderer's own rendering of the same conversation).  The distribution P_k is
checked by counting draws against the formula of SPEC §4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepalign_jax.data.chat import ChatRenderer, load_tokenizer
from deepalign_jax.data.examples import (
  RecoveryDraw,
  RecoveryExample,
  TokenizedExample,
  epoch_k,
  max_k,
  prepare_recovery,
  recovery_epoch,
  recovery_example,
  sample_k,
  tokenize_conversation,
  truncate,
)
from tests.data.tokenizers import sentencepiece_like_tokenizer
from tests.real_checkpoints import real_tokenizer

# (tokenizer, format): ChatML from SmolLM2's template, Gemma 3 in the 'gemma'
# format, Llama-2 strings with the SentencePiece-like test tokenizer.
CASES = [("smollm2", "template"), ("gemma3", "gemma"), ("spm", "llama2")]
END_OF_TURN = {"template": "<|im_end|>", "gemma": "<end_of_turn>", "llama2": " </s>"}

INSTRUCTION = "What is 2+2?"
HARMFUL = "Sure, here is the answer. It is 4."
REFUSAL = "I cannot help with that."
LONG_HARMFUL = " ".join(["Sure, here is the answer: 12 green apples, 3 old books and a red bicycle."] * 12)


@pytest.fixture(scope="module")
def get_renderer():
  """(tokenizer, renderer) by tokenizer name and format, built once per module."""
  loaders = {
    "smollm2": lambda: load_tokenizer(real_tokenizer("smollm2")),
    "gemma3": lambda: load_tokenizer(real_tokenizer("gemma3-270m")),
    "spm": sentencepiece_like_tokenizer,
  }
  cache = {}

  def get(tok_name, chat_format):
    if (tok_name, chat_format) not in cache:
      tok = loaders[tok_name]()
      cache[tok_name, chat_format] = tok, ChatRenderer(tok, chat_format)
    return cache[tok_name, chat_format]

  return get


def _decode(tok, ids) -> str:
  return tok.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _masked(example: TokenizedExample) -> np.ndarray:
  return example.input_ids[example.loss_mask == 1]


def _messages(user, assistant=None, system=None):
  msgs = [{"role": "system", "content": system}] if system is not None else []
  msgs.append({"role": "user", "content": user})
  if assistant is not None:
    msgs.append({"role": "assistant", "content": assistant})
  return msgs


def _closed_response(rendered) -> np.ndarray:
  """The ids under the renderer's loss mask (response + end-of-turn)."""
  return np.asarray(rendered.input_ids)[np.asarray(rendered.loss_mask) == 1]


# -- conversations -----------------------------------------------------------


@pytest.mark.parametrize("tok_name,chat_format", CASES)
@pytest.mark.parametrize("system", [None, "You are a pirate."])
def test_tokenize_conversation_mask_covers_the_answer(get_renderer, tok_name, chat_format, system):
  tok, renderer = get_renderer(tok_name, chat_format)
  example, truncated = tokenize_conversation(renderer, system, INSTRUCTION, HARMFUL, source="qa.jsonl:1")
  rendered = renderer.render(_messages(INSTRUCTION, HARMFUL, system))
  assert not truncated
  assert example.source == "qa.jsonl:1"
  assert example.input_ids.dtype == np.int32 and example.loss_mask.dtype == np.int32
  np.testing.assert_array_equal(example.input_ids, rendered.input_ids)
  np.testing.assert_array_equal(example.loss_mask, rendered.loss_mask)
  assert _decode(tok, _masked(example)) == HARMFUL + END_OF_TURN[chat_format]
  # One contiguous run starting at the response.
  (ones,) = np.nonzero(example.loss_mask)
  assert ones[0] == rendered.response_start and np.all(np.diff(ones) == 1)


@pytest.mark.parametrize("tok_name,chat_format", CASES)
def test_tokenize_conversation_truncates_from_the_right_and_says_so(get_renderer, tok_name, chat_format):
  _, renderer = get_renderer(tok_name, chat_format)
  full, _ = tokenize_conversation(renderer, None, INSTRUCTION, HARMFUL, max_length=10_000)
  prompt_len = len(renderer.render(_messages(INSTRUCTION)).input_ids)

  cut, truncated = tokenize_conversation(renderer, None, INSTRUCTION, HARMFUL, max_length=prompt_len + 3)
  assert truncated
  assert len(cut) == prompt_len + 3
  np.testing.assert_array_equal(cut.input_ids, full.input_ids[: prompt_len + 3])
  np.testing.assert_array_equal(cut.loss_mask, full.loss_mask[: prompt_len + 3])
  assert cut.num_loss_tokens == 3

  exact, truncated = tokenize_conversation(renderer, None, INSTRUCTION, HARMFUL, max_length=len(full))
  assert not truncated and len(exact) == len(full)


@pytest.mark.parametrize("tok_name,chat_format", CASES)
def test_tokenize_conversation_prompt_longer_than_max_length_names_the_source(get_renderer, tok_name, chat_format):
  _, renderer = get_renderer(tok_name, chat_format)
  prompt_len = len(renderer.render(_messages(INSTRUCTION)).input_ids)
  for max_length in (prompt_len, prompt_len - 4):  # equal: no response token would remain either
    with pytest.raises(ValueError, match=r"alpaca\.jsonl:7.*max_length"):
      tokenize_conversation(renderer, None, INSTRUCTION, HARMFUL, max_length=max_length, source="alpaca.jsonl:7")


def test_tokenized_example_validates_and_is_read_only():
  example = TokenizedExample([5, 6, 7], [0, 1, 1], "x")
  assert example.input_ids.dtype == np.int32 and len(example) == 3 and example.num_loss_tokens == 2
  with pytest.raises(ValueError):
    example.input_ids[0] = 1
  with pytest.raises(ValueError, match="same length"):
    TokenizedExample([5, 6, 7], [0, 1], "x")
  with pytest.raises(ValueError, match="only 0 and 1"):
    TokenizedExample([5, 6], [0, 2], "x")


def test_truncate_keeps_fitting_examples_unchanged():
  example = TokenizedExample([1, 2, 3, 4], [0, 0, 1, 1], "x")
  assert truncate(example, 4) == (example, False)
  cut, truncated = truncate(example, 3)
  assert truncated and cut.input_ids.tolist() == [1, 2, 3] and cut.loss_mask.tolist() == [0, 0, 1]
  with pytest.raises(ValueError, match="x: 2 tokens"):
    truncate(example, 2)


# -- safety-recovery examples ------------------------------------------------


@pytest.mark.parametrize("tok_name,chat_format", CASES)
def test_prepare_recovery_caches_prompt_and_both_responses(get_renderer, tok_name, chat_format):
  tok, renderer = get_renderer(tok_name, chat_format)
  prepared = prepare_recovery(renderer, INSTRUCTION, HARMFUL, REFUSAL, source="safety.jsonl:3")
  eot = END_OF_TURN[chat_format]
  np.testing.assert_array_equal(prepared.prompt_ids, renderer.render(_messages(INSTRUCTION)).input_ids)
  full_h = renderer.render(_messages(INSTRUCTION, HARMFUL))
  full_r = renderer.render(_messages(INSTRUCTION, REFUSAL))
  np.testing.assert_array_equal(prepared.harmful_ids, _closed_response(full_h))
  np.testing.assert_array_equal(prepared.refusal_ids, _closed_response(full_r))
  stops = set(renderer.stop_token_ids)
  assert int(prepared.harmful_ids[-1]) in stops and int(prepared.refusal_ids[-1]) in stops
  assert _decode(tok, prepared.harmful_ids) == HARMFUL + eot
  assert _decode(tok, prepared.refusal_ids) == REFUSAL + eot
  assert prepared.harmful_length == len(prepared.harmful_ids)
  assert prepared.max_prefix == prepared.harmful_length - 1


@pytest.mark.parametrize("tok_name,chat_format", CASES)
@pytest.mark.parametrize("k_name", ["0", "3", "max"])
def test_recovery_example_loss_only_on_the_refusal(get_renderer, tok_name, chat_format, k_name):
  tok, renderer = get_renderer(tok_name, chat_format)
  prepared = prepare_recovery(renderer, INSTRUCTION, HARMFUL, REFUSAL, source="safety.jsonl:3")
  k = {"0": 0, "3": 3, "max": prepared.max_prefix}[k_name]
  example = recovery_example(prepared, k)
  full_h = renderer.render(_messages(INSTRUCTION, HARMFUL))
  n_prompt, n_refusal = len(prepared.prompt_ids), len(prepared.refusal_ids)

  assert len(example) == n_prompt + k + n_refusal and example.source == "safety.jsonl:3"
  np.testing.assert_array_equal(example.input_ids[:n_prompt], renderer.render(_messages(INSTRUCTION)).input_ids)
  # The harmful prefix is h's first k response tokens, as the renderer tokenised them in [x, h].
  harmful_prefix = example.input_ids[n_prompt : n_prompt + k]
  np.testing.assert_array_equal(harmful_prefix, full_h.input_ids[full_h.response_start : full_h.response_start + k])
  np.testing.assert_array_equal(example.loss_mask, [0] * (n_prompt + k) + [1] * n_refusal)
  assert _decode(tok, _masked(example)) == REFUSAL + END_OF_TURN[chat_format]
  # h's end-of-turn never enters the prefix, even at the largest k.
  stops = set(renderer.stop_token_ids)
  assert not stops & set(harmful_prefix.tolist())


@pytest.mark.parametrize("tok_name,chat_format", CASES)
def test_recovery_example_without_prefix_is_the_refusal_conversation(get_renderer, tok_name, chat_format):
  _, renderer = get_renderer(tok_name, chat_format)
  prepared = prepare_recovery(renderer, INSTRUCTION, HARMFUL, REFUSAL)
  refusal_row, _ = tokenize_conversation(renderer, None, INSTRUCTION, REFUSAL)
  end = int(np.nonzero(refusal_row.loss_mask)[0][-1]) + 1  # up to the end-of-turn (ChatML adds "\n" after)
  example = recovery_example(prepared, 0)
  np.testing.assert_array_equal(example.input_ids, refusal_row.input_ids[:end])
  np.testing.assert_array_equal(example.loss_mask, refusal_row.loss_mask[:end])


def test_recovery_example_rejects_k_outside_the_prefix_range(get_renderer):
  _, renderer = get_renderer("spm", "llama2")
  prepared = prepare_recovery(renderer, INSTRUCTION, HARMFUL, REFUSAL, source="safety.jsonl:9")
  for k in (-1, prepared.harmful_length):
    with pytest.raises(ValueError, match=r"safety\.jsonl:9: k="):
      recovery_example(prepared, k)


def test_recovery_example_rejects_an_empty_harmful_answer(get_renderer):
  _, renderer = get_renderer("gemma3", "gemma")
  with pytest.raises(ValueError, match=r"safety\.jsonl:4: the harmful answer has no token"):
    prepare_recovery(renderer, INSTRUCTION, "", REFUSAL, source="safety.jsonl:4")


@pytest.mark.parametrize("tok_name,chat_format", CASES)
def test_recovery_truncation_is_flagged_and_bounded(get_renderer, tok_name, chat_format):
  _, renderer = get_renderer(tok_name, chat_format)
  prepared = prepare_recovery(renderer, INSTRUCTION, LONG_HARMFUL, REFUSAL, source="safety.jsonl:5")
  n_prompt, n_refusal = len(prepared.prompt_ids), len(prepared.refusal_ids)
  k_max = max_k(prepared.harmful_length, C=100)
  assert k_max == 100  # the long answer exceeds C
  max_length = n_prompt + k_max + 1  # the smallest budget recovery_epoch accepts
  draws = recovery_epoch([prepared] * 32, epoch=0, seed=0, max_length=max_length)
  assert {d.truncated for d in draws} == {True, False}  # some k leave room for the refusal, the largest do not
  for draw in draws:
    assert len(draw.example) <= max_length
    assert draw.truncated == (n_prompt + draw.k + n_refusal > max_length)
    assert draw.example.num_loss_tokens == min(n_refusal, max_length - n_prompt - draw.k) >= 1

  with pytest.raises(ValueError, match=r"safety\.jsonl:5: prompt .* max_length"):
    recovery_epoch([prepared], epoch=0, seed=0, max_length=n_prompt + k_max)
  # A triplet that fits for small k but not for the largest fails whatever k is drawn.
  with pytest.raises(ValueError, match=r"safety\.jsonl:5"):
    recovery_epoch([prepared], epoch=0, seed=0, p_zero=1.0, max_length=n_prompt + 5)
  with pytest.raises(ValueError, match=r"safety\.jsonl:5: .* tokens come before"):
    truncate(recovery_example(prepared, 10), n_prompt + 10)


# -- the distribution P_k ----------------------------------------------------


def _chi2_upper(dof: int, z: float = 3.09) -> float:
  """Upper quantile of chi-square(dof) by Wilson–Hilferty; z=3.09 is the 0.999 quantile of N(0, 1).

  A correct sampler exceeds it for 0.1% of seeds; the seeds here are fixed, so
  the tests are deterministic and the bound only says how unlikely a failure
  of a correct sampler would be.
  """
  return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def _check_p_k(ks: np.ndarray, support_max: int, p_zero: float):
  # sd of the zero fraction is sqrt(p(1-p)/n) = 0.0035 at n = 20,000: ±0.015 is > 4 sd.
  assert abs(np.mean(ks == 0) - p_zero) < 0.015
  nonzero = ks[ks > 0]
  assert nonzero.min() >= 1 and nonzero.max() == support_max
  counts = np.bincount(nonzero, minlength=support_max + 1)[1:]
  assert len(counts) == support_max  # nothing beyond the support
  expected = len(nonzero) / support_max
  chi2 = float(((counts - expected) ** 2 / expected).sum())
  assert chi2 < _chi2_upper(support_max - 1), (chi2, counts)


@pytest.mark.parametrize(
  "harmful_length,C,p_zero,support_max",
  [
    (250, 100, 0.5, 100),  # |h| > C: Uniform{1..C}
    (10, 100, 0.5, 9),  # |h| <= C: Uniform{1..|h|-1}, never h's end-of-turn
    (40, 5, 0.2, 5),  # ablation knobs
  ],
)
def test_sample_k_matches_p_k(harmful_length, C, p_zero, support_max):
  rng = np.random.default_rng(1234)
  ks = np.array([sample_k(rng, harmful_length, C=C, p_zero=p_zero) for _ in range(20_000)])
  _check_p_k(ks, support_max, p_zero)


def test_epoch_k_stream_matches_p_k():
  """The per-(seed, epoch, index) generators give P_k too, across examples and epochs."""
  ks = np.array([epoch_k(7, epoch, index, 250) for epoch in range(100) for index in range(200)])
  _check_p_k(ks, 100, 0.5)


def test_sample_k_rejects_bad_arguments():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="harmful_length"):
    sample_k(rng, 1)
  with pytest.raises(ValueError, match="C must"):
    sample_k(rng, 10, C=0)
  with pytest.raises(ValueError, match="p_zero"):
    sample_k(rng, 10, p_zero=1.5)
  with pytest.raises(ValueError, match="epoch"):
    epoch_k(0, -1, 0, 10)
  assert {sample_k(rng, 10, p_zero=1.0) for _ in range(100)} == {0}
  assert 0 not in {sample_k(rng, 10, p_zero=0.0) for _ in range(100)}


# -- epochs ------------------------------------------------------------------


def test_recovery_epoch_redraws_k_each_epoch_and_reproduces_it(get_renderer):
  _, renderer = get_renderer("spm", "llama2")
  prepared = prepare_recovery(renderer, INSTRUCTION, LONG_HARMFUL, REFUSAL, source="safety.jsonl:1")
  items = [prepared] * 64
  first = recovery_epoch(items, epoch=0, seed=3)
  again = recovery_epoch(items, epoch=0, seed=3)
  second = recovery_epoch(items, epoch=1, seed=3)
  other_seed = recovery_epoch(items, epoch=0, seed=4)
  assert all(isinstance(d, RecoveryDraw) for d in first) and len(first) == 64

  ks = lambda draws: np.array([d.k for d in draws])
  # Same (seed, epoch): same k and the same arrays (a resumed run sees the same data).
  np.testing.assert_array_equal(ks(first), ks(again))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a.example.input_ids, b.example.input_ids)
    np.testing.assert_array_equal(a.example.loss_mask, b.example.loss_mask)
  # Two independent draws agree with probability 1/4 + 1/400; most examples change.
  assert np.mean(ks(first) != ks(second)) > 0.5
  assert np.mean(ks(first) != ks(other_seed)) > 0.5
  # Over epochs one example sees many prefixes.
  assert len({epoch_k(3, epoch, 0, prepared.harmful_length) for epoch in range(20)}) > 5

  for index, draw in enumerate(second):
    assert draw.k == epoch_k(3, 1, index, prepared.harmful_length)
    expected, truncated = truncate(recovery_example(prepared, draw.k), 512)
    assert draw.truncated == truncated
    np.testing.assert_array_equal(draw.example.input_ids, expected.input_ids)
    np.testing.assert_array_equal(draw.example.loss_mask, expected.loss_mask)


def test_recovery_epoch_k_does_not_depend_on_the_other_examples(get_renderer):
  """k of an example is a function of (seed, epoch, index) only, not of its neighbours."""
  _, renderer = get_renderer("spm", "llama2")
  long = prepare_recovery(renderer, INSTRUCTION, LONG_HARMFUL, REFUSAL)
  short = prepare_recovery(renderer, INSTRUCTION, HARMFUL, REFUSAL)
  mixed = recovery_epoch([short, long, long], epoch=2, seed=5)
  alone = recovery_epoch([long, long, long], epoch=2, seed=5)
  assert [d.k for d in mixed[1:]] == [d.k for d in alone[1:]]
  assert mixed[0].k <= short.max_prefix


def test_recovery_example_is_frozen(get_renderer):
  _, renderer = get_renderer("spm", "llama2")
  prepared = prepare_recovery(renderer, INSTRUCTION, HARMFUL, REFUSAL)
  assert isinstance(prepared, RecoveryExample)
  with pytest.raises(ValueError):
    prepared.harmful_ids[0] = 0
  with pytest.raises(AttributeError):
    prepared.source = "other"
