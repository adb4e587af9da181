"""The decoding-parameter exploit (SPEC §6): greedy + temperature / top-k / top-p sweeps, worst case per prompt.

--config.benchmark.path=... with --config.benchmark.format=malicious_instruct or hexphi.
"""

from deepalign_jax.evaluate import default_config


def get_config():
  c = default_config()
  c.system_prompt = ""
  c.benchmark.format = "malicious_instruct"
  c.attack.kind = "decoding_grid"
  c.decoding.max_new_tokens = 256
  c.decoding.batch_size = 50  # one prompt's whole grid per batch
  return c
