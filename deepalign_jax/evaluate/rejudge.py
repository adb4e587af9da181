"""Re-judging an evaluation's stored generations with another judge, without generating them again.

    python -m deepalign_jax.judge --workdir EVAL_WORKDIR --config configs/eval/<name>.py [--config.judge.KEY=...]

The common workflow is a cheap keyword pass, then the paid API judge on the
same generations (HarmBench separates judging into its own step for the same
reason).  The config's `judge` section is the new judge (an evaluation config
works as it is: its other keys are not used; the workdir's own config says
how the generations were made).  Every record in the evaluation's scope is
judged again unless this judge already gave it a verdict; failed calls are
retried on every rerun; verdicts are written back chunk by chunk (the file
is replaced atomically), so an interrupted re-judging keeps what it has and,
with an API judge's `cache_dir` (resolved against the workdir), pays for no
call twice.  summary.json is rewritten with the new judge's numbers.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ml_collections

from deepalign_jax import identity
from deepalign_jax.evaluate import judging
from deepalign_jax.evaluate.orchestrate import check_judged, summarize_run, write_summary
from deepalign_jax.evaluate.settings import build_settings, read_benchmark
from deepalign_jax.evaluate.store import read_records, rewrite_records, scope_keys
from deepalign_jax.judges import make_judge
from deepalign_jax.judges.factory import default_config as judge_default_config
from deepalign_jax.models import sources

_log = logging.getLogger(__name__)


def get_config() -> ml_collections.ConfigDict:
  """The new judge (the `judge` section of an evaluation config); any evaluation config file works too."""
  c = ml_collections.ConfigDict()
  c.judge = judge_default_config("keyword")
  return c


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Judges the stored generations of `workdir` with `config.judge`; returns the new summary."""
  workdir = Path(workdir)
  path = workdir / "generations.jsonl"
  run_record = identity.read_run(workdir)
  if not path.exists() or run_record is None:
    raise ValueError(f"{workdir}: not an evaluation workdir (no generations.jsonl and run.json to judge)")
  summary_path = workdir / "summary.json"
  if not summary_path.exists():
    raise ValueError(
      f"{summary_path}: missing; the evaluation has not finished — rerun python -m deepalign_jax.evaluate "
      f"in this workdir first"
    )
  previous = json.loads(summary_path.read_text())
  evaluated = ml_collections.ConfigDict(previous["config"])
  judge = make_judge(judging.judge_settings(config.judge, workdir))
  settings = build_settings(evaluated)
  prompts, _ = read_benchmark(evaluated)
  done = read_records(path)
  space = [key for *_, key in scope_keys(len(prompts), settings, evaluated.attack.samples)]
  missing = [k for k in space if k not in done]
  if missing:
    raise ValueError(
      f"{path}: {len(missing)} records of the evaluation are missing (e.g. {missing[0]!r}); rerun "
      f"python -m deepalign_jax.evaluate in this workdir first"
    )
  scoped = [done[k] for k in space]
  wanted = judging.judge_identity(judge)
  todo = [r for r in scoped if judging.record_judge(r) != wanted or judging.failed(r)]
  _log.warning("%s: judging %d of %d records with %s", path, len(todo), len(scoped), wanted)
  judging.judge_records(todo, judge, after_chunk=lambda: rewrite_records(path, done.values()))
  source = sources.resolve_source(evaluated.model)
  summary = summarize_run(
    evaluated, scoped, settings, run_record["id"], source, judge, len(prompts), previous.get("chat_format", "")
  )
  summary["judged_again"] = len(todo)
  if "gcg_suffixes" in previous:
    summary["gcg_suffixes"] = previous["gcg_suffixes"]
  write_summary(evaluated, workdir, summary, settings)
  check_judged(scoped, path)
  return summary


__all__ = ["get_config", "run"]
