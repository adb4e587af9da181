"""Train state and optimizer.

The state is a plain pytree — step, parameters (an `nnx.State` of the
model's Params) and optax state — so the train step is a pure function of
it and Orbax checkpoints it as is.  The model's structure (the NNX graph
definition) is static and lives beside it.  With LoRA the state's parameters
are the adapters alone (`init_adapter_train_state`): the frozen base weights
live beside the state, so neither the optimizer nor a checkpoint holds them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with global-norm clipping and linear warm-up then linear decay (SPEC §3)."""

  learning_rate: float = 2e-5
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0
  grad_clip: float = 1.0
  warmup_steps: int = 0
  total_steps: int = 1
  decay: str = "linear"  # or "constant"


def optimizer_hyperparameters(cfg: OptimizerConfig) -> dict[str, np.ndarray]:
  """The optimizer's settings as fp32 scalars: what `make_optimizer` reads, values or jit inputs."""
  if cfg.decay not in ("linear", "constant"):
    raise ValueError(f"decay must be 'linear' or 'constant', got {cfg.decay!r}")
  values = {
    "learning_rate": cfg.learning_rate,
    "b1": cfg.b1,
    "b2": cfg.b2,
    "eps": cfg.eps,
    "weight_decay": cfg.weight_decay,
    "grad_clip": cfg.grad_clip,
    "warmup_steps": max(cfg.warmup_steps, 0),
    "total_steps": cfg.total_steps,
    "linear_decay": 1.0 if cfg.decay == "linear" else 0.0,
  }
  return {k: np.float32(v) for k, v in values.items()}


def learning_rate_at(count, hp: Mapping[str, Any]) -> jax.Array:
  """The learning rate of update `count` (0-based): linear warm-up 0 → peak, then constant or linear → 0.

  Plain jnp arithmetic of the settings, so the same schedule runs with the
  settings as Python values or as traced inputs of a shared compiled step
  (optax's schedule combinators would bake them into the program).
  """
  count = jnp.asarray(count, jnp.float32)
  peak, warmup = hp["learning_rate"], hp["warmup_steps"]
  warm = peak * jnp.clip(count, 0.0, warmup) / jnp.maximum(warmup, 1.0)
  decay_steps = jnp.maximum(hp["total_steps"] - warmup, 1.0)
  decayed = peak * (1.0 - jnp.clip(count - warmup, 0.0, decay_steps) / decay_steps)
  after = jnp.where(hp["linear_decay"] > 0, decayed, peak)
  return jnp.where(count < warmup, warm, after)


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  hp = optimizer_hyperparameters(cfg)
  return lambda count: learning_rate_at(count, hp)


def make_optimizer(cfg: OptimizerConfig | Mapping[str, Any]) -> optax.GradientTransformation:
  """AdamW (+ global-norm clipping when grad_clip > 0) from a config or its hyper-parameters.

  Given `optimizer_hyperparameters(...)` as traced arrays, one compiled train
  step serves runs with other learning rates, schedules and Adam settings;
  the optimizer state's structure never depends on the values.
  """
  hp = optimizer_hyperparameters(cfg) if isinstance(cfg, OptimizerConfig) else cfg
  clip = jnp.where(hp["grad_clip"] > 0, hp["grad_clip"], jnp.inf)  # ∞: the norm never triggers
  return optax.chain(
    optax.clip_by_global_norm(clip),
    optax.adamw(
      lambda count: learning_rate_at(count, hp),
      b1=hp["b1"],
      b2=hp["b2"],
      eps=hp["eps"],
      weight_decay=hp["weight_decay"],
    ),
  )


class TrainState(NamedTuple):
  step: jax.Array
  params: Any  # nnx.State of nnx.Param
  opt_state: Any


def _optimizer_state_shardings(params, abstract_opt_state):
  """Each optimizer leaf sharded like the parameter it mirrors (Adam's mu/nu), else replicated.

  `jax.jit(optimizer.init)` alone would put moments created by zeros_like on
  one device: they do not depend on the parameters' values, so nothing
  propagates the parameters' sharding to them.
  """
  param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  first = param_leaves[0][1].sharding
  if not isinstance(first, jax.sharding.NamedSharding):
    return None
  replicated = jax.sharding.NamedSharding(first.mesh, jax.sharding.PartitionSpec())
  by_path = [(tuple(path), leaf.sharding, leaf.shape) for path, leaf in param_leaves]

  def pick(path, leaf):
    path = tuple(path)
    for param_path, param_sharding, shape in by_path:
      if path[-len(param_path) :] == param_path and leaf.shape == shape:
        return param_sharding
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def init_train_state(model: nnx.Module, optimizer: optax.GradientTransformation):
  """(graphdef, TrainState) for a model; optimizer state is sharded like the params."""
  if jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):
    raise ValueError("the model has LoRA adapters: init_adapter_train_state trains them alone")
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("the model has non-parameter state; the train step only updates Params")
  return graphdef, _train_state(params, optimizer)


def init_adapter_train_state(model: nnx.Module, optimizer: optax.GradientTransformation):
  """(graphdef, TrainState of the LoRA adapters, the frozen base parameters) for a model with adapters.

  The optimizer state mirrors the adapters only; the base stays in its own dtype (bf16 if loaded so)
  and is an input of the train step (`train_step(..., frozen=)`), never updated.
  """
  graphdef, adapters, frozen, rest = nnx.split(model, nnx.LoRAParam, nnx.Param, ...)
  if not jax.tree.leaves(adapters):
    raise ValueError("the model has no LoRA adapters (models.lora.add_lora gives it some)")
  if jax.tree.leaves(rest):
    raise ValueError("the model has non-parameter state; the train step only updates Params")
  return graphdef, _train_state(adapters, optimizer), frozen


def _train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  shardings = _optimizer_state_shardings(params, jax.eval_shape(optimizer.init, params))
  opt_state = jax.jit(optimizer.init, out_shardings=shardings)(params)
  step = jnp.zeros((), jnp.int32)
  if shardings is not None:  # keep the step on the mesh too (checkpoints restore per leaf)
    step = jax.device_put(step, jax.tree.leaves(params)[0].sharding.update(spec=jax.sharding.PartitionSpec()))
  return TrainState(step, params, opt_state)
