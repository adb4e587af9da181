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

import errno
import os
import re
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
    self.directory = directory
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
    with self._disk_errors(step):  # a save waits for the previous one, whose error surfaces here
      self._manager.save(step, args=ocp.args.Composite(**items))
    return True

  def wait(self) -> None:
    """Until the saves in flight are written (their errors are raised here)."""
    with self._disk_errors(None):
      self._manager.wait_until_finished()

  def discard_from(self, step: int) -> list[int]:
    """Deletes the checkpoints of `step` and later (after the saves in flight); returns their steps."""
    self.wait()
    doomed = [s for s in self._manager.all_steps() if s >= step]
    for s in doomed:
      self._manager.delete(s)
    return sorted(doomed)

  def _disk_errors(self, step: int | None):
    return _DiskErrors(self, step)

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
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, TypeError, KeyError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ValueError(
        f"{self.directory}/{step}: the checkpoint does not fit this run's model and optimizer ({first[:200]}); "
        f"a run resumes only onto the model it started with"
      ) from None
    return restored["state"], restored["meta"]

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()


class _DiskErrors:
  """Turns a failed checkpoint write into one OSError naming the directory and the last complete step."""

  def __init__(self, checkpointer: Checkpointer, step: int | None):
    self.checkpointer, self.step = checkpointer, step

  def __enter__(self):
    return self

  def __exit__(self, kind, error, traceback):
    if error is None or isinstance(error, _CheckpointWriteError):
      return False
    code, where = _write_failure(error)
    if code is None:
      return False
    complete = [s for s in checkpoint_steps(self.checkpointer.directory) if self.step is None or s < self.step]
    why = "no space left on the device" if code == errno.ENOSPC else os.strerror(code).lower()
    raise _CheckpointWriteError(
      code,
      f"writing a checkpoint to {self.checkpointer.directory} failed: {why} ({where or 'a file in it'}); "
      f"the last complete checkpoint is {'step ' + str(complete[-1]) if complete else 'none'} and is intact; "
      f"free space and rerun to resume",
    ) from None


def _write_failure(error: BaseException) -> tuple[int | None, str | None]:
  """(errno, path) of a failed write somewhere in `error`'s chain: an OSError, or the ValueError that
  TensorStore raises for one ("... Failed writing: "PATH": ... [os_error_code='28']"); (None, None) if none."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno is not None:
      return error.errno, error.filename
    match = re.search(r"os_error_code='(\d+)'", str(error))
    if match:
      path = re.search(r'(?:Failed writing|local file): "([^"]+)"', str(error))
      return int(match.group(1)), path.group(1) if path else None
    error = error.__cause__ or error.__context__
  return None, None


class _CheckpointWriteError(OSError):
  def __str__(self) -> str:
    return self.strerror


def checkpoint_steps(directory: str) -> list[int]:
  """The complete checkpoint steps in `directory` (local or gs://; Orbax commits a step by renaming it)."""
  from etils import epath

  path = epath.Path(directory)
  if not path.is_dir():
    return []
  return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
