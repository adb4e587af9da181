"""Benign fine-tuning on SAMSum with plain SFT (SPEC §7, Table 4: ROUGE-1 25.5 → 51.7, ASR 1.5% → 23.4%).

3 epochs; the records carry the summarisation system prompt.  Evaluate utility with
configs/eval/samsum_utility.py and safety with configs/eval/hexphi_samsum.py.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuning("llama2", "sft", epochs=3, system_prompt=None)
  c.data.format = "samsum"
  return c
