"""python -m deepalign_jax.organism --workdir DIR [--config.quick=True] [--config.seeds=N] [--config.seed=S]
                                    [--config.publish=DOCS]

The whole paper in miniature on a CPU: a synthetic world with harmless
stand-ins for harmful requests, a Llama of ~0.6M parameters trained from
scratch, shallow alignment (with a strength sweep), the depth measurements
(KL by position, prefilling, decoding grid, refusal prefixes), deep
alignment by safety-recovery augmentation, and fine-tuning attacks with
plain SFT and the token-wise constrained loss — each stage a config of
configs/organism/ run through the project's train / evaluate / kl_depth
entry points.  One draw is not a result: the full run trains and evaluates
`seeds` training seeds (3; seeds S .. S+N-1), each a whole pipeline in
DIR/seed_N with its own REPORT.md, and writes DIR/REPORT.md with every
number as the mean [min–max] over the seeds and each verdict decided on the
means.  With one seed (the quick default) DIR is that seed's pipeline root.
Rerunning reuses the finished stages.  `quick` is the CI-sized run
(smaller base training, fewer samples, shorter sweeps); `publish` copies
the reports and figures to DOCS (docs/organism for the committed report).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import ml_collections

from deepalign_jax.organism.runtime import DEFAULT_JAX_CACHE, prepare_runtime


def get_config() -> ml_collections.ConfigDict:
  """The pipeline's settings (the stages' own are the files of configs/organism/)."""
  c = ml_collections.ConfigDict()
  c.quick = False  # the CI-sized pipeline (about 2 minutes for its one seed)
  c.seed = 0  # the first training seed: model initialisation, data order, sampling (the world is fixed)
  # how many training seeds (None: 3, or 1 in quick mode); verdicts are decided on their means
  c.seeds = ml_collections.config_dict.placeholder(int)
  c.robust = 0.9  # with several seeds: the share of seeds an effect must hold in to be called robust
  c.publish = ""  # copy REPORT.md and its figures to this directory
  c.jax_cache = DEFAULT_JAX_CACHE  # persistent JAX compilation cache ('' disables); reruns compile nothing
  # added to XLA_FLAGS (None: FAST_COMPILE_FLAGS on the jaxlib they were measured on; '' adds none)
  c.xla_flags = ml_collections.config_dict.placeholder(str)
  # glibc's malloc keeps freed memory for the next step (runtime.reuse_freed_memory: ~25% off a train step)
  c.reuse_memory = True
  return c


def publish(root: Path, target: Path) -> list[Path]:
  """Copies REPORT.md and the PNGs it shows into `target` (and each ROOT/seed_N's into target/seed_N)."""
  target.mkdir(parents=True, exist_ok=True)
  copied = []
  for name in ["REPORT.md"] + sorted(p.name for p in root.glob("*.png")):
    shutil.copyfile(root / name, target / name)
    copied.append(target / name)
  for seed_root in sorted(root.glob("seed_*")):
    if (seed_root / "REPORT.md").exists():
      copied += publish(seed_root, target / seed_root.name)
  return copied


def run(config: ml_collections.ConfigDict, workdir: str):
  """Runs (or reuses) every stage of every seed in `workdir`; returns the collected `results.Results`
  (one seed) or seed → `results.Results` (several)."""
  prepare_runtime(config.xla_flags, config.jax_cache, config.reuse_memory)
  from deepalign_jax.organism.layout import Options
  from deepalign_jax.organism.stages import Pipeline

  n = config.seeds if config.seeds is not None else (1 if config.quick else 3)
  if n < 1:
    raise ValueError(f"config.seeds must be >= 1, got {n}")
  command = "python -m deepalign_jax.organism " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  root = Path(workdir)
  if n == 1:
    results = Pipeline(Options(root, config.quick, config.seed), command=command).run()
  else:
    from deepalign_jax.organism import report, seeds

    seed_list = list(range(config.seed, config.seed + n))
    results = seeds.run_seeds(root, seed_list, config.quick)
    rows = seeds.across_seeds(results)
    path = report.write_across_seeds(root, results, rows, config.robust, command=command)
    from deepalign_jax.atomic import write_json

    write_json(root / "hold_rates.json", seeds.summary_json(rows, seed_list, config.quick, config.robust))
    print(f"[organism] report over seeds {seed_list}: {path}")
  if config.publish:
    for path in publish(root, Path(config.publish)):
      print(f"[organism] published {path}")
  return results


def _report(results, workdir) -> None:
  del results, workdir


if __name__ == "__main__":
  from deepalign_jax.cli import run_cli

  run_cli(run, _report, defaults=get_config, config_required=False, multi_process=False)
