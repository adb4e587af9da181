"""Every recipe says what the paper and its reference code say (SPEC §3, §4, §11).

That each of them trains as written is `tests/test_configs.py`'s business.
"""

import importlib.util
from pathlib import Path

import pytest

from deepalign_jax import recipes
from deepalign_jax.data import LLAMA2_DEFAULT_SYSTEM_PROMPT
from deepalign_jax.identity import differences

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
  assert c.chat_format in ("llama2", "gemma")
  if c.lora.rank:  # the base frozen in bf16; adapters and their moments are fp32 whatever param_dtype says
    assert (c.dtype, c.param_dtype, c.remat) == ("bfloat16", "bfloat16", "dots")
    assert c.optimizer.learning_rate == {"llama2": 1e-4, "gemma": 2.5e-5}[c.chat_format]
    assert c.train.batch_size == 64 and c.train.batch_size % c.train.micro_batch_size == 0
    return
  assert (c.dtype, c.param_dtype, c.remat) == ("bfloat16", "float32", "dots")  # fp32 master weights
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


@pytest.mark.parametrize("family", ["llama2", "gemma"])
@pytest.mark.parametrize("objective", ["sft", "constrained"])
def test_the_lora_harmful_recipes_are_the_full_ones_with_adapters(family, objective):
  """Every setting of the full fine-tuning recipe, plus the adapters, a bf16 base and 5× the learning rate."""
  lora, full = _load(f"{family}_harmful_lora_{objective}"), _load(f"{family}_harmful_{objective}")
  assert (lora.lora.rank, lora.lora.alpha, lora.lora.dropout) == (16, 32.0, 0.05)
  assert lora.lora.targets == ["q", "k", "v", "o", "gate", "up", "down"] and lora.lora.layers == []
  assert lora.lora.reference == "adapters_off"
  assert lora.optimizer.learning_rate == pytest.approx(5 * full.optimizer.learning_rate)
  differ = {key for key, _, _ in differences(full.to_dict(), lora.to_dict())}
  assert differ == {"param_dtype", "optimizer.learning_rate", "lora.rank", "lora.alpha", "lora.dropout"}
