"""The errors a run stops with on purpose: their message says everything, so the CLIs print it as one line."""

from __future__ import annotations


class RunError(RuntimeError):
  """A run stopped for a reason its message explains in full (what happened, where, what to do next).

  The command-line entry points print it as one line `error: ...` and exit
  with status 1, like a ValueError about the config or an OSError about a
  file; any other exception is a bug and keeps its traceback.
  """


__all__ = ["RunError"]
