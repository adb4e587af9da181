"""GCG: greedy coordinate gradient search for an adversarial suffix (Zou et al. 2023).

SPEC §6.  Each step (Algorithm 1 of the paper, as in the reference code
`llm-attacks`):

  1. the gradient of the target loss w.r.t. the one-hot suffix tokens;
  2. the top-k tokens of each position (most negative gradient), among
     printable-ASCII, non-special tokens;
  3. `num_candidates` copies of the suffix, each with one position set to a
     random one of its top-k tokens: the positions evenly spaced over the
     suffix as llm-attacks spaces them (`positions="even"`, the default), or
     drawn per candidate as nanoGCG does (`positions="uniform"`);
  4. candidates whose text does not tokenise back to their ids are dropped
     (and the batch refilled from the survivors, so shapes stay fixed);
  5. every candidate's target loss in one batched forward pass; the lowest
     becomes the suffix of the next step.  With evenly spaced positions the
     candidates swapping late in the suffix start their forward there, after
     the current suffix's cached keys and values (`gcg_step.position_groups`).

The target loss is the mean cross-entropy of the target ("Sure, here is
...") teacher-forced after the rendered prompt `instruction + " " + suffix`.
With several behaviours the suffix is shared (a *universal* suffix) and the
loss is their mean; `progressive=True` starts from one behaviour and adds the
next once the suffix makes every current target the greedy continuation
(the reference code's progressive goals, with teacher-forced greedy match as
the success test).

With a workdir, every step appends to `history.jsonl` and rewrites
`state.json` atomically; rerunning with the same workdir continues from the
last completed step.  Step t draws from PRNG key fold_in(key(seed), t), so a
resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from deepalign_jax.atomic import write_json, write_jsonl
from deepalign_jax.attacks.gcg_step import PromptBatch, candidate_losses, position_groups, propose
from deepalign_jax.attacks.gcg_tokens import (
  GCGLayoutError,
  PromptLayout,
  allowed_tokens,
  build_layout,
  check_render,
  round_trip_filter,
  suffix_text,
)

_log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
STATE_FILE = "state.json"
# Fields that may change between a run and its resumption: they change how
# much is computed at once or for how long, never which suffix is found.
_RESUMABLE_CHANGES = ("num_steps", "forward_batch", "grad_batch", "early_stop")
POSITIONS = ("even", "uniform")
# Runs of evenly spaced candidates whose forward starts at their first swap position: more runs skip more
# of the suffix (1/2 of it as runs → ∞, 3/8 with 4) for one more forward pass in the compiled step each.
POSITION_GROUPS = 4


@dataclasses.dataclass(frozen=True)
class GCGConfig:
  """GCG settings; the defaults are the paper's (SPEC §6).

  Attributes:
    num_steps: optimisation steps.
    init_suffix: the initial suffix text; its token count is the suffix length.
    num_candidates: single-token swaps evaluated per step ("batch size" B).
    topk: tokens per position to draw swaps from.
    forward_batch: sequences per forward pass when evaluating candidates
      (candidates x behaviours are chunked to this; memory, not results).
    grad_batch: behaviours per forward/backward pass of the gradient.
    progressive: universal mode adds behaviours one at a time.
    early_stop: stop once the suffix makes every target the greedy continuation.
    allow_non_ascii: allow non-ASCII suffix tokens.
    seed: PRNG seed of the candidate draws.
    positions: where the candidates swap: "even" (candidate c at position
      floor(c · S / C), as Zou et al.'s llm-attacks code; lets the candidate
      forward skip the unchanged start of the suffix) or "uniform" (one
      position drawn per candidate, as nanoGCG and runs before this option).
  """

  num_steps: int = 500
  init_suffix: str = " ".join(["!"] * 20)
  num_candidates: int = 512
  topk: int = 256
  forward_batch: int = 512
  grad_batch: int = 64
  progressive: bool = False
  early_stop: bool = False
  allow_non_ascii: bool = False
  seed: int = 0
  positions: str = "even"

  @classmethod
  def from_config(cls, config) -> "GCGConfig":
    """The GCG settings of a config section (e.g. an evaluation's `gcg`); its other keys are not GCG's."""
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})

  def __post_init__(self):
    for name in ("num_steps", "num_candidates", "topk", "forward_batch", "grad_batch"):
      if getattr(self, name) < 1:
        raise ValueError(f"GCGConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.positions not in POSITIONS:
      raise ValueError(f"GCGConfig.positions must be one of {POSITIONS}, got {self.positions!r}")

  @property
  def groups(self) -> int:
    """Candidate groups of `candidate_losses`: POSITION_GROUPS with evenly spaced swaps, else one."""
    return POSITION_GROUPS if self.positions == "even" else 1


@dataclasses.dataclass(frozen=True)
class GCGResult:
  """The outcome of `run_gcg`.

  Attributes:
    suffix_ids, suffix_text: the lowest-loss suffix seen (the initial one
      included).  Attack a prompt with `attacked_prompt(instruction, suffix_text)`.
    loss: its target loss, the mean over the first `loss_behaviours` behaviours.
    matched: with it every target is the greedy (teacher-forced) continuation.
    initial_loss: the loss of the initial suffix.
    losses: [steps] the loss of the suffix each step chose.
    last_suffix_ids, last_suffix_text: the suffix after the last step (what
      the reference code returns).
    steps: completed steps (fewer than num_steps after an early stop).
    active: behaviours in the objective at the end (progressive mode grows it).
    loss_behaviours: behaviours `loss` is averaged over.
    history: one record per step, as in history.jsonl.
  """

  suffix_ids: tuple[int, ...]
  suffix_text: str
  loss: float
  matched: bool
  initial_loss: float
  losses: list[float]
  last_suffix_ids: tuple[int, ...]
  last_suffix_text: str
  steps: int
  active: int
  loss_behaviours: int
  history: list[dict]


def _layouts(renderer, behaviours: Sequence[tuple[str, str]], init_suffix: str) -> list[PromptLayout]:
  """Every behaviour's layout with the initial suffix, in its canonical (decoded) text."""
  layouts = [build_layout(renderer, instruction, target, init_suffix) for instruction, target in behaviours]
  ids = layouts[0].suffix_ids
  for layout in layouts[1:]:
    if layout.suffix_ids != ids:
      raise GCGLayoutError(
        f"the initial suffix {init_suffix!r} tokenises differently after behaviour "
        f"{layout.instruction[:60]!r} ({layout.suffix_ids} vs {ids})"
      )
  canonical = suffix_text(renderer.tokenizer, ids)
  if canonical != init_suffix:
    layouts = [build_layout(renderer, lay.instruction, lay.target, canonical) for lay in layouts]
  for layout in layouts:
    check_render(renderer, layout, ids)
  return layouts


def _bucket(active: int, total: int) -> int:
  """Rows for `active` behaviours: the next power of two (at most `total`), so
  progressive mode compiles O(log N) shapes, not N."""
  return min(total, 1 << (active - 1).bit_length())


def prompt_batch(layouts: Sequence[PromptLayout], active: int) -> PromptBatch:
  """The first `_bucket(active)` layouts as arrays, the first `active` weighted 1/active."""
  rows = layouts[: _bucket(active, len(layouts))]
  prefix_width = max(r.suffix_start for r in rows)
  rest_width = max(len(r.input_ids) - r.suffix_start for r in rows)
  target_width = max(len(r.target_ids) for r in rows)
  prefix = np.zeros((len(rows), prefix_width), np.int32)
  prefix_mask = np.zeros((len(rows), prefix_width), np.int32)
  rest = np.zeros((len(rows), rest_width), np.int32)
  pred_pos = np.zeros((len(rows), target_width), np.int32)
  targets = np.zeros((len(rows), target_width), np.int32)
  target_mask = np.zeros((len(rows), target_width), np.float32)
  for i, r in enumerate(rows):
    prefix[i, prefix_width - r.suffix_start :] = r.input_ids[: r.suffix_start]
    prefix_mask[i, prefix_width - r.suffix_start :] = 1
    rest[i, : len(r.input_ids) - r.suffix_start] = r.input_ids[r.suffix_start :]
    n = len(r.target_ids)
    pred_pos[i, :n] = np.arange(n) + r.target_start - r.suffix_start - 1
    targets[i, :n] = r.target_ids
    target_mask[i, :n] = 1.0
  weight = np.where(np.arange(len(rows)) < active, 1.0 / active, 0.0).astype(np.float32)
  return PromptBatch(*map(jnp.asarray, (prefix, prefix_mask, rest, pred_pos, targets, target_mask, weight)))


def _fill(candidates: np.ndarray, keep: np.ndarray, current: np.ndarray, groups: int = 1) -> np.ndarray:
  """[C, S]: the kept candidates, repeated in order to fill the batch (the
  current suffix if none is kept, which makes the step a no-op).

  With several `position_groups`, each group is filled from its own kept candidates, else from the
  kept ones that leave the suffix as it is before the group's start, else with the current suffix, so
  every candidate of a group still equals the current suffix before its start.
  """
  if not keep.any():
    _log.warning("no GCG candidate survived decode→encode; keeping the current suffix")
  out = np.broadcast_to(current, candidates.shape).copy()
  changed = candidates != current
  first_change = np.where(changed.any(axis=1), changed.argmax(axis=1), candidates.shape[1])
  for first, stop, start in position_groups(*candidates.shape, groups):
    pool = first + np.flatnonzero(keep[first:stop])
    if pool.size == 0:
      pool = np.flatnonzero(keep & (first_change >= start))
    if pool.size:
      out[first:stop] = candidates[pool[np.arange(stop - first) % pool.size]]
  return out


# -- workdir -------------------------------------------------------------------


def _fingerprint(config: GCGConfig, model, layouts: Sequence[PromptLayout]) -> dict:
  """What must match for a workdir to be resumed."""
  settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in _RESUMABLE_CHANGES}
  digest = hashlib.sha256(
    json.dumps([[lay.instruction, lay.target, lay.input_ids] for lay in layouts]).encode()
  ).hexdigest()
  return {"config": settings, "behaviours": digest, "model": repr(model.config)}


@dataclasses.dataclass
class SearchState:
  """Where the search stands after `step` steps (what state.json holds, with the run's fingerprint).

  suffix_ids: the current suffix; best_ids / best_loss / best_matched: the best suffix measured over
  `best_active` behaviours; active: how many behaviours the search optimises over now (progressive
  mode adds them one at a time).
  """

  step: int
  suffix_ids: list[int]
  best_ids: list[int]
  best_loss: float | None
  best_active: int
  best_matched: bool
  active: int

  @classmethod
  def from_json(cls, saved: dict) -> "SearchState":
    return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls)})


def _resume(workdir: Path, fingerprint: dict) -> tuple[SearchState | None, list[dict]]:
  """(state, history) of a previous run in workdir, or (None, [])."""
  state_path = workdir / STATE_FILE
  if not state_path.exists():
    return None, []
  state = json.loads(state_path.read_text())
  stored = dict(state["fingerprint"])
  # Runs from before the `positions` option drew every swap position uniformly.
  stored["config"] = {"positions": "uniform", **stored.get("config", {})}
  for key, value in fingerprint.items():
    if stored.get(key) != value:
      detail = ""
      if key == "config":
        diff = [k for k in value if stored["config"].get(k) != value[k]]
        detail = ": " + ", ".join(f"{k}={stored['config'].get(k)!r} there, {value[k]!r} now" for k in diff)
      raise ValueError(f"{state_path} belongs to a GCG run with different {key}{detail}; use another workdir")
  history_path = workdir / HISTORY_FILE
  history = []
  if history_path.exists():
    history = [json.loads(line) for line in history_path.read_text().splitlines() if line]
  # A crash between the history append and the state write leaves a line
  # for a step that will be redone.
  history = [h for h in history if h["step"] <= state["step"]]
  if len(history) != state["step"]:
    raise ValueError(f"{history_path} has {len(history)} steps but {state_path} says {state['step']}")
  write_jsonl(history_path, history)
  return SearchState.from_json(state), history


# -- the attack ----------------------------------------------------------------


def run_gcg(
  model,
  tokenizer,
  renderer,
  behaviours: Sequence[tuple[str, str]],
  config: GCGConfig | None = None,
  workdir: str | os.PathLike | None = None,
  progress: bool = True,
) -> GCGResult:
  """Optimises one adversarial suffix for `behaviours`.

  Args:
    model: a `deepalign_jax.models.Transformer`.
    tokenizer: its tokenizer (the one `renderer` renders with).
    renderer: a `deepalign_jax.data.ChatRenderer`; its chat format and
      system prompt are those of the attacked prompts.
    behaviours: (instruction, target) pairs, e.g. AdvBench's `goal` and
      `target` columns.  One pair: an individual attack; several: one
      universal suffix for all of them.
    config: `GCGConfig` (default: the paper's settings).
    workdir: where history.jsonl and state.json go; an existing run there
      is resumed (None: nothing is written).
    progress: show a progress bar.
  Returns:
    `GCGResult`.
  """
  config = config or GCGConfig()
  behaviours = [(str(instruction), str(target)) for instruction, target in behaviours]
  if not behaviours:
    raise ValueError("run_gcg needs at least one (instruction, target) behaviour")
  if renderer.tokenizer is not tokenizer and len(renderer.tokenizer) != len(tokenizer):
    raise ValueError("the renderer renders with a different tokenizer than the one given")
  layouts = _layouts(renderer, behaviours, config.init_suffix)
  total = len(layouts)
  vocab = model.embed[...].shape[0]
  allowed = allowed_tokens(tokenizer, vocab, allow_non_ascii=config.allow_non_ascii)
  topk = min(config.topk, int(allowed.sum()))
  if topk < config.topk:
    _log.warning("topk=%d exceeds the %d allowed tokens; using %d", config.topk, topk, topk)
  graphdef, params = nnx.split(model)
  allowed = jnp.asarray(allowed)
  key0 = jax.random.key(config.seed)

  init_ids = list(layouts[0].suffix_ids)
  st = SearchState(
    step=0,
    suffix_ids=init_ids,
    best_ids=init_ids,
    best_loss=None,
    best_active=0,
    best_matched=False,
    active=1 if config.progressive else total,
  )
  history: list[dict] = []
  workdir = Path(workdir) if workdir is not None else None
  fingerprint = _fingerprint(config, model, layouts)
  if workdir is not None:
    workdir.mkdir(parents=True, exist_ok=True)
    previous, history = _resume(workdir, fingerprint)
    if previous is not None:
      st = previous
      _log.info("resuming GCG in %s after step %d", workdir, st.step)

  def solved() -> bool:  # the last step's suffix makes every target the greedy continuation
    return bool(history) and history[-1]["matched"] and history[-1]["active"] == total

  batches: dict[int, PromptBatch] = {}
  bar = tqdm(
    total=config.num_steps, initial=min(st.step, config.num_steps), desc="GCG", unit="step", disable=not progress
  )
  while st.step < config.num_steps and not (config.early_stop and solved()):
    start_time = time.perf_counter()
    active = st.active
    if active not in batches:
      batches[active] = prompt_batch(layouts, active)
    batch = batches[active]
    current = np.asarray(st.suffix_ids, np.int32)
    candidates, current_loss, _, current_matched = propose(
      graphdef,
      params,
      batch,
      jnp.asarray(current),
      allowed,
      jax.random.fold_in(key0, st.step),
      topk=topk,
      num_candidates=config.num_candidates,
      grad_batch=config.grad_batch,
      positions=config.positions,
    )
    current_loss = float(current_loss)
    if st.best_active != active or current_loss < st.best_loss:
      # The first step over a new set of behaviours measures the suffix anew.
      st.best_ids, st.best_loss, st.best_active = current.tolist(), current_loss, active
      st.best_matched = bool(np.asarray(current_matched)[:active].all())

    candidates = np.asarray(candidates)
    keep = round_trip_filter(tokenizer, layouts, candidates) & (candidates != current).any(axis=1)
    candidates = _fill(candidates, keep, current, config.groups)
    losses, matched = candidate_losses(
      graphdef,
      params,
      batch,
      jnp.asarray(candidates),
      jnp.asarray(current),
      forward_batch=config.forward_batch,
      groups=config.groups,
    )
    losses, matched = np.asarray(losses), np.asarray(matched)
    best = int(np.argmin(losses))
    loss, success = float(losses[best]), bool(matched[best])
    st.suffix_ids = candidates[best].tolist()
    if loss < st.best_loss:
      st.best_ids, st.best_loss, st.best_matched = st.suffix_ids, loss, success
    st.step += 1
    if success and active < total and config.progressive:
      st.active = active + 1

    record = {
      "step": st.step,
      "loss": loss,
      "current_loss": current_loss,
      "best_loss": st.best_loss,
      "matched": success,
      "active": active,
      "valid_candidates": int(keep.sum()),
      "suffix_ids": st.suffix_ids,
      "suffix_text": suffix_text(tokenizer, st.suffix_ids),
      "seconds": time.perf_counter() - start_time,
    }
    history.append(record)
    if workdir is not None:
      with open(workdir / HISTORY_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
      write_json(
        workdir / STATE_FILE,
        {**dataclasses.asdict(st), "fingerprint": fingerprint, "best_text": suffix_text(tokenizer, st.best_ids)},
      )
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.3f}", best=f"{st.best_loss:.3f}", valid=int(keep.sum()))
  bar.close()

  if not history:
    raise ValueError("GCG ran no step: num_steps must be >= 1")
  for layout in layouts:
    check_render(renderer, layout, st.best_ids)
  return GCGResult(
    suffix_ids=tuple(st.best_ids),
    suffix_text=suffix_text(tokenizer, st.best_ids),
    loss=st.best_loss,
    matched=st.best_matched,
    initial_loss=history[0]["current_loss"],
    losses=[h["loss"] for h in history],
    last_suffix_ids=tuple(st.suffix_ids),
    last_suffix_text=suffix_text(tokenizer, st.suffix_ids),
    steps=st.step,
    active=st.active,
    loss_behaviours=st.best_active,
    history=history,
  )
