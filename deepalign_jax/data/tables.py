"""Tables read through HF `datasets`: `save_to_disk` directories, parquet, and (format `table`) JSON / CSV.

Users keep data as HF datasets; `data.path` / `benchmark.path` may be

  a `save_to_disk` directory   `dataset_info.json` + `state.json` (a Dataset), or `dataset_dict.json`
                               (a DatasetDict: the `split` setting picks one)
  a parquet file               or a directory holding only parquet files (one table, files in name order)
  a JSON, JSONL or CSV file    with format `table` only (the other formats read these files themselves,
                               with line numbers in their errors)

Nothing is fetched: only local files are opened (`HF_DATASETS_OFFLINE=1` is set before `datasets` is
first imported), and Arrow / parquet hold no pickles.  `datasets` is an optional dependency
(`pip install 'deepalign_jax[datasets]'`); without it, reading a table stops with one line saying so.

A table's rows become records in one of two ways:

- **Any format whose records are objects or header rows** (conversations, alpaca, triplets, prompts,
  jailbreakbench, harmbench, ...): each row goes through that format's own record builder, as a JSON
  line or a CSV row would, so a parquet copy of JailbreakBench gives the records of its CSV.  Header
  formats match column names ignoring case.
- **Format `table`**: any columns, named by a column mapping (`parse_columns`; in a config
  `--config.benchmark.columns=prompt=question,response=answer`): `prompt` and optional `response`, or a `messages`
  column of [{role, content}, ...] (system?, user, assistant?); optional `system`, `category`,
  `behavior_id`.  An empty mapping entry means the column of that name, if the table has one; a
  mapped column the table lacks is an error naming the columns it has.  Records are `Exchange`s.

Each record's source is `PATH row N` (`PATH[SPLIT] row N` for a DatasetDict), N the 0-based row index.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from deepalign_jax.data.benchmarks import HEADER_FORMATS, Cells, header_columns
from deepalign_jax.data.formats import OBJECT_FORMATS, DataFormatError, Exchange, _json_type, _messages, _nonempty
from deepalign_jax.errors import RunError

COLUMN_ROLES = ("prompt", "response", "messages", "system", "category", "behavior_id")
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


class DatasetsMissing(RunError):
  """A table was to be read and the optional `datasets` package is not installed."""


def parse_columns(columns: str | Mapping[str, Any] | None, where: str = "columns") -> dict[str, str]:
  """The column mapping of format `table`, role → column: a mapping, or the config's text form
  "prompt=question,response=answer" ('' or None: none).  `where` names the setting in errors."""
  if not columns:
    return {}
  if isinstance(columns, str):
    pairs = {}
    for item in columns.split(","):
      role, sep, column = item.partition("=")
      if not sep or not role.strip() or not column.strip():
        raise DataFormatError(
          f"{where}: expected 'role=column' pairs separated by commas (e.g. 'prompt=question,response=answer'), "
          f"got {item!r}"
        )
      pairs[role.strip()] = column.strip()
  else:
    pairs = {str(k): str(v) for k, v in dict(columns).items() if v}
  unknown = sorted(set(pairs) - set(COLUMN_ROLES))
  if unknown:
    raise DataFormatError(f"{where}: unknown role(s) {unknown}; expected some of {', '.join(COLUMN_ROLES)}")
  return pairs


def is_table(path: str | os.PathLike) -> bool:
  """Whether `path` is a datasets table whatever the format: a `save_to_disk` directory or parquet."""
  text = os.fspath(path)
  if text.startswith("tfds:"):
    return False
  local = Path(text).expanduser()
  if local.is_dir():
    names = {p.name for p in local.iterdir()}
    if "dataset_dict.json" in names or {"dataset_info.json", "state.json"} <= names:
      return True
    files = [p for p in local.iterdir() if p.is_file() and not p.name.startswith(".")]
    return bool(files) and all(p.suffix == ".parquet" for p in files)
  return local.suffix == ".parquet"


def _datasets():
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
  try:
    import datasets
  except ImportError:
    raise DatasetsMissing(
      "reading a datasets table (a save_to_disk directory, parquet, or format 'table') needs the optional "
      "package 'datasets': pip install 'deepalign_jax[datasets]'"
    ) from None
  return datasets


def load_table(path: str | os.PathLike, split: str = "train") -> tuple[list[dict[str, Any]], list[str], str]:
  """(rows as dicts, column names, the rows' source prefix) of a table (see the module docstring)."""
  datasets = _datasets()
  shown = datasets.is_progress_bar_enabled()
  datasets.disable_progress_bars()  # its bars would interleave with the run's own
  try:
    return _load_table(datasets, path, split)
  finally:
    if shown:
      datasets.enable_progress_bars()


def _load_table(datasets, path, split: str) -> tuple[list[dict[str, Any]], list[str], str]:
  local = Path(os.fspath(path)).expanduser()
  where = os.fspath(path)
  if not local.exists():
    raise FileNotFoundError(f"{where}: no such table (file or save_to_disk directory)")
  if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
    loaded = datasets.load_from_disk(str(local), keep_in_memory=True)
    if isinstance(loaded, datasets.DatasetDict):
      if split not in loaded:
        raise DataFormatError(f"{where}: no split {split!r} in this DatasetDict; it has {sorted(loaded)}")
      loaded, where = loaded[split], f"{where}[{split}]"
  else:
    if local.is_dir():
      files = sorted(str(p) for p in local.iterdir() if p.suffix == ".parquet")
      builder = "parquet"
    else:
      files, builder = [str(local)], _FILE_BUILDERS.get(local.suffix.lower())
      if builder is None:
        raise DataFormatError(
          f"{where}: not a table datasets reads here; expected a save_to_disk directory or a "
          f"{'/'.join(sorted(_FILE_BUILDERS))} file"
        )
    # The Arrow cache datasets writes while reading goes to a temporary directory, kept in memory after.
    with tempfile.TemporaryDirectory(prefix="deepalign_datasets_") as cache:
      try:
        loaded = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache, keep_in_memory=True)
      except Exception as e:  # datasets' parse errors (pyarrow, pandas) come in many types
        raise DataFormatError(f"{where}: datasets could not read it as {builder}: {_first_cause(e)}") from None
  return loaded.to_list(), list(loaded.column_names), where


def _first_cause(error: BaseException) -> str:
  """The innermost error's first line (datasets wraps the parser's error in a generic one)."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip()
  return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def read_table_records(
  path: str | os.PathLike, fmt: str, columns: str | Mapping[str, Any] | None = None, split: str = "train"
) -> list:
  """The records of a table in format `fmt` (the module docstring says how rows become records)."""
  mapping = parse_columns(columns)
  if fmt != "table" and mapping:
    raise DataFormatError(
      f"{os.fspath(path)}: a column mapping ({mapping}) is set, but format {fmt!r} reads the table by its own "
      f"column names; the mapping is for format 'table'"
    )
  if fmt != "table" and fmt not in OBJECT_FORMATS and fmt not in HEADER_FORMATS:
    readable = sorted(OBJECT_FORMATS) + sorted(HEADER_FORMATS)
    raise DataFormatError(
      f"{os.fspath(path)}: format {fmt!r} is not read from a datasets table; use format 'table' with a column "
      f"mapping, or one of {', '.join(readable)}"
    )
  rows, names, where = load_table(path, split)
  sources = [f"{where} row {i}" for i in range(len(rows))]
  if fmt in OBJECT_FORMATS:
    build = OBJECT_FORMATS[fmt]
    return _nonempty([build(s, row) for s, row in zip(sources, rows)], where)
  if fmt in HEADER_FORMATS:
    found = header_columns(where, fmt, names)
    labels = {key: f"column {names[i]!r}" for key, i in found.items()}
    build = HEADER_FORMATS[fmt][2]
    return _nonempty(
      [build(Cells({k: row[names[i]] for k, i in found.items()}, s, labels)) for s, row in zip(sources, rows)], where
    )
  roles = _resolve_roles(where, names, mapping)
  return _nonempty([_exchange(s, row, roles) for s, row in zip(sources, rows)], where)


def _resolve_roles(where: str, names: list[str], mapping: dict[str, str]) -> dict[str, str]:
  """role → column of format `table`: mapped ones must exist, unmapped ones are taken when present."""
  for role, column in mapping.items():
    if column not in names:
      raise DataFormatError(f"{where}: column mapping {role} -> {column!r}: no such column; the table has {names}")
  roles = {role: mapping.get(role, role) for role in COLUMN_ROLES if mapping.get(role, role) in names}
  if "messages" in mapping or ("messages" in roles and "prompt" not in roles):
    both = sorted({"prompt", "response", "system"} & set(mapping))
    if both:
      raise DataFormatError(
        f"{where}: columns.messages is {roles['messages']!r} and columns {both} are mapped too; a messages "
        f"column holds the system, user and assistant turns itself"
      )
    return {k: v for k, v in roles.items() if k not in ("prompt", "response", "system")}
  if "prompt" not in roles:
    raise DataFormatError(
      f"{where}: no prompt column: the table has {names}; name it with columns.prompt (or a column of "
      f"[{{role, content}}, ...] turns with columns.messages)"
    )
  roles.pop("messages", None)
  return roles


def _text(row: dict, column: str, source: str, required: bool) -> str | None:
  value = row.get(column)
  if value is None or (not required and isinstance(value, str) and not value.strip()):
    if required:
      raise DataFormatError(f"{source}: column {column!r} is empty (null)")
    return None
  if not isinstance(value, str):
    raise DataFormatError(f"{source}: column {column!r}: expected a string, got {_json_type(value)}")
  if required and not value.strip():
    raise DataFormatError(f"{source}: column {column!r} is empty")
  return value


def _label(row: dict, column: str | None, source: str) -> str | None:
  if column is None or row.get(column) is None:
    return None
  value = row[column]
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  text = _text(row, column, source, required=False)
  return None if text is None else text.strip()


def _exchange(source: str, row: dict, roles: dict[str, str]) -> Exchange:
  if "messages" in roles:
    system, user, answer = _messages(row.get(roles["messages"]), source, roles["messages"], answer_required=False)
  else:
    user = _text(row, roles["prompt"], source, required=True)
    answer = _text(row, roles["response"], source, required=False) if "response" in roles else None
    # A system prompt may be empty (Llama-2's empty <<SYS>> block differs from none); null is none.
    system = row.get(roles["system"]) if "system" in roles else None
    if system is not None and not isinstance(system, str):
      raise DataFormatError(f"{source}: column {roles['system']!r}: expected a string, got {_json_type(system)}")
  category, behavior = _label(row, roles.get("category"), source), _label(row, roles.get("behavior_id"), source)
  return Exchange(system, user, answer, category, source, behavior)


__all__ = [
  "COLUMN_ROLES",
  "DatasetsMissing",
  "is_table",
  "load_table",
  "parse_columns",
  "read_table_records",
]
