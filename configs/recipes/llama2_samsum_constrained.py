"""Benign fine-tuning on SAMSum with the constrained objective (SPEC §7, Table 4: ROUGE-1 50.1 at ASR 3.2%).

Evaluate utility with configs/eval/samsum_utility.py and safety with configs/eval/hexphi_samsum.py.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuning("llama2", "constrained_sft", epochs=3, system_prompt=None)
  c.data.format = "samsum"
  return c
