"""Readers of the benchmark files users bring as CSV or plain text (SPEC §8; the layouts are listed in
data/formats.py): HEx-PHI, AdvBench, JailbreakBench, HarmBench, StrongREJECT, MaliciousInstruct.

The header formats (`HEADER_FORMATS`) share one reader: the header row is
matched ignoring case and surrounding spaces, every column a format needs
must be there (once), other columns are ignored, and every error names the
file, the line and, for a cell, its column number and header.  Their record
builders take a `Cells` row, so a datasets table of the same benchmark
(data/tables.py) gives the same records.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Callable, Iterator

from deepalign_jax.data.formats import (
  _HEXPHI_FILE,
  DataFormatError,
  Prompt,
  _json_type,
  _lines,
  _log,
  _nonempty,
  _read_text,
)


def _report_blank(path: str, blank: list[int]) -> None:
  if blank:
    _log.warning("%s: skipped %d blank line(s) (line %s)", path, len(blank), ", ".join(map(str, blank[:10])))


def _csv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
  """(first line, cells) of each non-blank CSV record; blank ones are logged."""
  reader, blank, line = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True), [], 1
  try:
    for row in reader:
      if not row or (len(row) == 1 and not row[0].strip()):
        blank.append(line)
      else:
        yield line, row
      line = reader.line_num + 1
  except csv.Error as e:
    raise DataFormatError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
  _report_blank(path, blank)


# First cells that make a HEx-PHI file's first line a column header, not an instruction (case-insensitive).
HEXPHI_HEADER_WORDS = frozenset(
  (
    "prompt",
    "prompts",
    "instruction",
    "instructions",
    "goal",
    "behavior",
    "behaviour",
    "question",
    "text",
    "query",
    "request",
    "harmful_prompt",
    "forbidden_prompt",
  )
)


def read_hexphi(path: str | os.PathLike) -> list[Prompt]:
  """HEx-PHI category_N.csv (one instruction a line, no header) or a directory of them.

  A directory yields every category_N.csv in it, by N; other files are
  ignored, and missing categories are fine (the public copy withholds one).
  The files have no header, but a re-saved copy often gains one: a first
  line whose first cell is a column name (`HEXPHI_HEADER_WORDS`: prompt,
  instruction, goal, behavior, ...; any case) is skipped with a warning
  naming the file, rather than becoming prompt 0.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    matches = (_HEXPHI_FILE.fullmatch(name) for name in os.listdir(path))
    found = sorted((int(m.group(1)), m.group(0)) for m in matches if m)
    if not found:
      raise DataFormatError(f"{path}: no HEx-PHI category_N.csv files in this directory")
    files = [(str(n), os.path.join(path, name)) for n, name in found]
  else:
    m = _HEXPHI_FILE.fullmatch(os.path.basename(path))
    files = [(str(int(m.group(1))) if m else None, path)]
  out = []
  for category, file in files:
    for index, (line, row) in enumerate(_csv_rows(file)):
      if index == 0 and row[0].strip().lower() in HEXPHI_HEADER_WORDS:
        _log.warning("%s:%d: skipped a header line %r (HEx-PHI files have none)", file, line, ",".join(row))
        continue
      if len(row) != 1:
        raise DataFormatError(
          f"{file}:{line}: expected one instruction (one CSV column; quote instructions "
          f"that contain commas), got {len(row)} columns"
        )
      out.append(Prompt(row[0], None, category, f"{file}:{line}"))
  return _nonempty(out, path)


class Cells:
  """One row of a header CSV or of a table, by lower-cased column name, for the benchmark builders.

  values: column name (lower case) → cell; `labels` say where each stands for the error messages
  ("column 2, header 'Goal'" for a CSV, "column 'Goal'" for a table).
  """

  def __init__(self, values: dict[str, Any], source: str, labels: dict[str, str]):
    self.values, self.source, self.labels = values, source, labels

  def _where(self, name: str) -> str:
    label = self.labels.get(name)
    return f" ({label})" if label else ""

  def text(self, name: str, required: bool = True) -> str | None:
    """A text cell: required ones non-empty strings; optional ones None when absent or empty."""
    value = self.values.get(name)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
      if required:
        raise DataFormatError(f"{self.source}: field {name!r} is missing{self._where(name)}")
      return None
    if not isinstance(value, str):
      raise DataFormatError(
        f"{self.source}: field {name!r}: expected a string, got {_json_type(value)}{self._where(name)}"
      )
    if not value.strip():
      raise DataFormatError(f"{self.source}: field {name!r} is empty{self._where(name)}")
    return value

  def label(self, name: str, required: bool = True) -> str | None:
    """An id or category cell: a string or an integer (as text), stripped."""
    value = self.values.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
      return str(value)
    value = self.text(name, required)
    return None if value is None else value.strip()


def _advbench(c: Cells) -> Prompt:
  return Prompt(c.text("goal"), c.text("target"), None, c.source)


def _jailbreakbench(c: Cells) -> Prompt:
  # Behavior is JailbreakBench's unique short name of a behaviour: its id.
  return Prompt(c.text("goal"), c.text("target"), c.label("category"), c.source, c.label("behavior"))


HARMBENCH_CONTEXT_TEMPLATE = "{context}\n\n---\n\n{behavior}"


def _harmbench(c: Cells) -> Prompt:
  behavior, context = c.text("behavior"), c.text("contextstring", required=False)
  text = HARMBENCH_CONTEXT_TEMPLATE.format(context=context, behavior=behavior) if context else behavior
  return Prompt(text, None, c.label("semanticcategory", required=False), c.source, c.label("behaviorid"))


def _strongreject(c: Cells) -> Prompt:
  return Prompt(c.text("forbidden_prompt"), None, c.label("category", required=False), c.source)


# format → (required columns, optional columns, builder): the benchmarks whose CSV has a header row.
# Column names are lower case; files and tables are matched ignoring case.
HEADER_FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Callable[[Cells], Prompt]]] = {
  "advbench": (("goal", "target"), (), _advbench),
  "jailbreakbench": (("goal", "target", "behavior", "category"), ("source", "index"), _jailbreakbench),
  "harmbench": (
    ("behavior", "behaviorid"),
    ("functionalcategory", "semanticcategory", "tags", "contextstring"),
    _harmbench,
  ),
  "strongreject": (("forbidden_prompt",), ("category", "source"), _strongreject),
}


def header_columns(where: str, fmt: str, header: list[str]) -> dict[str, int]:
  """Column name (lower case) → index in `header`, for the columns `fmt` uses; a one-line error naming
  `where` for a missing one or one that appears twice (any case)."""
  required, optional, _ = HEADER_FORMATS[fmt]
  found: dict[str, int] = {}
  for index, name in enumerate(header):
    key = str(name).strip().lower()
    if key not in required and key not in optional:
      continue
    if key in found:
      raise DataFormatError(
        f"{where}: column {key!r} appears twice in the header (columns {found[key] + 1} "
        f"{header[found[key]]!r} and {index + 1} {name!r}; names are matched ignoring case)"
      )
    found[key] = index
  for column in required:
    if column not in found:
      raise DataFormatError(
        f"{where}: missing column {column!r}: expected a header row with the columns "
        f"'{','.join(required)}' (any case; optional: {', '.join(optional) or 'none'}), got {header}"
      )
  return found


def read_header_csv(path: str | os.PathLike, fmt: str) -> list[Prompt]:
  """A benchmark CSV with a header row (`HEADER_FORMATS`): advbench, jailbreakbench, harmbench, strongreject."""
  path = os.fspath(path)
  build = HEADER_FORMATS[fmt][2]
  rows = _csv_rows(path)
  header_line, header = next(rows, (1, []))
  header = [name.strip() for name in header]
  columns = header_columns(f"{path}:{header_line}", fmt, header)
  labels = {key: f"column {i + 1}, header {header[i]!r}" for key, i in columns.items()}
  out = []
  for line, row in rows:
    if len(row) != len(header):
      raise DataFormatError(f"{path}:{line}: expected {len(header)} columns {header}, got {len(row)}")
    out.append(build(Cells({key: row[i] for key, i in columns.items()}, f"{path}:{line}", labels)))
  return _nonempty(out, path)


def read_advbench(path: str | os.PathLike) -> list[Prompt]:
  """AdvBench harmful_behaviors.csv, header `goal,target`; the target becomes the reference."""
  return read_header_csv(path, "advbench")


def read_jailbreakbench(path: str | os.PathLike) -> list[Prompt]:
  """JailbreakBench behaviours CSV (`Goal,Target,Behavior,Category,Source`): the goal is the prompt, the
  target ("Sure, here is ...", what GCG optimises toward) the reference, Behavior the id, Category the
  category."""
  return read_header_csv(path, "jailbreakbench")


def read_harmbench(path: str | os.PathLike) -> list[Prompt]:
  """HarmBench behaviours CSV (`Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID`):
  a contextual behaviour's prompt is its context, then `\n\n---\n\n`, then the behaviour (HarmBench's
  convention); BehaviorID the id, SemanticCategory the category.  No reference: HarmBench keeps its GCG
  targets in another file."""
  return read_header_csv(path, "harmbench")


def read_strongreject(path: str | os.PathLike) -> list[Prompt]:
  """StrongREJECT CSV (`category,source,forbidden_prompt`): the forbidden prompt, its category; no id."""
  return read_header_csv(path, "strongreject")


def read_malicious_instruct(path: str | os.PathLike) -> list[Prompt]:
  """MaliciousInstruct: one instruction a line, surrounding whitespace stripped."""
  path = os.fspath(path)
  out, blank = [], []
  for n, line in enumerate(_lines(_read_text(path)), 1):
    if line.strip():
      out.append(Prompt(line.strip(), None, None, f"{path}:{n}"))
    else:
      blank.append(n)
  _report_blank(path, blank)
  return _nonempty(out, path)


__all__ = [
  "HARMBENCH_CONTEXT_TEMPLATE",
  "HEADER_FORMATS",
  "HEXPHI_HEADER_WORDS",
  "Cells",
  "header_columns",
  "read_advbench",
  "read_harmbench",
  "read_header_csv",
  "read_hexphi",
  "read_jailbreakbench",
  "read_malicious_instruct",
  "read_strongreject",
]
