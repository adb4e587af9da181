"""The shared `--config FILE --workdir DIR` entry point of every CLI (train, evaluate, analyses).

Flags are defined when a CLI starts, not when its module is imported: two
modules defining `--config` at import time could not both be imported by one
process (a test, a notebook).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping

from deepalign_jax import distributed


def run_cli(run: Callable[[Any, str], Mapping[str, Any]],
            report: Callable[[Mapping[str, Any], str], None]) -> None:
  """Parses --config/--workdir, calls run(config, workdir), then report(summary, workdir).

  A ValueError or OSError (a bad config, file or checkpoint) is printed as
  one line "error: ..." on stderr with exit status 1.
  """
  from absl import app, flags, logging
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file("config", None, "an ml_collections config file",
                                                lock_config=True)
  workdir_flag = flags.DEFINE_string("workdir", None, "where the outputs go")
  distributed.define_flags()

  def main(argv) -> None:
    del argv
    if config_flag.value is None or not workdir_flag.value:
      raise app.UsageError("--config and --workdir are required")
    if not flags.FLAGS["verbosity"].present:  # Orbax logs every restore at INFO
      logging.set_verbosity(logging.WARNING)
    distributed.initialize_from_flags()
    try:
      summary = run(config_flag.value, workdir_flag.value)
    except (ValueError, OSError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    report(summary, workdir_flag.value)

  app.run(main)
