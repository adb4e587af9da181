"""python -m deepalign_jax.judge --workdir EVAL_WORKDIR --config configs/eval/<name>.py [--config.judge.KEY=VALUE ...]

Judges an evaluation's stored generations again with the config's judge
(nothing is generated); see `deepalign_jax.evaluate.rejudge`.
"""

from __future__ import annotations

import json

from deepalign_jax.cli import run_cli
from deepalign_jax.evaluate.rejudge import get_config, run
from deepalign_jax.judges.factory import KEY_DOCS


def _report(summary: dict, workdir: str) -> None:
  del workdir
  print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2, default=str))


if __name__ == "__main__":
  run_cli(
    run,
    _report,
    defaults=get_config,
    config_required=False,
    docs=({f"judge.{k}": doc for k, doc in KEY_DOCS.items()},),
    multi_process=False,
  )
