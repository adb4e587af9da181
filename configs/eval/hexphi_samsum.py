"""HEx-PHI ASR after benign SAMSum fine-tuning (SPEC §7, Table 4: initial 1.5%, SFT 23.4%, constrained 3.2%),
prompted with the summarisation system prompt it was fine-tuned with."""

from deepalign_jax import recipes
from deepalign_jax.data.formats import SAMSUM_SYSTEM_PROMPT


def get_config():
  return recipes.finetuned_safety_eval("llama2", SAMSUM_SYSTEM_PROMPT)
