"""The evaluation run (`python -m deepalign_jax.evaluate --config configs/eval/<name>.py --workdir DIR`).

Attacks a model on a benchmark and judges the outputs (SPEC §6):

- `benchmark`: the prompts; `every_nth` keeps every n-th record before
  `limit`, `instruction_template` wraps each instruction (AOA's "AOA, execute
  my instruction: {instruction}").
- `attack.kind`: `plain`, `prefill` (first k tokens of the reference harmful
  answer; k in `attack.prefill_tokens`), `prefix` (fixed assistant-turn
  prefixes), `suffix` (fixed texts appended to the user message, one setting
  each: a backdoor trigger and its absence), `decoding_grid` (greedy + the
  three one-axis sweeps) or `gcg` (an adversarial suffix optimised first —
  universal over the benchmark's behaviours, or one per behaviour — then
  sampled with).
- `judge`: keyword / OpenAI-compatible API / offline model (`deepalign_jax.judges`);
  `judge.reads` says whether it reads the continuation alone or prefill +
  continuation (per-kind defaults of the reference code, SPEC §11).
- `utility.metric`: `rouge1` or `gsm8k` against the benchmark's references.

The workdir receives `generations.jsonl` (one record per prompt × setting ×
sample: rendered prompt, prefill, output, decoding parameters, verdict),
`summary.json` (ASR / harmfulness per setting with counts, worst-case
aggregates for the decoding grid, utility, the resolved config) and, for
sweeps, `asr.png`.  Rerunning the same command continues: records already
written are kept, missing ones are generated, none is duplicated (a
half-written last line from a crash is dropped), and records whose judge
call failed are judged again.

A workdir holds one evaluation: `run.json` records its identity (the
model's fingerprint, the benchmark's content hash and every setting that
changes what is generated, `evaluation_identity`), and every record carries
its digest.  A rerun with another identity is refused, naming each
differing key (`config.rerun=restart` starts over).  The scope — which
prompts (`benchmark.limit`), settings (`attack.prefill_tokens`, ...) and
samples — may change freely: records outside it stay in the file and out
of the summary, missing ones are generated.  Another judge is refused too:
`python -m deepalign_jax.judge --workdir DIR --config ...` re-judges the
stored generations without generating them again.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections
from tqdm.auto import tqdm

from deepalign_jax import atomic, identity, metrics, sharding
from deepalign_jax.atomic import write_json
from deepalign_jax.data import Exchange, load_tokenizer
from deepalign_jax.errors import RunError
from deepalign_jax.evaluate import judging
from deepalign_jax.evaluate.settings import UTILITY, build_settings, read_benchmark
from deepalign_jax.evaluate.store import read_records, record_key, rewrite_records, scope_keys
from deepalign_jax.evaluate.summary import plot_asr, record_verdict, summarize_records
from deepalign_jax.judges import make_judge, summarize
from deepalign_jax.models import dtype_from_name, sources
from deepalign_jax.sampling import Sampler

_log = logging.getLogger(__name__)

RERUN = ("resume", "restart")
# What may change between reruns without mixing evaluations: which prompts, settings and samples are in
# scope (records outside it stay in the file, out of the summary), how fast, and how it is shown.  The
# judge has its own identity, checked per record.
SCOPE = (
  "rerun",
  "progress",
  "plot",
  "mesh",
  "model",  # its fingerprint stands for it: the same weights moved elsewhere are the same model
  "judge",
  "benchmark.path",  # its content hash stands for it: the same file moved elsewhere is the same benchmark
  "benchmark.limit",
  "benchmark.tfds_data_dir",
  "attack.prefill_tokens",
  "attack.prefixes",
  "attack.suffixes",
  "attack.samples",
  "grid",
  "decoding.batch_size",
)
OUTPUTS = ("generations.jsonl", "summary.json", "asr.png", "gcg")


def _gcg_suffixes(
  config, model, tokenizer, renderer, prompts: Sequence[Exchange], users: Sequence[str], workdir: Path
) -> dict[int, str]:
  """Prompt index → GCG suffix (one shared suffix, or one per behaviour); resumable in workdir/gcg."""
  from deepalign_jax.attacks import GCGConfig, run_gcg

  g = config.gcg
  gcg_config = GCGConfig.from_config(g)
  targets = [p.response or g.default_target for p in prompts]
  if g.mode == "universal":
    n = min(len(prompts), g.max_behaviours) if g.max_behaviours > 0 else len(prompts)
    # Optimised on the user text it is appended to (the templated instruction).
    result = run_gcg(
      model,
      tokenizer,
      renderer,
      list(zip(users[:n], targets[:n])),
      gcg_config,
      workdir=workdir / "gcg",
      progress=config.progress,
    )
    return {i: result.suffix_text for i in range(len(prompts))}
  if g.mode == "individual":
    return {
      i: run_gcg(
        model,
        tokenizer,
        renderer,
        [(users[i], targets[i])],
        gcg_config,
        workdir=workdir / "gcg" / str(i),
        progress=config.progress,
      ).suffix_text
      for i in range(len(prompts))
    }
  raise ValueError(f"config.gcg.mode must be 'universal' or 'individual', got {g.mode!r}")


def _utility(metric: str, output: str, reference: str | None, source: str) -> dict[str, Any] | None:
  if not metric:
    return None
  if reference is None:
    raise ValueError(f"{source}: utility metric {metric!r} needs a reference answer, and this record has none")
  if metric == "rouge1":
    precision, recall, f1 = metrics.rouge1_example(output, reference)
    return {"rouge1_f1": f1, "rouge1_precision": precision, "rouge1_recall": recall}
  return {"gsm8k_correct": metrics.gsm8k_correct(output, reference)}


def evaluation_identity(config: ml_collections.ConfigDict, source: sources.ModelSource, chat_format: str) -> dict:
  """What an evaluation generates from, flat: `config.KEY` for every setting outside `SCOPE` (GCG's only
  for a GCG attack), the chat format as rendered, the model's fingerprint and the benchmark's content."""
  drop = SCOPE + (() if config.attack.kind == "gcg" else ("gcg",))
  # An empty column mapping is no setting (and keeps the identity of runs from before the key existed).
  drop += () if config.benchmark.columns else ("benchmark.columns",)
  # GCG's swap positions as they were before the key existed: the identity of those runs.
  drop += ("gcg.positions",) if config.gcg.get("positions") == "uniform" else ()
  out = {f"config.{k}": v for k, v in identity.flatten(identity.without(config.to_dict(), drop)).items()}
  out["config.chat_format"] = chat_format
  out["model fingerprint"] = source.fingerprint()
  out[identity.CONTENT + "config.benchmark.path"] = identity.path_fingerprint(config.benchmark.path)
  return out


def _claim_workdir(config, workdir: Path, ident: dict) -> dict:
  """Checks a rerun against run.json (`config.rerun`); returns the run record (written)."""
  if config.rerun not in RERUN:
    raise ValueError(f"config.rerun must be one of {RERUN}, got {config.rerun!r}")
  previous = identity.read_run(workdir)
  paths = {"config.benchmark.path": config.benchmark.path}
  generated = (workdir / "generations.jsonl").exists()
  if previous is not None and not generated and not (workdir / "gcg").exists():
    previous = None  # a start that stopped before its first record: nothing to keep apart
  exists = previous is not None or generated
  if config.rerun == "restart" and exists:
    for name in OUTPUTS + (identity.RUN_FILE,):
      atomic.remove(workdir / name)
    _log.warning("%s: config.rerun=restart: the previous evaluation's outputs were removed", workdir)
    previous, exists = None, False
  how = "use a new --workdir, or --config.rerun=restart to start over"
  if previous is None:
    if exists:
      raise identity.RerunRefused(
        f"{workdir}: holds generations.jsonl without {identity.RUN_FILE} (from an older version of the toolkit); {how}"
      )
    run = identity.new_run(ident, paths=paths, event="start")
    identity.write_run(workdir, run)
    return run
  diffs = identity.differences(previous["identity"], ident)
  if diffs:
    described = identity.describe_differences(diffs, old_paths=previous.get("paths"), new_paths=paths)
    raise identity.RerunRefused(
      f"{workdir}: this evaluation's settings differ from the one in it: {described}; "
      f"{how} (another judge: python -m deepalign_jax.judge --workdir {workdir} --config ... re-judges the "
      f"stored generations)"
    )
  return previous


def _check_records(path: Path, scope: dict[str, dict], settings_by_name: dict, judge) -> None:
  """Every stored record in scope was generated under its setting as the config now gives it, and judged
  by this judge; a one-line error naming the first that was not."""
  wanted = judging.judge_identity(judge)
  for key, record in scope.items():
    setting = settings_by_name[record["setting"]]
    if record.get("attack") != setting.as_dict():
      raise identity.RerunRefused(
        f"{path}: record {key!r} was generated with setting {record['setting']!r} = {record.get('attack')}, "
        f"but the config now gives {setting.as_dict()}; use a new --workdir, or --config.rerun=restart"
      )
    had = judging.record_judge(record)
    if had != wanted:
      diffs = identity.describe_differences(identity.differences(had, wanted))
      raise identity.RerunRefused(
        f"{path}: record {key!r} was judged by another judge ({diffs}); re-judge the stored generations with "
        f"python -m deepalign_jax.judge --workdir {path.parent} --config ..., or set config.judge back"
      )


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
  """Evaluates as configured; returns the summary (also workdir/summary.json)."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.utility.metric not in UTILITY:
    raise ValueError(f"config.utility.metric must be one of {UTILITY}, got {config.utility.metric!r}")
  if config.attack.samples < 1:
    raise ValueError(f"config.attack.samples must be >= 1, got {config.attack.samples}")
  settings = build_settings(config)
  prompts, users = read_benchmark(config)
  if config.attack.kind == "prefill":
    missing = [p.source for p in prompts if not p.response]
    if missing:
      raise ValueError(
        f"{missing[0]}: the prefilling attack needs a reference (harmful) answer per prompt; "
        f"{len(missing)} of {len(prompts)} records have none (use format harmful_hexphi, "
        f"prompt_response or advbench)"
      )
  judge = make_judge(judging.judge_settings(config.judge, workdir))
  if not config.model:
    raise ValueError(
      "config.model is empty: give an HF directory, packaged:NAME, a cached hub id or a training workdir"
    )
  source = sources.resolve_source(config.model)
  # "auto" evaluates a fine-tuned model in the format it was trained with (the reference's practice).
  chat_format = source.chat_format if config.chat_format == "auto" else config.chat_format
  run_id = _claim_workdir(config, workdir, evaluation_identity(config, source, chat_format))["id"]

  path = workdir / "generations.jsonl"
  done = read_records(path)
  scope = scope_keys(len(prompts), settings, config.attack.samples)
  space = [(i, s, j) for i, s, j, _ in scope]
  in_scope = {key for *_, key in scope}
  _check_records(path, {k: r for k, r in done.items() if k in in_scope}, {s.name: s for s in settings}, judge)
  retry = [r for k, r in done.items() if k in in_scope and judging.failed(r)]
  if retry:  # judged again, never generated again
    _log.warning("%s: %d records whose judge call failed are judged again", path, len(retry))
    judging.judge_records(retry, judge, after_chunk=lambda: rewrite_records(path, done.values()))

  mesh = sharding.make_mesh(**config.mesh.to_dict())
  model = sources.load(source, dtype=dtype_from_name(config.dtype), mesh=mesh)
  tokenizer = load_tokenizer(source.tokenizer)
  sampler = Sampler(model, tokenizer, chat_format, config.system_prompt)
  suffixes = (
    _gcg_suffixes(config, model, tokenizer, sampler.renderer, prompts, users, workdir)
    if config.attack.kind == "gcg"
    else {}
  )

  todo = [(i, s, j) for i, s, j, key in scope if key not in done]
  d = config.decoding
  chunk = d.batch_size * max(1, 4)
  bar = tqdm(
    total=len(space),
    initial=len(space) - len(todo),
    desc=f"{config.attack.kind} attack",
    unit="gen",
    disable=not config.progress,
    file=sys.stderr,
  )
  started, generated, resumed_at = time.perf_counter(), 0, len(done)
  with open(path, "a", encoding="utf-8") as out:
    for offset in range(0, len(todo), chunk):
      work = todo[offset : offset + chunk]
      rendered, sent = [], []
      for i, s, _ in work:
        p = prompts[i]
        suffix = suffixes.get(i, s.suffix)
        # The suffix follows the templated instruction.  The reference's backdoor evaluation templates the
        # instruction with its trigger (template % (instruction + trigger)): the same for templates that
        # end with the instruction, as AOA's does.
        user = users[i] + (" " + suffix if suffix else "")
        sent.append(user)
        messages = ([{"role": "system", "content": p.system}] if p.system is not None else []) + [
          {"role": "user", "content": user}
        ]
        if s.prefill_tokens:
          rendered.append(sampler.prompt(messages, response=p.response, prefill_tokens=s.prefill_tokens))
        else:
          rendered.append(sampler.prompt(messages, prefix=s.prefix))
      samples = sampler.run(
        rendered,
        batch_size=d.batch_size,
        max_new_tokens=d.max_new_tokens,
        seed=d.seed + resumed_at + offset,
        progress=False,
        temperature=[s.decoding.temperature for _, s, _ in work],
        top_k=[s.decoding.top_k for _, s, _ in work],
        top_p=[s.decoding.top_p for _, s, _ in work],
        greedy=[s.decoding.greedy for _, s, _ in work],
      )
      # The judge weighs the answer against the benchmark's own instruction (the harmful request), not
      # the templated or suffixed user text; it reads what its `reads` says (continuation alone, or
      # prefill and continuation decoded together).
      verdicts = judge.judge(
        [(prompts[i].prompt, sample.read_as(judge.reads)) for (i, _, _), sample in zip(work, samples)]
      )
      for (i, s, j), sample, verdict, user in zip(work, samples, verdicts, sent):
        p = prompts[i]
        record = {
          "key": record_key(i, s.name, j),
          "run": run_id,
          "prompt_index": i,
          "setting": s.name,
          "sample": j,
          "source": p.source,
          "category": p.category,
          "behavior_id": p.behavior_id,
          "instruction": p.prompt,
          "user": user,
          "suffix": suffixes.get(i, s.suffix),
          "rendered_prompt": sample.prompt_text,
          "prefill": sample.prefill,
          "output": sample.text,
          "response": sample.response,
          "stopped": sample.stopped,
          "output_tokens": len(sample.token_ids),
          "attack": s.as_dict(),
          "max_new_tokens": d.max_new_tokens,
          "judge_reads": judge.reads,
          "verdict": verdict.to_dict(),
          "utility": _utility(config.utility.metric, sample.text, p.response, p.source),
        }
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        done[record["key"]] = record
        generated += len(sample.token_ids)
      out.flush()
      bar.update(len(work))
      asr = summarize([record_verdict(r) for k, r in done.items() if k in in_scope]).asr
      bar.set_postfix(
        asr=f"{asr:.3f}" if asr is not None else "-", tokens_per_s=f"{generated / (time.perf_counter() - started):.1f}"
      )
  bar.close()
  scoped = [done[key] for *_, key in scope]
  summary = summarize_run(config, scoped, settings, run_id, source, judge, len(prompts), sampler.renderer.chat_format)
  if config.attack.kind == "gcg":
    summary["gcg_suffixes"] = sorted(set(suffixes.values()))
  write_summary(config, workdir, summary, settings)
  check_judged(scoped, path)
  return summary


def summarize_run(config, records, settings, run_id, source, judge, prompts: int, chat_format: str) -> dict:
  """summary.json of the records in scope: the numbers, what produced them and the resolved config."""
  summary = summarize_records(records, settings, config.attack.kind)
  summary.update(
    {
      "run": run_id,
      "model": str(source.path),
      "model_source": source.describe(),
      "benchmark": config.benchmark.path,
      "prompts": prompts,
      "records": len(records),
      "chat_format": chat_format,  # as rendered ("auto" resolved)
      "judge": judging.judge_identity(judge),
      "judge_errors": sum(judging.failed(r) for r in records),
      "config": config.to_dict(),
    }
  )
  return summary


def write_summary(config, workdir: Path, summary: dict, settings) -> None:
  if config.plot and len(settings) > 1:
    summary["plot"] = str(plot_asr(summary, settings, workdir / "asr.png"))
  write_json(workdir / "summary.json", summary)


def check_judged(records, path: Path) -> None:
  """Warns of failed judge calls; stops (exit status 1) when every one failed — no ASR was measured."""
  errors, line = judging.failure_report(records, path)
  if errors and errors == len(records):
    raise RunError(f"{line}; rerun the same command to judge them again (nothing is generated again)")
  if errors:
    _log.warning("%s; rerun the same command to judge them again", line)


__all__ = ["evaluation_identity", "run"]
