"""Utility after GSM8k fine-tuning: exact match of the number after "####" (SPEC §7, Table 4: initial 25.5,
SFT 41.7, constrained 37.4), with the reference's sampled decoding.

--config.benchmark.path=gsm8k/test.json; the records carry the system prompt "You are a helpful assistant."
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuned_utility_eval("llama2", "gsm8k", "gsm8k")
