"""Orbax checkpoints of the train state, with resume.

Orbax writes each step to a temporary directory and commits it by renaming,
so a crash mid-save leaves the previous checkpoints intact and the partial
one is never picked up.  Restoring uses the live state's shapes, dtypes and
shardings as the target, so every process reads only its own shards.
Workdirs on `gs://` work through Orbax/TensorStore unchanged.
"""

from __future__ import annotations

from typing import Any

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

  def maybe_save(self, step: int, state: TrainState, meta: dict[str, Any], *, force: bool = False) -> bool:
    if not force and not (self.save_every and step % self.save_every == 0):
      return False
    if step in self._manager.all_steps():
      return False
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)))
    return True

  def restore(self, like: TrainState) -> tuple[TrainState, dict[str, Any]] | None:
    """The latest checkpoint, laid out like `like`; None when there is none."""
    step = self._manager.latest_step()
    if step is None:
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
