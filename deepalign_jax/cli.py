"""The one command-line style of every entry point: absl flags and an ml_collections config.

    python -m deepalign_jax.<cli> [--config FILE[:ARG]] [--config.KEY=VALUE ...] [--workdir DIR]
                                  [--print_config] [--help]

- `--config` names a config file (its `get_config()`); CLIs with built-in
  defaults (generate, demo, gguf, organism) take their own when it is left
  out.  Any key is overridden with `--config.KEY=VALUE`; a misspelt key is
  refused in one line naming the nearest valid keys.  A list or tuple key
  takes `[5,10]`, `(5,10)` or `5,10` (repeating the flag appends), its
  elements checked against the default's.
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

import ast
import difflib
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from deepalign_jax import distributed
from deepalign_jax.errors import RunError

# What a run may stop with for a reason its message explains: printed as one line, exit status 1.
_USER_ERRORS = (ValueError, OSError, RunError)


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

  argv, sequences = _take_overrides(["deepalign_jax"] + list(argv), defaults, config_required)
  flag_values = flags.FlagValues()
  try:
    config_flag, workdir_flag, _ = _define(
      flag_values, argv, defaults=defaults, config_required=config_required, workdir=workdir
    )
    flag_values(argv)
  except flags.Error as e:
    raise ValueError(one_line(e)) from None
  if config_flag.value is None or (workdir and not workdir_flag.value):
    raise ValueError("--config and --workdir are required" if workdir else "--config is required")
  _apply_sequences(config_flag.value, sequences)
  return config_flag.value, workdir_flag.value if workdir else None


def one_line(error: BaseException | str) -> str:
  """An error message on one line (a message that spans lines has them joined)."""
  return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


# -- --config.KEY overrides checked before ml_collections sees them -------------------------------------
#
# ml_collections refuses a misspelt key with a multi-line AttributeError (a KeyError for a missing
# section) raised while absl parses the flags, and cannot override list fields at all.  So the command
# line is read once against the config it names first: a key that is not in it is refused in one line
# naming the nearest keys, and list and tuple overrides are taken out of argv (absl never sees them),
# parsed with `ast.literal_eval`, checked against the default's element type and set once the flags are
# parsed.

_OVERRIDE = re.compile(r"^--?(no)?config\.([^=]+)(?:=(.*))?$", re.DOTALL)
_CONFIG_ARG = re.compile(r"^--?config(?:=(.*))?$", re.DOTALL)


def _config_argument(argv: Sequence[str]) -> str | None:
  """The value of `--config` in argv (`--config=FILE` or `--config FILE`; the last one counts)."""
  value = None
  for i, arg in enumerate(argv):
    if arg == "--":
      break
    match = _CONFIG_ARG.match(arg)
    if match:
      value = match.group(1) if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else None)
  return value


def _base_config(argv: Sequence[str], defaults: Callable | None, config_required: bool):
  """The config argv names (before its overrides), or None where there is none to check against."""
  from absl import flags
  from ml_collections import ConfigDict, config_flags

  path = _config_argument(argv)
  if path is None and not config_required:
    path = _default_file(defaults)
  if not path:
    return None
  if not Path(path.split(":", 1)[0]).is_file():
    raise FileNotFoundError(f"--config {path}: no such config file")
  try:  # the file as the flag's default, on a command line of its own: loaded without overrides
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", path, flag_values=flag_values, lock_config=False, sys_argv=["cli"])
    flag_values(["cli"])
    config = flag_values.config
  except Exception:  # a broken config file: the flag parse that follows reports it
    return None
  return config if isinstance(config, ConfigDict) else None


def _lookup(config, key: str) -> tuple[str | None, Any]:
  """(None, the value at dotted `key`), or (the first missing part, e.g. 'judge' or 'train.num_stepz', None)."""
  from ml_collections import ConfigDict

  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    if node is None and i:  # a placeholder section, which ml_collections fills in
      return None, None
    if not isinstance(node, ConfigDict) or part not in node:
      return ".".join(parts[: i + 1]), None
    node = node[part]
  return None, node


def _no_such_key(config, key: str, flag: str, missing: str) -> ValueError:
  """A one-line error naming the nearest valid keys of a key that is not in `config`."""
  keys = [k for k, _ in _flatten(config)]
  parent, _, name = key.rpartition(".")
  by_name: dict[str, list[str]] = {}
  for k in keys:
    by_name.setdefault(k.rpartition(".")[2], []).append(k)
  siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
  # The same section's keys first (num_stepz → num_steps), then a key of that name elsewhere, then any.
  near = [f"{parent}.{n}" if parent else n for n in difflib.get_close_matches(name, siblings, n=3, cutoff=0.7)]
  near += [k for n in difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.8) for k in by_name[n]]
  if missing != key:  # a section that is not there (judge.timeout): the whole dotted name
    near += difflib.get_close_matches(key, keys, n=3)
  near = list(dict.fromkeys(near))[:3]
  what = "no such key" if missing == key else f"no such key (the config has no section config.{missing})"
  if near:
    return ValueError(f"{flag}: {what}; did you mean {' or '.join('config.' + k for k in near)}?")
  if missing == key and parent:
    return ValueError(f"{flag}: {what}; config.{parent} has {', '.join(sorted(siblings))} (--help lists every key)")
  sections = sorted(k for k in config.keys() if hasattr(config[k], "to_dict"))
  return ValueError(f"{flag}: {what}; its sections are {', '.join(sections) or 'none'} (--help lists every key)")


def _sequence_type(config, key: str, value) -> type | None:
  """list or tuple when the field at `key` holds one (or is a placeholder of one), else None."""
  if isinstance(value, (list, tuple)):
    return type(value)
  if value is None:
    parent, _, last = key.rpartition(".")
    holder = _lookup(config, parent)[1] if parent else config
    try:
      field_type = holder.get_type(last)
    except (AttributeError, KeyError, TypeError):
      return None
    return field_type if field_type in (list, tuple) else None
  return None


def _elements(text: str, element_type: type | None) -> list:
  """The elements of one override value: a Python literal ([5, 10], (5, 10), 5), else a comma list."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError, MemoryError, RecursionError):
    value = None
  else:
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    if element_type is not str or all(isinstance(v, str) for v in value):
      return value
  # Not a literal (or unquoted strings): the comma-separated parts, each a literal where it is one.
  inner = text.strip()
  if len(inner) >= 2 and (inner[0], inner[-1]) in (("[", "]"), ("(", ")")):
    inner = inner[1:-1]
  out = []
  for part in (p.strip() for p in inner.split(",")):
    if not part:
      continue
    try:
      element = ast.literal_eval(part)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      element = part
    out.append(element if element_type is not str or isinstance(element, str) else part)
  return out


def _parse_sequence(flag: str, texts: Sequence[str], default, kind: type):
  """The list / tuple the override texts give, each element of the default's element type."""
  types = {type(v) for v in default or ()}
  element_type = types.pop() if len(types) == 1 else None
  values = [v for text in texts for v in _elements(text, element_type)]
  out = []
  for v in values:
    if element_type is float and isinstance(v, int) and not isinstance(v, bool):
      v = float(v)
    elif element_type is not None and type(v) is not element_type:
      raise ValueError(
        f"{flag}: expected a {kind.__name__} of {element_type.__name__} (the default is {default!r}), "
        f"got the element {v!r}"
      )
    out.append(v)
  return kind(out)


def _take_overrides(argv: Sequence[str], defaults: Callable | None, config_required: bool):
  """(argv without its list and tuple overrides, {dotted key: value} of those), every override's key
  checked against the config argv names (ValueError naming the nearest valid keys)."""
  from absl import flags

  argv = list(flags.FLAGS.read_flags_from_files(list(argv), force_gnu=False))
  config = _base_config(argv, defaults, config_required)
  if config is None:
    return argv, {}
  kept, texts, fields, i = [], {}, {}, 0
  while i < len(argv):
    arg, i = argv[i], i + 1
    if arg == "--":
      kept.extend(argv[i - 1 :])
      break
    match = _OVERRIDE.match(arg)
    if not match or "[" in match.group(2):  # an indexed key (a.b[0]) is left to ml_collections
      kept.append(arg)
      continue
    negated, key, text = match.group(1), match.group(2), match.group(3)
    flag = arg.split("=", 1)[0]
    missing, value = _lookup(config, key)
    if missing is not None:
      raise _no_such_key(config, key, flag, missing)
    kind = _sequence_type(config, key, value)
    if kind is None:
      kept.append(arg)
      continue
    if negated:
      raise ValueError(f"{flag}: config.{key} is a {kind.__name__}, not a boolean; give --config.{key}=[a,b]")
    if text is None:  # --config.KEY VALUE
      if i >= len(argv) or argv[i].startswith("--"):
        raise ValueError(f"{flag}: no value given; write {flag}=[a,b]")
      text, i = argv[i], i + 1
    texts.setdefault(key, []).append(text)
    fields[key] = (flag, value, kind)
  sequences = {}
  for key, parts in texts.items():
    flag, default, kind = fields[key]
    sequences[key] = _parse_sequence(flag, parts, default, kind)
  return kept, sequences


def _apply_sequences(config, sequences: Mapping[str, Any]) -> None:
  """Sets the list and tuple overrides `_take_overrides` took out of argv."""
  for key, value in sequences.items():
    parent, _, last = key.rpartition(".")
    holder = _lookup(config, parent)[1] if parent else config
    holder[last] = value


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
  except _USER_ERRORS as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
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
    start-up (train, evaluate, the analyses).  A ValueError or OSError (a bad config, file or checkpoint), a
    `RunError`, and a command line absl or ml_collections refuses (a misspelt key, a value of the wrong type)
    are printed as one line "error: ..." on stderr with exit status 1.
  """
  from absl import app, flags, logging

  def fail(error) -> None:
    print(f"error: {one_line(error)}", file=sys.stderr)
    sys.exit(1)

  def parse_flags(args):
    try:
      return flags.FLAGS(args)
    except (flags.Error, *_USER_ERRORS) as e:
      fail(e)

  try:
    argv, sequences = _take_overrides(sys.argv, defaults, config_required)
    config_flag, workdir_flag, print_flag = _define(
      flags.FLAGS, argv, defaults=defaults, config_required=config_required, workdir=workdir
    )
  except (flags.Error, *_USER_ERRORS) as e:
    fail(e)
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
    _apply_sequences(config_flag.value, sequences)
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
    except _USER_ERRORS as e:
      fail(e)
    report(summary, out)

  app.run(main, argv=argv, flags_parser=parse_flags)
