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
import numpy as np
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

  def due(self, step: int) -> bool:
    """Whether `maybe_save` saves at this step unforced."""
    return bool(self.save_every) and step % self.save_every == 0

  def maybe_save(self, step: int, state: TrainState, meta: dict[str, Any], *, force: bool = False,
                 data: grain.DatasetIterator | None = None) -> bool:
    """Saves at multiples of `save_every` (or when forced); `data`: the iterator, positioned after `step`."""
    if not force and not self.due(step):
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


def _names(path) -> tuple[str, ...]:
  """A pytree path as plain names, whether its steps are dict keys or attributes."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def read_params(workdir: str | os.PathLike, like, step: int | None = None):
  """A training workdir's parameters, placed like `like` (an nnx.State of the same model).

  step None: the final `params/` export if the run finished, else the latest
  checkpoint; a step: `checkpoints/<step>`.  Only the parameters are read,
  as host arrays (the run may have had another device topology), so the
  optimizer state is never loaded.
  """
  workdir = Path(workdir).absolute()
  if step is None and (workdir / "params").is_dir():
    item_dir, key = workdir / "params", None
  else:
    if step is None:
      manager = ocp.CheckpointManager(str(workdir / "checkpoints"))
      step = manager.latest_step()
      manager.close()
      if step is None:
        raise ValueError(f"{workdir}: a training workdir with no params/ and no complete checkpoint")
    item_dir, key = workdir / "checkpoints" / str(step) / "state", "params"
    if not item_dir.is_dir():
      raise ValueError(f"{workdir}/checkpoints: no complete checkpoint at step {step}")
  tree = ocp.StandardCheckpointer().metadata(item_dir).item_metadata
  target = tree[key] if key else tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  with ocp.PyTreeCheckpointer() as reader:
    if key:
      restored = reader.restore(item_dir, args=ocp.args.PyTreeRestore(
          item={key: target}, restore_args={key: args}, partial_restore=True))[key]
    else:
      restored = reader.restore(item_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=args))
  saved = {_names(p): v for p, v in jax.tree_util.tree_flatten_with_path(restored)[0]}
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  missing = [jax.tree_util.keystr(p) for p, _ in leaves if _names(p) not in saved]
  if missing:
    raise ValueError(f"{item_dir}: lacks parameters {missing[:3]} of the model being loaded")
  return jax.tree_util.tree_unflatten(treedef, [
      jax.device_put(saved[_names(p)].astype(x.dtype), x.sharding) for p, x in leaves])


def load_model(spec: str | os.PathLike, *, dtype=None, mesh=None):
  """(model, tokenizer, directory) for an HF directory, `packaged:NAME`, or a training workdir.

  A training workdir gives its `hf/` export when the run finished, else
  `read_params` (params/ or the latest checkpoint) on top of the model the
  run started from (read from the workdir's config.json).
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
  elif ((path / "checkpoints").is_dir() or (path / "params").is_dir()) and (path / "config.json").exists():
    base = json.loads((path / "config.json").read_text()).get("model")
    if not base:
      raise ValueError(f"{path}/config.json: a training workdir's config needs 'model'")
    base_dir = packaged_checkpoint(base.split(":", 1)[1]) if base.startswith("packaged:") else Path(base)
    model, _ = load_pretrained(base_dir, dtype=dtype, mesh=mesh)
    graphdef, params = nnx.split(model)
    params = read_params(path, params)
    return nnx.merge(graphdef, params), load_tokenizer(base_dir), base_dir
  model, _ = load_pretrained(path, dtype=dtype, mesh=mesh)
  return model, load_tokenizer(path), path
