"""Demo (CPU, offline): Fig. 3's dynamics on SmolLM2-135M-Instruct and the shipped synthetic triplets.

python -m deepalign_jax.analysis.ft_dynamics --config configs/analysis/demo_ft_dynamics.py --workdir workdirs/ft_demo
"""

from importlib import resources

from deepalign_jax.analysis.ft_dynamics import default_config


def get_config():
  c = default_config()
  c.model = "packaged:smollm2"
  c.chat_format = "template"
  c.data.path = str(resources.files("deepalign_jax") / "assets/demo/triplets.jsonl")
  c.data.format = "triplets"
  c.data.max_length = 128
  c.batch_size, c.micro_batch_size = 4, 4
  c.num_steps = 4
  c.optimizer.learning_rate = 1e-4
  c.probe.steps = (0, 2, 4)
  c.probe.examples = 2
  c.probe.num_positions = 10
  c.probe.position_batch = 5
  c.samples.count = 4
  c.samples.batch_size = 4
  c.samples.max_new_tokens = 16
  c.samples.num_positions = 10
  return c
