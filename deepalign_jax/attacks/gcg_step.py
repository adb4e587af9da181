"""The device side of GCG (Zou et al. 2023, Algorithm 1) as pure jitted functions.

One step is two calls with fixed shapes, so every step of a run reuses the
same two compilations:

  propose            target loss and its gradient w.r.t. the one-hot suffix
                     of every behaviour, top-k tokens per position, and a
                     batch of single-token swaps of the current suffix;
  candidate_losses   the target loss of every candidate on every behaviour
                     in one batched forward pass (chunked only if asked to).

Between them the host drops candidates that do not survive decode→encode
(`gcg_tokens.round_trip_filter`).

The tokens before the suffix never change, so each call runs them once per
behaviour into a KV cache and every candidate forward (and the gradient's
backward) covers only the suffix, the template after it and the target: the
candidate forward costs (suffix + rest) tokens per row instead of the whole
prompt.  With the swap positions evenly spaced over the suffix (Zou et al.'s
code; `propose(positions="even")`), the candidates come sorted by position,
so `candidate_losses` splits them into `groups` runs whose swaps all lie at
or after a known slot, runs the current suffix once into the cache, and
starts each run's forward at its slot: the tokens before it are the current
suffix's, already in the cache (`position_groups`).

The model is entered as (graphdef, state) so `jax.jit` sees arrays,
not NNX objects.  Its forward over the one-hot suffix runs the model's own
embedding path unchanged (dtype cast, Gemma's sqrt(d) scale): the suffix
embeddings one_hot @ E are appended to the embedding table as "virtual
tokens" V, V+1, ... and the suffix slots of the input hold those ids.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from deepalign_jax.losses import chunked_token_logps
from deepalign_jax.models import KVCache, init_cache


class PromptBatch(NamedTuple):
  """Behaviours as padded arrays (a pytree of jnp arrays), split at the suffix.

  The prefix (everything before the suffix) is left-padded, so it ends at
  the same slot in every row; the rest starts with the suffix and is
  right-padded, which — attention being causal — changes none of a row's
  target logits.  Positions stay 0, 1, 2, ... per row.

  prefix_ids:  [B, P] tokens before the suffix, left-padded.
  prefix_mask: [B, P] 1 on real prefix tokens.
  rest_ids:    [B, R] suffix (slots 0..S-1; any ids there), then the
               template and the target.
  pred_pos:    [B, L] positions in rest_ids whose logits predict the target
               tokens (target position - 1).
  target_ids:  [B, L] target tokens, 0 past a row's target.
  target_mask: [B, L] 1.0 on target tokens.
  weight:      [B] 1/active for active behaviours, 0 for padding rows; the
               attack minimises Σ_b weight_b · loss_b, the mean over behaviours.
  """

  prefix_ids: jax.Array
  prefix_mask: jax.Array
  rest_ids: jax.Array
  pred_pos: jax.Array
  target_ids: jax.Array
  target_mask: jax.Array
  weight: jax.Array


def position_groups(num_candidates: int, suffix_length: int, groups: int) -> list[tuple[int, int, int]]:
  """(first, stop, start) per group: candidates [first, stop) all equal the current suffix before slot `start`.

  The candidates are split into `groups` contiguous runs of near-equal size (at most one per candidate);
  `start` is the evenly spaced swap position of the run's first candidate, floor(first · S / C), the
  lowest position any of its candidates swaps when `propose(positions="even")` made them.  One group
  [(0, C, 0)] makes no assumption about the candidates.
  """
  groups = max(1, min(groups, num_candidates))
  edges = [g * num_candidates // groups for g in range(groups + 1)]
  return [(lo, hi, lo * suffix_length // num_candidates) for lo, hi in zip(edges[:-1], edges[1:])]


def _rows(batch: PromptBatch, index: jax.Array) -> PromptBatch:
  return jax.tree.map(lambda x: x[index], batch)


def _splice(rest_ids: jax.Array, suffix: jax.Array) -> jax.Array:
  """rest_ids [n, R] with the suffix [n, S] in its first S slots."""
  return rest_ids.at[:, : suffix.shape[1]].set(suffix)


def prefix_cache(model, batch: PromptBatch) -> KVCache:
  """The KV cache [B rows, P + R slots] after each behaviour's prefix."""
  rows, width = batch.prefix_ids.shape
  cache = init_cache(model.config, rows, width + batch.rest_ids.shape[1], model.dtype)
  _, cache = model.hidden_states(batch.prefix_ids, attention_mask=batch.prefix_mask, cache=cache)
  return cache


def _cache_rows(cache: KVCache, index: jax.Array) -> KVCache:
  """The cache of rows `index` [n] (copied: n rows of [P + R] slots per layer)."""
  return KVCache(
    keys=cache.keys[:, index],
    values=cache.values[:, index],
    positions=cache.positions[index],
    index=cache.index,
    lengths=cache.lengths[index],
  )


# Output-head columns per chunk of the target loss: on CPU 4096-column chunks of [256, 49152] logits took
# half the time of the whole block's log-softmax and argmax (`losses.chunked_token_logps`).
VOCAB_CHUNK = 4096


def target_losses(model, hidden: jax.Array, rows: PromptBatch) -> tuple[jax.Array, jax.Array]:
  """(mean target cross-entropy [n], greedy match [n]) from hidden states [n, R, D] of rest_ids.

  Only the L target-predicting positions go through the output head, a vocabulary chunk at a
  time, never [n, R, V] logits.  `matched` is True when every target token is the argmax
  of its logits: greedy decoding would then produce the target.
  """
  picked = jnp.take_along_axis(hidden, rows.pred_pos[..., None], axis=1)  # [n, L, D]
  logps, argmax = chunked_token_logps(
    picked, model.output_head(), rows.target_ids, vocab_chunk=VOCAB_CHUNK, greedy=True
  )
  nll = -logps * rows.target_mask
  losses = nll.sum(-1) / jnp.maximum(rows.target_mask.sum(-1), 1.0)
  hits = argmax | (rows.target_mask == 0)
  return losses, hits.all(-1)


def _with_virtual_tokens(graphdef, state, rest_ids: jax.Array, extra_rows: jax.Array, cache: KVCache):
  """(model, final hidden states [n, R, D]) of rest_ids after the cached prefix,
  where ids V, V+1, ... select extra_rows [R', D].

  The model is merged from a copy of the state's Variables made in this
  trace (NNX refuses to mutate a Variable of an outer trace); its table is
  swapped for the forward and restored after it, so a tied output head
  still sees the [V, D] table.
  """
  model = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))
  table = model.embed[...]
  model.embed.value = jnp.concatenate([table, extra_rows.astype(table.dtype)])
  hidden, _ = model.hidden_states(rest_ids, cache=cache)
  model.embed.value = table
  return model, hidden


def one_hot_gradients(graphdef, state, rows: PromptBatch, cache: KVCache, suffix: jax.Array):
  """Gradient of each behaviour's target loss w.r.t. its one-hot suffix.

  Args:
    graphdef, state: `nnx.split` of a `Transformer`.
    rows: n behaviours.
    cache: their `prefix_cache` (n rows).
    suffix: [S] current suffix ids (the same for every behaviour).
  Returns:
    (grads [n, S, V] in the embedding dtype, losses [n], matched [n]).
    grads[b, s, v] = ∂loss_b / ∂one_hot[s, v]: a first-order estimate of the
    loss change from putting token v at position s.
  """
  table = nnx.merge(graphdef, state).embed[...]
  vocab, _ = table.shape
  n, length = rows.rest_ids.shape[0], suffix.shape[0]
  # One copy of the one-hot per behaviour, so a single backward pass of the
  # summed loss gives every behaviour's own gradient.
  one_hot = jnp.broadcast_to(jax.nn.one_hot(suffix, vocab, dtype=table.dtype), (n, length, vocab))
  virtual = vocab + jnp.arange(n * length, dtype=jnp.int32).reshape(n, length)
  ids = _splice(rows.rest_ids, virtual)

  def total(one_hot):
    embeds = jnp.einsum("nsv,vd->nsd", one_hot, table).reshape(n * length, -1)
    model, hidden = _with_virtual_tokens(graphdef, state, ids, embeds, cache)
    losses, matched = target_losses(model, hidden, rows)
    return losses.sum(), (losses, matched)

  grads, (losses, matched) = jax.grad(total, has_aux=True)(one_hot)
  return grads, losses, matched


def _chunked(fn, xs, chunk: int):
  """fn over the leading axis of the pytree xs, at most `chunk` rows per call.

  When everything fits, fn runs once on all rows.  Otherwise rows are padded
  to a multiple of `chunk` with copies of row 0 (their outputs dropped) and
  `jax.lax.map` runs the chunks in sequence, so memory holds one chunk's
  activations.
  """
  n = jax.tree.leaves(xs)[0].shape[0]
  if chunk >= n:
    return fn(xs)
  pad = -n % chunk
  xs = jax.tree.map(lambda x: jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))]), xs)
  out = jax.lax.map(fn, jax.tree.map(lambda x: x.reshape(-1, chunk, *x.shape[1:]), xs))
  return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:])[:n], out)


@functools.partial(jax.jit, static_argnames=("graphdef", "topk", "num_candidates", "grad_batch", "positions"))
def propose(
  graphdef,
  state,
  batch: PromptBatch,
  suffix: jax.Array,
  allowed: jax.Array,
  key: jax.Array,
  *,
  topk: int,
  num_candidates: int,
  grad_batch: int,
  positions: str = "uniform",
):
  """Loss of the current suffix and a batch of single-token swaps of it.

  Args:
    graphdef, state: `nnx.split(model)`.
    batch: B behaviours (padding rows have weight 0).
    suffix: [S] current suffix ids.
    allowed: [V] bool, the tokens a suffix may use.
    key: this step's PRNG key.
    positions: where each candidate swaps: "uniform" (drawn per candidate, as nanoGCG) or "even"
      (candidate c at floor(c · S / C), as Zou et al.'s llm-attacks code: sorted, every position
      equally often).
  Returns:
    candidates [C, S]: the suffix with one position replaced by one of the
      top-k tokens (uniform) of that position.
    loss: Σ_b weight_b · loss_b of the current suffix (scalar).
    losses, matched: [B] per behaviour.
  """
  cache = prefix_cache(nnx.merge(graphdef, state), batch)
  index = jnp.arange(batch.rest_ids.shape[0])
  grads, losses, matched = _chunked(
    lambda i: one_hot_gradients(graphdef, state, _rows(batch, i), _cache_rows(cache, i), suffix), index, grad_batch
  )
  # As the reference code: each behaviour's gradient is normalised per
  # position before the behaviours are summed, so no single prompt dominates.
  grads = grads.astype(jnp.float32)
  grads = grads / jnp.maximum(jnp.linalg.norm(grads, axis=-1, keepdims=True), 1e-20)
  grad = jnp.einsum("b,bsv->sv", batch.weight, grads)
  # Most negative gradient = largest estimated loss decrease.
  scores = jnp.where(allowed[None, :], -grad, -jnp.inf)
  top = jax.lax.top_k(scores, topk)[1]  # [S, K]
  pos_key, tok_key = jax.random.split(key)
  if positions == "even":
    where = jnp.arange(num_candidates) * suffix.shape[0] // num_candidates
  elif positions == "uniform":
    where = jax.random.randint(pos_key, (num_candidates,), 0, suffix.shape[0])
  else:
    raise ValueError(f"positions must be 'uniform' or 'even', got {positions!r}")
  choices = jax.random.randint(tok_key, (num_candidates,), 0, topk)
  candidates = jnp.broadcast_to(suffix, (num_candidates, suffix.shape[0]))
  candidates = candidates.at[jnp.arange(num_candidates), where].set(top[where, choices])
  return candidates, jnp.dot(batch.weight, losses), losses, matched


@functools.partial(jax.jit, static_argnames=("graphdef", "forward_batch", "groups"))
def candidate_losses(
  graphdef, state, batch: PromptBatch, candidates: jax.Array, suffix=None, *, forward_batch: int, groups: int = 1
):
  """Mean target loss of every candidate suffix over the behaviours.

  Args:
    candidates: [C, S] suffix ids.
    suffix: [S] the current suffix; needed with groups > 1.
    forward_batch: sequences per forward pass; ≥ B·C evaluates all
      candidates on all behaviours in one batched pass.  Memory: the pass
      holds a copy of its rows' prefix cache besides its activations.
    groups: with more than one, the candidates of each `position_groups` run must equal `suffix`
      before its start (evenly spaced swaps do): the current suffix runs once into the cache and
      each run's forward covers only the slots from its start on.  One group assumes nothing.
  Returns:
    (losses [C] = Σ_b weight_b · loss_b, matched [C]: every weighted
    behaviour's target is the greedy continuation).
  """
  model = nnx.merge(graphdef, state)
  cache = prefix_cache(model, batch)
  behaviours, (num_candidates, length) = batch.rest_ids.shape[0], candidates.shape
  runs = position_groups(num_candidates, length, groups)
  if len(runs) > 1:
    if suffix is None:
      raise ValueError("candidate_losses with groups > 1 needs the current suffix")
    # The current suffix's keys and values after every prefix, once per behaviour.
    current = jnp.broadcast_to(suffix, (behaviours, length))
    _, cache = model.hidden_states(current, cache=cache)

  def evaluate(index, start):
    rows = _rows(batch, index[0])
    rows_cache = _cache_rows(cache, index[0])
    if len(runs) > 1:  # resume after the first `start` suffix tokens
      back = length - start
      rows_cache = rows_cache._replace(index=rows_cache.index - back, lengths=rows_cache.lengths - back)
      rows = rows._replace(pred_pos=jnp.maximum(rows.pred_pos - start, 0))
    ids = _splice(rows.rest_ids, candidates[index[1]])[:, start:]
    hidden, _ = model.hidden_states(ids, cache=rows_cache)
    return target_losses(model, hidden, rows)

  pieces = []
  for first, stop, start in runs:
    size = stop - first
    b_index = jnp.repeat(jnp.arange(behaviours), size)
    c_index = jnp.tile(jnp.arange(first, stop), behaviours)
    piece = _chunked(functools.partial(evaluate, start=start), (b_index, c_index), forward_batch)
    pieces.append(jax.tree.map(lambda x, size=size: x.reshape(behaviours, size), piece))
  losses, matched = (jnp.concatenate(parts, axis=1) for parts in zip(*pieces))
  matched = matched | (batch.weight == 0)[:, None]
  return jnp.einsum("b,bc->c", batch.weight, losses), matched.all(0)
