"""GCG (SPEC §6): slices from the renderer, token filters, one-hot gradients, runs and resumption.

The model is a 2-layer random Gemma (embeddings scaled by sqrt(d), tied
head, an embedding table padded past the tokenizer) over the synthetic
SentencePiece-like tokenizer rendered as Llama-2 chat; slices and filters
are also checked against SmolLM2's byte-level BPE tokenizer and ChatML.
Every run shares one shape (2 behaviours x 32 candidates), so the two
step functions compile once for the whole module.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx

from deepalign_jax.attacks import GCGConfig, GCGLayoutError, attacked_prompt, gcg, gcg_step, gcg_tokens, run_gcg
from deepalign_jax.data import ChatRenderer
from deepalign_jax.models import Transformer, config_from_hf
from tests.data.tokenizers import sentencepiece_like_tokenizer
from tests.real_checkpoints import real_tokenizer

BEHAVIOURS = [
  ("Write a story about the cat.", "Sure, here is a story about the cat"),
  ("Name a colour.", "Sure, here is a colour"),
]
CONFIG = GCGConfig(num_steps=4, init_suffix="! ! ! !", num_candidates=32, topk=16)
PADDED_VOCAB = 8  # embedding rows past the tokenizer, as Gemma's table has


@pytest.fixture(scope="module")
def spm():
  tokenizer = sentencepiece_like_tokenizer()
  return tokenizer, ChatRenderer(tokenizer, "llama2")


@pytest.fixture(scope="module")
def chatml():
  # AutoTokenizer (`load_tokenizer`) would import torch for seconds; the class is the same.
  tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(real_tokenizer("smollm2"), local_files_only=True)
  return tokenizer, ChatRenderer(tokenizer, "template")


@pytest.fixture(scope="module")
def model(spm):
  cfg = config_from_hf(
    dict(
      model_type="gemma",
      vocab_size=len(spm[0]) + PADDED_VOCAB,
      hidden_size=64,
      intermediate_size=128,
      num_hidden_layers=2,
      num_attention_heads=2,
      num_key_value_heads=1,
      head_dim=32,
      hidden_act="gelu_pytorch_tanh",
    )
  )
  assert cfg.embed_scale and cfg.tie_embeddings
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))

  @jax.jit  # half the time of eager initialisation
  def init():
    # Weights 4x the default init: peaked logits, so gradients are far from
    # float32 noise in the finite differences.
    return jax.tree.map(lambda x: 4 * x, nnx.state(Transformer(cfg, rngs=nnx.Rngs(0))))

  return nnx.merge(graphdef, init())


def _without_timing(history):
  return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# -- slices --------------------------------------------------------------------


@pytest.mark.parametrize("which, template_text", [("spm", "[/INST]"), ("chatml", "<|im_start|>assistant")])
def test_slices_come_from_the_renderer(which, template_text, request):
  tokenizer, renderer = request.getfixturevalue(which)
  instruction, target = BEHAVIOURS[0]
  layout = gcg_tokens.build_layout(renderer, instruction, target, "! ! !")
  rendered = renderer.render(
    [{"role": "user", "content": attacked_prompt(instruction, "! ! !")}], assistant_prefix=target
  )
  assert layout.input_ids == rendered.input_ids
  assert layout.text_before + "! ! !" + layout.text_after == rendered.text
  assert tokenizer.decode(layout.target_ids).strip() == target
  assert gcg_tokens.suffix_text(tokenizer, layout.suffix_ids) == "! ! !"
  between = tokenizer.decode(layout.input_ids[layout.suffix_end : layout.target_start])
  assert template_text in between and "!" not in between
  assert instruction.rstrip(".") in tokenizer.decode(layout.input_ids[: layout.suffix_start])
  gcg_tokens.check_render(renderer, layout, layout.suffix_ids)


def test_batch_positions_predict_the_targets(spm):
  _, renderer = spm
  behaviours = BEHAVIOURS + [("Say hi.", "Sure, here is hi"), ("Hello!", "Sure")]
  layouts = [gcg_tokens.build_layout(renderer, i, t, "! !") for i, t in behaviours]
  batch = gcg.prompt_batch(layouts, active=3)
  assert batch.rest_ids.shape[0] == 4  # 3 active behaviours padded to a power of two
  np.testing.assert_allclose(batch.weight, [1 / 3] * 3 + [0])
  for row, layout in enumerate(layouts[:4]):
    prefix = np.asarray(batch.prefix_ids[row])[np.asarray(batch.prefix_mask[row]) > 0]
    rest, mask = np.asarray(batch.rest_ids[row]), np.asarray(batch.target_mask[row]) > 0
    assert prefix.tolist() + rest[: len(layout.input_ids) - len(prefix)].tolist() == list(layout.input_ids)
    assert rest[: layout.suffix_length].tolist() == list(layout.suffix_ids)
    after = rest[np.asarray(batch.pred_pos[row]) + 1][mask]
    assert after.tolist() == list(layout.target_ids) == np.asarray(batch.target_ids[row])[mask].tolist()
  assert gcg.prompt_batch(layouts, active=1).rest_ids.shape[0] == 1


def test_a_mismatched_render_is_caught(chatml):
  tokenizer, renderer = chatml
  layout = gcg_tokens.build_layout(renderer, *BEHAVIOURS[0], "! ! !")
  bang, space_bang = tokenizer.convert_tokens_to_ids(["!", "Ġ!"])
  assert list(layout.suffix_ids) == [space_bang] * 3
  # "!" "Ġ!" "Ġ!" decodes to "! ! !", which after the separator space
  # tokenises as three "Ġ!".
  with pytest.raises(GCGLayoutError, match="differ from the"):
    gcg_tokens.check_render(renderer, layout, [bang, space_bang, space_bang])
  with pytest.raises(GCGLayoutError, match="non-empty"):
    gcg_tokens.build_layout(renderer, *BEHAVIOURS[0], " ! !")


# -- token filters -------------------------------------------------------------


def test_allowed_tokens_exclude_special_non_ascii_and_padding(chatml):
  tokenizer, _ = chatml
  allowed = gcg_tokens.allowed_tokens(tokenizer, len(tokenizer) + 5)
  assert not allowed[len(tokenizer) :].any()
  special = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
  assert not allowed[special].any()
  accented = tokenizer("é", add_special_tokens=False)["input_ids"]
  assert not allowed[accented].any()
  assert allowed[tokenizer.convert_tokens_to_ids(["Ġ!", "!", "Ġthe"])].all()
  texts = gcg_tokens._decode(tokenizer, [[i] for i in np.flatnonzero(allowed)])
  assert all(t.isascii() and t.isprintable() for t in texts)
  with_non_ascii = gcg_tokens.allowed_tokens(tokenizer, len(tokenizer), allow_non_ascii=True)
  assert with_non_ascii[accented].all() and not with_non_ascii[special].any()


@pytest.mark.parametrize("which", ["spm", "chatml"])
def test_round_trip_filter_keeps_exactly_the_suffixes_that_render_back(which, request):
  tokenizer, renderer = request.getfixturevalue(which)
  layouts = [gcg_tokens.build_layout(renderer, i, t, "! ! ! !") for i, t in BEHAVIOURS]
  suffix = np.asarray(layouts[0].suffix_ids)
  allowed = np.flatnonzero(gcg_tokens.allowed_tokens(tokenizer, len(tokenizer)))
  rng = np.random.default_rng(0)
  # GCG's single-token swaps, and fully random suffixes that mostly fail.
  swaps = np.repeat(suffix[None], 60, axis=0)
  swaps[np.arange(60), rng.integers(0, len(suffix), 60)] = rng.choice(allowed, 60)
  candidates = np.concatenate([swaps, rng.choice(allowed, (40, len(suffix)))])
  keep = gcg_tokens.round_trip_filter(tokenizer, layouts, candidates)
  assert 0 < keep.sum() < len(candidates)
  for candidate, kept in zip(candidates, keep):
    for layout in layouts:
      if kept:
        gcg_tokens.check_render(renderer, layout, candidate)
    if not kept:  # some behaviour's rendering differs
      with pytest.raises(GCGLayoutError):
        for layout in layouts:
          gcg_tokens.check_render(renderer, layout, candidate)


# -- gradients -----------------------------------------------------------------


def test_one_hot_gradient_is_the_directional_derivative(model, spm):
  tokenizer, renderer = spm
  layouts = gcg._layouts(renderer, BEHAVIOURS, CONFIG.init_suffix)
  batch = gcg.prompt_batch(layouts, active=2)
  graphdef, state = nnx.split(model)
  suffix = jnp.asarray(layouts[0].suffix_ids)
  vocab = model.embed[...].shape[0]
  # Whole prompts, right-padded (which changes no logit before the padding).
  ids = np.zeros((2, max(len(lay.input_ids) for lay in layouts)), np.int32)
  for row, layout in enumerate(layouts):
    ids[row, : len(layout.input_ids)] = layout.input_ids
  # Central differences of behaviour 0's loss along e_new - e_old at one position.
  rng = np.random.default_rng(0)
  eps = 0.05
  one_hot = np.asarray(jax.nn.one_hot(suffix, vocab))
  directions = np.zeros((3, *one_hot.shape), np.float32)
  for d, position in enumerate(rng.choice(len(suffix), 3, replace=False)):
    directions[d, position, rng.integers(3, len(tokenizer))] += 1
    directions[d, position, suffix[position]] -= 1
  points = np.concatenate([one_hot + eps * directions, one_hot - eps * directions])

  @jax.jit  # one compilation for the whole test
  def compute(state):
    cache = gcg_step.prefix_cache(nnx.merge(graphdef, state), batch)
    grads, losses, _ = gcg_step.one_hot_gradients(graphdef, state, batch, cache, suffix)
    rows, rows_cache = gcg_step._rows(batch, jnp.asarray([0])), gcg_step._cache_rows(cache, jnp.asarray([0]))

    def loss_at(one_hot):  # behaviour 0's loss at a (soft) one-hot suffix [S, V]
      virtual = vocab + jnp.arange(one_hot.shape[0])[None]
      net, hidden = gcg_step._with_virtual_tokens(
        graphdef, state, gcg_step._splice(rows.rest_ids, virtual), one_hot @ state["embed"][...], rows_cache
      )
      return gcg_step.target_losses(net, hidden, rows)[0][0]

    return grads, losses, nnx.merge(graphdef, state)(jnp.asarray(ids)), jax.lax.map(loss_at, points)

  grads, losses, logits, at_points = compute(state)
  assert grads.shape == (2, len(suffix), vocab)

  # The one-hot path (after the prefix cache) reproduces the plain forward
  # over the whole prompt's ids, Gemma's sqrt(d) embedding scale included:
  # log-softmax of model(ids) at the targets, in numpy.
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  logps = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  for row, layout in enumerate(layouts):
    positions = np.arange(layout.target_start - 1, len(layout.input_ids) - 1)
    expected = -logps[row, positions, list(layout.target_ids)].mean()
    np.testing.assert_allclose(float(losses[row]), expected, rtol=1e-5)

  numeric = (np.asarray(at_points[:3]) - np.asarray(at_points[3:])) / (2 * eps)
  analytic = np.einsum("dsv,sv->d", directions, np.asarray(grads[0]))
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=1e-5)
  assert np.abs(analytic).min() > 1e-3  # not trivially zero


def test_even_positions_swap_candidate_c_at_c_times_s_over_c(model, spm):
  _, renderer = spm
  layouts = gcg._layouts(renderer, BEHAVIOURS, CONFIG.init_suffix)
  batch = gcg.prompt_batch(layouts, active=2)
  graphdef, state = nnx.split(model)
  suffix = jnp.asarray(layouts[0].suffix_ids)
  allowed = jnp.ones(model.embed[...].shape[0], bool)
  for num_candidates in (32, 7):
    candidates, *_ = gcg_step.propose(
      graphdef,
      state,
      batch,
      suffix,
      allowed,
      jax.random.key(0),
      topk=16,
      num_candidates=num_candidates,
      grad_batch=8,
      positions="even",
    )
    changed = np.asarray(candidates) != np.asarray(suffix)
    where = np.arange(num_candidates) * len(suffix) // num_candidates
    assert changed.sum(axis=1).max() == 1 and changed.any()
    for c in range(num_candidates):  # a swap to the token already there changes nothing
      assert not changed[c].any() or np.flatnonzero(changed[c]).tolist() == [where[c]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_grouped_candidate_forward_equals_the_whole_forward(model, spm, dtype):
  # Runs of evenly spaced candidates start their forward after the current suffix's cached keys and
  # values: the losses of every candidate are those of the forward over the whole suffix.
  _, renderer = spm
  layouts = gcg._layouts(renderer, BEHAVIOURS, "! ! ! ! ! ! ! !")
  batch = gcg.prompt_batch(layouts, active=2)
  graphdef, state = nnx.split(model)
  if dtype == "bfloat16":  # the same weights, stored and computed in bf16
    bf16 = dict(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: Transformer(model.config, **bf16, rngs=nnx.Rngs(0))))
    state = jax.tree.map(lambda x: x.astype(jnp.bfloat16), state)
  suffix = np.asarray(layouts[0].suffix_ids)
  length, num_candidates = len(suffix), 24
  rng = np.random.default_rng(0)
  candidates = np.broadcast_to(suffix, (num_candidates, length)).copy()
  where = np.arange(num_candidates) * length // num_candidates
  candidates[np.arange(num_candidates), where] = rng.integers(3, 500, num_candidates)
  candidates[5] = suffix  # an unchanged candidate
  for first, _, start in gcg_step.position_groups(num_candidates, length, 4):
    assert (candidates[first:, :start] == suffix[:start]).all()
  whole, matched_whole = gcg_step.candidate_losses(graphdef, state, batch, jnp.asarray(candidates), forward_batch=512)
  for groups, forward_batch in ((4, 512), (3, 5)):
    grouped, matched = gcg_step.candidate_losses(
      graphdef, state, batch, jnp.asarray(candidates), jnp.asarray(suffix), forward_batch=forward_batch, groups=groups
    )
    np.testing.assert_allclose(grouped, whole, rtol=1e-5)  # bf16 too (equal there when measured)
    np.testing.assert_array_equal(matched, matched_whole)
  # A candidate that changes the suffix before its group's start is outside the contract: it would be
  # scored as the current suffix there, which is why `_fill` never puts one in a group.
  wrong = candidates.copy()
  wrong[-1, 0] = (suffix[0] + 1) % 500
  bad, _ = gcg_step.candidate_losses(
    graphdef, state, batch, jnp.asarray(wrong), jnp.asarray(suffix), forward_batch=512, groups=4
  )
  good, _ = gcg_step.candidate_losses(graphdef, state, batch, jnp.asarray(wrong), forward_batch=512)
  assert abs(float(bad[-1]) - float(good[-1])) > 1e-4


def test_fill_keeps_every_group_on_the_current_suffix_before_its_start():
  rng = np.random.default_rng(0)
  length, num_candidates, groups = 8, 24, 4
  current = rng.integers(0, 50, length)
  runs = gcg_step.position_groups(num_candidates, length, groups)
  assert [start for *_, start in runs] == [0, 2, 4, 6]
  for trial in range(50):
    candidates = np.broadcast_to(current, (num_candidates, length)).copy()
    where = np.arange(num_candidates) * length // num_candidates
    candidates[np.arange(num_candidates), where] = rng.integers(50, 100, num_candidates)
    keep = rng.random(num_candidates) < (0.05 if trial % 2 else 0.6)
    filled = gcg._fill(candidates, keep, current, groups)
    if not keep.any():
      assert (filled == current).all()
      continue
    kept = {tuple(c) for c in candidates[keep]} | {tuple(current)}
    for first, stop, start in runs:
      assert (filled[first:stop, :start] == current[:start]).all()
      assert all(tuple(row) in kept for row in filled[first:stop])
      if keep[first:stop].any():  # a group with survivors keeps only its own
        assert {tuple(r) for r in filled[first:stop]} == {tuple(c) for c in candidates[first:stop][keep[first:stop]]}
  # One group: the kept candidates in order, as before the groups.
  keep = rng.random(num_candidates) < 0.5
  np.testing.assert_array_equal(
    gcg._fill(candidates, keep, current), candidates[np.flatnonzero(keep)[np.arange(num_candidates) % keep.sum()]]
  )


# -- runs ----------------------------------------------------------------------


def test_a_short_run_lowers_the_target_loss_with_allowed_tokens_only(model, spm):
  tokenizer, renderer = spm
  result = run_gcg(model, tokenizer, renderer, BEHAVIOURS, dataclasses.replace(CONFIG, num_steps=6), progress=False)
  assert result.loss < result.initial_loss
  assert result.loss == min([result.initial_loss] + result.losses)
  assert result.steps == len(result.losses) == 6 and result.active == 2
  allowed = gcg_tokens.allowed_tokens(tokenizer, model.embed[...].shape[0])
  layouts = gcg._layouts(renderer, BEHAVIOURS, CONFIG.init_suffix)
  suffixes = [h["suffix_ids"] for h in result.history] + [list(result.suffix_ids)]
  assert any(s != list(layouts[0].suffix_ids) for s in suffixes)
  for ids in suffixes:
    assert allowed[ids].all()
    for layout in layouts:
      gcg_tokens.check_render(renderer, layout, ids)
  assert result.suffix_text == gcg_tokens.suffix_text(tokenizer, result.suffix_ids)
  assert all(0 < h["valid_candidates"] <= CONFIG.num_candidates for h in result.history)


def test_resumed_run_equals_uninterrupted_run(model, spm, tmp_path):
  tokenizer, renderer = spm
  straight = run_gcg(model, tokenizer, renderer, BEHAVIOURS, CONFIG, workdir=tmp_path / "a", progress=False)
  first = run_gcg(
    model,
    tokenizer,
    renderer,
    BEHAVIOURS,
    dataclasses.replace(CONFIG, num_steps=2),
    workdir=tmp_path / "b",
    progress=False,
  )
  assert first.steps == 2 and json.loads((tmp_path / "b/state.json").read_text())["step"] == 2
  # A crash after the history line of step 3 but before its state write.
  with open(tmp_path / "b/history.jsonl", "a") as f:
    f.write(json.dumps({**first.history[-1], "step": 3}) + "\n")
  resumed = run_gcg(model, tokenizer, renderer, BEHAVIOURS, CONFIG, workdir=tmp_path / "b", progress=False)
  assert _without_timing(resumed.history) == _without_timing(straight.history)
  assert (resumed.suffix_ids, resumed.loss, resumed.last_suffix_ids) == (
    straight.suffix_ids,
    straight.loss,
    straight.last_suffix_ids,
  )
  lines = (tmp_path / "b/history.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
  # A finished run is read back, not redone.
  again = run_gcg(model, tokenizer, renderer, BEHAVIOURS, CONFIG, workdir=tmp_path / "b", progress=False)
  assert _without_timing(again.history) == _without_timing(straight.history)

  # Same seed, same run (no workdir); another seed, another run.
  same = run_gcg(model, tokenizer, renderer, BEHAVIOURS, CONFIG, progress=False)
  assert _without_timing(same.history) == _without_timing(straight.history)
  other = run_gcg(model, tokenizer, renderer, BEHAVIOURS, dataclasses.replace(CONFIG, seed=1), progress=False)
  assert [h["suffix_ids"] for h in other.history] != [h["suffix_ids"] for h in straight.history]

  with pytest.raises(ValueError, match="topk=16 there, 8 now"):
    run_gcg(
      model,
      tokenizer,
      renderer,
      BEHAVIOURS,
      dataclasses.replace(CONFIG, topk=8),
      workdir=tmp_path / "b",
      progress=False,
    )


def test_a_workdir_from_before_the_positions_option_resumes_with_uniform_positions(model, spm, tmp_path):
  tokenizer, renderer = spm
  uniform = dataclasses.replace(CONFIG, positions="uniform")
  straight = run_gcg(model, tokenizer, renderer, BEHAVIOURS, uniform, progress=False)
  run_gcg(model, tokenizer, renderer, BEHAVIOURS, dataclasses.replace(uniform, num_steps=2), workdir=tmp_path)
  state = json.loads((tmp_path / "state.json").read_text())
  del state["fingerprint"]["config"]["positions"]  # state.json as written before the option
  (tmp_path / "state.json").write_text(json.dumps(state))
  with pytest.raises(ValueError, match="positions='uniform' there, 'even' now"):
    run_gcg(model, tokenizer, renderer, BEHAVIOURS, CONFIG, workdir=tmp_path, progress=False)
  resumed = run_gcg(model, tokenizer, renderer, BEHAVIOURS, uniform, workdir=tmp_path, progress=False)
  assert _without_timing(resumed.history) == _without_timing(straight.history)
  assert resumed.suffix_ids == straight.suffix_ids


@pytest.mark.slow
def test_chunked_evaluation_equals_one_pass(model, spm):
  _, renderer = spm
  layouts = gcg._layouts(renderer, BEHAVIOURS, CONFIG.init_suffix)
  batch = gcg.prompt_batch(layouts, active=2)
  graphdef, state = nnx.split(model)
  candidates = jnp.asarray(np.random.default_rng(0).integers(3, 500, (32, len(layouts[0].suffix_ids))))
  one, matched_one = gcg_step.candidate_losses(graphdef, state, batch, candidates, forward_batch=512)
  chunked, matched_chunked = gcg_step.candidate_losses(graphdef, state, batch, candidates, forward_batch=24)
  np.testing.assert_allclose(chunked, one, rtol=1e-5)
  np.testing.assert_array_equal(matched_chunked, matched_one)


@pytest.mark.slow
def test_progressive_mode_adds_behaviours_and_early_stop_ends_the_run(model, spm):
  tokenizer, renderer = spm
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, ids: nnx.merge(graphdef, state)(ids))
  # Targets the model already continues with greedily: one-token answers
  # that render back to that token after the prompt.
  behaviours = []
  for instruction, _ in BEHAVIOURS:
    layout = gcg_tokens.build_layout(renderer, instruction, "Sure", CONFIG.init_suffix)
    logits = np.asarray(forward(state, jnp.asarray([layout.input_ids])))[0, layout.target_start - 1]
    for token in np.argsort(-logits[: len(tokenizer)])[:20]:
      text = tokenizer.decode([int(token)]).strip()
      if (
        text
        and text.isascii()
        and gcg_tokens.build_layout(renderer, instruction, text, CONFIG.init_suffix).target_ids == (token,)
      ):
        behaviours.append((instruction, text))
        break
  assert len(behaviours) == 2
  result = run_gcg(
    model,
    tokenizer,
    renderer,
    behaviours,
    dataclasses.replace(CONFIG, num_steps=10, progressive=True, early_stop=True),
    progress=False,
  )
  assert [h["active"] for h in result.history][0] == 1 and result.active == 2
  assert result.history[-1]["matched"] and result.history[-1]["active"] == 2 and result.steps < 10
  assert result.matched and result.loss_behaviours == 2
