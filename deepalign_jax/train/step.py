"""The pure train step: forward, loss, gradient, update, metrics.

A batch holds M micro-batches stacked on a leading axis (gradient
accumulation): `input_ids`, `attention_mask`, `loss_mask` [M, b, L], for the
constrained and DPO objectives `ref_logps` [M, b, L] (log π_ref of each input
token given the ones before it; position 0 unused), and for α-weighted mixing
`group` [M, b] (0 = safety data D_H, 1 = utility data D_B).  DPO rows come in
pairs: row 2i of a micro-batch is a chosen response, row 2i+1 the rejected
one of the same prompt.

Normalisers are token counts of the whole batch, known from the masks before
any forward pass; each micro-batch contributes its loss *sum* divided by
them, so gradients simply add up and M micro-batches of b give exactly the
update of one batch of M·b — on one device or sharded over many.

With LoRA the state's parameters are the adapters and the frozen base comes
in beside them (`frozen`); the reference of the constrained and DPO
objectives can then be the model itself with its adapters switched off,
computed in the same step (`LossConfig.reference="adapters_off"`): no cache,
no second model.  The adapters' dropout draws from a key that depends only
on the step and the micro-batch, so a resumed run draws what an uninterrupted
one does.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from deepalign_jax import losses
from deepalign_jax.train.state import TrainState, make_optimizer

OBJECTIVES = ("sft", "constrained", "dpo")
REFERENCES = ("batch", "adapters_off")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Which objective, and how tokens are averaged.

  objective: 'sft' (masked NLL; also the safety-recovery augmentation, whose
    masks select the refusal), 'constrained' (paper Eq. 3) or 'dpo'
    (`losses.dpo_loss` over the batch's pairs, mean over pairs).
  betas: Eq. 3's β schedule (`losses.BetaSchedule`; the paper's by default).
  min_weight: the optional clamp of Eq. 3's gradient weight (see `losses`).
  alpha: None → one token mean over the batch (the reference code's
    batch-composition weighting); a float → α·mean over D_H tokens +
    (1−α)·mean over D_B tokens (paper Eq. 2), using `group`.
  vocab_chunk: compute log-probs in vocabulary chunks of this size (large
    vocabularies); None → full logits.
  log_positions: response positions 1..N reported per step for the
    constrained objective (mean weight w_t and mean Δ_t), so a run shows
    the constraint working where it should — on the first tokens.
  dpo_beta: DPO's β.
  sft_weight: DPO plus this × the token-mean NLL of the chosen responses
    (TRL's `loss_type=["sigmoid", "sft"]`, `loss_weights=[1, sft_weight]`); 0: DPO alone.
  reference: where π_ref's log-probs come from: 'batch' (`ref_logps`, cached before training) or
    'adapters_off' (a LoRA model's base, its adapters switched off, in the same step).
  """

  objective: str = "sft"
  betas: losses.BetaSchedule = losses.BetaSchedule()
  min_weight: float = 0.0
  alpha: float | None = None
  vocab_chunk: int | None = None
  log_positions: int = 8
  dpo_beta: float = 0.1
  sft_weight: float = 0.0
  reference: str = "batch"

  def __post_init__(self):
    if self.objective not in OBJECTIVES:
      raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
    if self.reference not in REFERENCES:
      raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
    if self.objective == "dpo" and self.alpha is not None:
      raise ValueError("alpha (D_H / D_B mixing) is for the augmented objective, not dpo")


def target_logps(
  model, input_ids, attention_mask, vocab_chunk=None, *, adapters: bool = True, dropout_rng=None
) -> jax.Array:
  """log π(input_ids[t] | input_ids[<t]) for t = 1..L-1, as [b, L-1] fp32.

  adapters=False: a LoRA model's base; dropout_rng: the adapters' dropout (training only).
  """
  targets = input_ids[:, 1:]
  kw = dict(attention_mask=attention_mask, adapters=adapters, dropout_rng=dropout_rng)
  if vocab_chunk:
    hidden, _ = model.hidden_states(input_ids, **kw)
    return losses.chunked_token_logps(hidden[:, :-1], model.output_head(), targets, vocab_chunk=vocab_chunk)
  logits = model(input_ids, **kw)
  return losses.token_logps(logits[:, :-1], targets)


def _group_weights(batch, cfg: LossConfig):
  """[(mask multiplier [M, b, 1], normaliser, weight)] per averaging group, from masks only.

  DPO: one group whose normalisers are (the batch's pairs, its chosen-response tokens).
  """
  mask = batch["loss_mask"][..., 1:].astype(jnp.float32)
  if cfg.objective == "dpo":
    if mask.shape[1] % 2:
      raise ValueError(f"dpo rows come in (chosen, rejected) pairs: {mask.shape[1]} rows per micro-batch is odd")
    chosen = mask[:, 0::2]
    pairs = (chosen.sum(-1) > 0).astype(jnp.float32).sum()
    return [(None, (jnp.maximum(pairs, 1.0), jnp.maximum(chosen.sum(), 1.0)), 1.0)]
  if cfg.alpha is None:
    return [(jnp.ones(mask.shape[:2] + (1,), jnp.float32), jnp.maximum(mask.sum(), 1.0), 1.0)]
  groups = []
  for value, weight in ((0, cfg.alpha), (1, 1.0 - cfg.alpha)):
    member = (batch["group"] == value).astype(jnp.float32)[..., None]
    groups.append((member, jnp.maximum((mask * member).sum(), 1.0), weight))
  return groups


def _position_stats(logps, micro, cfg: LossConfig) -> dict[str, jax.Array]:
  """Sums over this micro-batch: w_t, Δ_t and token counts per response position 1..N, and w over all.

  w_t = 2σ(β_tΔ_t) is the constrained gradient's weight on the token (1 at
  initialisation, → 0 as the policy moves past the reference).
  """
  mask = micro["loss_mask"][:, 1:].astype(jnp.float32)
  t = losses.response_positions(mask)
  beta_t = cfg.betas.at(t)
  delta = jax.lax.stop_gradient(micro["ref_logps"][:, 1:] - logps)
  weight = 2.0 * jax.nn.sigmoid(beta_t * delta) * mask
  onehot = (t[..., None] == jnp.arange(1, cfg.log_positions + 1)).astype(jnp.float32)  # [b, T, N]
  return {
    "weight": (onehot * weight[..., None]).sum((0, 1)),
    "delta": (onehot * delta[..., None]).sum((0, 1)),
    "count": onehot.sum((0, 1)),
    "weight_all": weight.sum()[None],
    "count_all": mask.sum()[None],
  }


def _dpo_micro(logps, micro, normalisers, cfg: LossConfig):
  """This micro-batch's share of the batch's DPO loss (its pairs' sum / the batch's pairs), and the
  sums behind the reward metrics."""
  mask = micro["loss_mask"][:, 1:].astype(jnp.float32)
  pairs, chosen_tokens = normalisers
  policy = losses.sequence_logps(logps, mask)
  ref = losses.sequence_logps(micro["ref_logps"][:, 1:], mask)
  valid = (mask[0::2].sum(-1) > 0).astype(jnp.float32)
  loss_sum, _ = losses.dpo_loss(policy[0::2], policy[1::2], ref[0::2], ref[1::2], beta=cfg.dpo_beta, pair_mask=valid)
  total = loss_sum / pairs
  if not (isinstance(cfg.sft_weight, (int, float)) and cfg.sft_weight == 0):  # a traced weight: the term is on
    nll, _ = losses.masked_nll(logps[0::2], mask[0::2])
    total = total + cfg.sft_weight * nll / chosen_tokens
  chosen = jax.lax.stop_gradient(cfg.dpo_beta * (policy[0::2] - ref[0::2]))
  rejected = jax.lax.stop_gradient(cfg.dpo_beta * (policy[1::2] - ref[1::2]))
  stats = {
    "chosen_reward": (chosen * valid).sum()[None],
    "rejected_reward": (rejected * valid).sum()[None],
    "reward_accuracy": ((chosen > rejected) * valid).sum()[None],
    "pairs": valid.sum()[None],
  }
  return total, stats


def _micro_loss(params, graphdef, micro, groups, cfg: LossConfig, frozen=None, dropout_rng=None):
  model = nnx.merge(graphdef, params) if frozen is None else nnx.merge(graphdef, params, frozen)
  if cfg.reference == "adapters_off":
    # π_ref is the base: the same weights without the adapters, no gradient (it reads none of `params`).
    ref = target_logps(model, micro["input_ids"], micro["attention_mask"], cfg.vocab_chunk, adapters=False)
    micro = {**micro, "ref_logps": jnp.pad(jax.lax.stop_gradient(ref), ((0, 0), (1, 0)))}
  logps = target_logps(model, micro["input_ids"], micro["attention_mask"], cfg.vocab_chunk, dropout_rng=dropout_rng)
  if cfg.objective == "dpo":
    return _dpo_micro(logps, micro, groups[0][1], cfg)
  mask = micro["loss_mask"][:, 1:]
  stats = _position_stats(logps, micro, cfg) if cfg.objective == "constrained" else {}
  total = jnp.zeros((), jnp.float32)
  for member, normaliser, weight in groups:
    group_mask = mask * member
    if cfg.objective == "sft":
      loss_sum, _ = losses.masked_nll(logps, group_mask)
    else:
      loss_sum, _ = losses.token_constrained_loss(
        logps, micro["ref_logps"][:, 1:], group_mask, betas=cfg.betas, min_weight=cfg.min_weight
      )
    total = total + weight * loss_sum / normaliser
  return total, stats


def train_step(
  graphdef,
  state: TrainState,
  batch: Mapping[str, jax.Array],
  *,
  optimizer: optax.GradientTransformation,
  loss_config: LossConfig,
  frozen=None,
) -> tuple[TrainState, dict[str, Any]]:
  """One optimizer update over a batch of M micro-batches (pure; jit it).

  frozen: with LoRA, the base parameters (`init_adapter_train_state`); `state.params` are then the
  adapters, the only thing updated (gradients, clip and AdamW see nothing else).

  Metrics: loss, tokens, grad_norm, param_norm (after the update); for the constrained objective also
  `weight_by_position` / `delta_by_position` [log_positions] (mean w_t and
  Δ_t over the batch's tokens at each response position; NaN where none)
  and `mean_weight`; for DPO the means over pairs of `chosen_reward` /
  `rejected_reward` (β·log π/π_ref), `reward_margin` and `reward_accuracy`
  (the share of pairs whose chosen reward is the higher).
  """
  groups = _group_weights(batch, loss_config)
  grad_fn = jax.value_and_grad(_micro_loss, has_aux=True)
  step_key = jax.random.fold_in(jax.random.key(0), state.step)  # the adapters' dropout (unused without)

  def accumulate(carry, index):
    loss, grads, stats = carry
    micro = jax.tree.map(lambda x: x[index], batch)
    micro_groups = [(None if member is None else member[index], norm, weight) for member, norm, weight in groups]
    (micro_loss, micro_stats), micro_grads = grad_fn(
      state.params, graphdef, micro, micro_groups, loss_config, frozen, jax.random.fold_in(step_key, index)
    )
    return (
      loss + micro_loss,
      jax.tree.map(lambda g, m: g + m.astype(jnp.float32), grads, micro_grads),
      jax.tree.map(jnp.add, stats, micro_stats),
    ), None

  # Gradients add up in fp32 whatever the parameters' dtype: bf16 sums of many micro-batches lose
  # the small ones, and the clip and Adam's moments then work on fp32 numbers.
  zeros = jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), state.params)
  n = loss_config.log_positions
  stats = (
    {
      k: jnp.zeros((n if k in ("weight", "delta", "count") else 1,), jnp.float32)
      for k in ("weight", "delta", "count", "weight_all", "count_all")
    }
    if loss_config.objective == "constrained"
    else {k: jnp.zeros((1,), jnp.float32) for k in ("chosen_reward", "rejected_reward", "reward_accuracy", "pairs")}
    if loss_config.objective == "dpo"
    else {}
  )
  num_micro = batch["input_ids"].shape[0]
  (loss, grads, stats), _ = jax.lax.scan(accumulate, (jnp.zeros((), jnp.float32), zeros, stats), jnp.arange(num_micro))
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  # The state keeps the dtypes it was created with: fp32 moments beside fp32 master weights, or the
  # parameters' bf16 in a pure-bf16 run (fp32 gradients would otherwise promote them, changing the
  # compiled step's signature and the checkpoint's layout).
  opt_state = jax.tree.map(lambda new, old: new.astype(old.dtype), opt_state, state.opt_state)
  # apply_updates adds in fp32 and rounds once to the parameter dtype.
  params = optax.apply_updates(state.params, updates)
  metrics = {
    "loss": loss,
    "tokens": batch["loss_mask"][..., 1:].sum(),
    "grad_norm": optax.global_norm(grads),
    "param_norm": optax.global_norm(params),  # after the update: an overflowing update shows here first
  }
  if loss_config.objective == "dpo":
    pairs = jnp.maximum(stats["pairs"][0], 1.0)
    for key in ("chosen_reward", "rejected_reward", "reward_accuracy"):
      metrics[key] = stats[key][0] / pairs
    metrics["reward_margin"] = metrics["chosen_reward"] - metrics["rejected_reward"]
  elif stats:
    count = stats["count"]
    metrics["weight_by_position"] = jnp.where(count > 0, stats["weight"] / jnp.maximum(count, 1), jnp.nan)
    metrics["delta_by_position"] = jnp.where(count > 0, stats["delta"] / jnp.maximum(count, 1), jnp.nan)
    metrics["mean_weight"] = stats["weight_all"][0] / jnp.maximum(stats["count_all"][0], 1)
  return TrainState(state.step + 1, params, opt_state), metrics


def split_loss_config(cfg: LossConfig) -> tuple[LossConfig, dict[str, Any]]:
  """(the config's compiled-in part, its numbers as scalars) for `shared_train_step`.

  The numbers are the β schedule's and α; what stays compiled in changes the program: the objective,
  whether α-mixing is on, the vocabulary chunk, the logged positions and whether the weight clamp is on
  (`min_weight`, a Python branch).
  """
  values = {
    "betas": {
      f.name: np.asarray(getattr(cfg.betas, f.name), np.int32 if f.name == "early_length" else np.float32)
      for f in dataclasses.fields(cfg.betas)
    }
  }
  if cfg.alpha is not None:
    values["alpha"] = np.float32(cfg.alpha)
  if cfg.objective == "dpo":
    values["dpo_beta"], values["sft_weight"] = np.float32(cfg.dpo_beta), np.float32(cfg.sft_weight)
  static = dataclasses.replace(
    cfg,
    betas=losses.BetaSchedule(0.0, 0.0, 0.0, 0),
    alpha=None if cfg.alpha is None else 0.0,
    dpo_beta=0.0,
    sft_weight=1.0 if cfg.sft_weight else 0.0,  # compiled in: whether the SFT term is there
  )
  return static, values


@functools.partial(jax.jit, static_argnums=0, static_argnames="loss_config", donate_argnums=1)
def shared_train_step(
  graphdef,
  state: TrainState,
  batch: Mapping[str, jax.Array],
  hyperparameters: Mapping[str, Mapping[str, jax.Array]],
  frozen=None,
  *,
  loss_config: LossConfig,
):
  """`train_step` with the run's numbers as inputs: one compilation per model structure, batch shape
  and objective serves every run of a process (and of the persistent compilation cache).

  hyperparameters: {"optimizer": optimizer_hyperparameters(...), "loss": the second value of
  split_loss_config(...)}; loss_config: its first value; frozen: a LoRA run's base parameters (not
  donated: every step reads them).  The state is donated.
  """
  numbers = hyperparameters["loss"]
  cfg = dataclasses.replace(loss_config, betas=losses.BetaSchedule(**numbers["betas"]), alpha=numbers.get("alpha"))
  if loss_config.objective == "dpo":
    sft_weight = numbers["sft_weight"] if loss_config.sft_weight else 0.0
    cfg = dataclasses.replace(cfg, dpo_beta=numbers["dpo_beta"], sft_weight=sft_weight)
  optimizer = make_optimizer(hyperparameters["optimizer"])
  return train_step(graphdef, state, batch, optimizer=optimizer, loss_config=cfg, frozen=frozen)
