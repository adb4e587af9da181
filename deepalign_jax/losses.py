"""The paper's objectives as pure JAX functions (arrays in, arrays out).

- `token_logps` / `chunked_token_logps`: log π(y_t | x, y_<t) per token, fp32.
- `beta_schedule`, `response_positions`: the position-wise β of SPEC §3.
- `token_constrained_loss`: Eq. 3, Σ_t (2/β_t)·softplus(β_t·(ref − policy)).
- `masked_nll`: plain supervised fine-tuning (and the safety-recovery
  augmentation of Eq. 2, whose masks put the loss on the refusal only).

Losses return `(loss_sum, token_count)`, never a mean: a train step divides
the sum over all micro-batches and devices by the global token count, so
gradient accumulation and data parallelism give the same update as one big
batch.  The reference code instead takes a token mean per device micro-batch,
which weights tokens of short batches more; `loss_sum / token_count` of a
single micro-batch reproduces it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


def chunked_token_logps(hidden: jax.Array, head: jax.Array, targets: jax.Array, *,
                        vocab_chunk: int = 8192, softcap: float | None = None,
                        head_layout: str = "dv") -> jax.Array:
  """`token_logps(hidden @ head, targets)` without the [B, T, V] fp32 logits.

  The vocabulary is processed `vocab_chunk` columns at a time with a running
  log-sum-exp (each chunk rematerialised in the backward pass), so memory
  holds [B, T, vocab_chunk] logits instead of [B, T, V] — what makes a 256k
  vocabulary (Gemma) affordable at 512 tokens.

  Args:
    hidden: [B, T, D] final (normed) hidden states.
    head: the output projection, [D, V] (`head_layout="dv"`) or the tied
      embedding table [V, D] (`head_layout="vd"`).
    targets: [B, T] ids.
    vocab_chunk: columns per chunk; V is padded up to a multiple of it.
    softcap: the model's final-logit soft-cap (Gemma 2), applied per chunk.
  """
  if head_layout == "vd":
    head = head.T
  elif head_layout != "dv":
    raise ValueError(f"head_layout must be 'dv' or 'vd', got {head_layout!r}")
  d, vocab = head.shape
  n_chunks = -(-vocab // vocab_chunk)
  pad = n_chunks * vocab_chunk - vocab
  head = jnp.pad(head, ((0, 0), (0, pad))).reshape(d, n_chunks, vocab_chunk).transpose(1, 0, 2)
  targets = targets.astype(jnp.int32)
  acc = jnp.promote_types(jnp.float32, hidden.dtype)

  @jax.checkpoint
  def chunk_stats(index, weights):
    logits = jnp.einsum("btd,dv->btv", hidden, weights.astype(hidden.dtype),
                        preferred_element_type=acc)
    if softcap is not None:
      logits = jnp.tanh(logits / softcap) * softcap
    column = index * vocab_chunk + jnp.arange(vocab_chunk)
    logits = jnp.where(column < vocab, logits, -jnp.inf)
    local = targets - index * vocab_chunk
    in_chunk = (local >= 0) & (local < vocab_chunk)
    picked = jnp.take_along_axis(logits, jnp.clip(local, 0, vocab_chunk - 1)[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1), jnp.where(in_chunk, picked, 0.0)

  def body(carry, xs):
    lse, target_logit = carry
    chunk_lse, chunk_target = chunk_stats(*xs)
    return (jnp.logaddexp(lse, chunk_lse), target_logit + chunk_target), None

  init = (jnp.full(targets.shape, -jnp.inf, acc), jnp.zeros(targets.shape, acc))
  (lse, target_logit), _ = jax.lax.scan(body, init, (jnp.arange(n_chunks), head))
  return target_logit - lse


def beta_schedule(num_positions: int, beta: float = 0.1, first_token_factor: float = 5.0,
                  early_factor: float = 20.0, early_length: int = 5) -> jax.Array:
  """β_t for response positions t = 1..num_positions (SPEC §3).

  β_1 = beta·first_token_factor, β_2..β_early_length = beta·early_factor,
  β_t = beta afterwards; the defaults give the paper's 0.5 / 2.0 / 0.1.
  """
  t = jnp.arange(1, num_positions + 1)
  return jnp.where(t == 1, beta * first_token_factor,
                   jnp.where(t <= early_length, beta * early_factor, beta)).astype(jnp.float32)


def response_positions(loss_mask: jax.Array) -> jax.Array:
  """1-based index of each loss-mask token among its row's loss-mask tokens; 0 elsewhere.

  Position 1 is the first response token whatever the prompt length or padding.
  """
  mask = loss_mask.astype(jnp.int32)
  return jnp.cumsum(mask, axis=-1) * mask


def token_constrained_loss(policy_logps: jax.Array, ref_logps: jax.Array, loss_mask: jax.Array, *,
                           beta: float = 0.1, first_token_factor: float = 5.0,
                           early_factor: float = 20.0, early_length: int = 5,
                           min_weight: float = 0.0,
                           betas: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
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
    beta, first_token_factor, early_factor, early_length: the schedule of
      `beta_schedule`.
    min_weight: lower clamp of the gradient weight.
    betas: an explicit schedule [N] for positions 1..N (later positions use
      betas[-1]); overrides the schedule arguments.
  Returns:
    (loss_sum, token_count), scalars.
  """
  mask = loss_mask.astype(jnp.float32)
  t = response_positions(loss_mask)
  if betas is None:
    beta_t = jnp.where(t == 1, beta * first_token_factor,
                       jnp.where(t <= early_length, beta * early_factor, beta))
  else:
    betas = jnp.asarray(betas, jnp.float32)
    beta_t = betas[jnp.clip(t, 1, betas.shape[0]) - 1]
  beta_t = beta_t.astype(jnp.float32)
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


__all__ = ["beta_schedule", "chunked_token_logps", "masked_nll", "response_positions",
           "token_constrained_loss", "token_logps"]
