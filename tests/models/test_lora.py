"""LoRA adapters on the model: exactly the base at initialisation, PEFT's numbers when trained, merged
exports that say the same, sharded along their base weights' axes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from deepalign_jax import sharding
from deepalign_jax.models import (
  add_lora,
  init_cache,
  load_pretrained,
  lora_config,
  merge_lora,
  save_peft_adapter,
  save_pretrained,
)
from deepalign_jax.models.lora import TARGETS
from tests.models.hf_fixtures import hf_logits, left_padded_batch, random_hf_model

ALL = list(TARGETS)
LENGTHS, SEQ = (16, 11, 7), 16


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
  """family → (transformers model, its HF directory), built on first use."""
  built = {}

  def get(family):
    if family not in built:
      hf = random_hf_model(family)
      path = tmp_path_factory.mktemp(family)
      hf.save_pretrained(path)
      built[family] = hf, path
    return built[family]

  return get


def _adapted(path, targets=ALL, layers=(), rank=4, alpha=8.0, mesh=None, **load):
  model, cfg = load_pretrained(path, mesh=mesh, **load)
  return add_lora(model, lora_config(rank=rank, alpha=alpha, dropout=0.0, targets=targets, layers=list(layers))), cfg


def _randomise(model, seed=0, std=0.1):
  """Every adapter weight random (B included), so the adapters change the logits.

  At std 0.1 the update (α/r)·A·B is about the size of the base weights (std 0.06) and moves the
  logits by 80-150% of their scale.  At 0.3 it was six times the base weights in every target: the
  network amplified fp32 rounding so much that two exact computations of it (PyTorch's merged and
  adapted models) differed by 4e-5 relative, too close to the bounds below to test anything."""
  state = nnx.state(model, nnx.LoRAParam)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noisy = [(std * jax.random.normal(k, x.shape, x.dtype)).astype(x.dtype) for k, x in zip(keys, leaves)]
  noisy = [jax.device_put(n, x.sharding) for n, x in zip(noisy, leaves)]
  nnx.update(model, jax.tree.unflatten(treedef, noisy))
  return model


_logits = jax.jit(lambda model, ids, mask: model(ids, attention_mask=mask))
_base_logits = jax.jit(lambda model, ids, mask: model(ids, attention_mask=mask, adapters=False))


@pytest.mark.parametrize(
  "family,layers", [("llama", ()), ("gemma", (1, 3))], ids=["llama_every_layer", "gemma_layers_1_3"]
)
def test_zero_initialised_adapters_give_exactly_the_base_logits(family_dirs, family, layers):
  _, path = family_dirs(family)
  base, _ = load_pretrained(path)
  model, _ = _adapted(path, layers=layers)
  ids, mask, _ = left_padded_batch(LENGTHS, SEQ)
  expected = np.asarray(_logits(base, ids, mask))
  np.testing.assert_array_equal(np.asarray(_logits(model, ids, mask)), expected)
  # The same through the KV cache: a prefill, then one decoded token.
  decode = jax.jit(lambda m, c, i, a: m(i, attention_mask=a, cache=c))
  results = []
  for m in (base, model):
    logits, cache = decode(m, init_cache(m.config, len(LENGTHS), SEQ + 1), ids, mask)
    step, _ = decode(m, cache, ids[:, -1:], np.ones((len(LENGTHS), 1), np.int32))
    results.append((np.asarray(logits), np.asarray(step)))
  np.testing.assert_array_equal(results[1][0], results[0][0])
  np.testing.assert_array_equal(results[1][1], results[0][1])
  # A is random, B zero: the adapters are there, and trained ones would move the logits.
  assert float(jnp.abs(model.lora.q_a[...]).max()) > 0 and float(jnp.abs(model.lora.q_b[...]).max()) == 0


@pytest.mark.parametrize(
  "family,targets,layers",
  [
    ("llama", ALL, ()),
    ("llama", ["q_proj", "v_proj"], ()),
    ("gemma", ["o", "down", "k"], (0, 2)),
    ("gemma3", ALL, (1,)),  # q/k norms after the adapted projections
  ],
  ids=["llama_all", "llama_qv", "gemma_okd_0_2", "gemma3_all_1"],
)
def test_peft_loads_our_adapters_with_the_same_logits_and_our_merged_export_agrees(
  family_dirs, family, targets, layers, tmp_path
):
  _, path = family_dirs(family)
  model, cfg = _adapted(path, targets, layers)
  _randomise(model)
  ids, mask, positions = left_padded_batch(LENGTHS, SEQ)
  real = mask.astype(bool)
  ours = np.asarray(_logits(model, ids, mask))[real]
  base = np.asarray(_base_logits(model, ids, mask))[real]
  scale = np.abs(ours).max()
  assert np.abs(ours - base).max() > 0.05 * scale  # the adapters matter, so the comparison can fail

  adapter = save_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path=str(path))
  written = json.loads((adapter / "adapter_config.json").read_text())
  assert (written["r"], written["lora_alpha"], written["peft_type"]) == (4, 8.0, "LORA")
  torch_base = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
  peft_model = peft.PeftModel.from_pretrained(torch_base, adapter).eval()
  loaded = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
  expected_modules = len(layers or range(cfg.num_layers)) * len(targets)
  assert len(loaded) == 2 * expected_modules  # every adapter we wrote, none missing
  theirs = hf_logits(peft_model, ids, mask, positions)[real]
  assert np.abs(ours - theirs).max() <= 1e-4 * scale  # measured ≤ 4e-6 relative (all four cases)

  merged = merge_lora(model)
  assert merged.lora is None and model.lora is not None  # the adapted model is left as it was
  exported = save_pretrained(merged, cfg, tmp_path / "merged")
  torch_merged = transformers.AutoModelForCausalLM.from_pretrained(
    exported, dtype=torch.float32, attn_implementation="eager"
  )
  merged_theirs = hf_logits(torch_merged, ids, mask, positions)[real]
  assert np.abs(merged_theirs - theirs).max() <= 1e-4 * scale
  assert np.abs(np.asarray(_logits(merged, ids, mask))[real] - ours).max() <= 1e-4 * scale


def test_adapters_are_sharded_along_their_base_weights_axes(family_dirs):
  _, path = family_dirs("llama")
  mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
  model, _ = _adapted(path, mesh=mesh)
  q = model.layers.attn.q.get_value()
  assert q.sharding.is_equivalent_to(NamedSharding(mesh, P(None, "fsdp", "tensor", None)), q.ndim)
  expected = {
    "q_a": P(None, "fsdp", None),  # [layers, embed, rank]
    "q_b": P(None, None, "tensor", None),  # [layers, rank, heads, head_dim]
    "o_a": P(None, "tensor", None, None),  # [layers, heads, head_dim, rank]
    "o_b": P(None, None, "fsdp"),  # [layers, rank, embed]
    "gate_b": P(None, None, "tensor"),  # [layers, rank, mlp]
    "down_a": P(None, "tensor", None),  # [layers, mlp, rank]
  }
  for name, spec in expected.items():
    value = getattr(model.lora, name).get_value()
    assert value.sharding.is_equivalent_to(NamedSharding(mesh, spec), value.ndim), (name, value.sharding)
  # The sharded adapted model computes what the unsharded one does, and its merge stays sharded.
  single, _ = _adapted(path)
  _randomise(single, seed=1)
  _randomise(model, seed=1)
  ids, mask, _ = left_padded_batch(LENGTHS, SEQ)
  sharded, expected = np.asarray(_logits(model, ids, mask)), np.asarray(_logits(single, ids, mask))
  assert np.abs(sharded - expected).max() <= 1e-4 * np.abs(expected).max()  # measured 2.3e-5
  merged_q = merge_lora(model).layers.attn.q.get_value()
  assert merged_q.sharding.is_equivalent_to(q.sharding, q.ndim)


def test_a_bf16_base_keeps_fp32_adapters_and_merges_into_bf16(family_dirs):
  _, path = family_dirs("gemma")
  model, _ = _adapted(path, dtype=jnp.bfloat16)
  assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))} == {jnp.dtype(jnp.float32)}
  _randomise(model, std=0.05)
  ids, mask, _ = left_padded_batch(LENGTHS, SEQ)
  assert np.isfinite(np.asarray(_logits(model, ids, mask))).all()
  merged = merge_lora(model)
  assert merged.layers.attn.q.get_value().dtype == jnp.bfloat16
  assert merged.layers.attn.q.get_value().dtype == model.layers.attn.q.get_value().dtype


@pytest.mark.parametrize(
  "settings,pattern",
  [
    (dict(rank=0), r"^lora\.rank must be a positive integer \(0 turns LoRA off\), got 0$"),
    (dict(rank=4, alpha=-1.0), r"^lora\.alpha must be a positive number .*got -1\.0$"),
    (dict(rank=4, dropout=1.0), r"^lora\.dropout must be in \[0, 1\), got 1\.0$"),
    (dict(rank=4, targets=["q", "qkv"]), r"^lora\.targets: unknown projection 'qkv'; expected some of q, k, v, o"),
    (dict(rank=4, targets="q"), r"^lora\.targets must be a non-empty list of q, k, v, o, gate, up, down, got 'q'$"),
    (dict(rank=4, targets=["q", "q_proj"]), r"^lora\.targets names a projection twice"),
    (dict(rank=4, layers=[0, 9]), r"^lora\.layers: layer 9 does not exist; the model has layers 0\.\.3$"),
    (dict(rank=4, layers=[-1]), r"^lora\.layers must hold layer indices >= 0, got \[-1\]$"),
  ],
)
def test_bad_settings_are_refused_in_one_line_naming_the_key(settings, pattern):
  args = dict(alpha=16.0, dropout=0.0, targets=ALL, layers=[], num_layers=4, **{})
  args.update(settings)
  with pytest.raises(ValueError, match=pattern):
    lora_config(**args)
