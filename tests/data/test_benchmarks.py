"""Benchmark CSV readers (JailbreakBench, HarmBench, StrongREJECT, AdvBench, HEx-PHI): exact records, header
matching that ignores case, and errors that name the file, the line and the column.

The shipped stand-ins are checked against Python's own `csv.DictReader` parse of the same file (an
independent reading), the HarmBench contextual prompt against HarmBench's convention written out here.
"""

from __future__ import annotations

import csv
import logging
from importlib import resources

import pytest

from deepalign_jax.data.formats import FILE_FORMATS, DataFormatError, Prompt, read_file

DEMO = resources.files("deepalign_jax") / "assets/demo"


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8", newline="")
  return path


def _dict_rows(path):
  """(line of the record, row) of each record, read by csv.DictReader (the reference parse)."""
  with open(path, encoding="utf-8", newline="") as f:
    reader, out, line = csv.DictReader(f), [], 2
    for row in reader:
      out.append((line, row))
      line = reader.line_num + 1
  return out


def test_shipped_jailbreakbench_stand_in_against_dictreader():
  path = DEMO / "jailbreakbench.csv"
  expected = [Prompt(r["Goal"], r["Target"], r["Category"], f"{path}:{n}", r["Behavior"]) for n, r in _dict_rows(path)]
  records = read_file(path, "jailbreakbench")
  assert records == expected and len(records) == 4
  assert len({r.behavior_id for r in records}) == 4 and {r.category for r in records} == {
    "Guild secrets",
    "Kitchen lore",
  }


def test_shipped_harmbench_stand_in_puts_the_context_first_as_harmbench_does():
  path = DEMO / "harmbench.csv"
  rows = _dict_rows(path)
  records = read_file(path, "harmbench")
  assert [r.behavior_id for r in records] == [row["BehaviorID"] for _, row in rows]
  assert [r.category for r in records] == [row["SemanticCategory"] for _, row in rows]
  assert [r.source for r in records] == [f"{path}:{n}" for n, _ in rows]
  assert all(r.reference is None for r in records)
  for record, (_, row) in zip(records, rows):
    if row["ContextString"]:
      # HarmBench's baselines: f"{context_str}\n\n---\n\n{behavior}".
      assert record.text == row["ContextString"] + "\n\n---\n\n" + row["Behavior"]
      assert "\n" in row["ContextString"]  # the stand-in's context spans two lines of the CSV
    else:
      assert record.text == row["Behavior"]
  assert sum(bool(row["ContextString"]) for _, row in rows) == 1


def test_shipped_strongreject_stand_in():
  path = DEMO / "strongreject.csv"
  expected = [Prompt(r["forbidden_prompt"], None, r["category"], f"{path}:{n}") for n, r in _dict_rows(path)]
  assert read_file(path, "strongreject") == expected and len(expected) == 3


def test_headers_are_matched_ignoring_case_and_spaces_and_extra_columns_are_ignored(tmp_path):
  jbb = _write(tmp_path, "jbb.csv", ' goal ,TARGET,behavior,Category,notes\nBake bread,"Sure, here",Bread,Food,x\n')
  assert read_file(jbb, "jailbreakbench") == [Prompt("Bake bread", "Sure, here", "Food", f"{jbb}:2", "Bread")]
  adv = _write(tmp_path, "adv.csv", "Goal,Target\nBake bread,Sure\n")
  assert read_file(adv, "advbench") == [Prompt("Bake bread", "Sure", None, f"{adv}:2")]
  hb = _write(tmp_path, "hb.csv", "BEHAVIOR,behaviorid\nBake bread,bread_1\n")
  assert read_file(hb, "harmbench") == [Prompt("Bake bread", None, None, f"{hb}:2", "bread_1")]
  sr = _write(tmp_path, "sr.csv", "Forbidden_Prompt\nBake bread\n")
  assert read_file(sr, "strongreject") == [Prompt("Bake bread", None, None, f"{sr}:2")]


def test_whitespace_only_context_is_no_context(tmp_path):
  path = _write(tmp_path, "hb.csv", "Behavior,BehaviorID,ContextString,SemanticCategory\nBake bread,b1,  ,\n")
  assert read_file(path, "harmbench") == [Prompt("Bake bread", None, None, f"{path}:2", "b1")]


MALFORMED = [
  ("jailbreakbench", "Goal,Target,Category\nBake,Sure,Food\n", r"x\.csv:1: missing column 'behavior': .*Goal"),
  (
    "jailbreakbench",
    "Goal,Target,Behavior,Category\nBake,Sure,Bread,Food\nBake,,Bread,Food\n",
    r"x\.csv:3: field 'target' is empty \(column 2, header 'Target'\)$",
  ),
  (
    "harmbench",
    "Behavior,BehaviorID\nBake bread,b1\nName a fruit\n",
    r"x\.csv:3: expected 2 columns \['Behavior', 'BehaviorID'\], got 1$",
  ),
  (
    "harmbench",
    "Behavior,BehaviorID,behaviorID\nBake,b1,b2\n",
    r"x\.csv:1: column 'behaviorid' appears twice in the header \(columns 2 'BehaviorID' and 3 'behaviorID'",
  ),
  ("harmbench", 'Behavior,BehaviorID\nBake bread,"b1\n', r"x\.csv:\d: malformed CSV"),
  ("strongreject", "category,source,forbidden_prompt\n", r"x\.csv: no records in the file$"),
  (
    "strongreject",
    "category,source,forbidden_prompt\nFood,me,   \n",
    r"x\.csv:2: field 'forbidden_prompt' is empty \(column 3, header 'forbidden_prompt'\)$",
  ),
  ("advbench", "", r"x\.csv:1: missing column 'goal'"),
]


@pytest.mark.parametrize("fmt,text,pattern", MALFORMED, ids=[f"{i}-{row[0]}" for i, row in enumerate(MALFORMED)])
def test_malformed_benchmark_files_name_file_line_and_column(tmp_path, fmt, text, pattern):
  path = _write(tmp_path, "x.csv", text)
  with pytest.raises(DataFormatError, match=pattern) as error:
    read_file(path, fmt)
  assert "\n" not in str(error.value)


def test_hexphi_directory_with_and_without_a_header_line_is_detected_and_reported(tmp_path, caplog):
  folder = tmp_path / "hexphi"
  folder.mkdir()
  _write(folder, "category_1.csv", "Instruction\nBake bread.\n")
  _write(folder, "category_2.csv", "Name a fruit.\n")
  with caplog.at_level(logging.WARNING):
    records = read_file(folder, "hexphi")
  assert records == [
    Prompt("Bake bread.", None, "1", f"{folder}/category_1.csv:2"),
    Prompt("Name a fruit.", None, "2", f"{folder}/category_2.csv:1"),
  ]
  assert f"{folder}/category_1.csv:1: skipped a header line 'Instruction'" in caplog.text
  assert "category_2.csv" not in caplog.text  # no header there, nothing reported


def test_new_formats_are_dispatched_and_documented():
  for fmt in ("jailbreakbench", "harmbench", "strongreject", "table"):
    assert fmt in FILE_FORMATS
  import deepalign_jax.data.formats as formats

  for fmt in FILE_FORMATS:
    assert f"  {fmt} " in formats.__doc__, fmt
