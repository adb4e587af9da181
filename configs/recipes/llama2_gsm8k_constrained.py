"""Benign fine-tuning on GSM8k with the constrained objective (SPEC §7, Table 4: accuracy 37.4 at ASR 2.0%).

Evaluate with configs/eval/gsm8k_utility.py and configs/eval/hexphi_gsm8k.py.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuning("llama2", "constrained_sft", epochs=3, system_prompt=None)
  c.data.format = "gsm8k"
  return c
