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

import os
import shlex
import shutil
import sys
from pathlib import Path

import ml_collections

DEFAULT_JAX_CACHE = "~/.cache/deepalign_jax/jax_cache"
# XLA:CPU compiles a train step of this tiny model in ~5 s with its defaults and ~2.5 s with these, at
# the same step time (measured on jaxlib 0.10.2, 2 cores); about 20 s of the quick run.  Only applied
# on the jaxlib versions they were measured on: an XLA that does not know a flag aborts the process.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"
FAST_COMPILE_JAXLIB = ("0.10.",)


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


def default_xla_flags() -> str:
  """FAST_COMPILE_FLAGS where they were measured (this jaxlib, the CPU), else none."""
  from importlib.metadata import PackageNotFoundError, version

  try:
    jaxlib = version("jaxlib")
  except PackageNotFoundError:
    return ""
  platforms = os.environ.get("JAX_PLATFORMS", "cpu")
  return FAST_COMPILE_FLAGS if jaxlib.startswith(FAST_COMPILE_JAXLIB) and platforms == "cpu" else ""


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or reuses) every stage in `workdir`; returns the collected results."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  extra = config.xla_flags if config.xla_flags is not None else default_xla_flags()
  if extra:  # read when the backend starts (the first computation), not at import
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), extra]).strip()
    print(f"[organism] XLA_FLAGS += {extra}")
  import jax

  if config.jax_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(config.jax_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

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
