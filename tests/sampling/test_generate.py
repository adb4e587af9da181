"""generate(): token-identical greedy decoding, stops, prefilling, sweeps, sharding."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from deepalign_jax import sharding
from deepalign_jax.data import ChatRenderer, load_tokenizer
from deepalign_jax.models import config_from_hf, create_model, load_pretrained
from deepalign_jax.sampling import generate
from deepalign_jax.sampling.filters import SamplingParams
from deepalign_jax.sampling.generate import _generate, left_pad
from tests.models.hf_fixtures import FAMILY_CONFIGS, VOCAB, random_hf_model
from tests.real_checkpoints import real_checkpoint

NEW = 32


def _hf_greedy(hf, prompts, new_tokens, eos=None):
  ids, mask = left_pad(prompts)
  width = ids.shape[1]
  hf.generation_config.eos_token_id = eos
  hf.generation_config.pad_token_id = 0
  with torch.no_grad():
    out = hf.generate(
      input_ids=torch.as_tensor(ids, dtype=torch.long),
      attention_mask=torch.as_tensor(mask),
      do_sample=False,
      max_new_tokens=new_tokens,
      min_new_tokens=None if eos is not None else new_tokens,
    )
  return out.numpy()[:, width:]


def _prompts(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, VOCAB, n).tolist() for n in lengths]


@pytest.fixture(scope="module", params=sorted(FAMILY_CONFIGS))
def family_model(request, tmp_path_factory):
  hf = random_hf_model(request.param)
  path = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(path)
  return hf, load_pretrained(path)[0]


@pytest.fixture(scope="module")
def gemma3_model(tmp_path_factory):
  """One family for behaviour that does not depend on the family (Gemma 3: sliding + global)."""
  hf = random_hf_model("gemma3")
  path = tmp_path_factory.mktemp("gemma3_single")
  hf.save_pretrained(path)
  return hf, load_pretrained(path)[0]


def test_greedy_is_token_identical_to_transformers(family_model):
  hf, model = family_model
  prompts = _prompts((12, 5, 9))  # mixed lengths; 12 + 32 tokens pass the window of 8
  ours = generate(model, prompts, max_new_tokens=NEW, greedy=True)
  np.testing.assert_array_equal(ours.tokens, _hf_greedy(hf, prompts, NEW))
  np.testing.assert_array_equal(ours.lengths, [NEW] * 3)


def test_prefilled_continuation_equals_uninterrupted_generation(family_model):
  _, model = family_model
  prompts = _prompts((10, 6), seed=1)
  whole = generate(model, prompts, max_new_tokens=20, greedy=True).tokens
  # Feed the first k generated tokens back as part of the prompt (prefilling).
  k = 7
  prefilled = [p + whole[row, :k].tolist() for row, p in enumerate(prompts)]
  rest = generate(model, prefilled, max_new_tokens=20 - k, greedy=True).tokens
  np.testing.assert_array_equal(rest, whole[:, k:])


def test_rows_stop_on_stop_tokens_and_the_loop_exits_early(gemma3_model):
  hf, model = gemma3_model
  prompts = _prompts((8, 11, 4), seed=2)
  free = generate(model, prompts, max_new_tokens=NEW, greedy=True).tokens
  # Make each row's 3rd, 5th and 9th generated token a stop token.
  stops = sorted({int(free[0, 2]), int(free[1, 4]), int(free[2, 8])})
  out = generate(model, prompts, max_new_tokens=NEW, greedy=True, stop_tokens=stops, pad_id=-1)
  for row in range(3):
    n = int(out.lengths[row])
    first_stop = next(i for i, t in enumerate(free[row]) if t in stops)
    assert n == first_stop + 1
    np.testing.assert_array_equal(out.tokens[row, :n], free[row, :n])
    assert (out.tokens[row, n:] == -1).all()
  assert out.steps == max(out.lengths) < NEW  # the loop ended when the last row stopped


def test_sweeping_decoding_parameters_does_not_recompile(gemma3_model):
  _, model = gemma3_model
  prompts = _prompts((9, 3), seed=3)
  generate(model, prompts, max_new_tokens=8, temperature=0.5, top_k=5, top_p=0.9, seed=0)
  compiled = _generate._cache_size()
  for temperature, top_k, top_p in [(0.9, 50, 0.6), (1.0, 0, 1.0), (0.05, 1, 0.05)]:
    generate(model, prompts, max_new_tokens=8, temperature=temperature, top_k=top_k, top_p=top_p)
  generate(model, prompts, max_new_tokens=8, temperature=[0.3, 1.0], top_k=[2, 0], greedy=[True, False])
  assert _generate._cache_size() == compiled


@pytest.mark.parametrize("family", ["llama", "gemma3"])  # an lm_head; a tied, soft-capped table
def test_prefill_computes_only_the_last_positions_logits(family):
  # The first token needs the prompt's last position only: logits over every prompt position would
  # cost a [B, width, V] head product (~20% of the prefill's FLOPs at SmolLM2's 49152-word head).
  vocab, width = 499, 13  # no other dimension of the model or the cache is 499 or 13
  model = create_model(config_from_hf({**FAMILY_CONFIGS[family]().to_dict(), "vocab_size": vocab}), seed=0)
  ids, mask = left_pad([[i % vocab for i in p] for p in _prompts((13, 6, 9))], width=width)
  params = SamplingParams.make(3, greedy=True)
  graphdef, state = nnx.split(model)
  args = (ids, mask, params, jax.random.key(0), jnp.asarray([-1], jnp.int32), jnp.int32(0), jnp.int32(vocab))
  hlo = _generate.lower(graphdef, state, *args, max_new_tokens=4).compile().as_text()
  shapes = [tuple(int(d) for d in dims.split(",") if d) for dims in re.findall(r"\w+\[([\d,]*)\]", hlo)]
  assert any(width in shape for shape in shapes) and any(vocab in shape for shape in shapes)
  assert not [shape for shape in shapes if width in shape and vocab in shape]


def test_sampling_is_reproducible_with_a_seed(gemma3_model):
  _, model = gemma3_model
  prompts = _prompts((7, 7, 7), seed=4)
  a = generate(model, prompts, max_new_tokens=12, temperature=1.0, seed=11).tokens
  np.testing.assert_array_equal(a, generate(model, prompts, max_new_tokens=12, seed=11).tokens)
  assert (a != generate(model, prompts, max_new_tokens=12, seed=12).tokens).any()


def test_sharded_generation_equals_single_device(tmp_path):
  random_hf_model("gemma2").save_pretrained(tmp_path)
  single, _ = load_pretrained(tmp_path)
  sharded, _ = load_pretrained(tmp_path, mesh=sharding.make_mesh(data=2, fsdp=2, tensor=2))
  prompts = _prompts((12, 5, 9, 3, 12, 7, 1, 10), seed=5)
  np.testing.assert_array_equal(
    generate(sharded, prompts, max_new_tokens=16, greedy=True).tokens,
    generate(single, prompts, max_new_tokens=16, greedy=True).tokens,
  )


def test_smollm2_greedy_is_token_identical_to_transformers():
  import transformers

  path = real_checkpoint("smollm2")
  model, _ = load_pretrained(path)
  renderer = ChatRenderer(load_tokenizer(path), "template")
  prompts = [
    list(renderer.render([{"role": "user", "content": q}]).input_ids)
    for q in (
      "What is the capital of France?",
      "Name three colours.",
      "Write one sentence about autumn leaves falling.",
    )
  ]
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
  ours = generate(model, prompts, max_new_tokens=NEW, greedy=True)
  np.testing.assert_array_equal(ours.tokens, _hf_greedy(hf, prompts, NEW))


def test_bad_arguments_are_refused(gemma3_model):
  _, model = gemma3_model
  with pytest.raises(ValueError, match="no prompt may be empty"):
    generate(model, [[1, 2], []], max_new_tokens=4)
  with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
    generate(model, [[1, 2]], max_new_tokens=0)
