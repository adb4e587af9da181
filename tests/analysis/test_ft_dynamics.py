"""Fine-tuning dynamics (Fig. 3) on a tiny model and the shipped demo triplets."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepalign_jax.analysis import ft_dynamics
from tests.analysis.conftest import DEMO

ROOT = Path(__file__).resolve().parents[2]
POSITIONS = 8


def _config(model_dir, **overrides):
  c = ft_dynamics.default_config()
  c.model = str(model_dir)
  c.chat_format = "llama2"
  c.data.path, c.data.format, c.data.max_length = str(DEMO / "triplets.jsonl"), "triplets", 128
  c.batch_size = c.micro_batch_size = 4
  c.num_steps = 3
  c.optimizer.learning_rate = 3e-3
  c.probe.steps, c.probe.examples, c.probe.num_positions, c.probe.position_batch = (0, 3), 4, POSITIONS, 4
  c.samples.count, c.samples.batch_size, c.samples.max_new_tokens = 4, 4, 12
  c.samples.num_positions = POSITIONS
  c.progress = False
  for key, value in overrides.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


@pytest.mark.slow  # ~45 s of CPU, mostly compiling the train step, the probe, generation and the KL
def test_run_probes_trains_samples_and_writes_plots(model_dirs, tmp_path):
  summary = ft_dynamics.run(_config(model_dirs["a"]), tmp_path)
  saved = json.loads((tmp_path / "dynamics.json").read_text())
  assert saved["probe"] == json.loads(json.dumps(summary["probe"]))
  assert set(summary["probe"]) == {"0", "3"} and len(summary["train"]) == 3
  before, after = summary["probe"]["0"], summary["probe"]["3"]
  assert before["loss"]["count"] == [4] * POSITIONS
  for probe in (before, after):
    assert len(probe["grad_norm"]) == POSITIONS and all(np.isfinite(g) and g > 0 for g in probe["grad_norm"])
  # Three steps on these answers lower their loss on the probe batch (drawn from the same records).
  assert np.mean(after["loss"]["mean"]) < np.mean(before["loss"]["mean"]) - 0.1
  # The fine-tuned model differs from the initial one on its own samples.
  kl = summary["kl_vs_initial"]
  assert kl["count"][0] == 4 and all(m is None or m > 0 for m in kl["mean"])
  samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  assert len(samples) == 4 and all(1 <= len(s["token_ids"]) <= 12 for s in samples)
  assert kl["count"] == [sum(len(s["token_ids"]) >= t for s in samples) for t in range(1, POSITIONS + 1)]

  rows = list(csv.DictReader(open(tmp_path / "dynamics.csv")))
  assert {r["quantity"] for r in rows} == {"loss", "grad_norm", "kl_vs_initial"}
  assert len(rows) == 2 * 2 * POSITIONS + POSITIONS
  for name in ("loss_by_position.png", "grad_norm_by_position.png", "kl_vs_initial.png"):
    with Image.open(tmp_path / name) as image:
      image.verify()
      assert image.format == "PNG"


@pytest.mark.parametrize(
  "overrides, pattern",
  [
    ({"probe.steps": (0, 5)}, r"probe\.steps \[5\] are outside 0\.\.num_steps=3"),
    ({"probe.examples": 0}, r"config\.probe\.examples must be >= 1"),
  ],
)
def test_bad_configs_fail_before_any_work(model_dirs, tmp_path, overrides, pattern):
  with pytest.raises(ValueError, match=pattern):
    ft_dynamics.run(_config(model_dirs["a"], **overrides), tmp_path)


@pytest.mark.parametrize("path", sorted((ROOT / "configs/analysis").glob("*ft_dynamics*.py")), ids=lambda p: p.name)
def test_shipped_configs_are_consistent(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert ft_dynamics._validate(config)[0] == 0  # probes start from the initial model
