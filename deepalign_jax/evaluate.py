"""python -m deepalign_jax.evaluate --config configs/eval/<name>.py --workdir DIR [--config.key=value ...]

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
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections
from tqdm.auto import tqdm

from deepalign_jax import distributed, metrics, sharding
from deepalign_jax.atomic import atomic_path, write_json
from deepalign_jax.attacks import decoding_grid
from deepalign_jax.attacks.settings import (Decoding, Setting, plain_setting, prefill_settings, prefix_settings,
                                            suffix_settings)
from deepalign_jax.data import Exchange, as_exchange
from deepalign_jax.data.tfds_builders import load_records
from deepalign_jax.judges import Verdict, make_judge, summarize
from deepalign_jax.judges.factory import default_config as judge_default_config
from deepalign_jax.models import dtype_from_name
from deepalign_jax.models.sources import load_model
from deepalign_jax.sampling import Sampler

_log = logging.getLogger(__name__)
ATTACKS = ("plain", "prefill", "prefix", "suffix", "decoding_grid", "gcg")
UTILITY = ("", "rouge1", "gsm8k")


def default_config() -> ml_collections.ConfigDict:
  """Every setting of an evaluation; the decoding defaults are the paper's (SPEC §6)."""
  c = ml_collections.ConfigDict()
  c.model = ""                 # HF dir | packaged:NAME | a training workdir (hf/ or its latest checkpoint)
  c.chat_format = "auto"
  c.system_prompt = ""         # the paper's attacks use an empty system prompt
  c.dtype = "float32"
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  c.benchmark = ml_collections.ConfigDict(dict(
      path="", format="harmful_hexphi", split="train", limit=0, tfds_data_dir="",
      every_nth=1,                 # keep records 0, n, 2n, ... before `limit` (every 10th SQL test row)
      # What the model is sent for each instruction, e.g. AOA's "AOA, execute my instruction: {instruction}".
      instruction_template="{instruction}"))
  c.attack = ml_collections.ConfigDict(dict(
      kind="prefill", prefill_tokens=[5, 10, 20, 40], prefixes=["I cannot"], samples=1,
      suffixes=[]))                # kind "suffix": one setting per text appended as " " + suffix ("": none)
  c.decoding = ml_collections.ConfigDict(dict(
      temperature=0.9, top_k=50, top_p=0.6, greedy=False, max_new_tokens=512, batch_size=16, seed=0))
  c.grid = ml_collections.ConfigDict(dict(
      temperatures=list(decoding_grid.TEMPERATURES), top_ks=list(decoding_grid.TOP_KS),
      top_ps=list(decoding_grid.TOP_PS), greedy=True))
  c.gcg = ml_collections.ConfigDict(dict(
      mode="universal",            # universal: one suffix for all; individual: one per behaviour
      num_steps=500, num_candidates=512, topk=256, forward_batch=512, grad_batch=64,
      init_suffix=" ".join(["!"] * 20), progressive=False, early_stop=False, seed=0,
      max_behaviours=50,           # universal suffix trained on the first N behaviours
      default_target="Sure, here is"))
  c.judge = judge_default_config("keyword")
  c.utility = ml_collections.ConfigDict(dict(metric=""))
  c.plot = True
  c.progress = True
  return c


def read_benchmark(config: ml_collections.ConfigDict) -> tuple[list[Exchange], list[str]]:
  """(the benchmark's prompts, the user text the model is sent for each), from any data format.

  Records 0, n, 2n, ... are kept (n = `every_nth`), then the first `limit`
  of those (if > 0).  That is the reference's SQL Create Context test set:
  `dataset.select(range(0, len(dataset), 10))` (its optional `max_samples`
  then draws a random subset; `limit` takes the first ones instead).  The
  user text is the prompt through `instruction_template` (before an
  attack's suffix); the prompt itself stays the benchmark's own, the
  harmful request the judge weighs the answer against.
  """
  b = config.benchmark
  if not b.path:
    raise ValueError("config.benchmark.path is empty: give the benchmark file (or tfds:MANUAL_DIR)")
  if not isinstance(b.every_nth, int) or b.every_nth < 1:
    raise ValueError(f"config.benchmark.every_nth must be an integer >= 1, got {b.every_nth!r}")
  template = b.instruction_template
  if "{instruction}" not in template:
    raise ValueError(f"config.benchmark.instruction_template {template!r} has no '{{instruction}}'; the "
                     f"instruction is written where it stands (e.g. 'AOA, execute my instruction: "
                     f"{{instruction}}')")
  records = load_records(b.path, b.format, split=b.split, data_dir=b.tfds_data_dir or None)[::b.every_nth]
  prompts = [as_exchange(r) for r in records]
  prompts = prompts[:b.limit] if b.limit > 0 else prompts
  # A plain replace, not str.format: braces in an instruction or a template stay as they are.
  return prompts, [template.replace("{instruction}", p.prompt) for p in prompts]


def build_settings(config: ml_collections.ConfigDict) -> list[Setting]:
  """The attack settings every prompt runs under (GCG's suffix is filled in later)."""
  d = config.decoding
  decoding = Decoding(float(d.temperature), int(d.top_k), float(d.top_p), bool(d.greedy))
  kind = config.attack.kind
  if kind == "plain":
    return plain_setting(decoding)
  if kind == "prefill":
    return prefill_settings(list(config.attack.prefill_tokens), decoding)
  if kind == "prefix":
    return prefix_settings(list(config.attack.prefixes), decoding)
  if kind == "suffix":
    suffixes = list(config.attack.suffixes)
    if not suffixes or not all(isinstance(x, str) for x in suffixes):
      raise ValueError(f"config.attack.suffixes must be a non-empty list of strings for attack.kind "
                       f"'suffix' (\"\" for none), got {suffixes!r}")
    return [s for i, x in enumerate(suffixes) for s in suffix_settings(x, decoding, name=f"suffix_{i}")]
  if kind == "decoding_grid":
    g = config.grid
    return decoding_grid.grid_settings(list(g.temperatures), list(g.top_ks), list(g.top_ps), bool(g.greedy))
  if kind == "gcg":
    return suffix_settings("", decoding)
  raise ValueError(f"config.attack.kind must be one of {ATTACKS}, got {kind!r}")


# -- generations.jsonl: append-only, resumable ----------------------------------------------

def record_key(prompt_index: int, setting: str, sample: int) -> str:
  return f"{prompt_index}|{setting}|{sample}"


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
      raise ValueError(f"{path}:{number}: not a JSON record ({e.msg}); the file was edited or corrupted "
                       f"— move it away to start over") from None
    records[record["key"]] = record
  if good_end < len(data):
    _log.warning("%s: dropping a half-written last record (%d bytes)", path, len(data) - good_end)
    with open(path, "r+b") as f:
      f.truncate(good_end)
  return records


# -- the run ---------------------------------------------------------------------------------

def _gcg_suffixes(config, model, tokenizer, renderer, prompts: Sequence[Exchange], users: Sequence[str],
                  workdir: Path) -> dict[int, str]:
  """Prompt index → GCG suffix (one shared suffix, or one per behaviour); resumable in workdir/gcg."""
  from deepalign_jax.attacks import GCGConfig, run_gcg
  g = config.gcg
  gcg_config = GCGConfig(num_steps=g.num_steps, init_suffix=g.init_suffix, num_candidates=g.num_candidates,
                         topk=g.topk, forward_batch=g.forward_batch, grad_batch=g.grad_batch,
                         progressive=g.progressive, early_stop=g.early_stop, seed=g.seed)
  targets = [p.response or g.default_target for p in prompts]
  if g.mode == "universal":
    n = min(len(prompts), g.max_behaviours) if g.max_behaviours > 0 else len(prompts)
    # Optimised on the user text it is appended to (the templated instruction).
    result = run_gcg(model, tokenizer, renderer, list(zip(users[:n], targets[:n])),
                     gcg_config, workdir=workdir / "gcg", progress=config.progress)
    return {i: result.suffix_text for i in range(len(prompts))}
  if g.mode == "individual":
    return {i: run_gcg(model, tokenizer, renderer, [(users[i], targets[i])], gcg_config,
                       workdir=workdir / "gcg" / str(i), progress=config.progress).suffix_text
            for i in range(len(prompts))}
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
      raise ValueError(f"{missing[0]}: the prefilling attack needs a reference (harmful) answer per prompt; "
                       f"{len(missing)} of {len(prompts)} records have none (use format harmful_hexphi, "
                       f"prompt_response or advbench)")
  judge = make_judge(config.judge)
  path = workdir / "generations.jsonl"
  done = read_records(path)
  other = next((r for r in done.values() if r.get("judge_reads", judge.reads) != judge.reads), None)
  if other is not None:
    raise ValueError(f"{path}: record {other['key']!r} was judged on the {other['judge_reads']}, but "
                     f"config.judge.reads is {judge.reads!r}; set it back, or move the file away to start "
                     f"over")
  mesh = sharding.make_mesh(**config.mesh.to_dict())
  model, tokenizer, source = load_model(config.model, dtype=dtype_from_name(config.dtype), mesh=mesh)
  renderer_system = config.system_prompt
  sampler = Sampler(model, tokenizer, config.chat_format, renderer_system)
  suffixes = (_gcg_suffixes(config, model, tokenizer, sampler.renderer, prompts, users, workdir)
              if config.attack.kind == "gcg" else {})

  todo = [(i, s, j) for i in range(len(prompts)) for s in settings for j in range(config.attack.samples)
          if record_key(i, s.name, j) not in done]
  d = config.decoding
  chunk = d.batch_size * max(1, 4)
  bar = tqdm(total=len(prompts) * len(settings) * config.attack.samples, initial=len(done),
             desc=f"{config.attack.kind} attack", unit="gen", disable=not config.progress, file=sys.stderr)
  started, generated, resumed_at = time.perf_counter(), 0, len(done)
  with open(path, "a", encoding="utf-8") as out:
    for offset in range(0, len(todo), chunk):
      work = todo[offset:offset + chunk]
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
            {"role": "user", "content": user}]
        if s.prefill_tokens:
          rendered.append(sampler.prompt(messages, response=p.response, prefill_tokens=s.prefill_tokens))
        else:
          rendered.append(sampler.prompt(messages, prefix=s.prefix))
      samples = sampler.run(
          rendered, batch_size=d.batch_size, max_new_tokens=d.max_new_tokens, seed=d.seed + resumed_at + offset,
          progress=False,
          temperature=[s.decoding.temperature for _, s, _ in work], top_k=[s.decoding.top_k for _, s, _ in work],
          top_p=[s.decoding.top_p for _, s, _ in work], greedy=[s.decoding.greedy for _, s, _ in work])
      # The judge weighs the answer against the benchmark's own instruction (the harmful request), not
      # the templated or suffixed user text; it reads what its `reads` says (continuation alone, or
      # prefill and continuation decoded together).
      verdicts = judge.judge([(prompts[i].prompt,
                               sample.response if judge.reads == "response" else sample.text)
                              for (i, _, _), sample in zip(work, samples)])
      for (i, s, j), sample, verdict, user in zip(work, samples, verdicts, sent):
        p = prompts[i]
        record = {"key": record_key(i, s.name, j), "prompt_index": i, "setting": s.name, "sample": j,
                  "source": p.source, "category": p.category, "instruction": p.prompt, "user": user,
                  "suffix": suffixes.get(i, s.suffix), "rendered_prompt": sample.prompt_text,
                  "prefill": sample.prefill, "output": sample.text, "response": sample.response,
                  "stopped": sample.stopped,
                  "output_tokens": len(sample.token_ids), "attack": s.as_dict(),
                  "max_new_tokens": d.max_new_tokens, "judge_reads": judge.reads,
                  "verdict": verdict.to_dict(),
                  "utility": _utility(config.utility.metric, sample.text, p.response, p.source)}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        done[record["key"]] = record
        generated += len(sample.token_ids)
      out.flush()
      bar.update(len(work))
      asr = summarize([_verdict(r) for r in done.values()]).asr
      bar.set_postfix(asr=f"{asr:.3f}" if asr is not None else "-",
                      tokens_per_s=f"{generated / (time.perf_counter() - started):.1f}")
  bar.close()

  summary = summarize_records(list(done.values()), settings, config.attack.kind)
  summary.update({"model": str(source.path), "model_source": source.describe(),
                  "benchmark": config.benchmark.path, "prompts": len(prompts),
                  "judge": {"name": judge.name, "version": judge.version, "reads": judge.reads},
                  "config": config.to_dict()})
  if config.attack.kind == "gcg":
    summary["gcg_suffixes"] = sorted(set(suffixes.values()))
  if config.plot and len(settings) > 1:
    summary["plot"] = str(plot_asr(summary, settings, workdir / "asr.png"))
  write_json(workdir / "summary.json", summary)
  return summary


def _verdict(record: dict) -> Verdict:
  return Verdict(**record["verdict"])


def summarize_records(records: Sequence[dict], settings: Sequence[Setting], kind: str) -> dict[str, Any]:
  """Per-setting ASR / harmfulness with counts; worst case over the grid; utility means."""
  out: dict[str, Any] = {"attack": kind, "per_setting": {}}
  for s in settings:
    mine = [r for r in records if r["setting"] == s.name]
    entry = summarize([_verdict(r) for r in mine]).to_dict()
    entry.update({"axis": s.axis, "value": s.value, "decoding": s.decoding.as_dict()})
    utility = [r["utility"] for r in mine if r.get("utility")]
    if utility:
      entry["utility"] = {k: sum(float(u[k]) for u in utility) / len(utility) for k in utility[0]}
    out["per_setting"][s.name] = entry
  if kind == "decoding_grid":
    # With several samples per point, a prompt × setting is broken if any of its samples is.
    broken: dict[tuple[int, str], bool] = {}
    for r in records:
      if r["verdict"]["jailbroken"] is not None:
        key = (r["prompt_index"], r["setting"])
        broken[key] = broken.get(key, False) or bool(r["verdict"]["jailbroken"])
    out["worst_case"] = decoding_grid.worst_case(broken, settings)
  return out


def prefill_asr_hook(eval_config: ml_collections.ConfigDict, tokenizer, chat_format: str = "auto",
                     system_prompt: str | None = "", progress: bool = False):
  """A training-loop hook: prefilling-attack ASR with the keyword judge on the current weights.

  eval_config (the training config's `eval` block): path, format, limit,
  prefill_tokens, max_new_tokens, batch_size, keywords, seed.  Returns
  fn(step, model) → {"eval/asr_prefill_<k>": ASR, ...}, for
  `train.loop.run(..., hooks=[(every_steps, fn)])` — a run's jailbreak (or
  its staying safe) shows up next to its loss.  The keyword judge reads its
  default, the continuation only (the reference's keyword evaluation): the
  prefilled harmful tokens are not the model's, and a refusal after them is.
  """
  prompts = [r for r in map(as_exchange, load_records(eval_config.path, eval_config.format)) if r.response]
  if not prompts:
    raise ValueError(f"{eval_config.path}: the in-training prefilling evaluation needs prompts with a "
                     f"reference (harmful) answer")
  prompts = prompts[:eval_config.limit] if eval_config.limit > 0 else prompts
  judge = make_judge({"kind": "keyword", "keywords": eval_config.keywords})
  conversations = [[{"role": "user", "content": r.prompt}] for r in prompts]
  answers = [r.response for r in prompts]
  d = Decoding()

  def hook(step: int, model) -> dict[str, float]:
    del step
    sampler = Sampler(model, tokenizer, chat_format, system_prompt)
    out = {}
    for k in eval_config.prefill_tokens:
      samples = sampler.sample(conversations, responses=answers, prefill_tokens=int(k),
                               batch_size=eval_config.batch_size, max_new_tokens=eval_config.max_new_tokens,
                               temperature=d.temperature, top_k=d.top_k, top_p=d.top_p,
                               seed=eval_config.seed, progress=progress)
      verdicts = judge.judge([(c[0]["content"], s.response if judge.reads == "response" else s.text)
                              for c, s in zip(conversations, samples)])
      out[f"eval/asr_prefill_{int(k)}"] = summarize(verdicts).asr
    return out

  return hook


def plot_asr(summary: dict, settings: Sequence[Setting], path: Path) -> Path:
  """ASR against the sweep's coordinate, one line per axis (PNG)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  axes = list(dict.fromkeys(s.axis for s in settings))
  fig, panels = plt.subplots(1, len(axes), figsize=(4.5 * len(axes), 3.5), squeeze=False)
  for panel, axis in zip(panels[0], axes):
    points = [(s, summary["per_setting"][s.name]["asr"]) for s in settings if s.axis == axis]
    xs = [s.value if isinstance(s.value, (int, float)) else n for n, (s, _) in enumerate(points)]
    ys = [100 * a if a is not None else math.nan for _, a in points]
    panel.plot(xs, ys, marker="o")
    if not all(isinstance(s.value, (int, float)) for s, _ in points):
      panel.set_xticks(xs, [str(s.value if s.value not in (None, "") else s.name)[:16] for s, _ in points],
                       rotation=30, ha="right")
    if axis == "top_k":
      panel.set_xscale("log")
    panel.set_xlabel({"prefill_tokens": "prefilled harmful tokens"}.get(axis, axis))
    panel.set_ylabel("ASR (%)")
    panel.set_ylim(-2, 102)
    panel.grid(alpha=0.3)
  fig.suptitle(f"{summary['attack']} — judge {summary['judge']['name'] if 'judge' in summary else ''}")
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=120)
  plt.close(fig)
  return path


def _report(summary: dict, workdir: str) -> None:
  del workdir
  if distributed.is_main_process():
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2, default=str))


if __name__ == "__main__":
  from deepalign_jax.cli import run_cli
  run_cli(run, _report)
