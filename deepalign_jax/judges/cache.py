"""An append-only JSONL cache of judge replies, so that reruns cost no calls.

One JSON object per line, each with a `key`.  Lines are appended and
flushed one by one; a crash can at worst leave the last line cut short,
which the next load skips (and the next append starts on a fresh line).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_key(*parts: str) -> str:
  """A stable key of strings (judge identity, instruction, response)."""
  return hashlib.sha256(json.dumps(list(parts), ensure_ascii=False).encode("utf-8")).hexdigest()


class ReplyCache:
  """Records by key, loaded from and appended to one JSONL file."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self._records: dict[str, dict[str, Any]] = {}
    self._needs_newline = False
    if self.path.exists():
      self._load()

  def _load(self) -> None:
    data = self.path.read_bytes()
    # A file that does not end in a newline was cut short mid-line.
    self._needs_newline = bool(data) and not data.endswith(b"\n")
    lines = data.decode("utf-8", errors="replace").split("\n")
    for lineno, line in enumerate(lines, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        key = record["key"]
      except (json.JSONDecodeError, KeyError, TypeError):
        if lineno == len(lines):
          log.warning("%s: last line is incomplete (an interrupted run?); it is ignored", self.path)
        else:
          log.warning("%s:%d: not a cache record; it is ignored", self.path, lineno)
        continue
      self._records[key] = record

  def __len__(self) -> int:
    return len(self._records)

  def __contains__(self, key: str) -> bool:
    return key in self._records

  def get(self, key: str) -> dict[str, Any] | None:
    return self._records.get(key)

  def put(self, key: str, record: dict[str, Any]) -> None:
    """Stores `record` under `key` and appends it to the file."""
    record = {"key": key, **record}
    line = json.dumps(record, ensure_ascii=False) + "\n"
    if self._needs_newline:
      line = "\n" + line
      self._needs_newline = False
    self.path.parent.mkdir(parents=True, exist_ok=True)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(line)
      f.flush()
    self._records[key] = record
