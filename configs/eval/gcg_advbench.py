"""GCG on AdvBench (SPEC §6): universal suffix over 50 behaviours, 500 steps, batch 512, top-k 256.

--config.benchmark.path=harmful_behaviors.csv; the `target` column is the optimisation target.
"""

from deepalign_jax.evaluate import default_config


def get_config():
  c = default_config()
  c.system_prompt = ""
  c.benchmark.format = "advbench"
  c.attack.kind = "gcg"
  c.gcg.mode = "universal"
  c.gcg.max_behaviours = 50
  c.gcg.num_steps, c.gcg.num_candidates, c.gcg.topk = 500, 512, 256
  c.decoding.greedy = True
  return c
