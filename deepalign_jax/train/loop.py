"""The training run: data → (reference log-probs) → steps → checkpoints → HF export.

`run(config, workdir)` is what `python -m deepalign_jax.train` calls; a
notebook can call it the same way.  Everything it needs is in the config
(`configs/*.py`, defaults in `default_config`); the workdir receives
`checkpoints/` (Orbax, resumable), `metrics.jsonl` (one line per step),
`reference_logps.npz` (constrained objective), `config.json` and, at the
end, `hf/` (a transformers-loadable export with the tokenizer).

Rerunning the same command resumes from the latest checkpoint: the batch of
every step is a function of (seed, step), so a resumed run takes exactly the
steps of an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from deepalign_jax import sharding
from deepalign_jax.data import (ChatRenderer, load_tokenizer, prepare_recovery, read_file, recovery_epoch,
                                tokenize_conversation)
from deepalign_jax.data.pipeline import StepOrder, as_micro_batches, pad_rows
from deepalign_jax.models import load_pretrained, save_pretrained
from deepalign_jax.models.gguf import packaged_checkpoint
from deepalign_jax.train import reference
from deepalign_jax.train.checkpoints import Checkpointer
from deepalign_jax.train.state import (OptimizerConfig, init_train_state, learning_rate_schedule,
                                       make_optimizer)
from deepalign_jax.train.step import LossConfig, train_step

_log = logging.getLogger(__name__)
OBJECTIVES = ("sft", "constrained", "recovery")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def default_config() -> ml_collections.ConfigDict:
  """Every setting of a training run, with the paper's fine-tuning defaults (SPEC §3)."""
  c = ml_collections.ConfigDict()
  c.model = ""                 # HF directory, or "packaged:smollm2" / "packaged:gemma3-270m"
  c.chat_format = "auto"       # llama2 | gemma | base | template | auto
  c.system_prompt = ml_collections.config_dict.placeholder(str)
  c.dtype = "float32"          # compute dtype; parameters too unless param_dtype is set
  c.param_dtype = ""
  c.remat = "none"
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))

  c.objective = "sft"          # sft | constrained | recovery
  c.data = ml_collections.ConfigDict(dict(
      path="", format="conversations", max_length=512,
      # recovery: safety triplets + utility conversations, per-step composition (SPEC §4)
      safety_path="", utility_path="", utility_format="alpaca",
      safety_per_step=16, utility_per_step=64, recovery_C=100, recovery_p_zero=0.5))
  c.loss = ml_collections.ConfigDict(dict(
      beta=0.1, first_token_factor=5.0, early_factor=20.0, early_length=5, min_weight=0.0,
      alpha=ml_collections.config_dict.placeholder(float), vocab_chunk=0))
  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=2e-5, b1=0.5, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
      warmup_steps=10, decay="linear"))

  c.batch_size = 64            # global rows per optimizer step (sft / constrained)
  c.micro_batch_size = 8       # rows per forward/backward (gradient accumulation)
  c.epochs = 25
  c.max_steps = 0              # > 0 caps the run (and the LR schedule)
  c.stop_after_steps = 0       # > 0 stops this invocation early; rerun to resume
  c.seed = 0
  c.checkpoint_every = 0       # 0: only at the end
  c.keep_checkpoints = 2
  c.export_hf = True
  c.progress = True
  return c


class _Data:
  """The rows of each step, for one objective."""

  def __init__(self, config, renderer, pad_id):
    data, self.config = config.data, config
    self.pad_id = pad_id
    self.truncated = 0
    if config.objective in ("sft", "constrained"):
      self.examples = self._tokenize(renderer, read_file(data.path, data.format))
      self.order = StepOrder(len(self.examples), config.batch_size, config.seed)
      self.rows = config.batch_size
    elif config.objective == "recovery":
      self.triplets = [prepare_recovery(renderer, t.instruction, t.harmful, t.refusal, source=t.source)
                       for t in read_file(data.safety_path, "triplets")]
      self.utility = self._tokenize(renderer, read_file(data.utility_path, data.utility_format))
      self.order = StepOrder(len(self.triplets), data.safety_per_step, config.seed)
      self.utility_order = StepOrder(len(self.utility), data.utility_per_step, config.seed + 1)
      self.rows = data.safety_per_step + data.utility_per_step
      self._epoch_cache: tuple[int, list] | None = None
    else:
      raise ValueError(f"objective must be one of {OBJECTIVES}, got {config.objective!r}")
    self.ref_logps: list[np.ndarray] | None = None

  def _tokenize(self, renderer, records) -> list:
    examples = []
    for record in records:
      if getattr(record, "assistant", None) is None:
        raise ValueError(f"{record.source}: a training record needs a response")
      example, cut = tokenize_conversation(renderer, record.system, record.user, record.assistant,
                                           max_length=self.config.data.max_length, source=record.source)
      examples.append(example)
      self.truncated += cut
    return examples

  @property
  def steps_per_epoch(self) -> int:
    return self.order.steps_per_epoch

  def rows_for(self, step: int) -> dict[str, np.ndarray]:
    max_length = self.config.data.max_length
    index = self.order.indices(step)
    if self.config.objective != "recovery":
      refs = None if self.ref_logps is None else [self.ref_logps[i] for i in index]
      return pad_rows([self.examples[i] for i in index], self.rows, max_length, self.pad_id,
                      ref_logps=refs)
    epoch = self.order.epoch_of(step)
    if self._epoch_cache is None or self._epoch_cache[0] != epoch:
      draws = recovery_epoch(self.triplets, epoch, self.config.seed, C=self.config.data.recovery_C,
                             p_zero=self.config.data.recovery_p_zero, max_length=max_length)
      self.truncated += sum(d.truncated for d in draws)
      self._epoch_cache = (epoch, [d.example for d in draws])
    safety = [self._epoch_cache[1][i] for i in index]
    utility = [self.utility[i] for i in self.utility_order.indices(step)]
    # Fixed row ranges: safety rows (group 0) first, utility rows (group 1)
    # after; a short batch of either leaves empty rows in its range.
    n_safety, n_utility = self.config.data.safety_per_step, self.config.data.utility_per_step
    examples = (safety + [None] * (n_safety - len(safety)) + utility
                + [None] * (n_utility - len(utility)))
    return pad_rows(examples, self.rows, max_length, self.pad_id,
                    groups=[0] * n_safety + [1] * n_utility)


def _resolve_model(spec: str) -> Path:
  if not spec:
    raise ValueError("config.model is empty: give an HF model directory")
  if spec.startswith("packaged:"):
    return packaged_checkpoint(spec.split(":", 1)[1])
  return Path(spec)


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
  """Trains as configured; returns a summary (also written to workdir/summary.json)."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.batch_size % config.micro_batch_size:
    raise ValueError(f"batch_size={config.batch_size} is not a multiple of "
                     f"micro_batch_size={config.micro_batch_size}")
  model_path = _resolve_model(config.model)
  mesh = sharding.make_mesh(**config.mesh.to_dict())
  dtype = _DTYPES[config.dtype]
  model, model_config = load_pretrained(model_path, dtype=dtype, mesh=mesh, remat=config.remat,
                                        param_dtype=_DTYPES[config.param_dtype] if config.param_dtype else None)
  tokenizer = load_tokenizer(model_path)
  renderer = ChatRenderer(tokenizer, config.chat_format, config.system_prompt)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  data = _Data(config, renderer, pad_id)
  (workdir / "config.json").write_text(config.to_json(indent=2))

  total_steps = data.steps_per_epoch * config.epochs
  if config.max_steps > 0:
    total_steps = min(total_steps, config.max_steps)
  rows = data.rows
  if rows % config.micro_batch_size:
    raise ValueError(f"{rows} rows per step are not a multiple of micro_batch_size={config.micro_batch_size}")
  num_micro = rows // config.micro_batch_size
  batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.micro_batch_size % batch_ways:
    raise ValueError(f"micro_batch_size={config.micro_batch_size} must be a multiple of the mesh's "
                     f"data × fsdp = {batch_ways} (rows are split across them)")

  if config.objective == "constrained":
    cache = workdir / "reference_logps.npz"
    if cache.exists():
      data.ref_logps = reference.load_reference_logps(cache, data.examples)
    else:
      data.ref_logps = reference.compute_reference_logps(
          model, data.examples, max_length=config.data.max_length,
          batch_size=config.micro_batch_size, vocab_chunk=config.loss.vocab_chunk or None,
          progress=config.progress)
      reference.save_reference_logps(cache, data.ref_logps)

  loss_config = LossConfig(
      objective="constrained" if config.objective == "constrained" else "sft",
      beta=config.loss.beta, first_token_factor=config.loss.first_token_factor,
      early_factor=config.loss.early_factor, early_length=config.loss.early_length,
      min_weight=config.loss.min_weight, alpha=config.loss.alpha,
      vocab_chunk=config.loss.vocab_chunk or None)
  optimizer_config = OptimizerConfig(**config.optimizer.to_dict(), total_steps=total_steps)
  optimizer = make_optimizer(optimizer_config)
  schedule = learning_rate_schedule(optimizer_config)
  graphdef, state = init_train_state(model, optimizer)
  checkpointer = Checkpointer(str((workdir / "checkpoints").absolute()), keep=config.keep_checkpoints,
                              save_every=config.checkpoint_every)
  restored = checkpointer.restore(state)
  start = 0
  if restored is not None:
    state, meta = restored
    start = int(meta["step"])
  metrics_file = workdir / "metrics.jsonl"
  _keep_metrics_before(metrics_file, start)

  step_fn = jax.jit(functools.partial(train_step, graphdef, optimizer=optimizer, loss_config=loss_config),
                    donate_argnums=0)
  row_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
  end = total_steps if config.stop_after_steps <= 0 else min(total_steps, start + config.stop_after_steps)
  tokens_seen, clock = 0, time.perf_counter()
  with open(metrics_file, "a") as log, tqdm(total=total_steps, initial=start, desc="training",
                                            unit="step", disable=not config.progress) as bar:
    for step in range(start, end):
      batch = as_micro_batches(data.rows_for(step), num_micro)
      batch = {k: jax.device_put(v, row_sharding) for k, v in batch.items()}
      state, metrics = step_fn(state, batch)
      metrics = {k: float(v) for k, v in metrics.items()}
      tokens_seen += int(metrics["tokens"])
      record = {"step": step + 1, "epoch": data.order.epoch_of(step), **metrics,
                "learning_rate": float(schedule(step))}
      log.write(json.dumps(record) + "\n")
      log.flush()
      bar.update(1)
      bar.set_postfix(loss=f"{metrics['loss']:.4f}",
                      tokens_per_s=f"{tokens_seen / (time.perf_counter() - clock):.0f}")
      checkpointer.maybe_save(step + 1, state, {"step": step + 1})
  finished = end == total_steps
  checkpointer.maybe_save(end, state, {"step": end}, force=True)
  checkpointer.close()

  summary = {"steps_done": end, "total_steps": total_steps, "finished": finished,
             "examples": len(data.examples) if hasattr(data, "examples") else len(data.triplets),
             "truncated_examples": int(data.truncated), "workdir": str(workdir)}
  if finished and config.export_hf:
    trained = nnx.merge(graphdef, state.params)
    summary["hf_export"] = str(save_pretrained(trained, model_config, workdir / "hf", tokenizer=tokenizer))
  if data.truncated:
    _log.warning("%d training examples were truncated to max_length=%d", data.truncated,
                 config.data.max_length)
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


def _keep_metrics_before(path: Path, step: int) -> None:
  """On resume, drop metric lines of steps after the checkpoint (they will be redone)."""
  if not path.exists():
    return
  kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(line + "\n" for line in kept))
  os.replace(tmp, path)
