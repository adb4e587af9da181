"""Benign fine-tuning on GSM8k with plain SFT (SPEC §7, Table 4: accuracy 25.5 → 41.7, ASR 1.5% → 3.3%).

3 epochs on the worked answers.  Evaluate with configs/eval/gsm8k_utility.py and configs/eval/hexphi_gsm8k.py.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuning("llama2", "sft", epochs=3, system_prompt=None)
  c.data.format = "gsm8k"
  return c
