"""Batched generation with a KV cache: one jit for prefill + decode loop.

Prompts of different lengths are left-padded into one batch (padding slots
hold position -1 in the cache and are never attended to; every row's real
tokens keep positions 0, 1, 2, ...).  The prompt batch is prefilled in one
call, then `jax.lax.while_loop` decodes one token per step for every row
until `max_new_tokens` or until every row has emitted a stop token.
Decoding parameters are per-row arrays (`SamplingParams`), so a sweep over
them reuses one compilation; prompt widths are rounded up to a bucket so a
benchmark's prompt batches share compilations too.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepalign_jax.models import init_cache
from deepalign_jax.sampling.filters import SamplingParams, choose_tokens


def _integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and np.isfinite(value)


# setting → (is the value usable, what is expected); a value below 1e-6 for the temperature counts as 1e-6.
_DECODING_CHECKS = {
  "batch_size": (lambda v: _integer(v) and v >= 1, ">= 1 (an integer)"),
  "max_new_tokens": (lambda v: _integer(v) and v >= 1, ">= 1 (an integer)"),
  "temperature": (lambda v: _number(v) and v >= 0, ">= 0 (a number)"),
  "top_k": (lambda v: _integer(v) and v >= 0, ">= 0 (an integer; 0: no top-k cut)"),
  "top_p": (lambda v: _number(v) and 0 < v <= 1, "in (0, 1] (1: no nucleus cut)"),
}


def check_decoding(prefix: str = "", **settings) -> None:
  """Refuses decoding settings no generation can use: a one-line ValueError naming `prefix` + the setting.

  settings: any of batch_size, max_new_tokens, temperature, top_k, top_p; the last three a scalar or one
  value per prompt (each value is checked).  `prefix` is where they were set, e.g. "config.decoding.".
  """
  for key, value in settings.items():
    if key not in _DECODING_CHECKS:
      raise TypeError(f"check_decoding: unknown decoding setting {key!r}; expected one of {sorted(_DECODING_CHECKS)}")
    ok, expected = _DECODING_CHECKS[key]
    per_row = key in ("temperature", "top_k", "top_p") and np.ndim(value) > 0
    for v in np.ravel(value).tolist() if per_row else [value]:
      if not ok(v):
        raise ValueError(f"{prefix}{key} must be {expected}, got {v!r}")


class Generation(NamedTuple):
  tokens: np.ndarray  # [B, max_new_tokens] generated ids, pad_id after a row stopped
  lengths: np.ndarray  # [B] generated tokens per row, the stop token included
  steps: int  # tokens generated per row before the loop ended (early exit)


def left_pad(
  prompts: Sequence[Sequence[int]], pad_id: int = 0, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """(ids, attention_mask) [B, width], each prompt right-aligned (left padding)."""
  width = width or max(len(p) for p in prompts)
  ids = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for row, prompt in enumerate(prompts):
    if len(prompt):
      ids[row, width - len(prompt) :] = prompt
      mask[row, width - len(prompt) :] = 1
  return ids, mask


def _bucket(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens"))
def _generate(graphdef, state, ids, mask, params, key, stop_ids, pad_id, vocab_limit, *, max_new_tokens):
  model = nnx.merge(graphdef, state)

  def choose(key, logits, vocab_axis=1):
    # Ids past the tokenizer (Gemma pads its embedding table) are never chosen.
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, vocab_axis)
    logits = jnp.where(ids < vocab_limit, logits, -jnp.inf)
    return choose_tokens(key, logits, params, vocab_axis=vocab_axis)

  batch, width = ids.shape
  cache = init_cache(model.config, batch, width + max_new_tokens, model.dtype)
  # Only the last position's logits are needed: the head over every prompt position was ~20% of
  # the prefill's FLOPs at SmolLM2's shape (its 49152-word head).
  hidden, cache = model.hidden_states(ids, attention_mask=mask, cache=cache)
  key, sub = jax.random.split(key)
  first = choose(sub, *model.output_head().token_logits(hidden[:, -1]))
  tokens = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
  done = jnp.isin(first, stop_ids)
  lengths = jnp.ones((batch,), jnp.int32)

  def cond(carry):
    step, _, done, *_ = carry
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    step, tokens, done, lengths, cache, key = carry
    last = jax.lax.dynamic_slice_in_dim(tokens, step - 1, 1, axis=1)
    hidden, cache = model.hidden_states(last, cache=cache)
    key, sub = jax.random.split(key)
    token = choose(sub, *model.output_head().token_logits(hidden[:, -1]))
    token = jnp.where(done, pad_id, token)
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[:, None], step, axis=1)
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | jnp.isin(token, stop_ids)
    return step + 1, tokens, done, lengths, cache, key

  carry = (jnp.ones((), jnp.int32), tokens, done, lengths, cache, key)
  steps, tokens, _, lengths, _, _ = jax.lax.while_loop(cond, body, carry)
  return tokens, lengths, steps


def generate(
  model,
  prompts: Sequence[Sequence[int]],
  *,
  max_new_tokens: int,
  temperature=1.0,
  top_k=0,
  top_p=1.0,
  greedy=False,
  stop_tokens: Sequence[int] = (),
  seed: int = 0,
  pad_id: int = 0,
  vocab_limit: int | None = None,
  bucket: int = 32,
) -> Generation:
  """Generates continuations of token-id prompts.

  Args:
    model: a `Transformer`.
    prompts: B lists of token ids (e.g. `Rendered.input_ids`; a prompt that
      ends inside an open assistant turn continues it — prefilling).
    max_new_tokens: tokens to generate at most per row.
    temperature, top_k, top_p, greedy: scalars or one value per row.
    stop_tokens: ids that end a row (kept as its last generated token).
    seed: PRNG seed; the same seed, prompts and parameters give the same tokens.
    pad_id: written after a row has stopped.
    vocab_limit: ids >= this are never generated (the tokenizer's length when
      the embedding table is padded past it, as Gemma's is).
    bucket: prompt width is rounded up to a multiple of this.
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("generate needs at least one prompt, and no prompt may be empty")
  check_decoding(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
  batch = len(prompts)
  ids, mask = left_pad(prompts, pad_id, width=_bucket(max(len(p) for p in prompts), bucket))
  params = SamplingParams.make(batch, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
  stop_ids = jnp.asarray(list(stop_tokens) or [-1], jnp.int32)
  graphdef, state = nnx.split(model)
  tokens, lengths, steps = _generate(
    graphdef,
    state,
    jnp.asarray(ids),
    jnp.asarray(mask),
    params,
    jax.random.key(seed),
    stop_ids,
    jnp.int32(pad_id),
    jnp.int32(vocab_limit or model.config.vocab_size),
    max_new_tokens=max_new_tokens,
  )
  return Generation(np.asarray(tokens), np.asarray(lengths), int(steps))
