"""Judging stored generations: who judged a record, which records need a (new) verdict, and judging them.

One code path for the evaluation (a rerun re-judges the records whose judge
call failed) and for `python -m deepalign_jax.judge` (stored generations
judged again by another judge, without generating anything).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from deepalign_jax.judges import Judge, Verdict

_log = logging.getLogger(__name__)


def judge_settings(judge_config, workdir: Path) -> dict[str, Any]:
  """The judge section as a dict, its relative `cache_dir` resolved against the workdir (not the current
  directory: a run started from elsewhere finds the replies it paid for)."""
  values = dict(judge_config.to_dict() if hasattr(judge_config, "to_dict") else judge_config)
  cache = values.get("cache_dir")
  if cache and not Path(cache).expanduser().is_absolute():
    values["cache_dir"] = str(Path(workdir) / cache)
  return values


def judge_identity(judge: Judge) -> dict[str, str]:
  """What decides a judge's verdicts: its name, its version and what it reads after a prefill."""
  return {"name": judge.name, "version": judge.version, "reads": judge.reads}


def record_judge(record: dict) -> dict[str, str]:
  """The identity of the judge that gave a stored record its verdict."""
  verdict = record.get("verdict") or {}
  return {
    "name": verdict.get("judge", ""),
    "version": verdict.get("judge_version", ""),
    "reads": record.get("judge_reads", ""),
  }


def failed(record: dict) -> bool:
  """Whether the record's judge call failed (no verdict was reached)."""
  verdict = record.get("verdict") or {}
  return verdict.get("jailbroken") is None and verdict.get("error") is not None


def judged_text(record: dict, reads: str) -> str:
  """What a judge with `reads` is given of a stored record (as `Sample.read_as` for a fresh one)."""
  return record["response"] if reads == "response" else record["output"]


def judge_records(
  records: Sequence[dict],
  judge: Judge,
  *,
  chunk: int = 256,
  after_chunk: Callable[[], None] | None = None,
) -> int:
  """Gives every record in `records` a new verdict from `judge` (in place), `chunk` at a time; after each
  chunk `after_chunk()` (e.g. rewriting the file, so an interrupted re-judging keeps what it has).
  Returns how many verdicts are errors."""
  errors = 0
  for start in range(0, len(records), chunk):
    part = records[start : start + chunk]
    verdicts: list[Verdict] = judge.judge([(r["instruction"], judged_text(r, judge.reads)) for r in part])
    for record, verdict in zip(part, verdicts):
      record["verdict"] = verdict.to_dict()
      record["judge_reads"] = judge.reads
      errors += verdict.jailbroken is None and verdict.error is not None
    if after_chunk is not None:
      after_chunk()
  return errors


def failure_report(records: Sequence[dict], path: Path) -> tuple[int, str]:
  """(how many of `records` have a failed judge call, a one-line description with the first error)."""
  bad = [r for r in records if failed(r)]
  if not bad:
    return 0, ""
  first = str(bad[0]["verdict"]["error"]).splitlines()[0][:200]
  return len(bad), f"{len(bad)} of {len(records)} judge calls failed (first: {first}); the generations are in {path}"


__all__ = [
  "failed",
  "failure_report",
  "judge_identity",
  "judge_records",
  "judge_settings",
  "judged_text",
  "record_judge",
]
