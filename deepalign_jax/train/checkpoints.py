"""Orbax checkpoints of the train state, with resume.

Orbax writes each step to a temporary directory and commits it by renaming,
so a crash mid-save leaves the previous checkpoints intact and the partial
one is never picked up.  Saves are asynchronous (training continues while
the previous step's arrays are written).  The data iterator's state (grain)
is saved in the same checkpoint, so state and data position commit
together.  Restoring uses the live state's shapes, dtypes and
shardings as the target, so every process reads only its own shards.
Workdirs on `gs://` work through Orbax/TensorStore unchanged.  Reading a
finished or running workdir's parameters for evaluation and analysis is
`deepalign_jax.models.sources`'.
"""

from __future__ import annotations

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
      directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def due(self, step: int) -> bool:
    """Whether `maybe_save` saves at this step unforced."""
    return bool(self.save_every) and step % self.save_every == 0

  def maybe_save(
    self,
    step: int,
    state: TrainState,
    meta: dict[str, Any],
    *,
    force: bool = False,
    data: grain.DatasetIterator | None = None,
  ) -> bool:
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

  def restore(
    self,
    like: TrainState,
    data: grain.DatasetIterator | None = None,
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
