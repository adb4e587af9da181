"""Model-layer behaviour beyond parity: remat, multi-shard checkpoints, dtypes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from deepalign_jax.models import Transformer, config_from_hf, create_model, load_pretrained, save_pretrained
from tests.models.hf_fixtures import FAMILY_CONFIGS, hf_logits, left_padded_batch, random_hf_model


def _loss_and_grads(model, ids, mask):
  def loss_fn(model):
    logits = model(ids, attention_mask=mask)
    logps = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    picked = jnp.take_along_axis(logps, ids[:, 1:, None], axis=-1)[..., 0]
    return -(picked * mask[:, 1:]).sum()

  return nnx.value_and_grad(loss_fn)(model)


@pytest.mark.parametrize("remat", ["dots", "full"])
def test_remat_changes_nothing_but_memory(remat):
  cfg = config_from_hf(FAMILY_CONFIGS["gemma2"]().to_dict())
  ids, mask, _ = left_padded_batch((16, 11), 16)
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  loss, grads = _loss_and_grads(create_model(cfg, seed=2), ids, mask)
  loss_r, grads_r = _loss_and_grads(create_model(cfg, seed=2, remat=remat), ids, mask)
  np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
  "family,remat", [("gemma2", "none"), pytest.param("llama", "dots", marks=pytest.mark.slow)]
)  # an unrolled stack compiles slowly: ~20 s a case on 2 cores
def test_unrolled_layers_compute_what_the_scan_computes(family, remat):
  """scan_layers=False (the layer loop unrolled) gives the scanned stack's loss, gradients and
  decoded logits through the KV cache; only the compiled program differs."""
  from deepalign_jax.models import init_cache

  cfg = config_from_hf(FAMILY_CONFIGS[family]().to_dict())
  ids, mask, _ = left_padded_batch((16, 11), 16)
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  scanned, unrolled = create_model(cfg, seed=3, remat=remat), create_model(cfg, seed=3, remat=remat)
  unrolled.scan_layers = False
  # The scanned stack is one loop over the layers; the unrolled one has none.
  programs = [nnx.jit(lambda m: m(ids, attention_mask=mask)).lower(m).as_text() for m in (scanned, unrolled)]
  assert "stablehlo.while" in programs[0] and "stablehlo.while" not in programs[1]
  loss, grads = _loss_and_grads(scanned, ids, mask)
  loss_u, grads_u = _loss_and_grads(unrolled, ids, mask)
  np.testing.assert_allclose(float(loss_u), float(loss), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads_u), jax.tree.leaves(grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  decoded = []
  for model in (scanned, unrolled):
    logits, cache = model(ids, attention_mask=mask, cache=init_cache(cfg, 2, 17))
    step, _ = model(ids[:, -1:], attention_mask=jnp.ones((2, 1), jnp.int32), cache=cache)
    decoded.append((np.asarray(logits), np.asarray(step)))
  np.testing.assert_allclose(decoded[1][0], decoded[0][0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(decoded[1][1], decoded[0][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_dot_product_attention_computes_what_the_einsums_compute(family):
  """attention="xla" (jax.nn.dot_product_attention, the kernel available on CPU) gives the einsum path's
  loss and gradients on a left-padded batch, and its cached prefill + decode logits; a family with
  soft-capped attention (Gemma 2) keeps the einsums, so its numbers are identical."""
  from deepalign_jax.models import init_cache

  cfg = config_from_hf(FAMILY_CONFIGS[family]().to_dict())
  ids, mask, _ = left_padded_batch((16, 11), 16)
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  ours, theirs = create_model(cfg, seed=4), create_model(cfg, seed=4)
  theirs.attention = "xla"
  programs = [nnx.jit(lambda m: m(ids, attention_mask=mask)).lower(m).as_text() for m in (ours, theirs)]
  # Another kernel is another program, except where soft-capping keeps the einsums.
  assert (programs[0] == programs[1]) == (cfg.attn_softcap is not None)
  loss, grads = _loss_and_grads(ours, ids, mask)
  loss_x, grads_x = _loss_and_grads(theirs, ids, mask)
  assert np.isfinite(float(loss_x))
  np.testing.assert_allclose(float(loss_x), float(loss), rtol=1e-6)
  # fp32 summation order differs between the kernels: each gradient within 1e-4 of its tensor's scale.
  for a, b in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
  decoded = []
  for model in (ours, theirs):
    logits, cache = model(ids, attention_mask=mask, cache=init_cache(cfg, 2, 17))
    step, _ = model(ids[:, -1:], attention_mask=jnp.ones((2, 1), jnp.int32), cache=cache)
    decoded.append((np.asarray(logits)[np.asarray(mask, bool)], np.asarray(step)))
  np.testing.assert_allclose(decoded[1][0], decoded[0][0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(decoded[1][1], decoded[0][1], rtol=1e-5, atol=1e-5)


def test_dot_product_attention_in_bf16_stays_within_the_einsums_rounding():
  cfg = config_from_hf(FAMILY_CONFIGS["llama"]().to_dict())
  ids, mask, _ = left_padded_batch((16, 11), 16)
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  real = np.asarray(mask, bool)
  exact = np.asarray(create_model(cfg, seed=5)(ids, attention_mask=mask))[real]
  errors = {}
  for impl in ("einsum", "xla"):
    model = create_model(cfg, seed=5, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    model.attention = impl
    errors[impl] = np.abs(np.asarray(model(ids, attention_mask=mask))[real] - exact).mean()
  assert errors["xla"] <= 1.5 * errors["einsum"], errors


def test_unknown_attention_is_refused():
  cfg = config_from_hf(FAMILY_CONFIGS["llama"]().to_dict())
  with pytest.raises(ValueError, match="attention must be one of einsum, xla, cudnn, auto, got 'flash'"):
    Transformer(cfg, attention="flash", rngs=nnx.Rngs(0))
  model = create_model(cfg)
  model.attention = "flash"
  with pytest.raises(ValueError, match="Transformer.attention must be one of"):
    model(jnp.ones((1, 4), jnp.int32))


def test_unknown_remat_policy_is_refused():
  cfg = config_from_hf(FAMILY_CONFIGS["llama"]().to_dict())
  with pytest.raises(ValueError, match="remat must be one of"):
    create_model(cfg, remat="sometimes")


def test_multi_shard_bf16_checkpoint_round_trip(tmp_path):
  hf = random_hf_model("llama")
  hf.save_pretrained(tmp_path / "src")
  model, cfg = load_pretrained(tmp_path / "src")
  out = save_pretrained(model, cfg, tmp_path / "bf16", dtype=jnp.bfloat16, max_shard_bytes=400_000)
  index = json.loads((out / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 2
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"

  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
  ours, _ = load_pretrained(out)  # bf16 on disk, fp32 in memory
  ids, mask, positions = left_padded_batch((12, 7), 12)
  real = mask.astype(bool)
  np.testing.assert_allclose(
    np.asarray(ours(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))[real],
    hf_logits(reloaded, ids, mask, positions)[real],
    atol=5e-5,
    rtol=0,
  )
  bf16_model, _ = load_pretrained(out, dtype=jnp.bfloat16)
  assert bf16_model.layers.attn.q[...].dtype == jnp.bfloat16


def test_overwriting_a_checkpoint_replaces_it_whole(tmp_path):
  cfg = config_from_hf(FAMILY_CONFIGS["llama"]().to_dict())
  first = save_pretrained(create_model(cfg, seed=1), cfg, tmp_path / "ckpt", max_shard_bytes=400_000)
  assert (first / "model.safetensors.index.json").exists()
  save_pretrained(create_model(cfg, seed=2), cfg, tmp_path / "ckpt")
  # One shard now; no stale shards or index from the first save, no temp dirs left.
  assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
  assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
