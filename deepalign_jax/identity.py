"""Run identity: what produced a workdir's outputs, so a rerun never mixes two runs.

A run's identity is a nested dict of the resolved settings that change what
it computes (the model's fingerprint, the data files' content hashes, the
config keys that matter) and its `digest`, a short hash written next to
every output.  `run.json` in the workdir holds the identity of the run that
made it and the history of deliberate changes; a rerun compares its own
identity with it and either resumes (equal), or stops with a one-line error
naming each differing key with its old and new value (`RerunRefused`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from deepalign_jax import atomic

RUN_FILE = "run.json"


def digest(value: Any, length: int = 12) -> str:
  """A short hash of a JSON-able value (keys sorted: equal dicts hash equal)."""
  text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def path_fingerprint(spec: str | os.PathLike) -> str:
  """A hash of a data file's bytes (not its name: the same file moved is the same data), or of every file
  (names in it and bytes) under a directory.

  `tfds:DIR` hashes the manual directory; a path that is not local (e.g.
  gs://...) is identified by its name only.
  """
  text = os.fspath(spec)
  if not text:
    return ""
  local = Path(text.split(":", 1)[1] if text.startswith("tfds:") else text).expanduser()
  h = hashlib.sha256()
  if local.is_file():
    files = [local]
  elif local.is_dir():
    files = sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith("."))
  else:
    return "name:" + text
  for f in files:
    if f != local:  # a directory's files by their names in it; a single file by its bytes alone
      h.update(str(f.relative_to(local)).encode())
    with open(f, "rb") as stream:
      for block in iter(lambda: stream.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()[:16]


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} → {"a.b": 1}."""
  out: dict[str, Any] = {}
  for key, item in value.items():
    name = f"{prefix}{key}"
    if isinstance(item, Mapping) and item:
      out.update(flatten(item, name + "."))
    else:
      out[name] = item
  return out


def without(config: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
  """`config` (nested) without the dotted `keys`; a key naming a section drops the whole section."""
  drop = set(keys)
  flat = {k: v for k, v in flatten(config).items() if k not in drop and not any(k.startswith(d + ".") for d in drop)}
  nested: dict[str, Any] = {}
  for key, value in flat.items():
    node = nested
    *parents, leaf = key.split(".")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return nested


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
  """(dotted key, old value, new value) for every key whose value differs (a missing key reads None)."""
  a, b = flatten(old), flatten(new)
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if _json(a.get(k)) != _json(b.get(k))]


def _json(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any, limit: int = 100) -> str:
  """The value as JSON, its middle cut out when long (a path keeps its start and its file name)."""
  text = json.dumps(value, default=str, ensure_ascii=False)
  return text if len(text) <= limit else text[: limit // 2 - 2] + "..." + text[-(limit // 2 - 1) :]


CONTENT = "content of "  # the prefix of an identity key holding a file's content hash


def describe_differences(
  diffs: list[tuple[str, Any, Any]],
  limit: int = 6,
  old_paths: Mapping[str, str] | None = None,
  new_paths: Mapping[str, str] | None = None,
) -> str:
  """'key: old -> new; ...' on one line (at most `limit` keys, then a count).  A content hash is shown
  with its file: the two paths when they differ, "edited in place" when they do not."""
  shown = []
  for k, a, b in diffs[:limit]:
    name = k[len(CONTENT) :] if k.startswith(CONTENT) else None
    old, new = (old_paths or {}).get(name), (new_paths or {}).get(name)
    if name and old and new:
      where = f"edited in place: {_short(new)}" if old == new else f"{_short(old)} -> {_short(new)}"
      shown.append(f"{k} ({where}): {_short(a)} -> {_short(b)}")
    else:
      shown.append(f"{k}: {_short(a)} -> {_short(b)}")
  if len(diffs) > limit:
    shown.append(f"and {len(diffs) - limit} more")
  return "; ".join(shown)


class RerunRefused(ValueError):
  """A rerun whose identity differs from the workdir's run (its message names every differing key)."""


def read_run(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The workdir's run.json, or None when there is none."""
  path = Path(workdir) / RUN_FILE
  if not path.exists():
    return None
  try:
    run = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not JSON ({e.msg} at line {e.lineno}); it records which run made this workdir") from None
  if not isinstance(run, dict) or "identity" not in run or "id" not in run:
    raise ValueError(f"{path}: not a run record (expected the keys 'id' and 'identity')")
  return run


def new_run(
  identity: Mapping[str, Any],
  previous: Mapping[str, Any] | None = None,
  *,
  paths: Mapping[str, str] | None = None,
  **event,
) -> dict[str, Any]:
  """The run record of `identity`; with `previous`, its history continues (plus `event`, e.g. a change).

  paths: where the files whose content hashes are in the identity were (`config.KEY` → path), kept for the
  messages only: the same content moved elsewhere is the same run.
  """
  history = list(previous.get("history", [])) if previous else []
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  history.append({"id": digest(identity), "time": now, **event})
  return {"id": digest(identity), "identity": dict(identity), "paths": dict(paths or {}), "history": history}


def write_run(workdir: str | os.PathLike, run: Mapping[str, Any]) -> None:
  atomic.write_json(Path(workdir) / RUN_FILE, run)


__all__ = [
  "CONTENT",
  "RUN_FILE",
  "RerunRefused",
  "describe_differences",
  "differences",
  "digest",
  "flatten",
  "new_run",
  "path_fingerprint",
  "read_run",
  "without",
  "write_run",
]
