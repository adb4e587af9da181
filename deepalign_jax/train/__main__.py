"""python -m deepalign_jax.train --config configs/<name>.py --workdir DIR [--config.key=value ...]

Trains as the config says (see `deepalign_jax.train.loop.default_config`
for every setting); rerunning the same command resumes from the workdir's
latest checkpoint.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from deepalign_jax import distributed
from deepalign_jax.train.loop import run, training_hooks

_CONFIG = config_flags.DEFINE_config_file("config", None, "an ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and the export go")
distributed.define_flags()


def main(argv) -> None:
  del argv
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required")
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  distributed.initialize_from_flags()
  try:
    config = _CONFIG.value
    summary = run(config, _WORKDIR.value, hooks=training_hooks(config))
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if distributed.is_main_process():
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
