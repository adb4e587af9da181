"""Per-position cross-entropy and gradient norm of a response (paper Fig. 3a/b, SPEC §5).

While fine-tuning on harmful answers, the paper reports, per response
position t, the cross-entropy of the t-th response token and the norm of
the gradient of that loss w.r.t. the parameters: both are largest on the
first few tokens, where the aligned model's refusal disagrees most with the
harmful answer.

    g_t = ‖ ∇_θ (1 / c_t) Σ_b ℓ_{b,t} ‖₂

with ℓ_{b,t} the cross-entropy of row b's t-th response token and c_t the
number of rows whose response reaches position t.  The forward pass runs
once (`jax.vjp`); each position then costs one backward pass, `position_batch`
of them vectorised at a time (memory: that many gradient copies).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from deepalign_jax import losses
from deepalign_jax.analysis.positions import gather_positions, prediction_index


def per_token_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """−log softmax(logits)[targets] in fp32.

  Args:
    logits: [B, T, V]; targets: [B, T] ids; mask: optional [B, T] (0 → 0).
  Returns:
    [B, T] fp32.
  """
  nll = -losses.token_logps(logits, targets)
  return nll if mask is None else jnp.where(mask.astype(jnp.bool_), nll, 0.0)


def per_position_nll(
  model,
  input_ids: jax.Array,
  attention_mask: jax.Array,
  loss_mask: jax.Array,
  num_positions: int,
  *,
  vocab_chunk: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Cross-entropy of the first N response tokens of each row, teacher-forced.

  Only the N hidden states that predict them go through the output head
  ([B, N, V] logits, or vocabulary chunks with `vocab_chunk`).

  Args:
    model: a `Transformer`.
    input_ids, attention_mask, loss_mask: [B, L] (right-padded rows).
    num_positions: N.
  Returns:
    (nll [B, N] fp32, 0 where not valid; valid [B, N] bool).
  """
  index, valid = prediction_index(loss_mask, num_positions)
  hidden, _ = model.hidden_states(input_ids, attention_mask=attention_mask)
  hidden = gather_positions(hidden, index)  # [B, N, D]
  targets = gather_positions(input_ids, index + 1)  # [B, N]
  if vocab_chunk:
    logps = losses.chunked_token_logps(hidden, model.output_head(), targets, vocab_chunk=vocab_chunk)
    return jnp.where(valid, -logps, 0.0), valid
  return per_token_cross_entropy(model.logits(hidden), targets, valid), valid


def per_position_grad_norms(
  graphdef,
  params,
  input_ids: jax.Array,
  attention_mask: jax.Array,
  loss_mask: jax.Array,
  num_positions: int,
  *,
  position_batch: int = 1,
  vocab_chunk: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Gradient norm of the mean cross-entropy at each response position (jit-able).

  Args:
    graphdef, params: `nnx.split(model, nnx.Param, ...)[:2]`, as in a `TrainState`.
    input_ids, attention_mask, loss_mask: [B, L].
    num_positions: N.
    position_batch: positions whose backward passes are vectorised together.
  Returns:
    (grad_norm [N], nll [B, N], valid [B, N]): g_t (0 where no row reaches
    position t), and the per-row losses of the same forward pass
    (`per_position_nll`).
  """

  def nll_fn(params):
    return per_position_nll(
      nnx.merge(graphdef, params), input_ids, attention_mask, loss_mask, num_positions, vocab_chunk=vocab_chunk
    )[0]

  nll, vjp_fn = jax.vjp(nll_fn, params)
  _, valid = prediction_index(loss_mask, num_positions)
  inv_count = 1.0 / jnp.maximum(valid.sum(axis=0), 1).astype(jnp.float32)

  def norm_at(t):
    cotangent = jnp.where(valid & (jnp.arange(num_positions) == t)[None, :], inv_count[t], 0.0)
    (grads,) = vjp_fn(cotangent.astype(nll.dtype))
    return optax.global_norm(grads)

  norms = jax.lax.map(norm_at, jnp.arange(num_positions), batch_size=max(position_batch, 1))
  return norms, nll, valid


__all__ = ["per_position_grad_norms", "per_position_nll", "per_token_cross_entropy"]
