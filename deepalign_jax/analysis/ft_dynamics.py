"""Fine-tuning dynamics by response position (paper Fig. 3; docs/analysis.md).

    python -m deepalign_jax.analysis.ft_dynamics --config configs/analysis/<name>.py --workdir DIR

Fine-tunes a model with plain SFT on (prompt, harmful answer) pairs — the
train step of `deepalign_jax.train.step`, AdamW as in training — and

  (a, b) at each step of `probe.steps` (0 = before the first update), on a
         fixed probe batch (the first `probe.examples` records): the mean
         cross-entropy and the gradient norm of the mean loss at each
         response position 1..N (`dynamics.per_position_grad_norms`);
  (c)    after the last step, samples a response per prompt from the
         fine-tuned model and computes KL(fine-tuned ‖ initial) by position
         on those samples (the initial weights were kept on the host).

DIR receives dynamics.json (everything above, plus the training loss per
step), dynamics.csv (quantity,step,position,mean,stderr,count),
loss_by_position.png, grad_norm_by_position.png, kl_vs_initial.png and
samples.jsonl.  Nothing is checkpointed: this is an analysis of short runs.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from ml_collections import config_dict
from tqdm.auto import tqdm

from deepalign_jax import atomic
from deepalign_jax.analysis.dynamics import per_position_grad_norms
from deepalign_jax.analysis.plots import plot_by_position
from deepalign_jax.analysis.positions import position_stats
from deepalign_jax.analysis.prompts import read_pairs
from deepalign_jax.analysis.teacher_forcing import kl_by_position
from deepalign_jax.cli import run_cli
from deepalign_jax.data import ChatRenderer, as_exchange, load_tokenizer, read_file, tokenize_conversation, truncate
from deepalign_jax.data.pipeline import StepOrder, as_micro_batches, pad_rows
from deepalign_jax.models import dtype_from_name
from deepalign_jax.models.sources import load, resolve_source
from deepalign_jax.sampling import Sampler
from deepalign_jax.train.state import OptimizerConfig, init_train_state, make_optimizer
from deepalign_jax.train.step import LossConfig, train_step


def default_config() -> ml_collections.ConfigDict:
  """Every setting of a fine-tuning-dynamics run (Fig. 3: Llama-2-7B-Chat on harmful examples)."""
  c = ml_collections.ConfigDict()
  c.model = ""  # HF directory, packaged:NAME, a cached hub id or a training workdir
  c.chat_format = "auto"  # llama2 | gemma | base | template | auto
  c.system_prompt = config_dict.placeholder(str)  # for records without one (None: no system block)
  c.dtype = "float32"  # compute and parameter dtype: float32 | bfloat16
  c.data = ml_collections.ConfigDict(
    dict(
      path="",  # the fine-tuning data
      format="triplets",  # any format giving (prompt, response) pairs; triplets: harmful answers
      max_examples=0,  # 0: all records
      max_length=256,  # tokens per row
    )
  )
  c.batch_size = 8  # rows per optimizer step
  c.micro_batch_size = 8  # rows per forward/backward (gradient accumulation)
  c.num_steps = 20  # optimizer steps
  c.seed = 0  # data order
  c.optimizer = ml_collections.ConfigDict(
    dict(
      learning_rate=2e-5,  # peak learning rate
      b1=0.5,  # AdamW β1
      b2=0.999,  # AdamW β2
      eps=1e-8,  # AdamW ε
      weight_decay=0.0,  # AdamW decoupled weight decay
      grad_clip=1.0,  # global-norm clip (0: off)
      warmup_steps=0,  # linear warm-up from 0
      decay="constant",  # after the warm-up: linear | constant
    )
  )
  c.vocab_chunk = 0  # > 0: log-probs in vocabulary chunks (large vocabularies)
  c.probe = ml_collections.ConfigDict(
    dict(
      steps=(0, 5, 10, 20),  # after how many updates to probe (0: the initial model)
      examples=8,  # the probe batch: the first records of the data
      num_positions=40,  # response positions 1..N probed
      position_batch=1,  # backward passes vectorised together (memory: that many gradients)
    )
  )
  c.samples = ml_collections.ConfigDict(
    dict(
      count=8,  # prompts sampled after fine-tuning (the first records)
      path="",  # another prompt file ("": the training data's prompts)
      format="",  # that file's layout
      max_new_tokens=64,  # sample length
      temperature=1.0,  # sampling temperature
      top_p=1.0,  # 1.0: no nucleus cut
      greedy=False,  # greedy decoding instead of sampling
      batch_size=8,  # prompts per generation batch
      seed=0,  # sampling seed
      num_positions=40,  # positions of the KL to the initial model
    )
  )
  c.log_scale = False  # logarithmic y axes of the plots
  c.progress = True  # progress bars on stderr
  return c


def _validate(config) -> list[int]:
  if config.batch_size < 1 or config.batch_size % config.micro_batch_size:
    raise ValueError(
      f"config.batch_size={config.batch_size} must be a positive multiple of "
      f"config.micro_batch_size={config.micro_batch_size}"
    )
  if config.num_steps < 0:
    raise ValueError(f"config.num_steps must be >= 0, got {config.num_steps}")
  steps = sorted(set(int(s) for s in config.probe.steps))
  bad = [s for s in steps if not 0 <= s <= config.num_steps]
  if bad:
    raise ValueError(f"config.probe.steps {bad} are outside 0..num_steps={config.num_steps}")
  for name in ("probe.examples", "probe.num_positions", "samples.num_positions"):
    group, key = name.split(".")
    if config[group][key] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[group][key]}")
  dtype_from_name(config.dtype, "config.dtype")
  return steps


@functools.partial(jax.jit, static_argnames=("graphdef", "num_positions", "position_batch", "vocab_chunk"))
def _probe(graphdef, params, batch, *, num_positions, position_batch, vocab_chunk):
  return per_position_grad_norms(
    graphdef,
    params,
    batch["input_ids"],
    batch["attention_mask"],
    batch["loss_mask"],
    num_positions,
    position_batch=position_batch,
    vocab_chunk=vocab_chunk,
  )


def _probe_batch(examples, num_positions: int, pad_id: int) -> dict[str, jax.Array]:
  """The fixed probe rows [P, width], each cut after its N-th response token.

  The losses at positions <= N depend on nothing after response token N, so
  every one of the N backward passes covers prompt + N tokens, not the whole answer.
  """
  cut = [truncate(e, int(np.argmax(e.loss_mask)) + num_positions)[0] for e in examples]
  width = -(-max(map(len, cut)) // 16) * 16
  return {k: jnp.asarray(v) for k, v in pad_rows(cut, len(cut), width, pad_id).items()}


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
  """Fine-tunes, probes and samples as configured; writes the outputs; returns the JSON summary."""
  workdir = Path(workdir)
  probe_steps = _validate(config)
  try:
    source = resolve_source(config.model)
  except ValueError as e:
    raise ValueError(f"config.model: {e}") from None
  tokenizer = load_tokenizer(source.tokenizer)
  renderer = ChatRenderer(tokenizer, config.chat_format, config.system_prompt)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  records = read_pairs(config.data.path, config.data.format, config.data.max_examples)
  examples, truncated = [], 0
  for system, user, answer, record_source in records:
    example, cut = tokenize_conversation(
      renderer, system, user, answer, max_length=config.data.max_length, source=record_source
    )
    examples.append(example)
    truncated += cut

  model = load(source, dtype=dtype_from_name(config.dtype, "config.dtype"))
  optimizer_config = OptimizerConfig(**config.optimizer.to_dict(), total_steps=max(config.num_steps, 1))
  optimizer = make_optimizer(optimizer_config)
  graphdef, state = init_train_state(model, optimizer)
  del model
  initial_params = jax.device_get(state.params)  # for Fig. 3c; the device copy is donated to the steps

  probe_batch = _probe_batch(examples[: config.probe.examples], config.probe.num_positions, pad_id)
  probe_args = dict(
    num_positions=config.probe.num_positions,
    position_batch=config.probe.position_batch,
    vocab_chunk=config.vocab_chunk or None,
  )
  step_fn = jax.jit(
    functools.partial(
      train_step,
      graphdef,
      optimizer=optimizer,
      loss_config=LossConfig(objective="sft", vocab_chunk=config.vocab_chunk or None),
    ),
    donate_argnums=0,
  )
  order = StepOrder(len(examples), config.batch_size, config.seed)
  num_micro = config.batch_size // config.micro_batch_size
  probes, train_log = {}, []
  bar = tqdm(total=config.num_steps, desc="fine-tuning", unit="step", disable=not config.progress)
  for step in range(config.num_steps + 1):
    if step in probe_steps:
      norms, nll, valid = _probe(graphdef, state.params, probe_batch, **probe_args)
      probes[step] = {
        "loss": position_stats(np.asarray(nll), np.asarray(valid)),
        "grad_norm": [float(g) for g in np.asarray(norms)],
      }
    if step == config.num_steps:
      break
    rows = pad_rows([examples[i] for i in order.indices(step)], config.batch_size, config.data.max_length, pad_id)
    state, metrics = step_fn(state, {k: jnp.asarray(v) for k, v in as_micro_batches(rows, num_micro).items()})
    train_log.append({"step": step + 1, "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"])})
    if not np.isfinite(train_log[-1]["loss"]):
      raise ValueError(
        f"step {step + 1}: the training loss is {train_log[-1]['loss']}; lower config.optimizer.learning_rate"
      )
    bar.update(1)
    bar.set_postfix(loss=f"{train_log[-1]['loss']:.4f}")
  bar.close()

  finetuned = nnx.merge(graphdef, state.params)
  initial = nnx.merge(graphdef, jax.device_put(initial_params))
  samples = _sample(config, finetuned, tokenizer, records)
  n_pos = config.samples.num_positions
  kl, valid = kl_by_position(
    finetuned,
    initial,
    [s.prompt_ids for s in samples],
    [s.prompt_ids for s in samples],
    [s.token_ids for s in samples],
    n_pos,
    batch_size=config.samples.batch_size,
    vocab_chunk=config.vocab_chunk or None,
  )
  summary = {
    "model": source.describe(),
    "chat_format": renderer.chat_format,
    "examples": len(examples),
    "truncated_examples": truncated,
    "probe_examples": int(probe_batch["input_ids"].shape[0]),
    "probe_positions": list(range(1, config.probe.num_positions + 1)),
    "probe": {str(step): value for step, value in probes.items()},
    "train": train_log,
    "kl_positions": list(range(1, n_pos + 1)),
    "kl_vs_initial": position_stats(kl, valid),
    "samples": len(samples),
  }
  _write(workdir, config, summary, samples)
  return summary


def _sample_prompts(config, records) -> list[tuple[str | None, str]]:
  """(system, user) of the first `samples.count` prompts: the training records', or samples.path's."""
  s = config.samples
  if not s.path:
    return [(system, user) for system, user, _, _ in records[: s.count]]
  if not s.format:
    raise ValueError("config.samples.path is set but config.samples.format is empty")
  return [(r.system, r.prompt) for r in map(as_exchange, read_file(s.path, s.format)[: s.count])]


def _sample(config, model, tokenizer, records) -> list:
  """The fine-tuned model's own responses (`Sample`s) to the sample prompts."""
  prompts = _sample_prompts(config, records)
  if not prompts:
    raise ValueError("no prompts to sample from (config.samples.count must be >= 1)")
  conversations = [
    ([] if system is None else [{"role": "system", "content": system}]) + [{"role": "user", "content": user}]
    for system, user in prompts
  ]
  s = config.samples
  sampler = Sampler(model, tokenizer, config.chat_format, config.system_prompt)
  return sampler.sample(
    conversations,
    batch_size=s.batch_size,
    max_new_tokens=s.max_new_tokens,
    temperature=s.temperature,
    top_p=s.top_p,
    greedy=s.greedy,
    seed=s.seed,
    progress=config.progress,
  )


def _write(workdir: Path, config, summary, samples) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  atomic.write_json(workdir / "dynamics.json", {**summary, "config": config.to_dict()})
  with atomic.atomic_path(workdir / "dynamics.csv") as tmp, open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["quantity", "step", "position", "mean", "stderr", "count"])
    for step, probe in summary["probe"].items():
      loss = probe["loss"]
      for t, (mean, stderr, count) in enumerate(zip(loss["mean"], loss["stderr"], loss["count"]), start=1):
        writer.writerow(["loss", step, t, "" if mean is None else mean, "" if stderr is None else stderr, count])
      for t, (norm, count) in enumerate(zip(probe["grad_norm"], loss["count"]), start=1):
        writer.writerow(["grad_norm", step, t, norm, "", count])
    kl = summary["kl_vs_initial"]
    for t, (mean, stderr, count) in enumerate(zip(kl["mean"], kl["stderr"], kl["count"]), start=1):
      writer.writerow(
        ["kl_vs_initial", config.num_steps, t, "" if mean is None else mean, "" if stderr is None else stderr, count]
      )
  atomic.write_jsonl(
    workdir / "samples.jsonl",
    ({k: v for k, v in dataclasses.asdict(sample).items() if k != "prompt_ids"} for sample in samples),
  )
  probe = summary["probe"]
  plot_by_position(
    {f"step {step}": value["loss"] for step, value in probe.items()},
    workdir / "loss_by_position.png",
    ylabel="per-token loss (cross-entropy)",
    title="Per-token loss while fine-tuning",
    log_scale=config.log_scale,
  )
  plot_by_position(
    {f"step {step}": {"mean": value["grad_norm"], "count": value["loss"]["count"]} for step, value in probe.items()},
    workdir / "grad_norm_by_position.png",
    ylabel="gradient norm",
    title="Per-token gradient norm while fine-tuning",
    log_scale=config.log_scale,
  )
  plot_by_position(
    {f"KL(step {config.num_steps} ‖ step 0)": summary["kl_vs_initial"]},
    workdir / "kl_vs_initial.png",
    ylabel="KL divergence (nats)",
    title="KL of the fine-tuned model to the initial one, on its own samples",
    log_scale=config.log_scale,
  )


def _report(summary, workdir) -> None:
  for step, probe in summary["probe"].items():
    shown = ", ".join(f"{g:.3g}" for g in probe["grad_norm"][:8])
    print(f"step {step}: grad norm at positions 1-8: {shown}")
  kl = ", ".join("-" if m is None else f"{m:.3g}" for m in summary["kl_vs_initial"]["mean"][:8])
  print(f"KL(fine-tuned ‖ initial) at positions 1-8: {kl}")
  print(f"wrote {Path(workdir) / 'dynamics.json'} (and .csv, PNGs)")


if __name__ == "__main__":
  run_cli(run, _report, defaults=default_config)
