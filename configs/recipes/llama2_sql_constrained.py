"""Benign fine-tuning on SQL Create Context with the constrained objective (SPEC §7: ROUGE-1 98.5 at ASR 3.2%).

Every 5th training row, 3 epochs.  Evaluate with configs/eval/sql_utility.py and configs/eval/hexphi_sql.py.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuning("llama2", "constrained_sft", epochs=3, system_prompt=None)
  c.data.format = "sql_create_context"
  c.data.every_nth = 5
  return c
