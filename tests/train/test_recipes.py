"""Every config file loads, and says what the paper says."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "configs/demo.py"] + sorted((ROOT / "configs/recipes").glob("*.py"))


def _load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p) for p in CONFIGS])
def test_config_loads_and_is_consistent(path):
  c = _load(path)
  assert c.objective in ("sft", "constrained_sft", "augmented")
  rows = (c.data.safety_per_step + c.data.utility_per_step) if c.objective == "augmented" else c.train.batch_size
  assert rows % c.train.micro_batch_size == 0


def test_paper_settings():
  constrained = _load(ROOT / "configs/recipes/llama2_harmful_constrained.py")
  assert (constrained.loss.beta, constrained.loss.first_token_factor, constrained.loss.early_factor,
          constrained.loss.early_length) == (0.1, 5.0, 20.0, 5)
  assert (constrained.optimizer.learning_rate, constrained.optimizer.b1,
          constrained.optimizer.warmup_steps, constrained.train.batch_size,
          constrained.train.epochs) == (2e-5, 0.5, 10, 64, 25)
  assert _load(ROOT / "configs/recipes/gemma_harmful_constrained.py").optimizer.learning_rate == 5e-6
  augmentation = _load(ROOT / "configs/recipes/llama2_augmentation.py")
  assert (augmentation.data.safety_per_step, augmentation.data.utility_per_step,
          augmentation.data.recovery_C, augmentation.train.epochs) == (16, 64, 100, 10)
