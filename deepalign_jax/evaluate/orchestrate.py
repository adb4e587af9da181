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
half-written last line from a crash is dropped).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections
from tqdm.auto import tqdm

from deepalign_jax import metrics, sharding
from deepalign_jax.atomic import write_json
from deepalign_jax.data import Exchange
from deepalign_jax.evaluate.settings import UTILITY, build_settings, read_benchmark
from deepalign_jax.evaluate.store import read_records, record_key
from deepalign_jax.evaluate.summary import plot_asr, record_verdict, summarize_records
from deepalign_jax.judges import make_judge, summarize
from deepalign_jax.models import dtype_from_name
from deepalign_jax.models.sources import load_model
from deepalign_jax.sampling import Sampler


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
  judge = make_judge(config.judge)
  path = workdir / "generations.jsonl"
  done = read_records(path)
  other = next((r for r in done.values() if r.get("judge_reads", judge.reads) != judge.reads), None)
  if other is not None:
    raise ValueError(
      f"{path}: record {other['key']!r} was judged on the {other['judge_reads']}, but "
      f"config.judge.reads is {judge.reads!r}; set it back, or move the file away to start "
      f"over"
    )
  mesh = sharding.make_mesh(**config.mesh.to_dict())
  model, tokenizer, source = load_model(config.model, dtype=dtype_from_name(config.dtype), mesh=mesh)
  renderer_system = config.system_prompt
  # "auto" evaluates a fine-tuned model in the format it was trained with (the reference's practice).
  chat_format = source.chat_format if config.chat_format == "auto" else config.chat_format
  sampler = Sampler(model, tokenizer, chat_format, renderer_system)
  suffixes = (
    _gcg_suffixes(config, model, tokenizer, sampler.renderer, prompts, users, workdir)
    if config.attack.kind == "gcg"
    else {}
  )

  todo = [
    (i, s, j)
    for i in range(len(prompts))
    for s in settings
    for j in range(config.attack.samples)
    if record_key(i, s.name, j) not in done
  ]
  d = config.decoding
  chunk = d.batch_size * max(1, 4)
  bar = tqdm(
    total=len(prompts) * len(settings) * config.attack.samples,
    initial=len(done),
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
          "prompt_index": i,
          "setting": s.name,
          "sample": j,
          "source": p.source,
          "category": p.category,
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
      asr = summarize([record_verdict(r) for r in done.values()]).asr
      bar.set_postfix(
        asr=f"{asr:.3f}" if asr is not None else "-", tokens_per_s=f"{generated / (time.perf_counter() - started):.1f}"
      )
  bar.close()

  summary = summarize_records(list(done.values()), settings, config.attack.kind)
  summary.update(
    {
      "model": str(source.path),
      "model_source": source.describe(),
      "benchmark": config.benchmark.path,
      "prompts": len(prompts),
      "chat_format": sampler.renderer.chat_format,  # as rendered ("auto" resolved)
      "judge": {"name": judge.name, "version": judge.version, "reads": judge.reads},
      "config": config.to_dict(),
    }
  )
  if config.attack.kind == "gcg":
    summary["gcg_suffixes"] = sorted(set(suffixes.values()))
  if config.plot and len(settings) > 1:
    summary["plot"] = str(plot_asr(summary, settings, workdir / "asr.png"))
  write_json(workdir / "summary.json", summary)
  return summary


__all__ = ["run"]
