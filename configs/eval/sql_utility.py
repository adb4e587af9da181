"""Utility after SQL Create Context fine-tuning: ROUGE-1 on every 10th test row, as the reference
(SPEC §7, Table 4: initial 14.9, SFT 99.1, constrained 98.5), with its sampled decoding.

--config.benchmark.path=sql_create_context/test.json; the records carry the SQL system prompt.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuned_utility_eval("llama2", "sql_create_context", "rouge1")
  c.benchmark.every_nth = 10
  return c
