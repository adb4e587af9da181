"""The organism pipeline: world → base → alignment by SFT and DPO (+ sweeps) → measurements → deep → attacks → report.

Every stage is run by the project's own entry points with a config file of
`configs/organism/` — `deepalign_jax.train.loop.run` (what
`python -m deepalign_jax.train` calls), `deepalign_jax.evaluate.run` and
`deepalign_jax.analysis.kl_depth.run` — in this process, so compiled
functions are shared between stages.  A stage whose outputs exist is reused
(a training workdir with `summary.json` saying finished, an evaluation with
its `summary.json`), so a rerun after an interruption continues where it
stopped.  Wall time per stage goes to ROOT/timings.json.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from deepalign_jax.atomic import write_json
from deepalign_jax.organism.layout import FINETUNES, SWEEP_ATTACKS, SWEEPS, Layout, Options, sweep_attack

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "organism"
MEASUREMENTS = ("prefill", "grid", "prefix", "utility")


def load_config(name: str, arg: str):
  """`configs/organism/{name}.py`'s get_config(arg)."""
  path = CONFIG_DIR / f"{name}.py"
  if not path.is_file():
    raise FileNotFoundError(
      f"{path}: the organism's config files live in the repository's "
      "configs/organism/ (run from a source checkout, e.g. pip install -e .)"
    )
  spec = importlib.util.spec_from_file_location(f"organism_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _finished(workdir: Path) -> bool:
  summary = workdir / "summary.json"
  return summary.exists() and bool(json.loads(summary.read_text()).get("finished"))


class Pipeline:
  """Runs the stages for one root; `log` receives one line per event."""

  def __init__(self, opts: Options, log: Callable[[str], None] = print, command: str = ""):
    self.opts = opts
    self.command = command
    self.layout = Layout(opts.root)
    self.log = log
    self.progress = sys.stderr.isatty()
    self.timings_path = self.layout.root / "timings.json"
    self.timings: dict[str, dict] = json.loads(self.timings_path.read_text()) if self.timings_path.exists() else {}
    self.world = None
    self.configs_used: set[str] = set()  # which configs/organism/ files this invocation ran (results.json)

  # -- bookkeeping ------------------------------------------------------------------------

  def arg(self, **extra: str) -> str:
    return self.opts.arg(**extra)

  def config(self, name: str, **extra: str):
    """`configs/organism/{name}.py` for this root and options (and `extra` arguments)."""
    self.configs_used.add(name)
    return load_config(name, self.arg(**extra))

  def _stage(self, name: str, done: bool, fn: Callable[[], Any]) -> Any:
    """Runs fn unless `done`; records its wall time under `name`."""
    if done:
      self.log(f"[organism] {name}: reused")
      return None
    self.log(f"[organism] {name}: running")
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    seconds = time.perf_counter() - start
    # CPU time (all threads): on a machine shared with other work, wall time overstates what the stage
    # needs; CPU seconds / cores is what it would take alone.
    self.timings[name] = {
      "seconds": round(seconds, 2),
      "cpu_seconds": round(time.process_time() - cpu, 2),
      "quick": self.opts.quick,
      "seed": self.opts.seed,
      "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(self.timings_path, self.timings)
    self.log(f"[organism] {name}: done in {seconds:.1f} s")
    return out

  def train(self, stage: str, config_name: str, **extra: str) -> Path:
    from deepalign_jax.train.loop import run

    workdir = self.layout.train_dir(stage)
    config = self.config(config_name, **extra)
    config.progress = self.progress

    def go():
      summary = run(config, workdir)
      if not summary["finished"]:
        raise RuntimeError(f"{workdir}: training stopped at step {summary['steps_done']}")

    self._stage(f"train/{stage}", _finished(workdir), go)
    return workdir

  def evaluate(self, model: str, kind: str) -> Path:
    from deepalign_jax import evaluate

    workdir = self.layout.eval_dir(model, kind)
    config = self.config("eval", model=model, kind=kind)
    config.progress = self.progress
    self._stage(f"eval/{model}/{kind}", (workdir / "summary.json").exists(), lambda: evaluate.run(config, workdir))
    return workdir

  def kl(self, workdir: Path, **extra: str) -> Path:
    from deepalign_jax.analysis import kl_depth

    config = self.config("kl_depth", **extra)
    name = "kl/" + ({"align": "sweep", "align_dpo": "sweep_dpo"}[extra["stage"]] if extra else "main")
    self._stage(name, (workdir / "kl_by_position.json").exists(), lambda: kl_depth.run(config, workdir))
    return workdir

  # -- stages -----------------------------------------------------------------------------

  def build_world(self) -> None:
    """Stage 0: the world's data files and the untrained model (tokenizer trained on the world)."""
    from deepalign_jax.organism import world as world_lib
    from deepalign_jax.organism.build import ModelShape, build_initial_model

    config = self.config("world")
    wc = world_lib.WorldConfig(**config.world.to_dict())
    self.world = world_lib.World(wc)
    layout, d, seed = self.layout, config.data, wc.seed
    record = {"world": config.world.to_dict(), "data": config.data.to_dict(), "model": config.model.to_dict()}
    meta = layout.world / "world.json"
    if meta.exists():
      saved = json.loads(meta.read_text())["config"]
      if saved != json.loads(json.dumps(record)):
        raise ValueError(
          f"{meta}: this root was built with another world or model config ({saved} vs {record}); use a new --workdir"
        )

    def write_data():
      w = self.world
      files = {
        "base": world_lib.conversations(w.base_data(d.base_benign, d.base_forbidden_repeats, seed)),
        "align": world_lib.conversations(w.alignment_data(d.align_per_topic, d.align_benign, seed + 1)),
        "triplets": w.triplets(d.triplets_per_topic, seed + 2),
        "preferences": w.preference_data(d.pref_per_topic, d.pref_benign, seed + 8),
        "utility": world_lib.conversations(w.benign_mix(random.Random(seed + 3), d.utility)),
        "attack": world_lib.conversations(w.attack_data(d.attack_per_topic, seed + 7)),
        "task": world_lib.conversations(w.benign_task_data(d.task, seed + 4)),
        "eval_forbidden": world_lib.prompt_response(w.eval_forbidden(d.eval_per_topic)),
        "eval_grid": world_lib.prompt_response(w.eval_forbidden(d.grid_per_topic)),
        "eval_benign": world_lib.prompt_response(w.eval_benign(d.eval_benign, seed + 5)),
        "eval_task": world_lib.prompt_response(w.eval_benign(d.eval_task, seed + 6, kinds=("times",))),
      }
      for name, rows in files.items():
        world_lib.write_jsonl(layout.data(name), rows)
      write_json(
        meta,
        {
          "config": record,
          "topics": w.topics,
          "markers": w.markers,
          "attack_topics": list(range(wc.attack_topics)),
          "capitals": w.capitals,
          "unknown_countries": w.unknown_countries,
          "counts": {name: len(rows) for name, rows in files.items()},
        },
      )

    def build_model():
      m = config.model
      shape = ModelShape(
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        vocab_size=m.vocab_size,
      )
      build_initial_model(self.world.corpus(), layout.init, shape, seed=m.init_seed)

    self._stage("world/data", meta.exists(), write_data)
    self._stage("world/model", (layout.init / "config.json").exists(), build_model)

  def export_checkpoint(self, step: int, stage: str = "align") -> Path:
    """An alignment run's checkpoint at `step` as an HF directory (ROOT/sweep/STEP/hf, ROOT/sweep_dpo/...)."""
    from deepalign_jax.data import load_tokenizer
    from deepalign_jax.models import read_config, save_pretrained
    from deepalign_jax.models.sources import load, resolve_source

    out = self.layout.sweep_dir(step, stage) / "hf"
    if not (out / "config.json").exists():
      base = self.layout.model("base")
      model = load(resolve_source(str(self.layout.train_dir(stage)), step))
      save_pretrained(model, read_config(base), out, tokenizer=load_tokenizer(base))
    return out

  def align_and_sweep(self, stage: str = "align") -> int:
    """Stage 2 (SFT, `align`) or 3b (DPO, `align_dpo`): one alignment run, its sweep strengths measured,
    the chosen one copied to ROOT/aligned (ROOT/dpo)."""
    from deepalign_jax.organism import results

    prefix, chosen_name = SWEEPS[stage]
    config = self.config(stage)
    self.train(stage, stage)
    steps = list(config.sweep.steps)
    for s in steps:
      self.export_checkpoint(s, stage)
      self.evaluate(f"{prefix}{s}", "prefill")
      self.evaluate(f"{prefix}{s}", "utility")
    sweep_root = self.layout.sweep_dir(steps[0], stage).parent
    self.kl(sweep_root / "kl", sweep="-".join(map(str, steps)), stage=stage)
    choice = results.choose_strength(self.layout, steps, config.sweep.max_asr, prefix)
    write_json(sweep_root / "choice.json", choice)
    chosen = self.layout.model(chosen_name)
    chosen_dir = self.layout.sweep_dir(choice["steps"], stage) / "hf"
    previous = (
      json.loads((chosen / "organism_choice.json").read_text()) if (chosen / "organism_choice.json").exists() else None
    )
    if previous is None or previous["steps"] != choice["steps"]:
      if chosen.exists():
        shutil.rmtree(chosen)
      shutil.copytree(chosen_dir, chosen)
      write_json(chosen / "organism_choice.json", choice)
    self.log(f"[organism] {chosen_name} model: {choice['steps']} steps ({choice['reason']})")
    return choice["steps"]

  def opening_logprobs(
    self,
    models=("base", "aligned", "dpo", "deep"),
    positions: int = 6,
    path: Path | None = None,
    stage: str = "logprobs",
  ) -> Path:
    """log π(token t | request, tokens < t) of the attack data's first procedure tokens, per model
    (written to `path`, ROOT/opening_logprobs.json by default).

    What the constrained loss (Eq. 3) works against: it bounds how far
    fine-tuning lifts each of these above the reference, so whether it can
    hold an attack depends on how unlikely the reference finds them.
    """
    path = path or self.layout.root / "opening_logprobs.json"

    def go():
      import numpy as np

      from deepalign_jax.analysis import per_position_nll
      from deepalign_jax.data import ChatRenderer, load_tokenizer, tokenize_conversation
      from deepalign_jax.data.pipeline import pad_rows
      from deepalign_jax.models import load_pretrained

      tokenizer = load_tokenizer(self.layout.init)
      renderer = ChatRenderer(tokenizer, "template")
      rows = [json.loads(line) for line in self.layout.data("attack").read_text().splitlines() if line]
      examples = [
        tokenize_conversation(renderer, None, r["messages"][0]["content"], r["messages"][1]["content"], max_length=64)[
          0
        ]
        for r in rows
      ]
      batch = pad_rows(examples, len(examples), max(len(e) for e in examples), tokenizer.pad_token_id)
      out = {}
      for name in models:
        model, _ = load_pretrained(self.layout.model(name))
        nll, valid = per_position_nll(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], positions)
        nll, valid = np.asarray(nll), np.asarray(valid)
        out[name] = [float(-nll[valid[:, t], t].mean()) for t in range(positions)]
      write_json(path, {"data": str(self.layout.data("attack")), "logprobs": out})

    self._stage(stage, path.exists(), go)
    return path

  def sweep_attacks(self) -> None:
    """The harmful attack, plain SFT and constrained, from every strength of the DPO sweep, and the openings'
    log-probabilities of those strengths: Table 4 by alignment strength."""
    steps = list(self.config("align_dpo").sweep.steps)
    for s in steps:
      for attack in SWEEP_ATTACKS:
        name = sweep_attack(s, attack)
        self.train(name, "finetune", run=name)
        self.evaluate(name, "asr")
    sweep_root = self.layout.sweep_dir(steps[0], "align_dpo").parent
    self.opening_logprobs(
      [f"{SWEEPS['align_dpo'][0]}{s}" for s in steps],
      path=sweep_root / "opening_logprobs.json",
      stage=f"logprobs/{sweep_root.name}",
    )

  def measure(self, model: str, kinds=MEASUREMENTS) -> None:
    for kind in kinds:
      self.evaluate(model, kind)

  def run(self):
    """All stages; returns the collected `results.Results` (also ROOT/results.json)."""
    from deepalign_jax.organism import report, results

    start = time.perf_counter()
    self.layout.root.mkdir(parents=True, exist_ok=True)
    self.build_world()
    self.train("base", "base")
    self.measure("base", ("prefill", "prefix", "utility"))  # no grid: the base model complies at every setting
    self.align_and_sweep()
    self.measure("aligned")
    self.evaluate("aligned", "asr")
    self.evaluate("aligned", "task")
    self.align_and_sweep("align_dpo")
    self.measure("dpo", ("prefill", "utility", "asr"))
    self.sweep_attacks()
    self.train("deep", "deep")
    self.measure("deep")
    self.evaluate("deep", "asr")
    self.kl(self.layout.kl)
    self.opening_logprobs()
    for name in FINETUNES:
      self.train(name, "finetune", run=name)
      for kind in ("asr", "utility", "task"):
        self.evaluate(name, kind)
    collected = results.collect(self.layout)
    collected.total_seconds = round(time.perf_counter() - start, 1)
    collected.configs = sorted(self.configs_used)
    write_json(self.layout.root / "results.json", collected.to_json())
    report.write(self.layout, collected, command=self.command)
    self.log(
      f"[organism] report: {self.layout.root / 'REPORT.md'} ({time.perf_counter() - start:.1f} s this invocation)"
    )
    return collected


__all__ = ["CONFIG_DIR", "MEASUREMENTS", "Pipeline", "load_config"]
