"""python -m deepalign_jax.train --config configs/<name>.py --workdir DIR [--config.key=value ...]

Trains as the config says (see `deepalign_jax.train.loop.default_config`
for every setting); rerunning the same command resumes from the workdir's
latest checkpoint.  Multi-host flags: see `deepalign_jax.distributed`.
"""

from __future__ import annotations

import json

from deepalign_jax import distributed
from deepalign_jax.cli import run_cli
from deepalign_jax.train.loop import run, training_hooks


def _run(config, workdir):
  return run(config, workdir, hooks=training_hooks(config))


def _report(summary, workdir) -> None:
  del workdir
  if distributed.is_main_process():
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  run_cli(_run, _report)
