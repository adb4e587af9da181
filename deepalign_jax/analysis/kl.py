"""Full-vocabulary KL divergence between two next-token distributions, per position.

The depth analyses of SPEC §5 (paper Fig. 1, 3c, 4) compare two models
position by position along a response:

    KL_t = D_KL(π_p(·|x, y_<t) ‖ π_q(·|x, y_<t)) = Σ_v p_v·(log p_v − log q_v)

over the whole vocabulary (not an estimate from the sampled token), in fp32.

- `per_token_kl`: from two logits tensors [B, T, V].
- `chunked_per_token_kl`: from the two models' final hidden states and
  output heads, `vocab_chunk` columns at a time (and optionally
  `position_chunk` positions at a time), with running log-sum-exps, so the
  two [B, T, V] fp32 logits are never materialised: at Gemma's 256k
  vocabulary and 512 positions those alone are 1 GiB per row.

With a = p's logits and b = q's logits of one position,

    KL = Σ_v e^{a_v}(a_v − b_v) / Σ_v e^{a_v} − lse(a) + lse(b),

and each of the three terms accumulates chunk by chunk with a running
maximum (the online-softmax rescaling).  Both normalisers are accumulated
the same way, so identical inputs give exactly 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from deepalign_jax.models.head import OutputHead, scan_vocabulary


def _masked(kl: jax.Array, mask: jax.Array | None) -> jax.Array:
  # KL >= 0; fp32 rounding of the last digits can leave -1e-9, which a
  # log-scale plot of near-identical models would choke on.
  kl = jnp.maximum(kl, 0.0)
  return kl if mask is None else jnp.where(mask.astype(jnp.bool_), kl, 0.0)


def per_token_kl(p_logits: jax.Array, q_logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """KL(softmax(p_logits) ‖ softmax(q_logits)) over the last axis, in fp32.

  Args:
    p_logits, q_logits: [B, T, V] (any float dtype; upcast to fp32).
    mask: optional [B, T]; positions where it is 0 are returned as 0.
  Returns:
    [B, T] fp32, >= 0.
  """
  if p_logits.shape != q_logits.shape:
    raise ValueError(f"p_logits {p_logits.shape} and q_logits {q_logits.shape} differ in shape")
  log_p = jax.nn.log_softmax(p_logits.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(q_logits.astype(jnp.float32), axis=-1)
  p = jnp.exp(log_p)
  # Where p_v = 0 the term is 0 whatever q_v is (0·log 0 = 0, also against -inf).
  terms = jnp.where(p > 0, p * (log_p - log_q), 0.0)
  return _masked(jnp.sum(terms, axis=-1), mask)


def _kl_block(p_hidden, q_hidden, p_head: OutputHead, q_head: OutputHead, chunk: int):
  """[B, P] KL of one position block, scanning the vocabulary `chunk` columns at a time."""

  def step(carry, logits, columns, fresh):
    m_p, s_p, m_q, s_q, w = carry
    a = jnp.where(fresh, logits[0], -jnp.inf)
    b = jnp.where(fresh, logits[1], -jnp.inf)
    new_m_p = jnp.maximum(m_p, jnp.max(a, axis=-1))
    new_m_q = jnp.maximum(m_q, jnp.max(b, axis=-1))
    e_a = jnp.exp(a - new_m_p[..., None])
    scale_p = jnp.exp(m_p - new_m_p)
    s_p = s_p * scale_p + jnp.sum(e_a, axis=-1)
    w = w * scale_p + jnp.sum(jnp.where(fresh & (e_a > 0), e_a * (a - b), 0.0), axis=-1)
    s_q = s_q * jnp.exp(m_q - new_m_q) + jnp.sum(jnp.exp(b - new_m_q[..., None]), axis=-1)
    return new_m_p, s_p, new_m_q, s_q, w

  shape = p_hidden.shape[:2]
  minus_inf = jnp.full(shape, -jnp.inf, jnp.float32)
  zeros = jnp.zeros(shape, jnp.float32)
  m_p, s_p, m_q, s_q, w = scan_vocabulary(
    step, (minus_inf, zeros, minus_inf, zeros, zeros), [(p_hidden, p_head), (q_hidden, q_head)], chunk
  )
  return w / s_p - (m_p + jnp.log(s_p)) + (m_q + jnp.log(s_q))


def chunked_per_token_kl(
  p_hidden: jax.Array,
  q_hidden: jax.Array,
  p_head: OutputHead,
  q_head: OutputHead,
  mask: jax.Array | None = None,
  *,
  vocab_chunk: int = 8192,
  position_chunk: int | None = None,
) -> jax.Array:
  """`per_token_kl(p_hidden @ p_head, q_hidden @ q_head)` without the [B, T, V] logits.

  Memory holds a few [B, position_chunk, vocab_chunk] fp32 blocks, flat in V
  and in T (see benchmarks/kl_memory.py).  For analysis only: nothing is
  rematerialised for a backward pass.

  Args:
    p_hidden: [B, T, Dp] final (normed) hidden states of model p.
    q_hidden: [B, T, Dq] those of model q at the same positions (the two
      models may differ in width, not in vocabulary).
    p_head, q_head: their `OutputHead`s.
    mask: optional [B, T]; positions where it is 0 are returned as 0.
    vocab_chunk: vocabulary columns per step (clipped to V).
    position_chunk: positions per block (None: all T at once); T need not
      be a multiple of it.
  Returns:
    [B, T] fp32, >= 0.
  """
  if p_head.vocab_size != q_head.vocab_size:
    raise ValueError(
      f"the two output heads have different vocabularies ({p_head.vocab_size} vs "
      f"{q_head.vocab_size} columns); a full-vocabulary KL needs the same token ids"
    )
  if p_hidden.shape[:2] != q_hidden.shape[:2]:
    raise ValueError(f"p_hidden {p_hidden.shape} and q_hidden {q_hidden.shape} must agree on [B, T]")
  for head in (p_head, q_head):
    head.check()
  batch, length = p_hidden.shape[:2]
  if not position_chunk or position_chunk >= length:
    return _masked(_kl_block(p_hidden, q_hidden, p_head, q_head, vocab_chunk), mask)

  n_blocks = -(-length // position_chunk)
  pad = n_blocks * position_chunk - length

  def blocks(hidden):
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    return hidden.reshape(batch, n_blocks, position_chunk, -1).swapaxes(0, 1)

  kl = jax.lax.map(
    lambda xs: _kl_block(xs[0], xs[1], p_head, q_head, vocab_chunk), (blocks(p_hidden), blocks(q_hidden))
  )
  kl = kl.swapaxes(0, 1).reshape(batch, n_blocks * position_chunk)[:, :length]
  return _masked(kl, mask)


__all__ = ["OutputHead", "chunked_per_token_kl", "per_token_kl"]
