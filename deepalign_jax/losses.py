"""The paper's objectives as pure JAX functions (arrays in, arrays out).

- `token_logps` / `chunked_token_logps`: log π(y_t | x, y_<t) per token, fp32.
- `BetaSchedule`, `response_positions`: the position-wise β of SPEC §3.
- `token_constrained_loss`: Eq. 3, Σ_t (2/β_t)·softplus(β_t·(ref − policy)).
- `masked_nll`: plain supervised fine-tuning (and the safety-recovery
  augmentation of Eq. 2, whose masks put the loss on the refusal only).
- `sequence_logps`, `dpo_loss`: preference alignment (DPO, Rafailov et al.
  2023) against a frozen reference, as chat models are aligned.

Losses return `(loss_sum, token_count)`, never a mean: a train step divides
the sum over all micro-batches and devices by the global token count, so
gradient accumulation and data parallelism give the same update as one big
batch.  The reference code instead takes a token mean per device micro-batch,
which weights tokens of short batches more; `loss_sum / token_count` of a
single micro-batch reproduces it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from deepalign_jax.models.head import OutputHead, scan_vocabulary


def token_logps(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log-softmax(logits)[targets] in fp32.

  Args:
    logits: [B, T, V] (any float dtype).
    targets: [B, T] int ids.
  Returns:
    [B, T] fp32 log-probabilities.
  """
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def chunked_token_logps(
  hidden: jax.Array, head: OutputHead, targets: jax.Array, *, vocab_chunk: int = 8192, greedy: bool = False
):
  """`token_logps(head.logits(hidden), targets)` without the [B, T, V] fp32 logits.

  The vocabulary is processed `vocab_chunk` columns at a time with a running
  log-sum-exp (`models.head.scan_vocabulary`, each chunk rematerialised in the
  backward pass), so memory holds [B, T, vocab_chunk] logits instead of
  [B, T, V] — what makes a 256k vocabulary (Gemma) affordable at 512 tokens.
  It is faster too where the whole logits would not stay in cache (on CPU, a
  [256, 49152] block's log-softmax and argmax took twice the time of 4096-column chunks).

  Args:
    hidden: [B, T, D] final (normed) hidden states.
    head: the model's `OutputHead` (`model.output_head()`; soft-cap included).
    targets: [B, T] ids.
    vocab_chunk: columns per chunk.
    greedy: also return [B, T] bool, whether each target is the argmax of its logits (the lowest id
      among tied maxima, as `jnp.argmax` and greedy decoding take).
  Returns:
    [B, T] fp32 log-probabilities, and with `greedy` (logps, is_argmax).
  """
  targets = targets.astype(jnp.int32)
  acc = jnp.promote_types(jnp.float32, hidden.dtype)

  def step(carry, logits, columns, fresh):
    lse, target_logit, best, first = carry
    logits = jnp.where(fresh, logits[0], -jnp.inf)
    local = targets - columns[0]
    hit = (local >= 0) & (local < columns.shape[0]) & jnp.take(fresh, jnp.clip(local, 0, columns.shape[0] - 1))
    picked = jnp.take_along_axis(logits, jnp.clip(local, 0, columns.shape[0] - 1)[..., None], axis=-1)[..., 0]
    lse = jnp.logaddexp(lse, jax.nn.logsumexp(logits, axis=-1))
    target_logit = target_logit + jnp.where(hit, picked, 0.0)
    if greedy:  # chunks come in column order: a later chunk's maximum wins only when strictly larger
      top = logits.max(axis=-1)
      top_id = jnp.min(jnp.where(logits == top[..., None], columns, jnp.iinfo(jnp.int32).max), axis=-1)
      first = jnp.where(top > best, top_id, first)
      best = jnp.maximum(best, top)
    return lse, target_logit, best, first

  init = (jnp.full(targets.shape, -jnp.inf, acc), jnp.zeros(targets.shape, acc))
  init += (jnp.full(targets.shape, -jnp.inf, acc), jnp.zeros(targets.shape, jnp.int32)) if greedy else (None, None)
  lse, target_logit, _, first = scan_vocabulary(step, init, [(hidden, head)], vocab_chunk, remat=True)
  return (target_logit - lse, first == targets) if greedy else target_logit - lse


@dataclasses.dataclass(frozen=True)
class BetaSchedule:
  """β_t by response position t (SPEC §3): the one definition the loss, the train step's per-position
  statistics and the logs use.

  β_1 = beta·first_token_factor, β_2..β_early_length = beta·early_factor, β_t = beta afterwards; the
  defaults give the paper's 0.5 / 2.0 ×4 / 0.1 (the reference code's β = 0.1, first-token factor 5,
  early factor 20, early length 5).  The fields may be traced arrays: a shared compiled train step takes
  them as inputs.
  """

  beta: Any = 0.1
  first_token_factor: Any = 5.0
  early_factor: Any = 20.0
  early_length: Any = 5

  def at(self, positions: jax.Array) -> jax.Array:
    """β_t for 1-based response positions of any shape, fp32 (position 0, no response token, gets β)."""
    t = jnp.asarray(positions)
    early = (t >= 2) & (t <= self.early_length)
    return jnp.where(
      t == 1, self.beta * self.first_token_factor, jnp.where(early, self.beta * self.early_factor, self.beta)
    ).astype(jnp.float32)

  def values(self, num_positions: int) -> jax.Array:
    """[β_1, …, β_num_positions]."""
    return self.at(jnp.arange(1, num_positions + 1))


def response_positions(loss_mask: jax.Array) -> jax.Array:
  """1-based index of each loss-mask token among its row's loss-mask tokens; 0 elsewhere.

  Position 1 is the first response token whatever the prompt length or padding.
  """
  mask = loss_mask.astype(jnp.int32)
  return jnp.cumsum(mask, axis=-1) * mask


def token_constrained_loss(
  policy_logps: jax.Array,
  ref_logps: jax.Array,
  loss_mask: jax.Array,
  *,
  betas: BetaSchedule | jax.Array = BetaSchedule(),
  min_weight: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """The token-wise constrained fine-tuning objective (paper Eq. 3).

      Δ_t = ref_t − policy_t,   L = Σ_t (2/β_t)·softplus(β_t·Δ_t)   over loss-mask tokens

  with t the response position (`response_positions`).  ∂L/∂policy_t is
  −max(2σ(β_tΔ_t), min_weight): the cross-entropy gradient re-weighted by
  w_t = 2σ(β_tΔ_t) (1 at initialisation, → 0 once the policy gains
  probability over the reference).  `min_weight=1e-3` reproduces the
  reference code's clamp of that weight (its loss is detached weight × NLL);
  the value returned is always Eq. 3's.

  Args:
    policy_logps, ref_logps: [B, T] log-probabilities of the targets.
    loss_mask: [B, T] 1 on response tokens.
    betas: a `BetaSchedule` (default: the paper's), or explicit values [N]
      for positions 1..N (later positions use betas[-1]).
    min_weight: lower clamp of the gradient weight.
  Returns:
    (loss_sum, token_count), scalars.
  """
  mask = loss_mask.astype(jnp.float32)
  t = response_positions(loss_mask)
  if isinstance(betas, BetaSchedule):
    beta_t = betas.at(t)
  else:
    betas = jnp.asarray(betas, jnp.float32)
    beta_t = betas[jnp.clip(t, 1, betas.shape[0]) - 1]
  policy = policy_logps.astype(jnp.float32)
  delta = ref_logps.astype(jnp.float32) - policy
  per_token = (2.0 / beta_t) * jax.nn.softplus(beta_t * delta)
  if min_weight > 0.0:
    # Zero-valued term whose gradient turns −w into −max(w, min_weight).
    weight = jax.lax.stop_gradient(2.0 * jax.nn.sigmoid(beta_t * delta))
    extra = weight - jnp.maximum(weight, min_weight)
    per_token = per_token + extra * (policy - jax.lax.stop_gradient(policy))
  return jnp.sum(per_token * mask), jnp.sum(mask)


def masked_nll(policy_logps: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(−Σ loss_mask·policy_logps, Σ loss_mask): supervised fine-tuning."""
  mask = loss_mask.astype(jnp.float32)
  return -jnp.sum(policy_logps.astype(jnp.float32) * mask), jnp.sum(mask)


def sequence_logps(token_logps: jax.Array, loss_mask: jax.Array) -> jax.Array:
  """Σ_t loss_mask·log π(y_t | ·) per row: a response's log-probability, [B] fp32."""
  return jnp.sum(token_logps.astype(jnp.float32) * loss_mask.astype(jnp.float32), axis=-1)


def dpo_loss(
  chosen_logps: jax.Array,
  rejected_logps: jax.Array,
  ref_chosen_logps: jax.Array,
  ref_rejected_logps: jax.Array,
  *,
  beta: float | jax.Array = 0.1,
  pair_mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Direct preference optimisation (Rafailov et al. 2023, Eq. 7), summed over pairs.

      r_c = β·(log π(y_c|x) − log π_ref(y_c|x)),  r_r likewise,   L = Σ_pairs −log σ(r_c − r_r)

  (TRL's `loss_type="sigmoid"`; its loss is this sum over the number of pairs).

  Args:
    chosen_logps, rejected_logps: [P] sequence log-probabilities under the policy (`sequence_logps`).
    ref_chosen_logps, ref_rejected_logps: [P] the same under the frozen reference.
    beta: the KL strength β.
    pair_mask: [P] 1 for real pairs (0: padding), default all.
  Returns:
    (loss_sum, pair_count), scalars.
  """
  margin = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
  per_pair = -jax.nn.log_sigmoid(beta * margin.astype(jnp.float32))
  mask = jnp.ones_like(per_pair) if pair_mask is None else pair_mask.astype(jnp.float32)
  return jnp.sum(per_pair * mask), jnp.sum(mask)


__all__ = [
  "BetaSchedule",
  "chunked_token_logps",
  "dpo_loss",
  "masked_nll",
  "response_positions",
  "sequence_logps",
  "token_constrained_loss",
  "token_logps",
]
