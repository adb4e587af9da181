"""Optional Weights & Biases logging beside TensorBoard: the same scalars, offline unless asked otherwise.

Set `config.wandb.project` and a training run logs every metrics.jsonl
scalar — loss, tokens, grad norm, learning rate, tokens/s, the constrained
objective's `weight_by_position/tNN` and `delta_by_position/tNN`, in-training
`eval/...` — under the same names and steps as its TensorBoard events.
`mode=offline` (the default) writes the run under `workdir/wandb/` with no
network (`wandb sync` uploads it later); `online` logs live; `disabled` logs
nothing.  `wandb` is never required: it is imported only when a project is
set, and a missing package stops the run before anything is loaded, in one
line.

The W&B run id is the training run's identity plus its start time (run.json),
so a resumed run continues its W&B run (with `online`, steps it redoes after a
crash are already there and W&B keeps the first values), and a restart is a new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from deepalign_jax import identity
from deepalign_jax.errors import RunError

MODES = ("offline", "online", "disabled")


def check(config: ml_collections.ConfigDict) -> None:
  """One-line errors for a `config.wandb` section (train/loop.py) no run can use, before anything is loaded."""
  if not config.project:
    return
  if config.mode not in MODES:
    raise ValueError(f"config.wandb.mode must be one of {MODES}, got {config.mode!r}")
  _wandb()


def _wandb():
  try:
    import wandb
  except ImportError:
    raise RunError(
      "config.wandb.project is set, but the optional package 'wandb' is not installed: "
      "pip install 'deepalign_jax[wandb]' (or leave config.wandb.project empty)"
    ) from None
  return wandb


class WandbWriter:
  """`add_scalar` / `flush` / `close`, as TensorBoard's writer: a step's scalars go to W&B in one `log` call."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: Path, training_config: dict[str, Any]):
    wandb = _wandb()
    run = identity.read_run(workdir) or {}
    started = (run.get("history") or [{}])[0].get("time", "")
    self.run = wandb.init(
      project=config.project,
      entity=config.entity or None,
      name=config.name or Path(workdir).resolve().name,
      id=identity.digest([run.get("id", ""), started], length=16),
      resume="allow",
      dir=str(workdir),
      mode=config.mode,
      config=training_config,
      settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
    )
    self.pending: dict[str, float] = {}
    self.step: int | None = None

  def add_scalar(self, key: str, value: float, step: int) -> None:
    if self.step is not None and step != self.step:
      self.flush()
    self.pending[key], self.step = float(value), step

  def flush(self) -> None:
    if self.pending:
      self.run.log(self.pending, step=self.step)
      self.pending = {}

  def close(self) -> None:
    self.flush()
    self.run.finish()


__all__ = ["MODES", "WandbWriter", "check"]
