"""The one command-line style of every entry point: absl flags and an ml_collections config.

    python -m deepalign_jax.<cli> [--config FILE[:ARG]] [--config.KEY=VALUE ...] [--workdir DIR]
                                  [--print_config] [--help]

- `--config` names a config file (its `get_config()`); CLIs with built-in
  defaults (generate, demo, gguf, organism) take their own when it is left
  out.  Any key is overridden with `--config.KEY=VALUE`; a misspelt key is
  refused (locked configs).
- `--print_config` prints the resolved config (file + overrides) as JSON and exits.
- `--help` lists every config key with its default and its one-line doc
  (the comment beside it where the defaults are written).

Flags are defined when a CLI starts, not when its module is imported: two
modules defining `--config` at import time could not both be imported by one
process (a test, a notebook).  `parse_command_line` reads a command line the
way the CLIs do into a fresh set of flags, so a test or a notebook runs a
CLI's config files in-process with the same overrides and refusals.  The
project's documentation is README.md and docs/ in the repository.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from typing import Any, Callable, Mapping, Sequence

from deepalign_jax import distributed


def _default_file(defaults: Callable | None) -> str | None:
  """The source file of `defaults`, which must be its module's `get_config` (the built-in config file)."""
  if defaults is None:
    return None
  module = sys.modules[defaults.__module__]
  if getattr(module, "get_config", None) is not defaults:
    raise TypeError(f"{defaults.__module__}: a CLI with built-in defaults exposes them as get_config()")
  return inspect.getsourcefile(defaults)


def _define(flag_values, argv: Sequence[str] | None, *, defaults=None, config_required=True, workdir=True):
  from absl import flags
  from ml_collections import config_flags

  config_flag = config_flags.DEFINE_config_file(
    "config",
    None if config_required else _default_file(defaults),
    "an ml_collections config file (FILE or FILE:ARG); override keys with --config.KEY=VALUE",
    flag_values=flag_values,
    lock_config=True,
    sys_argv=None if argv is None else list(argv),
  )
  workdir_flag = (
    flags.DEFINE_string("workdir", None, "where the outputs go", flag_values=flag_values) if workdir else None
  )
  print_flag = flags.DEFINE_bool("print_config", False, "print the resolved config and exit", flag_values=flag_values)
  return config_flag, workdir_flag, print_flag


def parse_command_line(
  argv: Sequence[str], *, defaults: Callable | None = None, config_required: bool = True, workdir: bool = True
):
  """(config, workdir) of `argv` (without the program name), parsed as the CLIs parse theirs.

  E.g. `parse_command_line(["--config", "configs/demo.py", "--workdir", "w", "--config.train.num_steps=2"])`.
  """
  from absl import flags

  argv = ["deepalign_jax"] + list(argv)
  flag_values = flags.FlagValues()
  config_flag, workdir_flag, _ = _define(
    flag_values, argv, defaults=defaults, config_required=config_required, workdir=workdir
  )
  flag_values(argv)
  if config_flag.value is None or (workdir and not workdir_flag.value):
    raise ValueError("--config and --workdir are required" if workdir else "--config is required")
  return config_flag.value, workdir_flag.value if workdir else None


# -- --help: every key, its default and its doc ---------------------------------------------------------

_SECTION = re.compile(r"^\s*c\.([\w.]+)\s*=\s*(?:ml_collections\.)?ConfigDict\(")
_ASSIGN = re.compile(r"^\s*c\.([\w.]+)\s*=.*?#\s*(.+)$")
_ENTRY = re.compile(r"^\s*(\w+)\s*=.*?#\s*(.+)$")
_KEY_ONLY = re.compile(r"^\s*(\w+)\s*=")
_COMMENT = re.compile(r"^\s*#\s*(.+)$")


def key_docs(*functions: Callable) -> dict[str, str]:
  """KEY → the comment written beside (or just above) it in the source of `functions` (config builders).

  Reads `c.KEY = value  # doc` lines and `key=value,  # doc` entries of
  `c.SECTION = ConfigDict(dict(...))` blocks; a comment line directly above
  a key documents it when the key has none of its own.
  """
  docs: dict[str, str] = {}
  for function in functions:
    try:
      lines = inspect.getsource(function).splitlines()
    except (OSError, TypeError):
      continue
    section, depth, pending = None, 0, None
    for line in lines:
      code = line.split("#", 1)[0]
      if section is None and (match := _SECTION.match(line)):
        section, depth = match.group(1), code.count("(") - code.count(")")
        if depth <= 0:
          section = None
        continue
      comment = _COMMENT.match(line)
      if comment:
        pending = f"{pending} {comment.group(1).strip()}" if pending else comment.group(1).strip()
        continue
      if section is not None:
        entry, key = _ENTRY.match(line), _KEY_ONLY.match(line)
        if entry:
          docs.setdefault(f"{section}.{entry.group(1)}", entry.group(2).strip())
        elif key and pending:
          docs.setdefault(f"{section}.{key.group(1)}", pending)
        depth += code.count("(") - code.count(")")
        if depth <= 0:
          section = None
      else:
        assign, key = _ASSIGN.match(line), re.match(r"^\s*c\.([\w.]+)\s*=", line)
        if assign:
          docs.setdefault(assign.group(1), assign.group(2).strip())
        elif key and pending:
          docs.setdefault(key.group(1), pending)
      pending = None
  return docs


def attribute_docs(obj, prefix: str = "") -> dict[str, str]:
  """NAME → its doc from the "Attributes:" or "Args:" section of `obj`'s docstring (continuations joined)."""
  docs: dict[str, str] = {}
  section, name = False, None
  for line in (inspect.getdoc(obj) or "").splitlines():
    if line.strip() in ("Attributes:", "Args:"):
      section, name = True, None
      continue
    if section and line and not line.startswith(" "):
      section = False
    if not section:
      continue
    entry = re.match(r"^  (\w+): (.+)$", line)
    if entry:
      name = prefix + entry.group(1)
      docs[name] = entry.group(2).strip()
    elif name and line.startswith("    "):
      docs[name] += " " + line.strip()
  return docs


def _flatten(config, prefix: str = "") -> list[tuple[str, Any]]:
  out = []
  for key in sorted(config.keys()):
    value = config[key]
    if hasattr(value, "keys") and hasattr(value, "to_dict"):
      out.extend(_flatten(value, f"{prefix}{key}."))
    else:
      out.append((prefix + key, value))
  return out


def describe_config(config, *sources: Callable | Mapping[str, str]) -> str:
  """Every key of `config` with its default and doc, one line each (what `--help` appends).

  sources: config builders whose comments document keys (`key_docs`), or KEY → doc mappings for keys a
  builder makes programmatically.
  """
  docs: dict[str, str] = {}
  for source in sources:
    for key, doc in source.items() if isinstance(source, Mapping) else key_docs(source).items():
      docs.setdefault(key, doc)
  lines = []
  for key, value in _flatten(config):
    shown = repr(value)
    lines.append(f"  --config.{key}={shown}" + (f"    # {docs[key]}" if key in docs else ""))
  return "\n".join(lines)


def run_command_line(
  argv: Sequence[str],
  run: Callable,
  report: Callable,
  *,
  defaults: Callable | None = None,
  config_required: bool = True,
  workdir: bool = True,
) -> int:
  """`run_cli` for an argument list given in-process (tests, notebooks): 0, or 1 after a one-line error."""
  try:
    config, out = parse_command_line(argv, defaults=defaults, config_required=config_required, workdir=workdir)
    summary = run(config, out)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  report(summary, out)
  return 0


def run_cli(
  run: Callable[[Any, str | None], Mapping[str, Any]],
  report: Callable[[Mapping[str, Any], str | None], None],
  *,
  defaults: Callable,
  config_required: bool = True,
  workdir: bool = True,
  docs: Sequence[Callable | Mapping[str, str]] = (),
  multi_process: bool = True,
) -> None:
  """Parses the command line, calls run(config, workdir), then report(summary, workdir).

  defaults: the CLI's default config builder (its keys and comments make the `--help` listing; with
    `config_required=False` it is also the config used when `--config` is left out, and must be the
    module's `get_config`).  docs: more builders whose comments document keys (e.g. the default config a
    `get_config` starts from).  multi_process: the `--distributed*` flags and the `jax.distributed`
    start-up (train, evaluate, the analyses).  A ValueError or OSError (a bad config, file or checkpoint) is printed
    as one line "error: ..." on stderr with exit status 1.
  """
  from absl import app, flags, logging

  config_flag, workdir_flag, print_flag = _define(
    flags.FLAGS, None, defaults=defaults, config_required=config_required, workdir=workdir
  )
  if multi_process:
    distributed.define_flags()
  main_module = sys.modules.get("__main__")
  if main_module is not None:
    listing = describe_config(defaults(), defaults, *docs)
    main_module.__doc__ = (main_module.__doc__ or "").rstrip() + "\n\nConfig keys and their defaults:\n" + listing

  def main(argv) -> None:
    del argv
    if config_flag.value is None or (workdir and not workdir_flag.value and not print_flag.value):
      raise app.UsageError("--config and --workdir are required" if workdir else "--config is required")
    if print_flag.value:
      print(json.dumps(config_flag.value.to_dict(), indent=2, sort_keys=True, default=str))
      return
    if not flags.FLAGS["verbosity"].present:  # Orbax logs every restore at INFO
      logging.set_verbosity(logging.WARNING)
    if multi_process:
      distributed.initialize_from_flags()
    out = workdir_flag.value if workdir else None
    try:
      summary = run(config_flag.value, out)
    except (ValueError, OSError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
    report(summary, out)

  app.run(main)
