"""The training run: data → (reference log-probs) → steps → checkpoints → HF export.

`run(config, workdir)` is what `python -m deepalign_jax.train` calls; a
notebook can call it the same way.  Everything it needs is in the config
(`configs/*.py`, defaults in `default_config`); the workdir receives
`checkpoints/` (Orbax, async, resumable, with the data iterator's state),
`metrics.jsonl` (one line per step) and `tensorboard/` event files,
`reference_logps.npz` (constrained objective), `config.json` and, at the
end, `params/` (params-only Orbax checkpoint) and `hf/` (a
transformers-loadable export with the tokenizer).

With `config.lora.rank` > 0 the run trains LoRA adapters on the frozen
starting model: checkpoints and `params/` hold the adapters (and their
optimizer state) only, `hf/` is the merged model and `adapter/` the adapters
in PEFT's format; the constrained and DPO references are the base model with
its adapters off, computed in the step (`lora.reference=adapters_off`), or
cached as for full fine-tuning (`cache`).

Rerunning the same command resumes from the latest complete checkpoint: the
batch of every step is a function of (seed, step), so a resumed run takes
exactly the steps of an uninterrupted one.  A workdir holds one run:
`run.json` records its identity (the model's fingerprint, the data files'
hashes and every setting that changes what is computed, `run_identity`), and
a rerun whose identity differs is refused, naming each differing key, unless
`config.rerun` says to start over (`restart`) or to continue from the latest
checkpoint with the new settings (`change`: a raised `train.num_steps`, a
lower learning rate after a non-finite stop); each change is kept in
run.json's history.  `params/`, `hf/` and `summary.json` describe the same
finished step: a run that takes more steps removes them first and writes
them again when it finishes.  A loss or gradient that stops being finite
stops the run with `NonFiniteError`; the checkpoints that fed the failing
step are removed, so the one it names resumes with a lower learning rate.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from deepalign_jax import atomic, identity, losses, sharding
from deepalign_jax.data import ChatRenderer, load_tokenizer
from deepalign_jax.data.pipeline import step_dataset, step_iterator
from deepalign_jax.errors import RunError
from deepalign_jax.models import dtype_from_name, lora, save_pretrained, sources
from deepalign_jax.models.peft_io import merge_lora, save_peft_adapter
from deepalign_jax.models.transformer import check_attention
from deepalign_jax.train import reference, wandb_writer
from deepalign_jax.train.checkpoints import Checkpointer, checkpoint_steps
from deepalign_jax.train.rows import OBJECTIVES, AugmentedRows, SupervisedRows, training_rows
from deepalign_jax.train.state import (
  OptimizerConfig,
  init_adapter_train_state,
  init_train_state,
  learning_rate_schedule,
  make_optimizer,
  optimizer_hyperparameters,
)
from deepalign_jax.train.step import LossConfig, shared_train_step, split_loss_config

_log = logging.getLogger(__name__)


class NonFiniteError(RunError):
  """The loss, the gradient or the updated weights stopped being finite (the message names the step and
  the checkpoint to resume from)."""


RERUN = ("resume", "restart", "change")
# Settings that change nothing a run computes: a rerun may change them freely.
HARMLESS = (
  "rerun",
  "progress",
  "tensorboard",
  "wandb",
  "export_hf",
  "remat",  # recomputation, not other numbers
  "scan_layers",  # the same computation compiled another way
  "attention",  # the same attention through another kernel
  "mesh",  # another topology resumes the same run
  "eval",  # the in-training evaluation logs numbers beside the loss, it changes no weight
  "train.stop_after_steps",
  "checkpoint.every_steps",
  "checkpoint.keep",
  "data.prefetch",
  "data.tfds_data_dir",
)


def default_config() -> ml_collections.ConfigDict:
  """Every setting of a training run, with the paper's fine-tuning defaults (Qi et al. 2025, §4 and App. B)."""
  c = ml_collections.ConfigDict()
  c.model = ""  # the starting model: HF directory, packaged:NAME, a cached hub id or a training workdir
  c.chat_format = "auto"  # llama2 | gemma | base | template | auto (the tokenizer's template, else base)
  c.system_prompt = ml_collections.config_dict.placeholder(str)  # for records without one (None: no system block)
  c.response_end = "turn"  # turn: the format's end-of-turn; eos: the reference's Gemma ending " <eos>"
  c.dtype = "float32"  # compute dtype (float32 | bfloat16); parameters too unless param_dtype is set
  c.param_dtype = ""  # "float32" with dtype "bfloat16": fp32 master weights and AdamW moments
  c.remat = "none"  # rematerialisation of the layer scan: none | dots | full
  # True: the layers run as one jax.lax.scan (the default); False: unrolled, the same numbers, compile time
  # growing with the layers; slower on XLA:CPU (benchmarks/train_step.py --unroll), unmeasured on accelerators
  c.scan_layers = True
  # The attention kernel: einsum (ours, every family) | xla | cudnn | auto (jax.nn.dot_product_attention's;
  # cudnn: flash attention on NVIDIA GPUs in bf16); Gemma 2's soft-capped attention always runs as einsum
  c.attention = "einsum"
  c.mesh = ml_collections.ConfigDict(
    dict(
      data=1,  # data-parallel ways (rows)
      fsdp=-1,  # fully sharded ways (rows and parameters); -1: the devices the others leave
      tensor=1,  # tensor-parallel ways (heads, MLP)
    )
  )
  # sft: masked NLL on responses; constrained_sft: paper Eq. 3 against the initial model; augmented:
  # safety-recovery examples + utility data (Eq. 2); dpo: preference pairs (data.format preferences or
  # triplets) against the initial model, batch_size pairs a step.
  c.objective = "sft"
  c.data = ml_collections.ConfigDict(
    dict(
      path="",  # sft / constrained_sft data: a file (or HEx-PHI directory) in `format`, or tfds:MANUAL_DIR
      format="conversations",  # the file's layout (README: Data files)
      columns="",  # format table: role=column pairs, e.g. "prompt=question,response=answer" (README: Data files)
      split="train",  # the split of a tfds: directory or a saved DatasetDict
      max_length=512,  # tokens per row; longer examples are cut (and counted)
      every_nth=1,  # keep records 0, n, 2n, ... (the reference trains on every 5th SQL row)
      tfds_data_dir="",  # where tfds: builds go (default ~/.cache/deepalign_jax/tfds)
      safety_path="",  # augmented: the safety-recovery triplets JSONL
      utility_path="",  # augmented: the utility data D_B
      utility_format="alpaca",  # augmented: the utility file's layout
      safety_per_step=16,  # augmented: safety rows per step
      utility_per_step=64,  # augmented: utility rows per step
      recovery_C=100,  # augmented: the longest harmful prefix k (tokens)
      recovery_p_zero=0.5,  # augmented: the probability of k = 0
      prefetch=2,  # steps prepared ahead on background threads
    )
  )
  c.loss = ml_collections.ConfigDict(
    dict(
      beta=0.1,  # constrained: β after the early positions
      first_token_factor=5.0,  # constrained: β_1 = beta × this
      early_factor=20.0,  # constrained: β_2..β_early_length = beta × this
      early_length=5,  # constrained: the early positions
      min_weight=0.0,  # constrained: clamp of the gradient weight 2σ(βΔ) (the reference: 1e-3)
      alpha=ml_collections.config_dict.placeholder(float),  # augmented: α of Eq. 2 (None: one token mean)
      vocab_chunk=0,  # > 0: log-probs this many vocabulary columns at a time (large vocabularies)
      log_positions=8,  # constrained: response positions whose weight and Δ are logged
      dpo_beta=0.1,  # dpo: β, the strength of the pull toward the reference
      sft_weight=0.0,  # dpo: plus this × the token-mean NLL of the chosen responses (0: DPO alone)
    )
  )
  c.optimizer = ml_collections.ConfigDict(
    dict(
      learning_rate=2e-5,  # peak learning rate
      b1=0.5,  # AdamW β1 (the paper's fine-tuning: 0.5)
      b2=0.999,  # AdamW β2
      eps=1e-8,  # AdamW ε
      weight_decay=0.0,  # AdamW decoupled weight decay
      grad_clip=1.0,  # global-norm clip (0: off)
      warmup_steps=10,  # linear warm-up from 0
      decay="linear",  # after the warm-up: linear (to 0 at the last step) | constant
    )
  )
  c.train = ml_collections.ConfigDict(
    dict(
      batch_size=64,  # global rows per optimizer step (sft / constrained_sft)
      micro_batch_size=8,  # rows per forward/backward (gradient accumulation)
      epochs=25,  # passes over the data when num_steps is 0
      num_steps=0,  # > 0: exactly this many steps (and LR schedule); 0: from epochs
      stop_after_steps=0,  # > 0: this invocation stops early; rerun to resume
      seed=0,  # data order and k draws
    )
  )
  c.checkpoint = ml_collections.ConfigDict(
    dict(
      every_steps=0,  # 0: only at the end
      keep=2,  # checkpoints kept
      directory="",  # default workdir/checkpoints; may be gs://bucket/... (Orbax/TensorStore)
    )
  )
  # In-training prefilling attack (keyword judge) every `every_steps` steps, logged as eval/asr_prefill_<k>
  # next to the loss; needs prompts with harmful answers.
  c.eval = ml_collections.ConfigDict(
    dict(
      every_steps=0,  # 0: no in-training evaluation
      path="",  # prompts with harmful answers
      format="harmful_hexphi",  # their layout
      limit=16,  # first N prompts
      prefill_tokens=[5],  # k values of the prefilling attack
      max_new_tokens=64,  # generation length
      batch_size=8,  # prompts per generation batch
      keywords="qi2025",  # the keyword judge's refusal list
      seed=0,  # sampling seed
    )
  )
  # LoRA (Hu et al. 2021): low-rank adapters on the frozen starting model, trained alone.
  c.lora = ml_collections.ConfigDict(
    dict(
      rank=0,  # adapter rank r; 0: full fine-tuning
      alpha=16.0,  # the update is scaled by alpha / rank (PEFT's lora_alpha)
      dropout=0.0,  # dropout on the adapters' input while training
      targets=list(lora.TARGETS),  # projections adapted: q k v o gate up down (or q_proj, ...)
      layers=[],  # layer indices adapted; []: every layer
      reference="adapters_off",  # constrained_sft / dpo: adapters_off (the base, in the step) | cache
    )
  )
  c.export_hf = True  # write hf/ (transformers loads it) when the run finishes
  # resume: a rerun continues only with the settings it started with; restart: discard the workdir's run
  # and start over; change: continue from the latest checkpoint with the new settings (kept in run.json)
  c.rerun = "resume"
  c.progress = True  # progress bars on stderr
  c.tensorboard = True  # TensorBoard event files in workdir/tensorboard
  # Weights & Biases beside TensorBoard, the same scalars (train/wandb_writer.py); optional, never required.
  c.wandb = ml_collections.ConfigDict(
    dict(
      project="",  # W&B project ('': no W&B logging)
      mode="offline",  # offline (workdir/wandb, no network; `wandb sync` uploads it) | online | disabled
      entity="",  # W&B entity, a team or user ('': the default)
      name="",  # run name ('': the workdir's name)
    )
  )
  return c


Hook = Callable[[int, nnx.Module], Mapping[str, float]]


def model_source(config) -> sources.ModelSource:
  """The model a training config starts from."""
  if not config.model:
    raise ValueError(
      "config.model is empty: give an HF model directory, packaged:NAME, a cached hub id or a training workdir"
    )
  return sources.resolve_source(config.model)


@dataclasses.dataclass
class _Setup:
  """What a run is made of before its first step."""

  model: Any  # the starting model; None once the train state holds the weights
  model_config: Any
  tokenizer: Any
  mesh: jax.sharding.Mesh
  data: SupervisedRows | AugmentedRows
  total_steps: int
  num_micro: int
  run: dict[str, Any]  # run.json: the run's identity and history
  source: sources.ModelSource
  lora: lora.LoraConfig | None  # the adapters to add after the reference is computed; None: full fine-tuning


def _setup(config: ml_collections.ConfigDict, workdir: Path) -> _Setup:
  """Checks the config, loads the starting model and the data, and records the resolved config."""
  train = config.train
  _check_config(config)
  source = model_source(config)
  run = claim_workdir(config, workdir, source)
  if config.objective == "dpo" and (2 * train.batch_size) % train.micro_batch_size:
    raise ValueError(
      f"config.train.batch_size={train.batch_size} pairs (2 rows each) do not fill micro-batches of "
      f"config.train.micro_batch_size={train.micro_batch_size} rows"
    )
  if config.objective != "dpo" and train.batch_size % train.micro_batch_size:
    raise ValueError(
      f"config.train.batch_size={train.batch_size} is not a multiple of "
      f"config.train.micro_batch_size={train.micro_batch_size}"
    )
  mesh = sharding.make_mesh(**config.mesh.to_dict())
  dtype = dtype_from_name(config.dtype, "config.dtype")
  param_dtype = dtype_from_name(config.param_dtype, "config.param_dtype") if config.param_dtype else dtype
  model = sources.load(source, dtype=dtype, param_dtype=param_dtype, mesh=mesh, remat=config.remat)
  model.scan_layers = config.scan_layers
  model.attention = config.attention
  tokenizer = load_tokenizer(source.tokenizer)
  renderer = ChatRenderer(tokenizer, config.chat_format, config.system_prompt, config.response_end)
  data = training_rows(config, renderer, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

  total_steps = train.num_steps if train.num_steps > 0 else data.order.steps_per_epoch * train.epochs
  if config.objective == "dpo" and train.micro_batch_size % 2:
    raise ValueError(
      f"config.train.micro_batch_size={train.micro_batch_size} must be even for dpo: a (chosen, rejected) pair "
      f"shares a micro-batch"
    )
  if data.rows % train.micro_batch_size:
    raise ValueError(
      f"{data.rows} rows per step are not a multiple of config.train.micro_batch_size={train.micro_batch_size}"
    )
  batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if train.micro_batch_size % batch_ways:
    raise ValueError(
      f"config.train.micro_batch_size={train.micro_batch_size} must be a multiple of the "
      f"mesh's data × fsdp = {batch_ways} (rows are split across them)"
    )
  adapters = lora_settings(config, model.config.num_layers)
  return _Setup(
    model, model.config, tokenizer, mesh, data, total_steps, data.rows // train.micro_batch_size, run, source, adapters
  )


def lora_settings(config: ml_collections.ConfigDict, num_layers: int | None = None) -> lora.LoraConfig | None:
  """The run's `LoraConfig` (None when config.lora.rank is 0); bad settings are refused in one line."""
  settings = config.lora
  if isinstance(settings.rank, bool) or not isinstance(settings.rank, int) or settings.rank < 0:
    raise ValueError(f"config.lora.rank must be an integer >= 0 (0: full fine-tuning), got {settings.rank!r}")
  if settings.reference not in lora.REFERENCES:
    raise ValueError(f"config.lora.reference must be one of {lora.REFERENCES}, got {settings.reference!r}")
  if settings.rank == 0:
    return None
  return lora.lora_config(
    rank=settings.rank,
    alpha=settings.alpha,
    dropout=settings.dropout,
    targets=list(settings.targets),
    layers=list(settings.layers),
    num_layers=num_layers,
    seed=config.train.seed,
    where="config.lora",
  )


def _online_reference(config: ml_collections.ConfigDict) -> bool:
  """Whether the run's π_ref is its base model with the adapters off, computed in the step."""
  return (
    config.lora.rank > 0 and config.lora.reference == "adapters_off" and config.objective in ("constrained_sft", "dpo")
  )


def _check_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for settings no run can use."""
  train = config.train
  if config.objective not in OBJECTIVES:
    raise ValueError(f"config.objective must be one of {OBJECTIVES}, got {config.objective!r}")
  if config.rerun not in RERUN:
    raise ValueError(f"config.rerun must be one of {RERUN}, got {config.rerun!r}")
  for key in ("batch_size", "micro_batch_size"):
    if not isinstance(train[key], int) or train[key] < 1:
      raise ValueError(f"config.train.{key} must be a positive integer, got {train[key]!r}")
  for key in ("num_steps", "epochs", "stop_after_steps"):
    if train[key] < 0:
      raise ValueError(f"config.train.{key} must be >= 0, got {train[key]!r}")
  if train.num_steps == 0 and train.epochs == 0:
    raise ValueError("config.train.num_steps and config.train.epochs are both 0: give the steps or the epochs")
  if config.data.max_length < 2:
    raise ValueError(f"config.data.max_length must be >= 2 tokens, got {config.data.max_length!r}")
  dtype_from_name(config.dtype, "config.dtype")
  if config.param_dtype:
    dtype_from_name(config.param_dtype, "config.param_dtype")
  if "wandb" in config:
    wandb_writer.check(config.wandb)
  check_attention(config.attention, "config.attention")
  lora_settings(config)


DATA_FILES = ("data.path", "data.safety_path", "data.utility_path")


def run_identity(config: ml_collections.ConfigDict, source: sources.ModelSource) -> dict[str, Any]:
  """What a training run computes, flat: `config.KEY` for every setting outside `HARMLESS`, the model's
  fingerprint and the data files' content hashes (the model's and the files' paths are left out: the same
  weights or data moved elsewhere are the same run)."""
  # An empty column mapping is no setting (and keeps the identity of runs from before the key existed).
  unset = () if config.data.get("columns") else ("data.columns",)
  # So are the LoRA settings of a run without adapters (rank 0: full fine-tuning, as before LoRA existed).
  unset += () if config.lora.rank else ("lora",)
  settings = identity.without(config.to_dict(), HARMLESS + ("model",) + DATA_FILES + unset)
  out = {f"config.{k}": v for k, v in identity.flatten(settings).items()}
  out["model fingerprint"] = source.fingerprint()
  for key, path in _data_paths(config).items():
    out[identity.CONTENT + key] = identity.path_fingerprint(path)
  return out


def _data_paths(config) -> dict[str, str]:
  """`config.data.KEY` → path of the data files the config names."""
  return {f"config.{key}": config.data[key.split(".", 1)[1]] for key in DATA_FILES if config.data[key.split(".", 1)[1]]}


# What a training run writes into its workdir (checkpoints apart): what a restart removes.
OUTPUTS = (
  "summary.json",
  "params",
  "hf",
  "adapter",
  "metrics.jsonl",
  "tensorboard",
  "reference_logps.npz",
  "config.json",
)


def _checkpoint_dir(config, workdir: Path) -> str:
  return config.checkpoint.directory or str((workdir / "checkpoints").absolute())


def claim_workdir(config: ml_collections.ConfigDict, workdir: Path, source: sources.ModelSource) -> dict[str, Any]:
  """Checks a rerun against the workdir's run.json (`config.rerun`) and records this run; returns run.json.

  Every process decides the same way (they read the same file); only
  process 0 writes or removes anything.
  """
  ident = run_identity(config, source)
  previous = identity.read_run(workdir)
  checkpoint_dir = _checkpoint_dir(config, workdir)
  main = jax.process_index() == 0
  computed = bool(checkpoint_steps(checkpoint_dir)) or (workdir / "metrics.jsonl").exists()
  if previous is not None and not computed:
    previous = None  # a start that stopped before its first step (a bad data file, ...): nothing to keep apart
  has_run = previous is not None or computed
  if config.rerun == "restart" and has_run:
    if main:
      for name in OUTPUTS + (identity.RUN_FILE,):
        atomic.remove(workdir / name)
      atomic.remove(checkpoint_dir)
    _sync("deepalign_jax.train.restart")
    _log.warning("%s: config.rerun=restart: the previous run's checkpoints and outputs were removed", workdir)
    previous, has_run = None, False
  how = (
    "use a new --workdir, --config.rerun=restart to start over, or --config.rerun=change to continue "
    "from the latest checkpoint with the new settings"
  )
  if previous is None:
    if has_run and config.rerun != "change":
      raise identity.RerunRefused(
        f"{workdir}: holds a training run without {identity.RUN_FILE} (from an older version of the toolkit, "
        f"or checkpoints in {checkpoint_dir}); {how}"
      )
    run = identity.new_run(ident, paths=_data_paths(config), event="start")
  else:
    diffs = identity.differences(previous["identity"], ident)
    if not diffs:
      return previous
    if config.rerun != "change":
      described = identity.describe_differences(diffs, old_paths=previous.get("paths"), new_paths=_data_paths(config))
      raise identity.RerunRefused(f"{workdir}: this rerun's settings differ from the run in it: {described}; {how}")
    if any(key == "model fingerprint" for key, _, _ in diffs):
      raise identity.RerunRefused(
        f"{workdir}: config.model is another model (fingerprint {previous['identity']['model fingerprint']} "
        f"-> {ident['model fingerprint']}); a run's weights come from its checkpoints, so another starting "
        f"model needs a new --workdir or --config.rerun=restart"
      )
    step = _latest(checkpoint_dir)
    changed = {key: [old, new] for key, old, new in diffs}
    _log.warning("%s: config.rerun=change at step %s: %s", workdir, step, identity.describe_differences(diffs))
    run = identity.new_run(ident, previous, paths=_data_paths(config), event="change", step=step, changed=changed)
  if main:  # the config of the run as it now stands (run.json keeps what changed, and when)
    identity.write_run(workdir, run)
    atomic.write_text(workdir / "config.json", config.to_json(indent=2))
  return run


def _latest(directory: str) -> int | None:
  steps = checkpoint_steps(directory)
  return steps[-1] if steps else None


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _reference_logps(config: ml_collections.ConfigDict, workdir: Path, setup: _Setup) -> None:
  """The constrained objective's π_ref log-probs: computed once with the initial weights, cached.

  The cache carries the identity of what it was computed from (the starting
  model's fingerprint, the data file's hash and the settings that shape the
  tokens); a cache of anything else is recomputed, never reused.
  """
  cache = workdir / "reference_logps.npz"
  data = setup.data
  made_from = identity.digest(
    {
      "model": setup.source.fingerprint(),
      "data": identity.path_fingerprint(config.data.path),
      "settings": {k: config.data[k] for k in ("format", "split", "max_length", "every_nth")},
      "render": [config.chat_format, config.system_prompt, config.response_end],
      "vocab_chunk": config.loss.vocab_chunk,
    }
  )
  # Every process must take the same branch (computing is collective): process 0 decides.
  if _agree(cache.exists() and reference.cache_identity(cache) == made_from):
    data.ref_logps = reference.load_reference_logps(cache, data.examples)
    return
  if cache.exists():
    _log.warning("%s was computed from another model, data or settings: computing it again", cache)
  data.ref_logps = reference.compute_reference_logps(
    setup.model,
    data.examples,
    max_length=config.data.max_length,
    batch_size=config.train.micro_batch_size,
    vocab_chunk=config.loss.vocab_chunk or None,
    progress=config.progress and jax.process_index() == 0,
  )
  if jax.process_index() == 0:
    reference.save_reference_logps(cache, data.ref_logps, made_from=made_from)


def loss_config(config: ml_collections.ConfigDict) -> LossConfig:
  """The train step's loss settings of a training config."""
  loss = config.loss
  objective = {"constrained_sft": "constrained", "dpo": "dpo"}.get(config.objective, "sft")
  return LossConfig(
    objective=objective,
    betas=losses.BetaSchedule(loss.beta, loss.first_token_factor, loss.early_factor, loss.early_length),
    min_weight=loss.min_weight,
    alpha=loss.alpha,
    vocab_chunk=loss.vocab_chunk or None,
    log_positions=loss.log_positions,
    dpo_beta=loss.dpo_beta,
    sft_weight=loss.sft_weight,
  )


class _NonFiniteStep(Exception):
  """Step `step` (1-based) was not finite; `inputs_finite`: its loss and gradient were (the update overflowed)."""

  def __init__(self, step: int, metrics: Mapping[str, Any], inputs_finite: bool):
    super().__init__(step)
    self.step, self.metrics, self.inputs_finite = step, metrics, inputs_finite


def _non_finite_error(stop: _NonFiniteStep, checkpointer: Checkpointer, checkpoint_dir: str) -> NonFiniteError:
  """Removes the checkpoints that feed the failing step again; the error names the one to resume from.

  Step s reads the weights after update s-1: if its loss or gradient is not
  finite, checkpoint s-1 would fail the same way with any learning rate, so it
  goes (and anything later).  If only the updated weights overflowed, the
  checkpoint before the step is good.
  """
  first_bad = stop.step - 1 if not stop.inputs_finite else stop.step
  removed = checkpointer.discard_from(first_bad)
  last = checkpointer.latest_step()
  m = stop.metrics
  what = (
    f"loss={float(m['loss'])}, grad_norm={float(m['grad_norm'])}"
    if not stop.inputs_finite
    else f"the update made the weights non-finite (param_norm={float(m['param_norm'])})"
  )
  resume = (
    f"checkpoint step {last} in {checkpoint_dir} is the last good one"
    if last is not None
    else f"no good checkpoint is left in {checkpoint_dir}, so a rerun starts from the initial weights"
  )
  return NonFiniteError(
    f"step {stop.step}: {what} (not finite); stopped without saving"
    + (f", removed checkpoint(s) {removed} whose weights fed this step" if removed else "")
    + f"; {resume}; lower optimizer.learning_rate (or check the data) and rerun with --config.rerun=change"
  )


class _MetricsLog:
  """The host side of each step: finiteness, the metrics.jsonl line, TensorBoard, hooks, the progress bar."""

  def __init__(
    self,
    config,
    workdir: Path,
    start: int,
    total_steps: int,
    schedule,
    data,
    hooks,
    graphdef,
    checkpointer: Checkpointer,
    checkpoint_dir: str,
    run_id: str,
    frozen=None,
  ):
    main = jax.process_index() == 0
    self.file = open(workdir / "metrics.jsonl" if main else os.devnull, "a")
    self.writer = _tensorboard(workdir, start) if config.tensorboard and main else None
    wandb = config.get("wandb")
    log_wandb = main and wandb is not None and bool(wandb.project)
    self.wandb = wandb_writer.WandbWriter(wandb, workdir, config.to_dict()) if log_wandb else None
    self.bar = tqdm(
      total=total_steps, initial=start, desc="training", unit="step", disable=not (config.progress and main)
    )
    self.schedule, self.data, self.hooks, self.graphdef = schedule, data, hooks, graphdef
    self.frozen = frozen  # a LoRA run's base parameters (the hooks see the adapted model)
    self.checkpointer, self.checkpoint_dir = checkpointer, checkpoint_dir
    self.run_id = run_id
    self.tokens_seen, self.clock = 0, time.perf_counter()

  def finish(self, step: int, metrics, params=None) -> None:
    """Step `step` (0-based) on the host; `params`: the weights after it, for the hooks due at this step."""
    metrics = {k: _host(v) for k, v in metrics.items()}
    inputs_finite = bool(np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"]))
    if not (inputs_finite and np.isfinite(metrics["param_norm"])):
      raise _NonFiniteStep(step + 1, metrics, inputs_finite)
    record = {
      "step": step + 1,
      "run": self.run_id,
      "epoch": self.data.order.epoch_of(step),
      **{k: _plain(v) for k, v in metrics.items()},
      "learning_rate": float(self.schedule(step)),
    }
    self.tokens_seen += int(record["tokens"])
    record["tokens_per_s"] = self.tokens_seen / (time.perf_counter() - self.clock)
    for every, hook in self.hooks:
      if every > 0 and (step + 1) % every == 0:
        record.update(hook(step + 1, _model(self.graphdef, params, self.frozen)))
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()
    if self.writer is not None:
      _write_scalars(self.writer, record)
    if self.wandb is not None:
      _write_scalars(self.wandb, record)
    self.bar.update(1)
    self.bar.set_postfix(loss=f"{record['loss']:.4f}", tokens_per_s=f"{record['tokens_per_s']:.0f}")

  def close(self) -> None:
    self.bar.close()
    self.file.close()
    if self.writer is not None:
      self.writer.close()
    if self.wandb is not None:
      self.wandb.close()


def _model(graphdef, params, frozen=None):
  """The model of a train state's parameters (and a LoRA run's frozen base)."""
  return nnx.merge(graphdef, params) if frozen is None else nnx.merge(graphdef, params, frozen)


def _exports_current(config, workdir: Path, run_id: str, step: int) -> bool:
  """Whether params/, hf/ (adapter/) and summary.json already describe this run's `step` (a rerun of a
  finished run)."""
  summary = workdir / "summary.json"
  if not summary.exists() or not (workdir / "params").is_dir() or (config.export_hf and not (workdir / "hf").is_dir()):
    return False
  if config.lora.rank and not (workdir / "adapter").is_dir():
    return False
  done = json.loads(summary.read_text())
  return done.get("finished") and done.get("steps_done") == step and done.get("run") == run_id


def _drop_exports(workdir: Path) -> None:
  """Removes a finished run's exports (summary first: a run without it is unfinished), before more steps."""
  for name in ("summary.json", "params", "hf", "adapter"):
    atomic.remove(workdir / name)


def _export(config, workdir: Path, setup: _Setup, graphdef, params, frozen=None) -> dict[str, str]:
  """The finished run's params/ (params-only Orbax; a LoRA run's adapters) and, if asked, hf/ (what
  transformers loads; a LoRA run's merged weights), and a LoRA run's adapter/ (PEFT's format), each
  assembled beside its place and renamed into it; summary.json is written after them."""
  out = {}
  params_dir = (workdir / "params").absolute()
  staging = params_dir.with_name(f".params.{os.getpid()}")
  atomic.remove(staging)
  with ocp.StandardCheckpointer() as params_checkpointer:
    params_checkpointer.save(staging, params)
  if jax.process_index() == 0:
    atomic.remove(params_dir)
    os.replace(staging, params_dir)
  out["params"] = str(params_dir)
  trained = _model(graphdef, params, frozen)
  if frozen is not None:
    adapter = save_peft_adapter(trained, workdir / "adapter", base_model_name_or_path=config.model)
    out["adapter_export"] = str(adapter)
  if config.export_hf:
    merged = merge_lora(trained) if frozen is not None else trained
    out["hf_export"] = str(save_pretrained(merged, setup.model_config, workdir / "hf", tokenizer=setup.tokenizer))
  elif jax.process_index() == 0:
    atomic.remove(workdir / "hf")
  return out


def run(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, hooks: Sequence[tuple[int, Hook]] = ()
) -> dict[str, Any]:
  """Trains as configured; returns a summary (also written to workdir/summary.json).

  hooks: (every_steps, fn) pairs; fn(step, model) runs after every
    `every_steps`-th step on the current weights and returns scalars that
    are logged with that step's metrics (e.g. an in-training attack ASR).
  """
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  train = config.train
  setup = _setup(config, workdir)
  data, total_steps, num_micro, run_id = setup.data, setup.total_steps, setup.num_micro, setup.run["id"]
  if config.objective in ("constrained_sft", "dpo") and not _online_reference(config):
    _reference_logps(config, workdir, setup)  # with the starting weights, before any adapter exists

  optimizer_config = OptimizerConfig(**config.optimizer.to_dict(), total_steps=total_steps)
  frozen = None
  if setup.lora is None:
    graphdef, state = init_train_state(setup.model, make_optimizer(optimizer_config))
  else:
    lora.add_lora(setup.model, setup.lora)
    graphdef, state, frozen = init_adapter_train_state(setup.model, make_optimizer(optimizer_config))
  setup.model = None  # the train state (and a LoRA run's frozen base) holds the only copy of the weights

  batches = step_iterator(
    step_dataset(
      data.rows_for, total_steps, num_micro, process_index=jax.process_index(), process_count=jax.process_count()
    ),
    prefetch=config.data.prefetch,
  )
  checkpoint_dir = _checkpoint_dir(config, workdir)
  checkpointer = Checkpointer(checkpoint_dir, keep=config.checkpoint.keep, save_every=config.checkpoint.every_steps)
  restored = checkpointer.restore(state, batches)
  start = 0
  if restored is not None:
    state, meta = restored
    start = int(meta["step"])
    try:
      _check_base(meta, setup, checkpoint_dir)
    except identity.RerunRefused:
      checkpointer.close()
      raise
    position = batches.get_state().get("next_index", start)
    if position != start:
      raise ValueError(f"{checkpoint_dir}: data position {position} does not match step {start}")
  if start > total_steps:
    checkpointer.close()
    raise identity.RerunRefused(
      f"{checkpoint_dir}: holds step {start}, past this run's {total_steps} steps; raise "
      f"config.train.num_steps to at least {start}, or --config.rerun=restart to start over"
    )
  end = total_steps if train.stop_after_steps <= 0 else min(total_steps, start + train.stop_after_steps)
  if jax.process_index() == 0:
    _keep_metrics_before(workdir / "metrics.jsonl", start)
    if start < end:  # more steps: the finished run's exports no longer describe the latest step
      _drop_exports(workdir)

  # Numbers as inputs, not constants: runs of one shape share the compiled step.
  static_loss, loss_values = split_loss_config(loss_config(config))
  if _online_reference(config):
    static_loss = dataclasses.replace(static_loss, reference="adapters_off")
  hyperparameters = jax.device_put(
    {"optimizer": optimizer_hyperparameters(optimizer_config), "loss": loss_values}, NamedSharding(setup.mesh, P())
  )
  step_fn = functools.partial(shared_train_step, graphdef, loss_config=static_loss)
  if frozen is not None:
    step_fn = functools.partial(shared_train_step, graphdef, frozen=frozen, loss_config=static_loss)
  row_sharding = NamedSharding(setup.mesh, P(None, ("data", "fsdp")))

  def sync_after(step: int) -> bool:
    """Whether step `step` (1-based) needs its state on the host side: a hook, a checkpoint or the end."""
    return step == end or checkpointer.due(step) or any(every > 0 and step % every == 0 for every, _ in hooks)

  log = _MetricsLog(
    config,
    workdir,
    start,
    total_steps,
    learning_rate_schedule(optimizer_config),
    data,
    hooks,
    graphdef,
    checkpointer,
    checkpoint_dir,
    run_id,
    frozen,
  )
  meta = {"run": run_id}
  if frozen is not None:  # a checkpoint of adapters is only meaningful on top of the base it trained on
    meta["base_model"] = setup.source.fingerprint()
  try:
    # One step in flight: step s+1 is dispatched before step s's metrics are read, so the host's work
    # overlaps the device's.  Steps whose state is needed (hooks, checkpoints, the last) are finished at
    # once, so nothing is saved after a step that was not finite.
    pending = None
    for step in range(start, end):
      host_batch = next(batches)
      batch = {
        k: jax.make_array_from_process_local_data(row_sharding, v, (num_micro, train.micro_batch_size) + v.shape[2:])
        for k, v in host_batch.items()
      }
      state, metrics = step_fn(state, batch, hyperparameters)
      if pending is not None:
        log.finish(*pending)  # no hook is due at a pending step: hooks make a step sync
        pending = None
      if sync_after(step + 1):
        log.finish(step, metrics, state.params)
        checkpointer.maybe_save(step + 1, state, {"step": step + 1, **meta}, data=batches)
      else:
        pending = (step, metrics)
    finished = end == total_steps
    checkpointer.maybe_save(end, state, {"step": end, **meta}, force=True, data=batches)
    checkpointer.wait()
  except _NonFiniteStep as stop:
    raise _non_finite_error(stop, checkpointer, checkpoint_dir) from None
  finally:
    checkpointer.close()
    log.close()

  summary = {
    "steps_done": end,
    "total_steps": total_steps,
    "finished": finished,
    "run": run_id,
    "examples": data.num_examples,
    "truncated_examples": int(data.truncated),
    "workdir": str(workdir),
    "model_source": setup.source.describe(),
  }
  if data.truncated:
    _log.warning("%d training examples were truncated to max_length=%d", data.truncated, config.data.max_length)
  if finished:
    if _exports_current(config, workdir, run_id, end):
      return json.loads((workdir / "summary.json").read_text())
    summary.update(_export(config, workdir, setup, graphdef, state.params, frozen))
  if jax.process_index() == 0:
    atomic.write_json(workdir / "summary.json", summary)
  return summary


def _check_base(meta: Mapping[str, Any], setup: _Setup, checkpoint_dir: str) -> None:
  """A LoRA checkpoint resumes only onto the base model its adapters were trained on."""
  if setup.lora is None:
    return
  saved, current = meta.get("base_model"), setup.source.fingerprint()
  if saved != current:
    raise identity.RerunRefused(
      f"{checkpoint_dir}: its LoRA adapters were trained on the base model with fingerprint {saved}, "
      f"config.model has fingerprint {current}; adapters resume only onto their own base model"
    )


def _agree(flag: bool) -> bool:
  """Process 0's value of `flag`, on every process."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def _host(x: jax.Array) -> np.ndarray:
  """A metric on the host; replicated values are read from a local shard (multi-host safe)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _plain(value) -> float | list[float | None]:
  """A JSON-ready metric: a float, or a list with None for NaN entries."""
  array = np.asarray(value, np.float64)
  if array.ndim == 0:
    return float(array)
  return [None if np.isnan(x) else float(x) for x in array]


def _tensorboard(workdir: Path, start: int):
  from tensorboardX import SummaryWriter

  # purge_step: a resumed run hides the events it is about to redo.
  return SummaryWriter(str(workdir / "tensorboard"), purge_step=start + 1 if start else None)


def _write_scalars(writer, record: Mapping[str, Any]) -> None:
  step = record["step"]
  for key, value in record.items():
    if key == "step":
      continue
    if isinstance(value, list):
      for position, x in enumerate(value, 1):
        if x is not None:
          writer.add_scalar(f"{key}/t{position:02d}", x, step)
    elif isinstance(value, (int, float)):
      writer.add_scalar(key, value, step)
  writer.flush()


def _keep_metrics_before(path: Path, step: int) -> None:
  """On resume, drop metric lines of steps after the checkpoint (they will be redone)."""
  if not path.exists():
    return
  kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
  atomic.write_text(path, "".join(line + "\n" for line in kept))
