"""Sampler (text in, text out) and the `python -m deepalign_jax.generate` CLI."""

import json

import pytest

from deepalign_jax import generate as generate_cli
from deepalign_jax.data import load_tokenizer
from deepalign_jax.models import config_from_hf, create_model, load_pretrained
from deepalign_jax.sampling import Sampler, generate
from tests.models.hf_fixtures import FAMILY_CONFIGS
from tests.real_checkpoints import real_checkpoint
from tests.tiny_models import successor_model_dir

QUESTIONS = ["What is the capital of France?", "Name three colours.", "Count from one to five."]


@pytest.fixture(scope="module")
def smollm2():
  path = real_checkpoint("smollm2")
  model, _ = load_pretrained(path)
  return path, Sampler(model, load_tokenizer(path), "template")


def _convs(questions):
  return [[{"role": "user", "content": q}] for q in questions]


def test_prefilling_k_response_tokens(smollm2):
  _, sampler = smollm2
  answer = "Sure, here is a list of three colours: red, green and blue."
  k = 4
  sample = sampler.sample(
    _convs(QUESTIONS[1:2]), responses=[answer], prefill_tokens=k, max_new_tokens=8, greedy=True, progress=False
  )[0]
  full = sampler.renderer.render(_convs(QUESTIONS[1:2])[0] + [{"role": "assistant", "content": answer}])
  assert sample.prompt_ids == list(full.with_response_prefix(k))
  assert sample.prefill == sampler.tokenizer.decode(full.response_ids[:k]) == "Sure, here is"
  assert sample.prompt_text.endswith("<|im_start|>assistant\nSure, here is")
  # The text excludes prompt and prefill, and is what generate() gives for those ids.
  direct = generate(
    sampler.model, [sample.prompt_ids], max_new_tokens=8, greedy=True, stop_tokens=sampler.renderer.stop_token_ids
  )
  assert sample.token_ids == direct.tokens[0, : direct.lengths[0]].tolist()
  assert sample.text == sampler.tokenizer.decode(sample.token_ids, skip_special_tokens=True)


def test_prefix_string_equals_prefilled_tokens(smollm2):
  _, sampler = smollm2
  by_text = sampler.sample(
    _convs(QUESTIONS[:1]), assistant_prefixes=["The capital"], max_new_tokens=6, greedy=True, progress=False
  )[0]
  by_tokens = sampler.sample(
    _convs(QUESTIONS[:1]),
    responses=["The capital of France is Paris."],
    prefill_tokens=2,
    max_new_tokens=6,
    greedy=True,
    progress=False,
  )[0]
  assert by_text.prompt_ids == by_tokens.prompt_ids
  assert by_text.token_ids == by_tokens.token_ids


def test_batch_size_does_not_change_greedy_outputs(smollm2):
  _, sampler = smollm2
  one = sampler.sample(_convs(QUESTIONS), batch_size=1, max_new_tokens=10, greedy=True, progress=False)
  two = sampler.sample(_convs(QUESTIONS), batch_size=2, max_new_tokens=10, greedy=True, progress=False)
  assert [s.token_ids for s in one] == [s.token_ids for s in two]
  assert all(len(s.token_ids) <= 10 for s in one)


def test_stop_tokens_end_samples(smollm2):
  _, sampler = smollm2
  sample = sampler.sample(_convs(QUESTIONS[:1]), max_new_tokens=64, greedy=True, progress=False)[0]
  assert sample.stopped and sample.token_ids[-1] in sampler.renderer.stop_token_ids
  assert "Paris" in sample.text and "<|im_end|>" not in sample.text


def test_vocab_limit_excludes_padded_ids():
  cfg = config_from_hf(FAMILY_CONFIGS["llama"]().to_dict())
  model = create_model(cfg, seed=0)
  prompts = [[5, 6, 7, 8], [9, 10]]
  free = generate(model, prompts, max_new_tokens=16, greedy=True).tokens
  assert (free >= 100).any()  # the unrestricted model does use high ids
  for kwargs in ({"greedy": True}, {"temperature": 1.0}):
    limited = generate(model, prompts, max_new_tokens=16, vocab_limit=100, **kwargs).tokens
    assert (limited < 100).all()


def _cli(**overrides) -> int:
  return generate_cli.main([f"--config.{k}={v}" for k, v in overrides.items()])


def test_cli_prints_only_the_generated_text(smollm2, capsys):
  path, sampler = smollm2
  assert _cli(model=path, prompt=QUESTIONS[0], greedy=True, max_new_tokens=12) == 0
  out = capsys.readouterr().out
  expected = sampler.sample(_convs(QUESTIONS[:1]), max_new_tokens=12, greedy=True, progress=False)[0]
  assert out == expected.text + "\n"


def test_cli_json_with_prefill_and_system(smollm2, capsys):
  path, _ = smollm2
  code = _cli(
    model=path,
    prompt="Name a colour.",
    system="Be brief.",
    prefill="My favourite colour is",
    temperature=0.9,
    top_p=0.6,
    top_k=50,
    seed=3,
    max_new_tokens=8,
    json=True,
  )
  assert code == 0
  record = json.loads(capsys.readouterr().out)
  assert record["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>")
  assert record["prompt"].endswith("<|im_start|>assistant\nMy favourite colour is")
  assert record["prefill"] == "My favourite colour is"
  assert not record["text"].startswith("My favourite")
  assert 1 <= len(record["token_ids"]) <= 8


def test_cli_raw_prompt_and_errors(smollm2, capsys):
  path, sampler = smollm2
  assert _cli(model=path, prompt="Once upon a time", raw=True, greedy=True, max_new_tokens=5, json=True) == 0
  record = json.loads(capsys.readouterr().out)
  assert record["prompt_ids"] == sampler.tokenizer("Once upon a time")["input_ids"]
  assert _cli(model="/nonexistent", prompt="x") == 1
  assert "/nonexistent: no such model directory" in capsys.readouterr().err
  assert _cli(model=path, prompt="x", raw=True, prefill="y") == 1
  assert "config.raw takes the prompt as it is" in capsys.readouterr().err


def test_cli_help_lists_every_key_and_print_config_resolves_overrides():
  """The process entry point: --help lists each config key with default and doc; --print_config exits."""
  import subprocess
  import sys

  help_text = subprocess.run(
    [sys.executable, "-m", "deepalign_jax.generate", "--help"], capture_output=True, text=True, timeout=300
  ).stdout
  for key in generate_cli.get_config().keys():
    assert f"--config.{key}=" in help_text, key
  assert "--config.top_p=0.6    # 1.0: no nucleus cut" in help_text
  printed = subprocess.run(
    [sys.executable, "-m", "deepalign_jax.generate", "--print_config", "--config.top_k=7"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert printed.returncode == 0 and json.loads(printed.stdout)["top_k"] == 7


def test_bf16_generation_follows_fp32(smollm2):
  import jax.numpy as jnp

  path, sampler = smollm2
  model16, _ = load_pretrained(path, dtype=jnp.bfloat16)
  sampler16 = Sampler(model16, sampler.tokenizer, "template")
  convs = _convs(QUESTIONS)
  ref = sampler.sample(convs, batch_size=3, max_new_tokens=6, greedy=True, progress=False)
  out = sampler16.sample(convs, batch_size=3, max_new_tokens=6, greedy=True, progress=False)
  # A real model's confident first tokens survive bf16 rounding.
  agree = [a.token_ids[:3] == b.token_ids[:3] for a, b in zip(ref, out)]
  assert sum(agree) >= 2, (ref, out)


def test_response_decodes_prefill_and_continuation_together():
  """A SentencePiece tokenizer loses the space between separately decoded pieces; `response` keeps it."""
  from tests.data.tokenizers import sentencepiece_like_tokenizer

  tokenizer = sentencepiece_like_tokenizer()
  cfg = config_from_hf({**FAMILY_CONFIGS["llama"]().to_dict(), "vocab_size": len(tokenizer)})
  sampler = Sampler(create_model(cfg, seed=0), tokenizer, "base")
  convs = [[{"role": "user", "content": f"Tell me about the river number {i}."}] for i in range(16)]
  answer = "I cannot help with that request."
  by_prefix = sampler.sample(
    convs, assistant_prefixes=["I cannot"] * 16, max_new_tokens=3, temperature=1.0, batch_size=8, progress=False
  )
  by_tokens = sampler.sample(
    convs[:2], responses=[answer] * 2, prefill_tokens=3, max_new_tokens=3, greedy=True, batch_size=8, progress=False
  )
  prefill_length = len(tokenizer("I cannot", add_special_tokens=False)["input_ids"])
  glued = 0
  for sample, length in [(s, prefill_length) for s in by_prefix] + [(s, 3) for s in by_tokens]:
    prefill_ids = sample.prompt_ids[-length:]
    assert tokenizer.decode(prefill_ids) == sample.prefill
    assert sample.response == tokenizer.decode(prefill_ids + sample.token_ids, skip_special_tokens=True)
    assert sample.response.startswith(sample.prefill)
    glued += sample.response != sample.prefill + sample.text
  # Continuations that start a new word: apart they glue onto the prefill, together they do not.
  word_starts = [s for s in by_prefix if tokenizer.convert_ids_to_tokens(s.token_ids[0]).startswith("▁")]
  assert word_starts and all(s.response.startswith("I cannot ") for s in word_starts)
  assert glued >= len(word_starts)


# -- stop strings: base-format answers end at the next "###" header ---------------------------------------


def _successor_model(path, tokenizer, chain):
  """A model whose greedy continuation of any prompt is `chain` (token strings), then round again."""
  ids = tokenizer.convert_tokens_to_ids(chain)
  assert tokenizer.unk_token_id not in ids and len(set(ids)) == len(ids), chain
  return load_pretrained(successor_model_dir(path, tokenizer, dict(zip(ids, ids[1:] + ids[:1])), default=ids[0]))[0]


# "The cat\n\n### Instruction: ### Response": the first "###" spans two tokens ("##" + "#"), which no stop
# id catches, so only the cut of the text stops it; the second is the single token "▁###", a stop id.
CHAIN = ["▁The", "▁cat", "\n\n", "##", "#", "▁Instruction", ":", "▁###", "▁Response"]


@pytest.fixture(scope="module")
def chain_sampler(tmp_path_factory):
  from tests.data.tokenizers import sentencepiece_like_tokenizer

  tokenizer = sentencepiece_like_tokenizer()
  model = _successor_model(tmp_path_factory.mktemp("chain") / "model", tokenizer, CHAIN)
  return Sampler(model, tokenizer, "base")


def test_base_format_samples_end_before_the_next_header(chain_sampler):
  sampler = chain_sampler
  tokenizer = sampler.tokenizer
  assert sampler.stop_strings == ("###",)
  convs = _convs(["Say hi.", "Name a colour."])
  chain_ids = tokenizer.convert_tokens_to_ids(CHAIN)
  # Without stop strings the model runs on into the header it invents: the construction works.
  free = Sampler(sampler.model, tokenizer, "base", stop_strings=()).sample(
    convs, max_new_tokens=12, greedy=True, progress=False
  )
  for sample in free:
    assert sample.token_ids == (chain_ids * 2)[:12] and not sample.stopped
    assert sample.text.startswith("The cat\n\n### Instruction: ### Response")
  stopped = sampler.sample(convs, max_new_tokens=12, greedy=True, progress=False)
  prefilled = sampler.sample(
    convs, responses=["### Step 1: the answer."] * 2, prefill_tokens=4, max_new_tokens=12, greedy=True, progress=False
  )
  for sample in stopped + prefilled:
    assert sample.text == "The cat\n\n" and "###" not in sample.text
    # The tokens end with the one that completes the stop string, as they end with a stop token.
    assert sample.token_ids == chain_ids[:5] and sample.stopped
  for sample in stopped:
    assert sample.response == "The cat\n\n"
  for sample in prefilled:
    # The prefill's own "###" is the prefilled answer's; only the continuation's ends the response.
    assert sample.prefill.startswith("###")
    full = tokenizer.decode(
      tokenizer(sample.prefill, add_special_tokens=False)["input_ids"] + chain_ids, skip_special_tokens=True
    )
    assert sample.response == full[: full.index("###", 3)] and sample.response.endswith("The cat\n\n")


def test_stop_strings_become_stop_ids_of_every_token_that_holds_them(chain_sampler):
  """The jitted loop ends on ids; every vocabulary token whose text contains "###" is one."""
  from deepalign_jax.sampling.sampler import stop_string_token_ids
  from tests.real_checkpoints import real_tokenizer

  sampler = chain_sampler
  vocab = sampler.tokenizer.get_vocab()
  assert vocab["▁###"] in sampler.stop_token_ids and vocab["##"] not in sampler.stop_token_ids
  assert set(sampler.renderer.stop_token_ids) <= set(sampler.stop_token_ids)
  # The single-token header ends the loop itself: generation stops at "▁###", not at max_new_tokens.
  prompt = sampler.prompt(_convs(["Say hi."])[0]).ids
  out = generate(sampler.model, [prompt], max_new_tokens=20, greedy=True, stop_tokens=sampler.stop_token_ids)
  assert out.lengths[0] == CHAIN.index("▁###") + 1
  smollm2 = load_tokenizer(real_tokenizer("smollm2"))
  ids = stop_string_token_ids(smollm2, ("###",))
  assert set(smollm2.convert_tokens_to_ids(["###", "Ġ###", "####"])) <= set(ids)
  assert all("###" in smollm2.decode([i]) for i in ids) and len(ids) < 50
  assert Sampler(sampler.model, sampler.tokenizer, "llama2").stop_strings == ()


def test_cut_at_stop_strings(chain_sampler):
  from deepalign_jax.sampling.sampler import cut_at_stop_strings

  tokenizer = chain_sampler.tokenizer
  encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
  tokens = encode("Sure, here is the answer.\n\n### Instruction:\nSay hi.")
  kept, text, response, cut = cut_at_stop_strings(tokenizer, [], tokens, ("###",))
  assert cut and text == response == "Sure, here is the answer.\n\n"
  assert kept == tokens[: len(kept)]
  assert "###" in tokenizer.decode(kept) and "###" not in tokenizer.decode(kept[:-1])
  # The first of several stop strings wins; without one nothing changes.
  assert cut_at_stop_strings(tokenizer, [], tokens, ("###", "answer"))[1] == "Sure, here is the "
  plain = encode("Sure, here is the answer.")
  assert cut_at_stop_strings(tokenizer, encode("I cannot"), plain, ("###",)) == (
    plain,
    tokenizer.decode(plain),
    tokenizer.decode(encode("I cannot") + plain),
    False,
  )
