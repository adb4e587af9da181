"""Utility after benign fine-tuning: ROUGE-1 on SAMSum test dialogues (SPEC §6), greedy decoding."""

from deepalign_jax.evaluate import default_config


def get_config():
  c = default_config()
  c.benchmark.format = "samsum"
  c.attack.kind = "plain"
  c.decoding.greedy = True
  c.decoding.max_new_tokens = 128
  c.utility.metric = "rouge1"
  c.plot = False
  return c
