"""Files and directories that are either whole or absent: write a temporary sibling, rename it into place.

A crash (or `kill -9`) mid-write leaves the previous version, or nothing —
never a truncated summary, data file, plot or checkpoint export.  The
temporary lives in the same directory so the rename stays on one file system
(atomic on POSIX), and is removed when the write fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
  """A temporary file beside `path` (same suffix) to write; renamed onto `path` if the block succeeds."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
  os.close(fd)
  try:
    yield Path(tmp)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def write_text(path: str | os.PathLike, text: str) -> Path:
  with atomic_path(path) as tmp:
    tmp.write_text(text, encoding="utf-8")
  return Path(path)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
  """`data` as JSON (non-JSON values written with str)."""
  return write_text(path, json.dumps(data, indent=indent, default=str, ensure_ascii=False))


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
  """One JSON value per line."""
  with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
  """A temporary directory beside `path` to fill; it replaces `path` (an existing one included) if the
  block succeeds."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
  try:
    yield tmp
    os.chmod(tmp, 0o755)
    if path.exists():
      old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
      os.replace(path, old / path.name)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def remove(path: str | os.PathLike) -> None:
  """Deletes a file or a directory tree, local or remote (gs://, through etils.epath); nothing if absent."""
  from etils import epath

  target = epath.Path(path)
  if target.is_dir():
    target.rmtree()
  elif target.exists():
    target.unlink()


__all__ = ["atomic_directory", "atomic_path", "remove", "write_json", "write_jsonl", "write_text"]
