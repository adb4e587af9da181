"""The shared `--config FILE --workdir DIR` entry point of every CLI (train, evaluate, analyses).

Flags are defined when a CLI starts, not when its module is imported: two
modules defining `--config` at import time could not both be imported by one
process (a test, a notebook).  `parse_command_line` reads a command line the
way the CLIs do into a fresh set of flags, so a test or a notebook can run a
CLI's config files, with the same `--config.key=value` overrides and the same
refusal of misspelt keys, in-process.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Sequence

from deepalign_jax import distributed


def _define(flag_values, argv: Sequence[str] | None):
  from absl import flags
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file(
    "config",
    None,
    "an ml_collections config file",
    flag_values=flag_values,
    lock_config=True,
    sys_argv=None if argv is None else list(argv),
  )
  workdir_flag = flags.DEFINE_string("workdir", None, "where the outputs go", flag_values=flag_values)
  return config_flag, workdir_flag


def parse_command_line(argv: Sequence[str]):
  """(config, workdir) of `argv` (without the program name), parsed as the CLIs parse theirs.

  E.g. `parse_command_line(["--config", "configs/demo.py", "--workdir", "w", "--config.train.num_steps=2"])`.
  """
  from absl import flags

  argv = ["deepalign_jax"] + list(argv)
  flag_values = flags.FlagValues()
  config_flag, workdir_flag = _define(flag_values, argv)
  flag_values(argv)
  if config_flag.value is None or not workdir_flag.value:
    raise ValueError("--config and --workdir are required")
  return config_flag.value, workdir_flag.value


def run_cli(run: Callable[[Any, str], Mapping[str, Any]], report: Callable[[Mapping[str, Any], str], None]) -> None:
  """Parses --config/--workdir, calls run(config, workdir), then report(summary, workdir).

  A ValueError or OSError (a bad config, file or checkpoint) is printed as
  one line "error: ..." on stderr with exit status 1.
  """
  from absl import app, flags, logging

  config_flag, workdir_flag = _define(flags.FLAGS, None)
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
