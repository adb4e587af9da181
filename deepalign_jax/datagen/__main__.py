"""python -m deepalign_jax.datagen --config configs/datagen/<name>.py --workdir DIR [--config.key=value ...]"""

from __future__ import annotations

import json

from deepalign_jax.cli import run_cli
from deepalign_jax.datagen.build import run
from deepalign_jax.datagen.settings import KEY_DOCS, default_config
from deepalign_jax.judges.factory import KEY_DOCS as JUDGE_KEY_DOCS


def _report(summary: dict, workdir: str) -> None:
  del workdir
  shown = {k: v for k, v in summary.items() if k != "config"}
  for section in ("safety", "utility"):
    if section in shown:  # the per-record list is in summary.json; stdout gets the counts
      shown[section] = {k: v for k, v in shown[section].items() if k != "dropped_records"}
  print(json.dumps(shown, indent=2, default=str))


if __name__ == "__main__":
  run_cli(
    run,
    _report,
    defaults=default_config,
    docs=(KEY_DOCS, {f"judge.{k}": doc for k, doc in JUDGE_KEY_DOCS.items()}),
    multi_process=False,
  )
