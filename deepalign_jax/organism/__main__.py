"""python -m deepalign_jax.organism --workdir DIR [--quick] [--seed N] [--publish DOCS_DIR]

The whole paper in miniature on a CPU: a synthetic world with harmless
stand-ins for harmful requests, a Llama of ~0.6M parameters trained from
scratch, shallow alignment (with a strength sweep), the depth measurements
(KL by position, prefilling, decoding grid, refusal prefixes), deep
alignment by safety-recovery augmentation, and fine-tuning attacks with
plain SFT and the token-wise constrained loss — each stage a config of
configs/organism/ run through the project's train / evaluate / kl_depth
entry points.  Writes DIR/REPORT.md with its figures; rerunning reuses the
finished stages.  --quick is the CI-sized run (smaller base training,
fewer samples, a shorter sweep); --publish copies the report and figures
to DOCS_DIR (docs/organism for the committed report).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

DEFAULT_JAX_CACHE = "~/.cache/deepalign_jax/jax_cache"
# XLA:CPU compiles a train step of this tiny model in ~5 s with its defaults and ~2.5 s with these, at
# the same step time (measured on jaxlib 0.10.2, 2 cores); about 20 s of the quick run.  Only applied
# on the jaxlib versions they were measured on: an XLA that does not know a flag aborts the process.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"
FAST_COMPILE_JAXLIB = ("0.10.",)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m deepalign_jax.organism", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--workdir", required=True, help="root of all stage outputs (reused on rerun)")
  parser.add_argument("--quick", action="store_true", help="the CI-sized pipeline (about 2 minutes)")
  parser.add_argument(
    "--seed", type=int, default=0, help="training seed: model initialisation, data order, sampling (the world is fixed)"
  )
  parser.add_argument("--publish", default="", help="copy REPORT.md and its figures to this directory")
  parser.add_argument(
    "--jax_cache",
    default=DEFAULT_JAX_CACHE,
    help="persistent JAX compilation cache ('' disables); reruns compile nothing",
  )
  parser.add_argument(
    "--xla_flags",
    default=None,
    help=f"added to XLA_FLAGS (default on jaxlib {'/'.join(FAST_COMPILE_JAXLIB)}x: "
    f"{FAST_COMPILE_FLAGS!r}, faster CPU compilation; '' adds none)",
  )
  return parser


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


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  extra = args.xla_flags if args.xla_flags is not None else default_xla_flags()
  if extra:  # read when the backend starts (the first computation), not at import
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), extra]).strip()
    print(f"[organism] XLA_FLAGS += {extra}")
  import jax

  if args.jax_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(args.jax_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every checkpoint at INFO

  from deepalign_jax.organism.layout import Options
  from deepalign_jax.organism.stages import Pipeline

  command = "python -m deepalign_jax.organism " + " ".join(
    shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
  )
  pipeline = Pipeline(Options(Path(args.workdir), args.quick, args.seed), command=command)
  try:
    pipeline.run()
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if args.publish:
    for path in publish(Path(args.workdir), Path(args.publish)):
      print(f"[organism] published {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
