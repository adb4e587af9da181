"""TFDS builders over manual directories, and the grain step pipeline."""

from importlib import resources

import numpy as np
import pytest

from deepalign_jax.data import DataFormatError, read_file
from deepalign_jax.data.pipeline import as_micro_batches, host_rows, step_dataset, step_iterator
from deepalign_jax.data.tfds_builders import load_records, load_tfds

ASSETS = resources.files("deepalign_jax") / "assets/demo"


@pytest.mark.parametrize(
  "fmt, files",
  [
    ("triplets", {"train.jsonl": (ASSETS / "triplets.jsonl").read_text()}),
    ("advbench", {"harmful_behaviors.csv": 'goal,target\n"Describe, the sky",Sure here is\nName a fruit,Sure\n'}),
    ("hexphi", {"category_1.csv": "Say hi\nSay bye\n", "category_3.csv": '"Count, then stop"\n'}),
    (
      "conversations",
      {
        "train.jsonl": (ASSETS / "conversations.jsonl").read_text(),
        "test.jsonl": "".join((ASSETS / "conversations.jsonl").read_text().splitlines(True)[:2]),
      },
    ),
  ],
)
def test_tfds_build_reads_back_the_records_of_a_plain_read(tmp_path, fmt, files):
  manual = tmp_path / "manual"
  manual.mkdir()
  for name, text in files.items():
    (manual / name).write_text(text)
  data_dir = tmp_path / "tfds"
  for split in ["train"] + (["test"] if "test.jsonl" in files else []):
    built = load_tfds(fmt, manual_dir=manual, split=split, data_dir=data_dir)
    name = next(n for n in files if n.startswith(split)) if fmt in ("triplets", "conversations") else None
    plain = read_file(manual / name if name else (manual if fmt == "hexphi" else manual / next(iter(files))), fmt)
    assert built == plain  # same records, same order, same sources, None kept as None
  assert list(data_dir.rglob("*.array_record-*"))
  assert load_records(f"tfds:{manual}", fmt, data_dir=data_dir) == load_tfds(fmt, manual_dir=manual, data_dir=data_dir)


def test_tfds_rebuilds_when_a_manual_file_changes_and_names_missing_splits(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "goals.txt").write_text("one\ntwo\n")
  assert len(load_tfds("malicious_instruct", manual_dir=manual, data_dir=tmp_path / "d")) == 2
  (manual / "goals.txt").write_text("one\ntwo\nthree\n")
  assert len(load_tfds("malicious_instruct", manual_dir=manual, data_dir=tmp_path / "d")) == 3
  with pytest.raises(DataFormatError, match=r"no split 'test'; it has train"):
    load_tfds("malicious_instruct", manual_dir=manual, split="test", data_dir=tmp_path / "d")
  (manual / "broken.jsonl").write_text('{"messages": 3}\n')
  with pytest.raises(DataFormatError, match=r"broken\.jsonl:1"):
    load_tfds("conversations", manual_dir=manual, data_dir=tmp_path / "d")


def _rows_for(step):
  rng = np.random.default_rng(step)
  return {"input_ids": rng.integers(0, 100, (8, 5)).astype(np.int32), "group": np.arange(8) % 2}


def test_step_dataset_gives_each_step_its_rows_and_hosts_split_them():
  dataset = step_dataset(_rows_for, num_steps=5, num_micro=2)
  for step in (0, 3):
    expected = as_micro_batches(_rows_for(step), 2)
    for key in expected:
      np.testing.assert_array_equal(dataset[step][key], expected[key])
  # Two hosts: their blocks side by side are the whole micro-batches.
  halves = [step_dataset(_rows_for, 5, 2, process_index=p, process_count=2)[4] for p in (0, 1)]
  whole = as_micro_batches(_rows_for(4), 2)
  np.testing.assert_array_equal(np.concatenate([h["input_ids"] for h in halves], axis=1), whole["input_ids"])
  with pytest.raises(ValueError, match="do not split over 3 hosts"):
    host_rows(whole, 0, 3)


def test_step_iterator_state_resumes_at_the_same_step():
  dataset = step_dataset(_rows_for, num_steps=6, num_micro=1)
  iterator = step_iterator(dataset, prefetch=3)
  seen = [next(iterator)["input_ids"] for _ in range(2)]
  state = iterator.get_state()
  assert state == {"next_index": 2}
  rest = [x["input_ids"] for x in iterator]
  resumed = step_iterator(dataset, prefetch=3)
  resumed.set_state(state)
  np.testing.assert_array_equal(np.stack([x["input_ids"] for x in resumed]), np.stack(rest))
  assert len(seen) + len(rest) == 6
