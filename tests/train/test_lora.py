"""LoRA in the train step and the training run: only the adapters train, the base is the free reference,
checkpoints and exports hold what they should, resumed runs equal straight ones."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from deepalign_jax import losses, sharding
from deepalign_jax.models import add_lora, config_from_hf, create_model, load_pretrained, lora_config, save_pretrained
from deepalign_jax.models.lora import TARGETS
from deepalign_jax.train import (
  LossConfig,
  OptimizerConfig,
  init_train_state,
  make_optimizer,
  optimizer_hyperparameters,
  shared_train_step,
  split_loss_config,
  target_logps,
  train_step,
)
from deepalign_jax.train.state import init_adapter_train_state
from tests.models.hf_fixtures import FAMILY_CONFIGS
from tests.train.test_step import SGD, _as_micro, _assert_updates_close, _examples, _relative_difference, _with_ref

ALL = list(TARGETS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """family → the HF directory of a random model of it (created once: loading is cheaper than creating)."""
  built = {}

  def get(family):
    if family not in built:
      cfg = config_from_hf(FAMILY_CONFIGS[family]().to_dict())
      built[family] = save_pretrained(create_model(cfg, seed=0), cfg, tmp_path_factory.mktemp(family) / "model")
    return built[family]

  return get


def _lora_model(path, *, layers=(), targets=ALL, rank=4, alpha=8.0, dropout=0.0, b_std=0.0, mesh=None, **kw):
  """The model at `path` with adapters; b_std > 0: B random too (the adapters then matter)."""
  model, _ = load_pretrained(path, mesh=mesh, **kw)
  add_lora(model, lora_config(rank=rank, alpha=alpha, dropout=dropout, targets=targets, layers=list(layers)))
  if b_std:
    for target in model.lora.config.targets:
      b = getattr(model.lora, f"{target}_b")
      noise = b_std * jax.random.normal(jax.random.key(list(TARGETS).index(target)), b.get_value().shape)
      b.set_value(jax.device_put(noise, b.get_value().sharding))
  return model


def _name(path) -> str:
  """A pytree path as dotted names ('lora.q_a'; the Variable's own 'value' step left out)."""
  names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  return ".".join(names[:-1] if names[-1] == "value" else names)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("optimizer", "loss_config"))
def _step(graphdef, state, batch, frozen, *, optimizer, loss_config):
  """train_step, compiled once per model structure, optimizer and loss (the tests share compilations)."""
  return train_step(graphdef, state, batch, optimizer=optimizer, loss_config=loss_config, frozen=frozen)


def _lora_update(model, batch, loss_config, optimizer=SGD):
  """(the adapters' change as float64 numpy leaves, the new state, metrics) of one LoRA step."""
  graphdef, state, frozen = init_adapter_train_state(model, optimizer)
  before = [np.asarray(x, np.float64) for x in jax.tree.leaves(state.params)]
  new_state, metrics = _step(graphdef, state, batch, frozen, optimizer=optimizer, loss_config=loss_config)
  change = [np.asarray(x, np.float64) - b for x, b in zip(jax.tree.leaves(new_state.params), before)]
  return change, new_state, metrics


def test_gradients_reach_only_the_adapters_and_are_the_full_gradient_seen_through_them(saved):
  """At B = 0: ∂L/∂A = 0 and ∂L/∂B = (α/r)·Aᵀ·∂L/∂W, W's full fine-tuning gradient (one SGD step of rate 1
  changes a parameter by minus its gradient) — for every target, in the adapted layers only."""
  layers = (0, 2)
  model = _lora_model(saved("llama"), layers=layers)
  batch = _as_micro(_examples(), 2)
  delta, state, _ = _lora_update(model, batch, LossConfig("sft"))
  # The state is the adapters, the base stays outside it, and AdamW's moments mirror the adapters alone.
  names = [_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]]
  assert names and all(n.startswith("lora.") for n in names), names
  _, _, frozen = init_adapter_train_state(model, SGD)
  assert not any("lora" in _name(p) for p, _ in jax.tree_util.tree_flatten_with_path(frozen)[0])
  moments = jax.eval_shape(make_optimizer(OptimizerConfig()).init, state.params)[1][0]
  adapter_size = sum(x.size for x in jax.tree.leaves(state.params))
  assert sum(x.size for x in jax.tree.leaves((moments.mu, moments.nu))) == 2 * adapter_size

  full_model, _ = load_pretrained(saved("llama"))
  graphdef, full_state = init_train_state(full_model, SGD)
  full_step = jax.jit(functools.partial(train_step, graphdef, optimizer=SGD, loss_config=LossConfig("sft")))
  full_new, _ = full_step(full_state, batch)
  by_name = dict(zip(names, delta))
  for target in ALL:
    (module, name), n_in, _ = TARGETS[target]
    minus_grad_w = np.asarray(full_new.params["layers"][module][name].get_value(), np.float64) - np.asarray(
      full_state.params["layers"][module][name].get_value(), np.float64
    )
    a = np.asarray(model.lora.weights(target)[0], np.float64)
    assert np.abs(by_name[f"lora.{target}_a"]).max() == 0.0
    change_b = by_name[f"lora.{target}_b"]
    for row, layer in enumerate(layers):
      expected = (8.0 / 4) * np.tensordot(a[row], minus_grad_w[layer], axes=(list(range(n_in)), list(range(n_in))))
      assert np.abs(expected).max() > 0
      error = np.linalg.norm(change_b[row] - expected) / np.linalg.norm(expected)
      assert error < 1e-5, (target, layer, error)  # measured ≤ 3e-6 (fp32 sums in another order)


@pytest.mark.parametrize("objective,remat", [("sft", "none"), ("constrained", "full"), ("dpo", "dots")])
def test_accumulated_and_rematerialised_lora_steps_equal_the_whole_batch_step(saved, objective, remat):
  examples = _examples()
  cfg = LossConfig(objective, reference="adapters_off" if objective != "sft" else "batch")
  whole, _, m_whole = _lora_update(_lora_model(saved("llama"), b_std=0.05), _as_micro(examples, 1), cfg)
  accum, _, m_accum = _lora_update(_lora_model(saved("llama"), b_std=0.05, remat=remat), _as_micro(examples, 4), cfg)
  np.testing.assert_allclose(m_accum["loss"], m_whole["loss"], rtol=1e-5)
  _assert_updates_close(accum, whole, rtol=1e-5)


@pytest.mark.parametrize("objective", ["constrained", "dpo"])
def test_the_reference_computed_with_the_adapters_off_equals_the_cached_one(saved, objective):
  """π_ref = the base, in the step (no cache) vs its log-probs cached in the batch by a separate base model."""
  model = _lora_model(saved("llama"), b_std=0.05)
  base, _ = load_pretrained(saved("llama"))  # the same base weights, a model without adapters
  examples = _with_ref(base, _examples(seed=2))
  cached, _, m_cached = _lora_update(model, _as_micro(examples, 2), LossConfig(objective, reference="batch"))
  without_ref = {k: v for k, v in examples.items() if k != "ref_logps"}
  online, _, m_online = _lora_update(model, _as_micro(without_ref, 2), LossConfig(objective, reference="adapters_off"))
  _assert_updates_close(online, cached, rtol=1e-5)
  for key in m_cached:
    np.testing.assert_allclose(np.asarray(m_online[key]), np.asarray(m_cached[key]), rtol=1e-5, atol=1e-6)
  # The adapters moved the policy away from the reference, so the two sources could have disagreed.
  if objective == "constrained":
    assert abs(float(m_online["mean_weight"]) - 1.0) > 1e-3
  else:
    assert abs(float(m_online["reward_margin"])) > 1e-4


def test_the_constrained_loss_with_lora_at_step_0_has_weight_1_everywhere(saved):
  """B = 0: the adapted policy is its own reference, Δ_t = 0 and 2σ(β_tΔ_t) = 1 at every response position,
  with the adapters' dropout on (it only touches the adapters' input, which B = 0 multiplies away)."""
  model = _lora_model(saved("llama"), dropout=0.2)
  examples = _examples(seed=4)
  cfg = LossConfig("constrained", reference="adapters_off", log_positions=12)
  delta, _, metrics = _lora_update(model, _as_micro(examples, 2), cfg)
  # The policy (adapters on, B = 0) and π_ref (adapters off) are two computations of one function, equal up
  # to fp32 rounding in differently fused programs: measured |w_t − 1| ≤ 2.4e-7, |Δ_t| ≤ 1.2e-7.
  counted = np.asarray(metrics["weight_by_position"])
  assert np.isfinite(counted).sum() >= 10
  np.testing.assert_allclose(counted[np.isfinite(counted)], 1.0, rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(metrics["delta_by_position"])[np.isfinite(counted)], 0.0, atol=1e-6)
  assert float(metrics["mean_weight"]) == pytest.approx(1.0, abs=1e-6)
  betas = np.asarray(losses.BetaSchedule().values(64))
  t = np.asarray(losses.response_positions(jnp.asarray(examples["loss_mask"][:, 1:])))
  expected = (2 / betas[np.maximum(t, 1) - 1] * np.log(2) * (t > 0)).sum() / (t > 0).sum()
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-6)
  assert sum(float(np.abs(x).sum()) for x in delta) > 0  # and the step does move the adapters


def test_dropout_draws_depend_on_the_step_and_change_the_update(saved):
  model = _lora_model(saved("llama"), b_std=0.05, dropout=0.3)
  batch = _as_micro(_examples(), 2)
  cfg = LossConfig("sft")
  first, _, _ = _lora_update(model, batch, cfg)
  again, _, _ = _lora_update(model, batch, cfg)
  _assert_updates_close(again, first, rtol=0)  # the same step draws the same masks
  plain, _, _ = _lora_update(_lora_model(saved("llama"), b_std=0.05, dropout=0.0), batch, cfg)
  assert _relative_difference(first, plain) > 0.05


@pytest.mark.slow  # ~55 s on 2 busy cores (two SPMD compilations); the LoRA runs of test_lora_runs.py are sharded
def test_sharded_lora_step_equals_single_device_step(saved):
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  single, sharded = (_lora_model(saved("gemma2"), layers=(1, 2), dropout=0.1, b_std=0.05, mesh=m) for m in (None, mesh))
  examples = _examples(n=8)
  batch = _as_micro(examples, 2)
  sharded_batch = {k: jax.device_put(v, NamedSharding(mesh, P(None, ("data", "fsdp")))) for k, v in batch.items()}
  loss_config = LossConfig("constrained", alpha=0.3, reference="adapters_off")
  expected, _, m1 = _lora_update(single, batch, loss_config)
  got, _, m2 = _lora_update(sharded, sharded_batch, loss_config)
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
  _assert_updates_close(got, expected, rtol=1e-5)
  # The updated adapters, and AdamW's moments of them, stay sharded along the base weights' axes.
  _, state, _ = _lora_update(sharded, sharded_batch, loss_config)
  _, adam, _ = init_adapter_train_state(sharded, make_optimizer(OptimizerConfig()))
  q_b = state.params["lora"]["q_b"].get_value()  # [layers, rank, heads, head_dim]
  assert q_b.sharding.is_equivalent_to(NamedSharding(mesh, P(None, None, "tensor", None)), q_b.ndim)
  mu_q_b = adam.opt_state[1][0].mu["lora"]["q_b"].get_value()
  assert mu_q_b.sharding.is_equivalent_to(q_b.sharding, q_b.ndim)
  q_a = state.params["lora"]["q_a"].get_value()  # [layers, embed, rank]
  assert q_a.sharding.is_equivalent_to(NamedSharding(mesh, P(None, "fsdp", None)), q_a.ndim)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_a_few_lora_steps_lower_the_loss(saved, family):
  model = _lora_model(saved(family), rank=8, alpha=16.0)
  optimizer = make_optimizer(OptimizerConfig(learning_rate=5e-3, total_steps=12, decay="constant"))
  graphdef, state, frozen = init_adapter_train_state(model, optimizer)
  batch = _as_micro(_examples(n=4), 1)
  history = []
  for _ in range(12):
    state, metrics = _step(graphdef, state, batch, frozen, optimizer=optimizer, loss_config=LossConfig())
    history.append(float(metrics["loss"]))
  assert history[-1] < 0.7 * history[0], history  # measured 6.2 → 3.5 (llama), 6.6 → 2.8 (gemma)


def test_a_bf16_base_with_fp32_adapters_trains_in_the_shared_step(saved):
  """The LoRA recipes' precision: the frozen base stored and computed in bf16, adapters and AdamW moments
  fp32, the hyper-parameters inputs of the one compiled step."""
  model = _lora_model(saved("gemma3"), rank=8, alpha=16.0, dtype=jnp.bfloat16)
  opt = OptimizerConfig(learning_rate=1e-2, grad_clip=1.0, total_steps=12, decay="constant")
  graphdef, state, frozen = init_adapter_train_state(model, make_optimizer(opt))
  assert {x.dtype for x in jax.tree.leaves(frozen)} == {jnp.dtype(jnp.bfloat16)}
  static, loss_values = split_loss_config(LossConfig("constrained", reference="adapters_off"))
  hyper = {"optimizer": optimizer_hyperparameters(opt), "loss": loss_values}
  batch = _as_micro(_examples(n=4), 2)
  history = []
  for _ in range(12):
    state, metrics = shared_train_step(graphdef, state, batch, hyper, frozen, loss_config=static)
    history.append(float(metrics["loss"]))
  assert np.isfinite(history).all() and history[-1] < 0.8 * history[0], history
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  adam = state.opt_state[1][0]
  assert {x.dtype for x in jax.tree.leaves((adam.mu, adam.nu))} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(frozen)} == {jnp.dtype(jnp.bfloat16)}  # never updated nor donated


def test_init_train_state_refuses_a_model_with_adapters(saved):
  with pytest.raises(ValueError, match="init_adapter_train_state trains them alone"):
    init_train_state(_lora_model(saved("llama")), optax.sgd(1.0))
  with pytest.raises(ValueError, match="has no LoRA adapters"):
    init_adapter_train_state(load_pretrained(saved("llama"))[0], optax.sgd(1.0))


def test_target_logps_with_the_adapters_off_are_the_base_models(saved):
  model = _lora_model(saved("llama"), b_std=0.05)
  base, _ = load_pretrained(saved("llama"))
  ex = _examples()
  ids, mask = jnp.asarray(ex["input_ids"]), jnp.asarray(ex["attention_mask"])
  off = jax.jit(lambda m: target_logps(m, ids, mask, adapters=False))(model)
  np.testing.assert_array_equal(np.asarray(off), np.asarray(jax.jit(lambda m: target_logps(m, ids, mask))(base)))
  on = np.asarray(jax.jit(lambda m: target_logps(m, ids, mask))(model))
  assert np.abs(on - np.asarray(off)).max() > 1e-3
