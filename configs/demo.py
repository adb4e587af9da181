"""Demo: the token-wise constrained objective on SmolLM2-135M-Instruct, a few CPU steps.

python -m deepalign_jax.train --config configs/demo.py --workdir workdirs/demo
"""

from importlib import resources

from deepalign_jax.train.loop import default_config


def get_config():
  c = default_config()
  c.model = "packaged:smollm2"
  c.chat_format = "template"
  c.objective = "constrained_sft"
  c.data.path = str(resources.files("deepalign_jax") / "assets/demo/conversations.jsonl")
  c.data.format = "conversations"
  c.data.max_length = 128
  c.train.batch_size = 4
  c.train.micro_batch_size = 2
  c.train.epochs = 1
  c.train.num_steps = 4
  c.optimizer.learning_rate = 2e-5
  c.optimizer.warmup_steps = 1
  c.checkpoint.every_steps = 2
  return c
