"""HEx-PHI ASR after benign GSM8k fine-tuning (SPEC §7, Table 4: initial 1.5%, SFT 3.3%, constrained 2.0%),
prompted with the system prompt it was fine-tuned with ("You are a helpful assistant.")."""

from deepalign_jax import recipes
from deepalign_jax.data.formats import GSM8K_SYSTEM_PROMPT


def get_config():
  return recipes.finetuned_safety_eval("llama2", GSM8K_SYSTEM_PROMPT)
