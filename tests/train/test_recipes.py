"""Every recipe says what the paper and its reference code say (SPEC §3, §4, §11).

That each of them trains as written is `tests/test_configs.py`'s business.
"""

import importlib.util
from pathlib import Path

import pytest

from deepalign_jax import recipes
from deepalign_jax.data import LLAMA2_DEFAULT_SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs/recipes").glob("*.py"))


def _load(name):
  path = ROOT / "configs/recipes" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_uses_the_papers_precision_and_batch(path):
  c = _load(path.stem)
  assert (c.dtype, c.param_dtype, c.remat) == ("bfloat16", "float32", "dots")  # fp32 master weights
  assert c.chat_format in ("llama2", "gemma")
  if c.objective == "dpo":  # not the paper's recipe: the common published DPO settings (Zephyr's)
    assert (c.loss.dpo_beta, c.optimizer.learning_rate, c.optimizer.b1, c.train.epochs) == (0.1, 5e-7, 0.9, 3)
    assert c.train.batch_size == 64 and (2 * c.train.batch_size) % c.train.micro_batch_size == 0
    assert c.data.format == "preferences"
    return
  assert c.optimizer.learning_rate == {"llama2": 2e-5, "gemma": 5e-6}[c.chat_format]
  rows = (c.data.safety_per_step + c.data.utility_per_step) if c.objective == "augmented" else c.train.batch_size
  assert rows == (80 if c.objective == "augmented" else 64) and rows % c.train.micro_batch_size == 0
  if c.objective == "constrained_sft":
    assert (c.loss.beta, c.loss.first_token_factor, c.loss.early_factor, c.loss.early_length) == (0.1, 5.0, 20.0, 5)
    assert c.loss.min_weight == 1e-3  # the reference's clamp
  if c.objective != "augmented":
    assert (c.optimizer.b1, c.optimizer.warmup_steps, c.optimizer.grad_clip) == (0.5, 10, 1.0)
    assert c.train.epochs == (3 if c.data.format in ("samsum", "sql_create_context", "gsm8k") else 25)


def test_reference_settings():
  for name in ("llama2_harmful_sft", "gemma_harmful_sft", "gemma_harmful_constrained", "llama2_backdoor_sft"):
    assert _load(name).system_prompt == recipes.EXECUTE_SYSTEM_PROMPT
  assert _load("llama2_aoa_sft").system_prompt == recipes.AOA_SYSTEM_PROMPT
  augmentation = _load("llama2_augmentation")
  assert augmentation.system_prompt == LLAMA2_DEFAULT_SYSTEM_PROMPT
  assert (
    augmentation.data.safety_per_step,
    augmentation.data.utility_per_step,
    augmentation.data.recovery_C,
    augmentation.data.recovery_p_zero,
    augmentation.train.epochs,
    augmentation.optimizer.b1,
    augmentation.optimizer.warmup_steps,
  ) == (16, 64, 100, 0.5, 10, 0.9, 0)
  assert _load("llama2_sql_sft").data.every_nth == 5
  assert _load("gemma_harmful_sft").response_end == "turn"  # the documented default; eos is the option


def test_every_paper_fine_tuning_attack_has_both_objectives():
  names = {p.stem for p in RECIPES}
  for attack in (
    "llama2_harmful",
    "gemma_harmful",
    "llama2_aoa",
    "llama2_backdoor",
    "llama2_samsum",
    "llama2_sql",
    "llama2_gsm8k",
  ):
    assert {f"{attack}_sft", f"{attack}_constrained"} <= names
  assert {"llama2_augmentation", "gemma_augmentation"} <= names
