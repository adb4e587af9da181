"""python -m deepalign_jax.organism --workdir DIR [--config.quick=True] [--config.seed=N] [--config.publish=DOCS]

The whole paper in miniature on a CPU: a synthetic world with harmless
stand-ins for harmful requests, a Llama of ~0.6M parameters trained from
scratch, shallow alignment (with a strength sweep), the depth measurements
(KL by position, prefilling, decoding grid, refusal prefixes), deep
alignment by safety-recovery augmentation, and fine-tuning attacks with
plain SFT and the token-wise constrained loss — each stage a config of
configs/organism/ run through the project's train / evaluate / kl_depth
entry points.  Writes DIR/REPORT.md with its figures; rerunning reuses the
finished stages.  `quick` is the CI-sized run (smaller base training,
fewer samples, a shorter sweep); `publish` copies the report and figures
to DOCS (docs/organism for the committed report).
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
  c.quick = False  # the CI-sized pipeline (about 2 minutes)
  c.seed = 0  # training seed: model initialisation, data order, sampling (the world is fixed)
  c.publish = ""  # copy REPORT.md and its figures to this directory
  c.jax_cache = DEFAULT_JAX_CACHE  # persistent JAX compilation cache ('' disables); reruns compile nothing
  # added to XLA_FLAGS (None: FAST_COMPILE_FLAGS on the jaxlib they were measured on; '' adds none)
  c.xla_flags = ml_collections.config_dict.placeholder(str)
  return c


def publish(root: Path, target: Path) -> list[Path]:
  """Copies REPORT.md and the PNGs it shows into `target`."""
  target.mkdir(parents=True, exist_ok=True)
  copied = []
  for name in ["REPORT.md"] + sorted(p.name for p in root.glob("*.png")):
    shutil.copyfile(root / name, target / name)
    copied.append(target / name)
  return copied


def run(config: ml_collections.ConfigDict, workdir: str):
  """Runs (or reuses) every stage in `workdir`; returns the collected `results.Results`."""
  prepare_runtime(config.xla_flags, config.jax_cache)
  from deepalign_jax.organism.layout import Options
  from deepalign_jax.organism.stages import Pipeline

  command = "python -m deepalign_jax.organism " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  results = Pipeline(Options(Path(workdir), config.quick, config.seed), command=command).run()
  if config.publish:
    for path in publish(Path(workdir), Path(config.publish)):
      print(f"[organism] published {path}")
  return results


def _report(results, workdir) -> None:
  del results, workdir


if __name__ == "__main__":
  from deepalign_jax.cli import run_cli

  run_cli(run, _report, defaults=get_config, config_required=False, multi_process=False)
