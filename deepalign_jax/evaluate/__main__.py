"""python -m deepalign_jax.evaluate --config configs/eval/<name>.py --workdir DIR [--config.key=value ...]"""

from __future__ import annotations

import json

from deepalign_jax import distributed
from deepalign_jax.attacks.gcg import GCGConfig
from deepalign_jax.cli import attribute_docs, run_cli
from deepalign_jax.evaluate.orchestrate import run
from deepalign_jax.evaluate.settings import default_config
from deepalign_jax.judges.factory import KEY_DOCS


def _report(summary: dict, workdir: str) -> None:
  del workdir
  if distributed.is_main_process():
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2, default=str))


if __name__ == "__main__":
  run_cli(
    run,
    _report,
    defaults=default_config,
    docs=(attribute_docs(GCGConfig, "gcg."), {f"judge.{k}": doc for k, doc in KEY_DOCS.items()}),
  )
