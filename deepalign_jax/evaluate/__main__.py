"""python -m deepalign_jax.evaluate --config configs/eval/<name>.py --workdir DIR [--config.key=value ...]"""

from __future__ import annotations

import json

from deepalign_jax import distributed
from deepalign_jax.cli import run_cli
from deepalign_jax.evaluate.orchestrate import run


def _report(summary: dict, workdir: str) -> None:
  del workdir
  if distributed.is_main_process():
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2, default=str))


if __name__ == "__main__":
  run_cli(run, _report)
