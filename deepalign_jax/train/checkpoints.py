"""Orbax checkpoints of the train state, with resume.

Orbax writes each step to a temporary directory and commits it by renaming,
so a crash mid-save leaves the previous checkpoints intact and the partial
one is never picked up.  Saves are asynchronous (training continues while
the previous step's arrays are written).  The data iterator's state (grain)
is saved in the same checkpoint, so state and data position commit
together.  Restoring uses the live state's shapes, dtypes and
shardings as the target, so every process reads only its own shards.
Workdirs on `gs://` work through Orbax/TensorStore unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from deepalign_jax.train.state import TrainState


def _abstract(tree):
  def one(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
  return jax.tree.map(one, tree)


class Checkpointer:
  """Saves every `save_every` steps (and when asked), keeps the last `keep`."""

  def __init__(self, directory: str, *, keep: int = 2, save_every: int = 0):
    self.save_every = save_every
    self._manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def maybe_save(self, step: int, state: TrainState, meta: dict[str, Any], *, force: bool = False,
                 data: grain.DatasetIterator | None = None) -> bool:
    """Saves at multiples of `save_every` (or when forced); `data`: the iterator, positioned after `step`."""
    if not force and not (self.save_every and step % self.save_every == 0):
      return False
    if step in self._manager.all_steps():
      return False
    items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if data is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data)
    self._manager.save(step, args=ocp.args.Composite(**items))
    return True

  def restore(self, like: TrainState, data: grain.DatasetIterator | None = None,
              ) -> tuple[TrainState, dict[str, Any]] | None:
    """The latest checkpoint, laid out like `like` (and `data` moved to its position); None if none."""
    step = self._manager.latest_step()
    if step is None:
      return None
    items = dict(state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore())
    if data is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored["meta"]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def load_model(spec: str | os.PathLike, *, dtype=None, mesh=None):
  """(model, tokenizer, directory) for an HF directory, `packaged:NAME`, or a training workdir.

  A training workdir gives its `hf/` export when the run finished, else its
  latest checkpoint's parameters on top of the model the run started from
  (read from the workdir's config.json).
  """
  from flax import nnx

  from deepalign_jax.data import load_tokenizer
  from deepalign_jax.models import load_pretrained
  from deepalign_jax.models.gguf import packaged_checkpoint

  text = os.fspath(spec)
  if not text:
    raise ValueError("no model given: an HF directory, packaged:NAME or a training workdir")
  if text.startswith("packaged:"):
    path = packaged_checkpoint(text.split(":", 1)[1])
  else:
    path = Path(text)
  if (path / "hf" / "config.json").exists():
    path = path / "hf"
  elif (path / "checkpoints").is_dir() and (path / "config.json").exists():
    base = json.loads((path / "config.json").read_text()).get("model")
    if not base:
      raise ValueError(f"{path}/config.json: a training workdir's config needs 'model'")
    model, _ = load_pretrained(load_model(base)[2], dtype=dtype, mesh=mesh)
    manager = ocp.CheckpointManager(str((path / "checkpoints").absolute()))
    step = manager.latest_step()
    if step is None:
      raise ValueError(f"{path}/checkpoints: no complete checkpoint to evaluate")
    graphdef, params = nnx.split(model)
    like = _abstract(params)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        {"params": like}, restore_args=jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding),
                                                    like), partial_restore=True)))
    base_dir = load_model(base)[2]
    return nnx.merge(graphdef, restored["state"]["params"]), load_tokenizer(base_dir), base_dir
  model, _ = load_pretrained(path, dtype=dtype, mesh=mesh)
  return model, load_tokenizer(path), path
