"""`python -m deepalign_jax.train`: end to end on a tiny model and the shipped demo data."""

import json
from importlib import resources

import jax
import numpy as np
import pytest
import transformers

from deepalign_jax.data import load_tokenizer
from deepalign_jax.models import config_from_hf, create_model, load_pretrained, save_pretrained
from deepalign_jax.train.loop import default_config, run
from tests.real_checkpoints import real_tokenizer

ASSETS = resources.files("deepalign_jax") / "assets/demo"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
  """A 2-layer Llama with SmolLM2's tokenizer (ChatML), random weights."""
  tokenizer = load_tokenizer(real_tokenizer("smollm2"))
  cfg = config_from_hf(dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=64,
                            intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=32, tie_word_embeddings=True))
  path = tmp_path_factory.mktemp("tiny") / "model"
  return save_pretrained(create_model(cfg, seed=0), cfg, path, tokenizer=tokenizer)


def _config(model_dir, **overrides):
  c = default_config()
  c.model = str(model_dir)
  c.chat_format = "template"
  c.objective = "constrained"
  c.data.path = str(ASSETS / "conversations.jsonl")
  c.data.max_length = 96
  c.batch_size, c.micro_batch_size = 4, 2
  c.epochs, c.max_steps = 1, 4
  c.optimizer.learning_rate, c.optimizer.warmup_steps = 1e-3, 1
  c.progress = False
  # 8 simulated devices: micro-batches of 2 rows over fsdp=2, the rest tensor-parallel.
  c.mesh.fsdp, c.mesh.tensor = 2, -1
  for key, value in overrides.items():
    target = c
    *parents, last = key.split(".")
    for parent in parents:
      target = target[parent]
    target[last] = value
  return c


def _metrics(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_constrained_run_writes_checkpoints_metrics_and_an_hf_export(tiny_model_dir, tmp_path):
  summary = run(_config(tiny_model_dir, checkpoint_every=2), tmp_path)
  assert summary["finished"] and summary["steps_done"] == summary["total_steps"] == 4
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
  metrics = _metrics(tmp_path)
  assert [m["step"] for m in metrics] == [1, 2, 3, 4]
  assert all(np.isfinite(m["loss"]) and m["tokens"] > 0 for m in metrics)
  assert (tmp_path / "reference_logps.npz").exists()
  # The export is read back by us and by transformers, with the same logits.
  ours, _ = load_pretrained(tmp_path / "hf")
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager")
  ids = np.array([[1, 2, 3, 4, 5, 6]])
  import torch
  with torch.no_grad():
    theirs = hf(input_ids=torch.as_tensor(ids)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours(ids)), theirs, atol=1e-5)
  original, _ = load_pretrained(tiny_model_dir)
  assert not np.allclose(np.asarray(original(ids)), np.asarray(ours(ids)))  # training changed it


def test_resumed_run_equals_uninterrupted_run(tiny_model_dir, tmp_path):
  straight = tmp_path / "straight"
  run(_config(tiny_model_dir), straight)
  resumed = tmp_path / "resumed"
  first = run(_config(tiny_model_dir, stop_after_steps=2), resumed)
  assert not first["finished"] and not (resumed / "hf").exists()
  second = run(_config(tiny_model_dir), resumed)
  assert second["finished"]
  assert [m["loss"] for m in _metrics(resumed)] == pytest.approx([m["loss"] for m in _metrics(straight)],
                                                                  rel=1e-6)
  a, _ = load_pretrained(straight / "hf")
  b, _ = load_pretrained(resumed / "hf")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_recovery_objective_with_alpha(tiny_model_dir, tmp_path):
  config = _config(tiny_model_dir, objective="recovery", max_steps=2)
  config.data.safety_path = str(ASSETS / "triplets.jsonl")
  config.data.utility_path = str(ASSETS / "utility.json")
  config.data.safety_per_step, config.data.utility_per_step = 2, 2
  config.data.recovery_C = 10
  config.loss.alpha = 0.2
  summary = run(config, tmp_path)
  assert summary["finished"] and summary["examples"] == 12
  assert len(_metrics(tmp_path)) == 2


@pytest.mark.parametrize("overrides, error, pattern", [
    ({"micro_batch_size": 3}, ValueError, r"batch_size=4 is not a multiple of micro_batch_size=3"),
    ({"objective": "dpo"}, ValueError, r"objective must be one of \('sft', 'constrained', 'recovery'\)"),
    ({"data.path": "/nonexistent/data.jsonl"}, FileNotFoundError, r"/nonexistent/data\.jsonl"),
    ({"data.format": "alpaca"}, Exception, r"conversations\.jsonl"),
    ({"model": ""}, ValueError, r"config\.model is empty"),
    ({"mesh.fsdp": 4}, ValueError, r"micro_batch_size=2 must be a multiple of the mesh's data × fsdp = 4"),
])
def test_bad_configs_fail_with_a_clear_message(tiny_model_dir, tmp_path, overrides, error, pattern):
  with pytest.raises(error, match=pattern):
    run(_config(tiny_model_dir, **overrides), tmp_path)


def test_reference_cache_of_other_data_is_refused(tiny_model_dir, tmp_path):
  run(_config(tiny_model_dir, max_steps=1), tmp_path / "run")
  fewer = tmp_path / "fewer.jsonl"
  fewer.write_text("".join((ASSETS / "conversations.jsonl").read_text().splitlines(True)[:-1]))
  with pytest.raises(ValueError, match="reference_logps.npz: cached reference log-probs do not match"):
    run(_config(tiny_model_dir, max_steps=1, **{"data.path": str(fewer)}), tmp_path / "run")


def test_cli_runs_the_demo_config_shortened(tiny_model_dir, tmp_path):
  import os
  import subprocess
  import sys
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run(
      [sys.executable, "-m", "deepalign_jax.train", "--config", "configs/demo.py",
       "--workdir", str(tmp_path), f"--config.model={tiny_model_dir}", "--config.max_steps=2",
       "--config.progress=False"],
      capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads(result.stdout)
  assert summary["finished"] and summary["steps_done"] == 2
  assert (tmp_path / "hf" / "config.json").exists()
  bad = subprocess.run([sys.executable, "-m", "deepalign_jax.train", "--config", "configs/demo.py",
                        "--workdir", str(tmp_path / "bad"), "--config.model=/nonexistent"],
                       capture_output=True, text=True, env=env, timeout=600)
  assert bad.returncode == 1 and "error: /nonexistent: no config.json" in bad.stderr
