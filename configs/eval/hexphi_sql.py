"""HEx-PHI ASR after benign SQL Create Context fine-tuning (SPEC §7, Table 4: initial 1.5%, SFT 15.4%,
constrained 3.2%), prompted with the SQL system prompt it was fine-tuned with."""

from deepalign_jax import recipes
from deepalign_jax.data.formats import SQL_SYSTEM_PROMPT


def get_config():
  return recipes.finetuned_safety_eval("llama2", SQL_SYSTEM_PROMPT)
