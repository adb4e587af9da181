"""Utility after SAMSum fine-tuning: ROUGE-1 on the test dialogues (SPEC §7, Table 4: initial 25.5, SFT 51.7,
constrained 50.1), with the reference's sampled decoding (T 0.9, top-p 0.6, up to 1024 new tokens).

--config.benchmark.path=samsum/test.json; the records carry the summarisation system prompt.
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuned_utility_eval("llama2", "samsum", "rouge1")
