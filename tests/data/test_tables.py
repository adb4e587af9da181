"""Tables read through HF `datasets` (data/tables.py): save_to_disk directories (Dataset and DatasetDict),
parquet, and JSON / CSV with format `table`; column mappings; and the errors of each.

The same records read from a format's own file (JSONL, CSV) are the reference: a table of those records
must give them back, sources apart.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from importlib import resources

import pytest

from deepalign_jax.data import Conversation, Exchange, Triplet, read_file
from deepalign_jax.data.formats import DataFormatError
from deepalign_jax.data.tables import DatasetsMissing, is_table, parse_columns
from deepalign_jax.data.tfds_builders import load_records

datasets = pytest.importorskip("datasets")
DEMO = resources.files("deepalign_jax") / "assets/demo"


def _no_source(records):
  return [dataclasses.replace(r, source="") for r in records]


def _quiet(rows):
  datasets.disable_progress_bars()
  return datasets.Dataset.from_list(rows)


def test_save_to_disk_dataset_in_a_format_of_its_own_gives_the_files_records(tmp_path):
  lines = (DEMO / "triplets.jsonl").read_text(encoding="utf-8").splitlines()
  _quiet([json.loads(line) for line in lines]).save_to_disk(str(tmp_path / "triplets"))
  assert is_table(tmp_path / "triplets")
  records = read_file(tmp_path / "triplets", "triplets")
  assert _no_source(records) == _no_source(read_file(DEMO / "triplets.jsonl", "triplets"))
  assert records[2].source == f"{tmp_path / 'triplets'} row 2" and isinstance(records[0], Triplet)


def test_parquet_copy_of_a_header_benchmark_matches_its_csv(tmp_path):
  import csv

  with open(DEMO / "jailbreakbench.csv", encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
  _quiet(rows).to_parquet(str(tmp_path / "jbb.parquet"))
  from_parquet = read_file(tmp_path / "jbb.parquet", "jailbreakbench")
  assert _no_source(from_parquet) == _no_source(read_file(DEMO / "jailbreakbench.csv", "jailbreakbench"))
  assert from_parquet[0].behavior_id == rows[0]["Behavior"]


def test_dataset_dict_split_and_a_folder_of_parquet_files(tmp_path):
  train = _quiet([{"instruction": "Add 2 and 3.", "output": "5."}])
  test = _quiet([{"instruction": "Add 1 and 1.", "output": "2."}])
  datasets.DatasetDict(train=train, test=test).save_to_disk(str(tmp_path / "dd"))
  assert load_records(tmp_path / "dd", "alpaca", split="test") == [
    Conversation(None, "Add 1 and 1.", "2.", f"{tmp_path / 'dd'}[test] row 0")
  ]
  with pytest.raises(
    DataFormatError, match=r"dd: no split 'validation' in this DatasetDict; it has \['test', 'train'\]"
  ):
    load_records(tmp_path / "dd", "alpaca", split="validation")
  (tmp_path / "pq").mkdir()
  train.to_parquet(str(tmp_path / "pq/a.parquet"))
  test.to_parquet(str(tmp_path / "pq/b.parquet"))
  assert [r.user for r in read_file(tmp_path / "pq", "alpaca")] == ["Add 2 and 3.", "Add 1 and 1."]
  _quiet([{"instruction": "Add 1 and 1.", "input": "x", "output": "2."}]).to_parquet(str(tmp_path / "pq/c.parquet"))
  with pytest.raises(DataFormatError, match=r"pq: datasets could not read it as parquet: .*Couldn't cast"):
    read_file(tmp_path / "pq", "alpaca")


def test_table_format_maps_columns_from_json_csv_and_parquet(tmp_path):
  rows = [
    {"question": "How do I bake bread?", "answer": "Knead.", "topic": "food", "id": 7},
    {"question": "Name a fruit.", "answer": None, "topic": None, "id": 8},
  ]
  (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tmp_path / "q.csv").write_text("question,answer,topic,id\nHow do I bake bread?,Knead.,food,7\nName a fruit.,,,8\n")
  _quiet(rows).to_parquet(str(tmp_path / "q.parquet"))
  mapping = "prompt=question, response=answer ,category=topic,behavior_id=id"
  for name in ("q.jsonl", "q.csv", "q.parquet"):
    path = tmp_path / name
    assert read_file(path, "table", mapping) == [
      Exchange(None, "How do I bake bread?", "Knead.", "food", f"{path} row 0", "7"),
      Exchange(None, "Name a fruit.", None, None, f"{path} row 1", "8"),
    ], name
  # Unmapped roles are the columns of their own names, when the table has them.
  (tmp_path / "own.jsonl").write_text(json.dumps({"prompt": "Hi", "response": "Hello", "system": ""}) + "\n")
  assert read_file(tmp_path / "own.jsonl", "table") == [
    Exchange("", "Hi", "Hello", None, f"{tmp_path}/own.jsonl row 0")
  ]


def test_table_format_reads_a_messages_column(tmp_path):
  rows = [
    {"chat": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
    {"chat": [{"role": "user", "content": "Bake?"}, {"role": "assistant", "content": "Knead."}]},
  ]
  _quiet(rows).save_to_disk(str(tmp_path / "chats"))
  path = tmp_path / "chats"
  assert read_file(path, "table", {"messages": "chat"}) == [
    Exchange("Be brief.", "Hi", None, None, f"{path} row 0"),
    Exchange(None, "Bake?", "Knead.", None, f"{path} row 1"),
  ]


def test_training_and_evaluation_read_tables_with_their_column_mapping(tmp_path):
  from deepalign_jax.evaluate import default_config, read_benchmark

  rows = [{"q": f"Add {i} and 1.", "a": f"{i + 1}.", "kind": "sum"} for i in range(3)]
  _quiet(rows).save_to_disk(str(tmp_path / "t"))
  config = default_config()
  config.benchmark.path, config.benchmark.format = str(tmp_path / "t"), "table"
  config.benchmark.columns = "prompt=q,response=a,category=kind"
  prompts, users = read_benchmark(config)
  assert users == ["Add 0 and 1.", "Add 1 and 1.", "Add 2 and 1."] and [p.response for p in prompts] == [
    "1.",
    "2.",
    "3.",
  ]
  config.benchmark.columns = "prompt=q,answer=a"
  with pytest.raises(DataFormatError, match=r"^config\.benchmark\.columns: unknown role\(s\) \['answer'\]"):
    read_benchmark(config)


MALFORMED = [
  (
    {"prompt": "question"},
    [{"q": "x"}],
    r"t: column mapping prompt -> 'question': no such column; the table has \['q'\]",
  ),
  ({}, [{"q": "x"}], r"t: no prompt column: the table has \['q'\]; name it with columns\.prompt"),
  ({"prompt": "q"}, [{"q": "x"}, {"q": None}], r"t row 1: column 'q' is empty \(null\)"),
  ({"prompt": "q"}, [{"q": "x"}, {"q": "  "}], r"t row 1: column 'q' is empty$"),
  ({"prompt": "q", "response": "a"}, [{"q": "x", "a": 3}], r"t row 0: column 'a': expected a string, got number"),
  ({"messages": "m", "prompt": "q"}, [{"m": [], "q": "x"}], r"columns\.messages is 'm' and columns \['prompt'\]"),
  (
    {"messages": "m"},
    [{"m": [{"role": "assistant", "content": "x"}]}],
    r"t row 0: m\[0\]\.role: expected 'user', got 'assistant'",
  ),
]


@pytest.mark.parametrize("mapping,rows,pattern", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_tables_name_the_table_row_and_column(tmp_path, mapping, rows, pattern):
  _quiet(rows).save_to_disk(str(tmp_path / "t"))
  with pytest.raises(DataFormatError, match=pattern):
    read_file(tmp_path / "t", "table", mapping)


def test_misuse_of_a_mapping_or_a_format(tmp_path):
  _quiet([{"Goal": "x"}]).save_to_disk(str(tmp_path / "t"))
  with pytest.raises(DataFormatError, match=r"t: missing column 'target'"):
    read_file(tmp_path / "t", "jailbreakbench")
  with pytest.raises(DataFormatError, match=r"format 'hexphi' is not read from a datasets table"):
    read_file(tmp_path / "t", "hexphi")
  with pytest.raises(
    DataFormatError, match=r"a column mapping \(\{'prompt': 'Goal'\}\) is set, but format 'jailbreakbench'"
  ):
    read_file(tmp_path / "t", "jailbreakbench", "prompt=Goal")
  with pytest.raises(DataFormatError, match=r"a column mapping .* is set, but format 'advbench' reads this file"):
    read_file(DEMO / "advbench.csv", "advbench", "prompt=goal")
  with pytest.raises(DataFormatError, match=r"expected 'role=column' pairs .* got 'prompt'"):
    parse_columns("prompt")
  (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n{"prompt": \n')
  with pytest.raises(DataFormatError, match=r"bad\.jsonl: datasets could not read it as json"):
    read_file(tmp_path / "bad.jsonl", "table")


def test_without_datasets_installed_a_table_is_one_clear_line(tmp_path, monkeypatch):
  _quiet([{"prompt": "x"}]).save_to_disk(str(tmp_path / "t"))
  monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
  with pytest.raises(DatasetsMissing) as error:
    read_file(tmp_path / "t", "table")
  assert str(error.value) == (
    "reading a datasets table (a save_to_disk directory, parquet, or format 'table') needs the optional "
    "package 'datasets': pip install 'deepalign_jax[datasets]'"
  )
  # Plain files never need it.
  assert read_file(DEMO / "advbench.csv", "advbench")


def test_training_rows_from_a_table_equal_those_of_the_same_jsonl(tmp_path):
  """`data.format=table` with `data.columns`: the rows a training step gets are those of the same records
  read from a JSONL file (the reference)."""
  from deepalign_jax.data import ChatRenderer
  from deepalign_jax.train import loop
  from deepalign_jax.train.rows import training_rows
  from tests.data.tokenizers import sentencepiece_like_tokenizer

  records = [{"q": "How do I bake bread?", "a": "Knead it."}, {"q": "Name a fruit.", "a": "Pear."}]
  _quiet(records).save_to_disk(str(tmp_path / "t"))
  (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": r["q"], "response": r["a"]}) + "\n" for r in records))
  renderer = ChatRenderer(sentencepiece_like_tokenizer(), "llama2")
  rows = {}
  for name, fmt, columns in (("t", "table", "prompt=q,response=a"), ("p.jsonl", "prompt_response", "")):
    config = loop.default_config()
    config.data.path, config.data.format, config.data.columns = str(tmp_path / name), fmt, columns
    config.train.batch_size = 2
    rows[name] = training_rows(config, renderer, pad_id=0)
  assert [e.input_ids.tolist() for e in rows["t"].examples] == [e.input_ids.tolist() for e in rows["p.jsonl"].examples]
  assert [e.loss_mask.tolist() for e in rows["t"].examples] == [e.loss_mask.tolist() for e in rows["p.jsonl"].examples]
  config.data.columns = "prompt=q"  # a mapping with no table to apply it to
  with pytest.raises(ValueError, match=r"config\.data\.columns is set, but no data file .* format 'table'"):
    training_rows(config, renderer, pad_id=0)
