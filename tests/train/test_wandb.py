"""Optional W&B logging (train/wandb_writer.py): an offline run directory is written, holding the scalars of
metrics.jsonl step for step (read back from the .wandb file with a reader written here, not wandb's);
a missing package or a bad mode is one line before anything is loaded."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from deepalign_jax import cli
from deepalign_jax.errors import RunError
from deepalign_jax.train import loop
from tests.tiny_models import tiny_family_model

ROOT = Path(__file__).resolve().parents[2]


def _train_argv(model, workdir, *extra):
  return [
    "--config",
    str(ROOT / "configs/demo.py"),
    "--workdir",
    str(workdir),
    f"--config.model={model}",
    "--config.chat_format=llama2",
    "--config.train.num_steps=2",
    "--config.train.batch_size=4",
    "--config.train.micro_batch_size=4",
    "--config.mesh.fsdp=1",
    "--config.mesh.tensor=-1",
    "--config.export_hf=False",
    "--config.progress=False",
    *extra,
  ]


def _wandb_history(path: Path) -> dict[int, dict[str, float]]:
  """step → logged values, from a .wandb file: a 7-byte header, then LevelDB-log records (32 KiB blocks,
  7-byte chunk headers crc32c/length/type: full, first, middle, last) of wandb's protobuf `Record`s."""
  from wandb.proto import wandb_internal_pb2 as pb

  data, pos, block, records, part = path.read_bytes(), 7, 32768, [], b""
  assert data[:4] == b":W&B"
  while pos + 7 <= len(data):
    left = block - pos % block
    if left < 7:
      pos += left
      continue
    _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
    if length == 0 and kind == 0:
      pos += left
      continue
    chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
    if kind == 1:
      records.append(chunk)
    elif kind == 2:
      part = chunk
    elif kind == 3:
      part += chunk
    elif kind == 4:
      records.append(part + chunk)
  history = {}
  for raw in records:
    record = pb.Record()
    record.ParseFromString(raw)
    if record.WhichOneof("record_type") == "history":
      items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
      history[int(items["_step"])] = {k: v for k, v in items.items() if not k.startswith("_")}
  return history


def test_offline_run_directory_holds_the_same_scalars_as_metrics_jsonl(tmp_path):
  pytest.importorskip("wandb")
  model = tiny_family_model(tmp_path / "model", "llama2")
  config, workdir = cli.parse_command_line(
    _train_argv(model, tmp_path / "run", "--config.wandb.project=deepalign-test", "--config.tensorboard=False")
  )
  assert config.objective == "constrained_sft" and config.wandb.mode == "offline"
  assert loop.run(config, workdir)["finished"]
  runs = list((tmp_path / "run/wandb").glob("offline-run-*/run-*.wandb"))
  assert len(runs) == 1, list((tmp_path / "run").rglob("*"))
  history = _wandb_history(runs[0])
  metrics = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  assert sorted(history) == [m["step"] for m in metrics] == [1, 2]
  for m in metrics:
    logged = history[m["step"]]
    assert logged["loss"] == pytest.approx(m["loss"], rel=1e-6) and logged["grad_norm"] == pytest.approx(m["grad_norm"])
    assert logged["learning_rate"] == pytest.approx(m["learning_rate"])
    # The per-position constraint metrics, under TensorBoard's names.
    weights = [w for w in m["weight_by_position"] if w is not None]
    assert weights and logged["weight_by_position/t01"] == pytest.approx(m["weight_by_position"][0])


def test_without_a_project_no_wandb_and_a_missing_package_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails
  config, _ = cli.parse_command_line(_train_argv("unused", tmp_path / "run"))
  loop._check_config(config)  # no project: wandb is never imported
  config.wandb.project = "p"
  with pytest.raises(RunError, match=r"^config\.wandb\.project is set, but the optional package 'wandb' is not"):
    loop._check_config(config)
  config.wandb.mode = "sometimes"
  with pytest.raises(ValueError, match=r"config\.wandb\.mode must be one of \('offline', 'online', 'disabled'\)"):
    loop._check_config(config)
