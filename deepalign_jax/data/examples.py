"""Training examples as token ids + loss mask, and the safety-recovery augmentation.

- `tokenize_conversation`: one (system?, user, assistant) pair → ids and a
  mask on the response tokens and their end-of-turn token (SFT, attack data,
  the utility data D_B of SPEC §4).
- `prepare_recovery` / `recovery_example`: paper Eq. 2.  A triplet
  (x, h, r) is rendered once; an example for a given k is then
  `prompt(x) + h[:k] + r` with the loss on r only (prompt and harmful prefix
  masked), built from cached ids without touching the tokenizer.
- `sample_k`: the distribution P_k of SPEC §4 (k = 0 with probability p_zero,
  else uniform over the first min(C, |h| − 1) harmful tokens).
- `recovery_epoch`: the augmented data of one epoch, with k re-drawn per
  epoch from (seed, epoch, index), so a resumed run sees the same k.

Everything here is numpy and Python: no JAX, no device work.  Sequences are
truncated from the right to `max_length`, and every truncation is reported
to the caller (never silent); one that would leave no loss token is an error
naming the record.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from deepalign_jax.data.chat import ChatRenderer, Rendered

# Mixed into every per-example seed so that k draws never share a stream with
# another consumer of the same (seed, epoch, index), e.g. a shuffler.
_K_STREAM_TAG = 0x6B5F6472  # "k_dr"


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedExample:
  """One training row before batching.

  Attributes:
    input_ids: int32 [L] token ids.
    loss_mask: int32 [L], 1 where the token is a target of the loss (its
      log-probability is predicted from the tokens before it), 0 elsewhere.
    source: where the row came from (file:line, dataset name and index, ...),
      for error messages.

  The arrays are stored read-only; `eq=False` because element-wise array
  equality has no single truth value (compare fields with numpy).
  """

  input_ids: np.ndarray
  loss_mask: np.ndarray
  source: str = ""

  def __post_init__(self):
    ids = np.array(self.input_ids, dtype=np.int32)
    mask = np.array(self.loss_mask, dtype=np.int32)
    if ids.ndim != 1 or mask.shape != ids.shape:
      raise ValueError(
        f"{self._where()}input_ids {ids.shape} and loss_mask {mask.shape} must be 1-D arrays of the same length"
      )
    if not np.isin(mask, (0, 1)).all():
      raise ValueError(f"{self._where()}loss_mask must hold only 0 and 1")
    ids.setflags(write=False)
    mask.setflags(write=False)
    object.__setattr__(self, "input_ids", ids)
    object.__setattr__(self, "loss_mask", mask)

  def __len__(self) -> int:
    return int(self.input_ids.shape[0])

  @property
  def num_loss_tokens(self) -> int:
    return int(self.loss_mask.sum())

  def _where(self) -> str:
    return f"{self.source}: " if self.source else ""


def truncate(example: TokenizedExample, max_length: int) -> tuple[TokenizedExample, bool]:
  """Cut an example to its first `max_length` tokens.

  Returns:
    (example, truncated): the same object and False when it already fits.
  Raises:
    ValueError naming the source when no loss token would remain (the prompt,
    or the prompt plus a harmful prefix, fills `max_length` on its own).
  """
  if max_length < 1:
    raise ValueError(f"max_length must be >= 1, got {max_length}")
  if len(example) <= max_length:
    return example, False
  first_target = int(np.argmax(example.loss_mask)) if example.num_loss_tokens else len(example)
  if first_target >= max_length:
    raise ValueError(
      f"{example.source or '<unnamed example>'}: {first_target} tokens come before the first "
      f"loss token (the prompt, and any harmful prefix), leaving no response token within "
      f"max_length={max_length}; shorten the prompt or raise max_length"
    )
  return TokenizedExample(example.input_ids[:max_length], example.loss_mask[:max_length], example.source), True


def _messages(system: str | None, user: str, assistant: str | None = None) -> list[dict[str, str]]:
  messages = [{"role": "system", "content": system}] if system is not None else []
  messages.append({"role": "user", "content": user})
  if assistant is not None:
    messages.append({"role": "assistant", "content": assistant})
  return messages


def tokenize_conversation(
  renderer: ChatRenderer, system: str | None, user: str, assistant: str, *, max_length: int = 512, source: str = ""
) -> tuple[TokenizedExample, bool]:
  """Render (system?, user, assistant) and cut it to `max_length` tokens.

  The loss mask is the renderer's: the assistant's tokens and the end-of-turn
  token closing them (tokens a template writes after it, such as ChatML's
  trailing newline, stay in the ids, masked).  `system=None` leaves the
  renderer's default system prompt (if any) in place.

  Returns:
    (example, truncated): truncated is True when tokens were cut from the right.
  Raises:
    ValueError naming `source` when the prompt alone has >= max_length tokens.
  """
  rendered = renderer.render(_messages(system, user, assistant))
  example = TokenizedExample(np.asarray(rendered.input_ids), np.asarray(rendered.loss_mask), source)
  return truncate(example, max_length)


@dataclasses.dataclass(frozen=True, eq=False)
class RecoveryExample:
  """A safety-recovery triplet (x, h, r), rendered once (paper Eq. 2).

  Attributes:
    prompt_ids: int32 [P] the conversation up to and including the assistant
      header (system?, x), as `renderer.render` gives it for generation.
    harmful_ids: int32 [H] h's response tokens, its end-of-turn token last.
    refusal_ids: int32 [R] r's response tokens, its end-of-turn token last.
    source: where the triplet came from, for error messages.

  `len(harmful_ids)` is |h| of SPEC §4 (end-of-turn included).  A harmful
  prefix never contains h's end-of-turn token, so k ≤ `max_prefix` = |h| − 1:
  a "prefix" that closes the turn is not a partial harmful answer, and a
  refusal after it would teach the model to keep talking after end-of-turn.
  (The reference code draws k up to min(100, |h|) and, for answers of at most
  100 tokens, occasionally includes h's end-of-turn; we do not.)
  """

  prompt_ids: np.ndarray
  harmful_ids: np.ndarray
  refusal_ids: np.ndarray
  source: str = ""

  def __post_init__(self):
    for name in ("prompt_ids", "harmful_ids", "refusal_ids"):
      ids = np.array(getattr(self, name), dtype=np.int32)
      if ids.ndim != 1:
        raise ValueError(f"{self.source or '<unnamed triplet>'}: {name} must be 1-D, got shape {ids.shape}")
      ids.setflags(write=False)
      object.__setattr__(self, name, ids)
    if len(self.harmful_ids) < 2:
      raise ValueError(
        f"{self.source or '<unnamed triplet>'}: the harmful answer has no token before its "
        "end-of-turn token, so no harmful prefix can be drawn"
      )
    if len(self.refusal_ids) < 1:
      raise ValueError(f"{self.source or '<unnamed triplet>'}: the refusal has no tokens")

  @property
  def harmful_length(self) -> int:
    """|h|: h's response tokens, end-of-turn included."""
    return int(self.harmful_ids.shape[0])

  @property
  def max_prefix(self) -> int:
    """The largest usable k: every harmful token but the end-of-turn."""
    return self.harmful_length - 1


def _response_tokens(rendered: Rendered, stop_ids: Sequence[int], what: str, source: str) -> np.ndarray:
  """The masked (response + end-of-turn) ids of a closed rendering.

  Not `rendered.response_ids`: that runs to the end of the rendering and, for
  templates that write text after the end-of-turn token (ChatML's "\\n"),
  holds tokens that are not part of the response.
  """
  mask = np.asarray(rendered.loss_mask, dtype=np.int32)
  start, count = rendered.response_start, int(mask.sum())
  if count == 0 or not mask[start : start + count].all():
    raise ValueError(f"{source or '<unnamed triplet>'}: the {what} rendering has no contiguous response mask")
  ids = np.asarray(rendered.input_ids[start : start + count], dtype=np.int32)
  if int(ids[-1]) not in stop_ids:
    raise ValueError(
      f"{source or '<unnamed triplet>'}: the {what} response does not end with an end-of-turn "
      f"token {sorted(stop_ids)} (ends with id {int(ids[-1])})"
    )
  return ids


def prepare_recovery(
  renderer: ChatRenderer, instruction: str, harmful: str, refusal: str, *, system: str | None = None, source: str = ""
) -> RecoveryExample:
  """Render a triplet (x, h, r) once for `recovery_example`.

  The prompt is `renderer.render([system?, x])`, the ids a generation would
  start from; it must be a prefix of both closed renderings [x, h] and
  [x, r], or splicing h's and r's response tokens after it would give a
  sequence the model never sees at inference.

  Raises:
    ValueError naming `source` when the prefix property fails, the harmful
    answer is empty, or a rendering does not close with an end-of-turn token.
  """
  where = source or "<unnamed triplet>"
  prompt = renderer.render(_messages(system, instruction)).input_ids
  stop_ids = set(renderer.stop_token_ids)
  parts = {}
  for what, answer in (("harmful", harmful), ("refusal", refusal)):
    full = renderer.render(_messages(system, instruction, answer))
    if full.input_ids[: full.response_start] != prompt:
      raise ValueError(
        f"{where}: the prompt rendering ({len(prompt)} tokens) is not the prefix of the "
        f"[instruction, {what}] rendering before its response (response starts at token "
        f"{full.response_start}); the tokenizer merges across the prompt/response boundary"
      )
    parts[what] = _response_tokens(full, stop_ids, what, source)
  return RecoveryExample(np.asarray(prompt, dtype=np.int32), parts["harmful"], parts["refusal"], source)


def recovery_example(prepared: RecoveryExample, k: int) -> TokenizedExample:
  """prompt + first k harmful tokens + refusal (with its end-of-turn), loss on the refusal only.

  Args:
    prepared: a triplet from `prepare_recovery`.
    k: harmful prefix length, 0 ≤ k ≤ prepared.max_prefix.
  Returns:
    The untruncated example; `truncate` cuts it to a maximum length.

  The ids are spliced as they are, without a separator, as the reference code
  does: in SentencePiece vocabularies r's first token carries its space
  ("▁I"); in byte-level BPE ones ("I") it does not, so the text reads
  "…hereI cannot…".  The model sees exactly the tokens it would see had it
  generated h[:k] and then r's first token.
  """
  if not 0 <= k <= prepared.max_prefix:
    raise ValueError(
      f"{prepared.source or '<unnamed triplet>'}: k={k} outside [0, {prepared.max_prefix}] "
      f"(|h| = {prepared.harmful_length} tokens, the last being end-of-turn)"
    )
  context = len(prepared.prompt_ids) + k
  ids = np.concatenate([prepared.prompt_ids, prepared.harmful_ids[:k], prepared.refusal_ids])
  mask = np.zeros(ids.shape, np.int32)
  mask[context:] = 1
  return TokenizedExample(ids, mask, prepared.source)


def max_k(harmful_length: int, C: int = 100) -> int:
  """The largest k that P_k draws: min(C, |h| − 1) (see `RecoveryExample`)."""
  if C < 1:
    raise ValueError(f"C must be >= 1, got {C}")
  if harmful_length < 2:
    raise ValueError(f"harmful_length must be >= 2 (content tokens + end-of-turn), got {harmful_length}")
  return min(C, harmful_length - 1)


def sample_k(rng: np.random.Generator, harmful_length: int, C: int = 100, p_zero: float = 0.5) -> int:
  """One draw of k ~ P_k (SPEC §4).

  k = 0 with probability `p_zero`; otherwise k ~ Uniform{1, …, min(C, |h| − 1)}.
  The spec writes min(C, |h|) with |h| counting the end-of-turn token; the
  upper end stops one short so that the prefix never includes h's
  end-of-turn (the range is capped rather than draws clamped, which would pile
  the mass of k = |h| onto k = |h| − 1).  For |h| > C the two agree exactly.

  Args:
    rng: the generator to draw from.
    harmful_length: |h| in response tokens, end-of-turn included (≥ 2).
    C: cap on the prefix length (100 in the paper; larger in the ablations).
    p_zero: probability of no harmful prefix (1/2 in the paper).
  """
  if not 0.0 <= p_zero <= 1.0:
    raise ValueError(f"p_zero must be in [0, 1], got {p_zero}")
  upper = max_k(harmful_length, C)
  if rng.random() < p_zero:
    return 0
  return int(rng.integers(1, upper + 1))


def epoch_k(seed: int, epoch: int, index: int, harmful_length: int, C: int = 100, p_zero: float = 0.5) -> int:
  """k ~ P_k for example `index` of `epoch`, a pure function of (seed, epoch, index).

  Each example gets its own generator, so a k depends neither on the order in
  which examples are visited nor on how many were drawn before it: resuming
  mid-epoch or sharding the data across hosts gives the same k.  `index` is
  the example's position in the dataset; shuffle the draws, not the dataset,
  or k follows the position rather than the example.
  """
  for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
    if int(value) != value or value < 0:
      raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
  rng = np.random.default_rng([_K_STREAM_TAG, int(seed), int(epoch), int(index)])
  return sample_k(rng, harmful_length, C, p_zero)


@dataclasses.dataclass(frozen=True, eq=False)
class RecoveryDraw:
  """One augmented example of an epoch.

  Attributes:
    example: prompt + h[:k] + r, cut to max_length.
    truncated: whether tokens were cut (the refusal's tail, end-of-turn first).
    k: the harmful prefix length drawn for this epoch.
  """

  example: TokenizedExample
  truncated: bool
  k: int


def recovery_epoch(
  prepared: Sequence[RecoveryExample], epoch: int, seed: int, C: int = 100, p_zero: float = 0.5, max_length: int = 512
) -> list[RecoveryDraw]:
  """The safety-recovery data of one epoch, k re-drawn per example (paper Eq. 2).

  k of example i is `epoch_k(seed, epoch, i, …)`: a new draw every epoch, the
  same draw for the same (seed, epoch).  Before drawing, every triplet is
  checked against the longest prefix it could get, so a prompt too long for
  `max_length` fails at the first epoch, whatever k happens to be drawn.

  Returns:
    One `RecoveryDraw` per triplet, in order.
  Raises:
    ValueError naming the source of a triplet whose prompt plus longest
    harmful prefix leaves no room for a refusal token within max_length.
  """
  for item in prepared:
    longest = len(item.prompt_ids) + max_k(item.harmful_length, C)
    if longest >= max_length:
      raise ValueError(
        f"{item.source or '<unnamed triplet>'}: prompt ({len(item.prompt_ids)} tokens) plus the "
        f"longest harmful prefix ({max_k(item.harmful_length, C)} tokens, C={C}) leaves no "
        f"refusal token within max_length={max_length}; raise max_length or lower C"
      )
  draws = []
  for index, item in enumerate(prepared):
    k = epoch_k(seed, epoch, index, item.harmful_length, C, p_zero)
    example, truncated = truncate(recovery_example(item, k), max_length)
    draws.append(RecoveryDraw(example, truncated, k))
  return draws
