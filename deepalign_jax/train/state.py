"""Train state and optimizer.

The state is a plain pytree — step, parameters (an `nnx.State` of the
model's Params) and optax state — so the train step is a pure function of
it and Orbax checkpoints it as is.  The model's structure (the NNX graph
definition) is static and lives beside it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
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


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  warmup = max(cfg.warmup_steps, 0)
  if cfg.decay == "constant":
    after = optax.constant_schedule(cfg.learning_rate)
  elif cfg.decay == "linear":
    after = optax.linear_schedule(cfg.learning_rate, 0.0, max(cfg.total_steps - warmup, 1))
  else:
    raise ValueError(f"decay must be 'linear' or 'constant', got {cfg.decay!r}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup), after], [warmup])


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip else optax.identity(),
      optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                  weight_decay=cfg.weight_decay),
  )


class TrainState(NamedTuple):
  step: jax.Array
  params: Any     # nnx.State of nnx.Param
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
      if path[-len(param_path):] == param_path and leaf.shape == shape:
        return param_sharding
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def init_train_state(model: nnx.Module, optimizer: optax.GradientTransformation):
  """(graphdef, TrainState) for a model; optimizer state is sharded like the params."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("the model has non-parameter state; the train step only updates Params")
  shardings = _optimizer_state_shardings(params, jax.eval_shape(optimizer.init, params))
  opt_state = jax.jit(optimizer.init, out_shardings=shardings)(params)
  step = jnp.zeros((), jnp.int32)
  if shardings is not None:  # keep the step on the mesh too (checkpoints restore per leaf)
    step = jax.device_put(step, jax.tree.leaves(params)[0].sharding.update(
        spec=jax.sharding.PartitionSpec()))
  return graphdef, TrainState(step, params, opt_state)
