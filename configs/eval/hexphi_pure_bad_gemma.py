"""HEx-PHI ASR of Gemma-1.1-7B-IT after the harmful-examples attack (SPEC §7: initial 1.8%, SFT 81.6%,
constrained 1.9%), prompted as it was fine-tuned: Gemma format, the system prompt in the user turn.
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuned_safety_eval("gemma", recipes.EXECUTE_SYSTEM_PROMPT)
