"""generations.jsonl: one record per prompt × setting × sample, append-only and resumable."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

from deepalign_jax.atomic import write_jsonl

_log = logging.getLogger(__name__)


def record_key(prompt_index: int, setting: str, sample: int) -> str:
  return f"{prompt_index}|{setting}|{sample}"


def scope_keys(prompts: int, settings: Sequence, samples: int) -> list[tuple[int, object, int, str]]:
  """(prompt index, setting, sample, record key) of every record an evaluation of this scope holds."""
  return [(i, s, j, record_key(i, s.name, j)) for i in range(prompts) for s in settings for j in range(samples)]


def read_records(path: Path) -> dict[str, dict]:
  """Complete records already in `path` by key; a torn last line (crash mid-write) is cut off."""
  if not path.exists():
    return {}
  data = path.read_bytes()
  good_end = data.rfind(b"\n") + 1
  records = {}
  for number, line in enumerate(data[:good_end].splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(
        f"{path}:{number}: not a JSON record ({e.msg}); the file was edited or corrupted — move it away to start over"
      ) from None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
      raise ValueError(
        f"{path}:{number}: a record without its 'key' (\"PROMPT|SETTING|SAMPLE\"); the file was edited or written "
        f"by something else — move it away to start over"
      )
    records[record["key"]] = record
  if good_end < len(data):
    _log.warning("%s: dropping a half-written last record (%d bytes)", path, len(data) - good_end)
    with open(path, "r+b") as f:
      f.truncate(good_end)
  return records


def rewrite_records(path: Path, records: Iterable[dict]) -> None:
  """Replaces the file with `records` (re-judged verdicts), atomically: the old file or the new, never half."""
  write_jsonl(path, records)


__all__ = ["read_records", "record_key", "rewrite_records", "scope_keys"]
