"""Building the paper's data from models (SPEC §4): `python -m deepalign_jax.datagen --config ... --workdir DIR`.

The paper's data bundle is gated and none of it ships, so the data of the
safety-recovery augmentation (paper Eq. 2) is made here, as the reference
made it, from the aligned model and a jailbroken source:

- **D_H, safety-recovery triplets** (x, h, r), one per harmful instruction x
  of `config.safety`: the refusal r is sampled from the aligned model
  (`config.model`) on x; the harmful answer h is the file's own answer
  (`safety.harmful=file`), the aligned model's continuation of the file
  answer's first `prefill_tokens` tokens (`prefill`, the prefilling attack:
  h = prefill + continuation), or a jailbroken model's answer (`model`, e.g.
  a harmful fine-tuning's training workdir, `safety.harmful_model`).  A
  triplet is kept only when the judge (`config.judge`) calls r a refusal and
  h compliant; the judge reads each whole text (h with its prefill, whatever
  `judge.reads` says).  Dropped instructions are counted by reason and listed
  in summary.json — nothing is silently left out.  Written as the triplets
  JSONL the augmentation recipe reads (`data.safety_path`).
- **D_B, utility answers** distilled from the aligned model on the
  instructions of `config.utility` (Alpaca JSON or any conversation/prompt
  format), greedy by default (`utility_decoding`), written as Alpaca JSON
  (`data.utility_path`, `data.utility_format=alpaca`).  An empty answer is
  dropped and counted; answers cut at `max_new_tokens` are kept and counted.

Every written record carries its provenance: the run, the source record, and
per text the model's fingerprint, chat format, system prompt, decoding and
the judge's verdict.  Texts are written stripped of surrounding whitespace.

The workdir gets `generations.jsonl` (one record per instruction × stage —
refusal, harmful, utility — with what was generated and the verdict),
`triplets.jsonl` and `utility.json` (`safety.out`, `utility.out`, written
whole at the end), `summary.json` (counts, drops and why, provenance, the
resolved config) and `run.json`.  A rerun of the same command resumes, with
evaluation's record identity (`evaluate.store`): finished records are kept, a
half-written last line is cut off, missing ones are generated, records whose
judge call failed are judged again.  Generation runs in batches of
`batch_size` fixed by the instruction order, each with its own seed, so a
build killed and rerun writes exactly the records of an uninterrupted one.
Another model, file or setting is refused (`--config.rerun=restart` starts
over).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections
from tqdm.auto import tqdm

from deepalign_jax import atomic, identity, sharding
from deepalign_jax.data import Exchange, load_tokenizer
from deepalign_jax.datagen.settings import check_config, read_instructions
from deepalign_jax.evaluate import judging
from deepalign_jax.evaluate.store import read_records, record_key, rewrite_records
from deepalign_jax.judges import Verdict, make_judge
from deepalign_jax.models import dtype_from_name, sources
from deepalign_jax.sampling import Sampler

_log = logging.getLogger(__name__)

STAGES = ("refusal", "harmful", "utility")
# What may change between reruns without changing what is built: how it runs and is shown, and the paths
# of the models and files, whose fingerprints and content hashes stand for them.
SCOPE = ("rerun", "progress", "mesh", "model", "judge", "safety.path", "utility.path", "safety.harmful_model")
_STAGE_SEED = {stage: 1_000_003 * n for n, stage in enumerate(STAGES)}


@dataclasses.dataclass(frozen=True)
class Job:
  """One text to make: `stage` for instruction `index` of its section (`record`), under `key`."""

  stage: str
  index: int
  record: Exchange

  @property
  def key(self) -> str:
    return record_key(self.index, self.stage, 0)


@dataclasses.dataclass
class _Models:
  """The model sources of a build and, once needed, one loaded sampler at a time."""

  aligned: sources.ModelSource
  harmful: sources.ModelSource | None
  sampler: Sampler | None = None
  loaded: str = ""
  fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)

  def fingerprint(self, which: str) -> str:
    if which not in self.fingerprints:
      self.fingerprints[which] = (self.aligned if which == "aligned" else self.harmful).fingerprint()
    return self.fingerprints[which]


def _chat_format(requested: str, source: sources.ModelSource) -> str:
  # "auto" renders a training workdir in the format it trained with, as the evaluation does.
  return source.chat_format if requested == "auto" else requested


def build_identity(config: ml_collections.ConfigDict, models: _Models, judge) -> dict[str, Any]:
  """What a build makes its data from, flat: every setting outside `SCOPE`, the models' fingerprints, the
  files' content hashes and the judge's identity."""
  drop = SCOPE + tuple(f"{s}.columns" for s in ("safety", "utility") if not config[s].columns)
  out = {f"config.{k}": v for k, v in identity.flatten(identity.without(config.to_dict(), drop)).items()}
  out["config.chat_format"] = _chat_format(config.chat_format, models.aligned)
  out["model fingerprint"] = models.fingerprint("aligned")
  if models.harmful is not None:
    out["config.safety.harmful_chat_format"] = _chat_format(config.safety.harmful_chat_format, models.harmful)
    out["harmful model fingerprint"] = models.fingerprint("harmful")
  for key in ("safety.path", "utility.path"):
    out[identity.CONTENT + f"config.{key}"] = identity.path_fingerprint(config[key.split(".")[0]].path)
  out["judge"] = {k: v for k, v in judging.judge_identity(judge).items() if k != "reads"}
  return out


def _outputs(config) -> tuple[str, ...]:
  return ("generations.jsonl", "summary.json", config.safety.out, config.utility.out)


def _claim_workdir(config, workdir: Path, ident: dict) -> dict:
  """Checks a rerun against run.json (`config.rerun`); returns the run record (written)."""
  previous = identity.read_run(workdir)
  paths = {f"config.{s}.path": config[s].path for s in ("safety", "utility")}
  generated = (workdir / "generations.jsonl").exists()
  if previous is not None and not generated:
    previous = None  # a start that stopped before its first record: nothing to keep apart
  if config.rerun == "restart" and (previous is not None or generated):
    for name in _outputs(config) + (identity.RUN_FILE,):
      atomic.remove(workdir / name)
    _log.warning("%s: config.rerun=restart: the previous build's outputs were removed", workdir)
    previous, generated = None, False
  how = "use a new --workdir, or --config.rerun=restart to start over"
  if previous is None:
    if generated:
      raise identity.RerunRefused(f"{workdir}: holds generations.jsonl without {identity.RUN_FILE}; {how}")
    run = identity.new_run(ident, paths=paths, event="start")
    identity.write_run(workdir, run)
    return run
  diffs = identity.differences(previous["identity"], ident)
  if diffs:
    described = identity.describe_differences(diffs, old_paths=previous.get("paths"), new_paths=paths)
    raise identity.RerunRefused(f"{workdir}: this build's settings differ from the one in it: {described}; {how}")
  return previous


def _jobs(config, safety: Sequence[Exchange], utility: Sequence[Exchange]) -> dict[str, list[Job]]:
  out = {stage: [] for stage in STAGES}
  for i, record in enumerate(safety):
    out["refusal"].append(Job("refusal", i, record))
    out["harmful"].append(Job("harmful", i, record))
  for i, record in enumerate(utility):
    out["utility"].append(Job("utility", i, record))
  return out


def _messages(record: Exchange) -> list[dict[str, str]]:
  system = [{"role": "system", "content": record.system}] if record.system is not None else []
  return system + [{"role": "user", "content": record.prompt}]


def _stage_model(stage: str, harmful: str) -> str | None:
  """Which model makes a stage's texts: "aligned", "harmful", or None (the file's own harmful answers)."""
  if stage != "harmful" or harmful == "prefill":
    return "aligned"
  return None if harmful == "file" else "harmful"


def _decoding_record(d) -> dict[str, Any]:
  return {k: d[k] for k in ("temperature", "top_k", "top_p", "greedy", "max_new_tokens")}


class _Builder:
  """One build: the jobs, the records written so far, the models, the judge, the progress bar."""

  def __init__(self, config, workdir: Path, run_id: str, models: _Models, judge, done: dict[str, dict]):
    self.config, self.workdir, self.run_id = config, workdir, run_id
    self.models, self.judge, self.done = models, judge, done
    self.path = workdir / "generations.jsonl"
    self.tokens, self.seconds = 0, 0.0

  def sampler(self, which: str) -> Sampler:
    """The aligned or the harmful model's sampler, loading it (and releasing the other) when needed."""
    m, c = self.models, self.config
    if m.loaded != which:
      m.sampler = None  # release the other model's weights first
      source = m.aligned if which == "aligned" else m.harmful
      fmt = _chat_format(c.chat_format if which == "aligned" else c.safety.harmful_chat_format, source)
      system = c.system_prompt if which == "aligned" else c.safety.harmful_system_prompt
      mesh = sharding.make_mesh(**c.mesh.to_dict())
      model = sources.load(source, dtype=dtype_from_name(c.dtype), mesh=mesh)
      m.sampler, m.loaded = Sampler(model, load_tokenizer(source.tokenizer), fmt, system), which
    return m.sampler

  def _provenance(self, which: str | None) -> dict[str, Any]:
    if which is None:
      return {"model": None, "model_source": None, "chat_format": None, "system_prompt": None}
    source = self.models.aligned if which == "aligned" else self.models.harmful
    s = self.models.sampler
    return {
      "model": self.models.fingerprint(which),
      "model_source": source.spec,
      "chat_format": s.renderer.chat_format,
      "system_prompt": self.config.system_prompt if which == "aligned" else self.config.safety.harmful_system_prompt,
    }

  def run_stage(self, stage: str, jobs: Sequence[Job], out, bar) -> None:
    """Makes the stage's missing records, batch by batch (a batch is redone whole, so its seed and rows
    are those of an uninterrupted build), and appends them to generations.jsonl."""
    c = self.config
    d = c.utility_decoding if stage == "utility" else c.decoding
    harmful = c.safety.harmful
    which = _stage_model(stage, harmful)
    for number, start in enumerate(range(0, len(jobs), d.batch_size)):
      batch = jobs[start : start + d.batch_size]
      missing = [job for job in batch if job.key not in self.done]
      if not missing:
        continue
      if which is None:
        texts = [(job.record.response, "", job.record.response, True, 0) for job in batch]
        decoding = None
      else:
        sampler = self.sampler(which)
        prefill = stage == "harmful" and harmful == "prefill"
        prompts = [
          sampler.prompt(_messages(job.record), response=job.record.response, prefill_tokens=c.safety.prefill_tokens)
          if prefill
          else sampler.prompt(_messages(job.record))
          for job in batch
        ]
        started = time.perf_counter()
        samples = sampler.run(
          prompts,
          batch_size=d.batch_size,
          max_new_tokens=d.max_new_tokens,
          seed=d.seed + _STAGE_SEED[stage] + number,
          progress=False,
          temperature=d.temperature,
          top_k=d.top_k,
          top_p=d.top_p,
          greedy=d.greedy,
        )
        self.seconds += time.perf_counter() - started
        self.tokens += sum(len(s.token_ids) for s in samples)
        texts = [(s.response, s.prefill, s.text, s.stopped, len(s.token_ids)) for s in samples]
        decoding = _decoding_record(d)
      verdicts = self._judge(stage, batch, [t[0] for t in texts])
      provenance = self._provenance(which)
      for job, (text, prefill, continuation, stopped, tokens), verdict in zip(batch, texts, verdicts):
        if job.key in self.done:
          continue
        record = {
          "key": job.key,
          "run": self.run_id,
          "stage": stage,
          "index": job.index,
          "source": job.record.source,
          "instruction": job.record.prompt,
          "system": job.record.system,
          "text": text,
          "prefill": prefill,
          "continuation": continuation,
          "stopped": stopped,
          "output_tokens": tokens,
          "from": "file" if which is None else which,
          **provenance,
          "decoding": decoding,
          "verdict": verdict,
        }
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.done[job.key] = record
      out.flush()
      bar.update(len(missing))
      if self.seconds:
        bar.set_postfix(tokens_per_s=f"{self.tokens / self.seconds:.1f}")

  def _judge(self, stage: str, batch: Sequence[Job], texts: Sequence[str]) -> list[dict | None]:
    """Verdicts on the whole texts of a refusal or harmful batch (None for utility and for empty texts)."""
    if stage == "utility":
      return [None] * len(batch)
    judged = [i for i, text in enumerate(texts) if text and text.strip()]
    verdicts = self.judge.judge([(batch[i].record.prompt, texts[i]) for i in judged]) if judged else []
    out: list[dict | None] = [None] * len(batch)
    for i, verdict in zip(judged, verdicts):
      out[i] = verdict.to_dict()
    return out

  def rejudge_failed(self) -> None:
    """Records whose judge call failed are judged again (never generated again); the file is rewritten."""
    retry = [r for r in self.done.values() if r.get("verdict") and judging.failed(r)]
    if not retry:
      return
    _log.warning("%s: %d records whose judge call failed are judged again", self.path, len(retry))
    verdicts: list[Verdict] = self.judge.judge([(r["instruction"], r["text"]) for r in retry])
    for record, verdict in zip(retry, verdicts):
      record["verdict"] = verdict.to_dict()
    rewrite_records(self.path, self.done.values())


def _reasons(record: dict, stage: str) -> list[str]:
  """Why a refusal (judged: not jailbroken) or harmful answer (judged: jailbroken) is not usable."""
  if not record["text"] or not record["text"].strip():
    return [f"{stage}_empty"]
  verdict = record["verdict"] or {}
  if verdict.get("jailbroken") is None:
    return [f"{stage}_judge_error"]
  wanted = stage == "harmful"  # a harmful answer must be judged compliant, a refusal must not
  if bool(verdict["jailbroken"]) != wanted:
    return ["refusal_not_a_refusal" if stage == "refusal" else "harmful_not_compliant"]
  return []


def _text_provenance(record: dict) -> dict[str, Any]:
  keys = ("from", "model", "model_source", "chat_format", "system_prompt", "decoding", "prefill", "stopped", "verdict")
  return {k: record.get(k) for k in keys}


def assemble_triplets(records: dict[str, dict], prompts: Sequence[Exchange], run_id: str, judge_id: dict):
  """(triplet rows, summary of D_H) from the stored refusal and harmful records of every instruction."""
  rows, dropped, counts = [], [], {}
  truncated = {"refusal": 0, "harmful": 0}
  for i, p in enumerate(prompts):
    refusal, harmful = records[record_key(i, "refusal", 0)], records[record_key(i, "harmful", 0)]
    reasons = _reasons(refusal, "refusal") + _reasons(harmful, "harmful")
    if reasons:
      dropped.append({"index": i, "source": p.source, "reasons": reasons})
      for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
      continue
    for stage, record in (("refusal", refusal), ("harmful", harmful)):
      truncated[stage] += not record["stopped"]
    rows.append(
      {
        "instruction": p.prompt,
        "harmful": harmful["text"].strip(),
        "refusal": refusal["text"].strip(),
        "provenance": {
          "run": run_id,
          "source": p.source,
          "behavior_id": p.behavior_id,
          "category": p.category,
          "system": p.system,
          "judge": judge_id,
          "refusal": _text_provenance(refusal),
          "harmful": _text_provenance(harmful),
        },
      }
    )
  summary = {
    "instructions": len(prompts),
    "kept": len(rows),
    "dropped": len(dropped),
    "dropped_by_reason": dict(sorted(counts.items())),
    "dropped_records": dropped,
    "kept_cut_at_max_new_tokens": truncated,
  }
  return rows, summary


def assemble_utility(records: dict[str, dict], prompts: Sequence[Exchange], run_id: str):
  """(Alpaca rows, summary of D_B) from the stored utility records."""
  rows, dropped, truncated = [], [], 0
  for i, p in enumerate(prompts):
    record = records[record_key(i, "utility", 0)]
    if not record["text"].strip():
      dropped.append({"index": i, "source": p.source, "reasons": ["utility_empty"]})
      continue
    truncated += not record["stopped"]
    provenance = {"run": run_id, "source": p.source, "system": p.system, **_text_provenance(record)}
    del provenance["verdict"]
    rows.append({"instruction": p.prompt, "input": "", "output": record["text"].strip(), "provenance": provenance})
  summary = {
    "instructions": len(prompts),
    "written": len(rows),
    "dropped": len(dropped),
    "dropped_by_reason": {"utility_empty": len(dropped)} if dropped else {},
    "dropped_records": dropped,
    "kept_cut_at_max_new_tokens": truncated,
  }
  return rows, summary


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
  """Builds D_H and / or D_B as configured; returns the summary (also workdir/summary.json)."""
  workdir = Path(workdir)
  check_config(config)
  safety = read_instructions(config.safety, "config.safety") if config.safety.path else []
  utility = read_instructions(config.utility, "config.utility") if config.utility.path else []
  if config.safety.harmful in ("file", "prefill"):
    missing = [p.source for p in safety if not p.response]
    if missing:
      raise ValueError(
        f"{missing[0]}: safety.harmful={config.safety.harmful!r} needs each instruction's harmful answer in the "
        f"file; {len(missing)} of {len(safety)} records have none (use a format with answers, e.g. "
        f"harmful_hexphi, or safety.harmful=model)"
      )
  judge = make_judge(judging.judge_settings(config.judge, workdir))
  if not config.model:
    raise ValueError("config.model is empty: give the aligned model (HF directory, packaged:NAME, a training workdir)")
  harmful = sources.resolve_source(config.safety.harmful_model) if safety and config.safety.harmful == "model" else None
  models = _Models(sources.resolve_source(config.model), harmful)
  workdir.mkdir(parents=True, exist_ok=True)
  run_id = _claim_workdir(config, workdir, build_identity(config, models, judge))["id"]

  builder = _Builder(config, workdir, run_id, models, judge, read_records(workdir / "generations.jsonl"))
  builder.rejudge_failed()
  jobs = _jobs(config, safety, utility)
  total = sum(len(v) for v in jobs.values())
  bar = tqdm(
    total=total,
    initial=sum(job.key in builder.done for v in jobs.values() for job in v),
    desc="building data",
    unit="text",
    disable=not config.progress,
    file=sys.stderr,
  )
  # The aligned model's stages first, then a jailbroken model's (one model in memory at a time).
  order = ["refusal", "utility", "harmful"] if config.safety.harmful == "model" else ["refusal", "harmful", "utility"]
  with open(builder.path, "a", encoding="utf-8") as out:
    for stage in order:
      builder.run_stage(stage, jobs[stage], out, bar)
  bar.close()
  models.sampler = None

  judge_id = {k: v for k, v in judging.judge_identity(judge).items() if k != "reads"}
  summary: dict[str, Any] = {"run": run_id, "model": models.aligned.describe()}
  if harmful is not None:
    summary["harmful_model"] = harmful.describe()
  if safety:
    rows, summary["safety"] = assemble_triplets(builder.done, safety, run_id, judge_id)
    atomic.write_jsonl(workdir / config.safety.out, rows)
    summary["safety"]["out"] = config.safety.out  # in the workdir
    if not rows:
      _log.warning(
        "%s: no triplet was kept (%s); the augmentation cannot train on an empty file",
        workdir / config.safety.out,
        summary["safety"]["dropped_by_reason"],
      )
    summary["safety"]["harmful_from"] = config.safety.harmful
    summary["judge"] = {**judge_id, "reads": "the whole text (a prefill included)"}
  if utility:
    rows, summary["utility"] = assemble_utility(builder.done, utility, run_id)
    atomic.write_json(workdir / config.utility.out, rows)
    summary["utility"]["out"] = config.utility.out
  summary["config"] = config.to_dict()
  atomic.write_json(workdir / "summary.json", summary)
  # How fast this invocation generated (not part of summary.json: a resumed build's would differ).
  summary["throughput"] = {
    "generated_tokens": builder.tokens,
    "seconds": builder.seconds,
    "tokens_per_s": builder.tokens / builder.seconds if builder.seconds else None,
  }
  return summary


__all__ = ["STAGES", "assemble_triplets", "assemble_utility", "build_identity", "run"]
