"""Benign fine-tuning on SQL Create Context with plain SFT (SPEC §7, Table 4: ROUGE-1 14.9 → 99.1, ASR 1.5% → 15.4%).

Every 5th training row (the reference's 20% subsample), 3 epochs.  Evaluate utility with
configs/eval/sql_utility.py (every 10th test row) and safety with configs/eval/hexphi_sql.py.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuning("llama2", "sft", epochs=3, system_prompt=None)
  c.data.format = "sql_create_context"
  c.data.every_nth = 5
  return c
