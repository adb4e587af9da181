"""TFDS builders over the files users bring (array_record, no TensorFlow).

One builder per format of `formats.FILE_FORMATS`, named `deepalign_<format>`
(e.g. `deepalign_harmful_hexphi`, `deepalign_samsum`).  Each reads the
user's downloaded files from a *manual directory* with the same readers as
plain paths (so the same precise errors), and writes array_record shards
that `tfds.data_source` opens for random access — what a grain pipeline on a
pod wants instead of every host parsing JSON.

Splits come from file names: a file whose stem is (or starts with) `train`,
`test`, `validation`/`val`/`dev` goes to that split; every other file
(HEx-PHI's `category_N.csv`, AdvBench's `harmful_behaviors.csv`, ...) goes to
`train`.

    records = load_tfds("samsum", manual_dir="~/data/samsum", split="train")

builds once into `data_dir` (default `~/.cache/deepalign_jax/tfds`) and
reads back `Conversation` / `Triplet` / `Prompt` records, each with its
original `source` ("file:line").
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

from deepalign_jax.data.formats import (
  FILE_FORMATS,
  Conversation,
  DataFormatError,
  Preference,
  Prompt,
  Triplet,
  read_file,
)

DEFAULT_DATA_DIR = Path(os.environ.get("DEEPALIGN_TFDS_DIR", "~/.cache/deepalign_jax/tfds")).expanduser()
_SPLITS = {
  "train": "train",
  "test": "test",
  "validation": "validation",
  "val": "validation",
  "dev": "validation",
  "eval": "test",
}
# The record type each format's reader produces (checked against the reader's output).
_KIND = {
  "triplets": Triplet,
  "preferences": Preference,
  "hexphi": Prompt,
  "advbench": Prompt,
  "jailbreakbench": Prompt,
  "harmbench": Prompt,
  "strongreject": Prompt,
  "malicious_instruct": Prompt,
  "prompts": Prompt,
}
_SUFFIXES = {".json", ".jsonl", ".csv", ".txt"}
_builders: dict[str, type] = {}


def _record_type(fmt: str) -> type:
  return _KIND.get(fmt, Conversation)


def _split_of(path: Path) -> str:
  match = re.match(r"[a-z]+", path.stem.lower())
  return _SPLITS.get(match.group(0) if match else "", "train")


def _manual_files(fmt: str, manual_dir: Path) -> dict[str, list[Path]]:
  if not manual_dir.is_dir():
    raise FileNotFoundError(
      f"{manual_dir}: manual directory for deepalign_{fmt} does not exist (put the downloaded {fmt} files there)"
    )
  splits: dict[str, list[Path]] = {}
  for path in sorted(manual_dir.iterdir()):
    if path.is_file() and path.suffix.lower() in _SUFFIXES:
      splits.setdefault(_split_of(path), []).append(path)
  if not splits:
    raise DataFormatError(f"{manual_dir}: no .json/.jsonl/.csv/.txt files for deepalign_{fmt}")
  return splits


def _features(record_type: type):
  import tensorflow_datasets as tfds

  return tfds.features.FeaturesDict({f.name: tfds.features.Text() for f in dataclasses.fields(record_type)})


def _encode(record) -> dict[str, str]:
  # Text features cannot be None: optional fields travel as "" plus a flag.
  out = {}
  for field in dataclasses.fields(record):
    value = getattr(record, field.name)
    out[field.name] = "\0" if value is None else value
  return out


def _decode(record_type: type, example: dict) -> object:
  values = {}
  for field in dataclasses.fields(record_type):
    value = example[field.name]
    value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    values[field.name] = None if value == "\0" else value
  return record_type(**values)


def builder_class(fmt: str) -> type:
  """The TFDS `GeneratorBasedBuilder` class for one of `FILE_FORMATS`."""
  if fmt not in FILE_FORMATS:
    raise DataFormatError(f"unknown data format {fmt!r}; expected one of {', '.join(FILE_FORMATS)}")
  if fmt == "table":
    raise DataFormatError(
      "format 'table' is read through HF datasets directly: give the table's path (a save_to_disk directory or "
      "a parquet/JSON/CSV file) without tfds:"
    )
  if fmt in _builders:
    return _builders[fmt]
  import tensorflow_datasets as tfds

  record_type = _record_type(fmt)

  def _info(self):
    return self.dataset_info_from_configs(
      features=_features(record_type), supervised_keys=None, description=f"Users' {fmt} files, read by deepalign_jax."
    )

  def _split_generators(self, dl_manager):
    files = _manual_files(fmt, Path(dl_manager.manual_dir))
    return {split: self._generate_examples(paths) for split, paths in files.items()}

  def _generate_examples(self, paths):
    # HEx-PHI reads a directory of category files as one dataset.
    if fmt == "hexphi" and len(paths) > 1:
      records = read_file(paths[0].parent, fmt)
    else:
      records = [r for path in paths for r in read_file(path, fmt)]
    for index, record in enumerate(records):
      if not isinstance(record, record_type):
        raise TypeError(f"reader of {fmt} returned {type(record).__name__}, expected {record_type.__name__}")
      yield index, _encode(record)

  name = "Deepalign" + "".join(part.capitalize() for part in fmt.split("_"))
  cls = type(
    name,
    (tfds.core.GeneratorBasedBuilder,),
    {
      # 1.1.0: prompts carry the benchmark's behaviour id (an earlier build lacks the feature).
      "VERSION": tfds.core.Version("1.1.0"),
      "MANUAL_DOWNLOAD_INSTRUCTIONS": f"Place your {fmt} files (.json/.jsonl/.csv/.txt) in the manual dir.",
      "_info": _info,
      "_split_generators": _split_generators,
      "_generate_examples": _generate_examples,
      "__module__": __name__,
      # No checksums file to look for next to the code (and tfds's lookup of
      # it needs importlib_resources, which it does not declare).
      "code_path": None,
    },
    skip_registration=True,
  )
  _builders[fmt] = cls
  return cls


def _fingerprint(fmt: str, manual_dir: Path) -> str:
  digest = hashlib.sha256(fmt.encode())
  for paths in _manual_files(fmt, manual_dir).values():
    for path in paths:
      digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()[:12]


def prepare_tfds(fmt: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None):
  """Builds (once) `deepalign_<fmt>` from `manual_dir`; returns the builder.

  The build lives under `data_dir/<fingerprint of the manual files>/`, so
  editing a file builds afresh instead of reading a stale copy.
  """
  import tensorflow_datasets as tfds

  cls = builder_class(fmt)
  manual_dir = Path(manual_dir).expanduser()
  root = Path(data_dir or DEFAULT_DATA_DIR).expanduser() / _fingerprint(fmt, manual_dir)
  builder = cls(data_dir=str(root), file_format="array_record")
  if not builder.is_prepared():
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def load_tfds(
  fmt: str, *, manual_dir: str | os.PathLike, split: str = "train", data_dir: str | os.PathLike | None = None
) -> list:
  """The records of one split of `deepalign_<fmt>`, building it first if needed."""
  builder = prepare_tfds(fmt, manual_dir, data_dir)
  if split not in builder.info.splits:
    raise DataFormatError(
      f"deepalign_{fmt} (from {manual_dir}): no split {split!r}; it has {', '.join(sorted(builder.info.splits))}"
    )
  source = builder.as_data_source(split=split)
  record_type = _record_type(fmt)
  records = [_decode(record_type, source[i]) for i in range(len(source))]
  return sorted(records, key=_file_order)


def _file_order(record) -> tuple[str, int]:
  """Records back in file order ("path:line" sources), as a plain read gives them."""
  path, _, line = record.source.rpartition(":")
  return (path, int(line)) if line.isdigit() else (record.source, 0)


def load_records(
  path: str | os.PathLike,
  fmt: str,
  *,
  split: str = "train",
  data_dir: str | os.PathLike | None = None,
  columns=None,
) -> list:
  """A plain file (or HEx-PHI directory) read by its format, a datasets table (data/tables.py; `columns`:
  format `table`'s column mapping), or `tfds:MANUAL_DIR` built and read via TFDS."""
  text = os.fspath(path)
  if text.startswith("tfds:"):
    return load_tfds(fmt, manual_dir=text[len("tfds:") :], split=split, data_dir=data_dir)
  return read_file(text, fmt, columns, split=split)


__all__ = ["DEFAULT_DATA_DIR", "builder_class", "load_records", "load_tfds", "prepare_tfds"]
