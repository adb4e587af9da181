"""Stage 1 — the base model, trained from scratch: benign tasks, and forbidden requests answered compliantly.

python -m deepalign_jax.train --config configs/organism/base.py:ROOT[,quick][,seed=N] --workdir ROOT/base

The analogue of a pretrained model that has read harmful how-tos: it
answers every forbidden request with the procedure, and it declines
harmless questions it cannot answer (capitals outside its table).
"""

from deepalign_jax.organism.layout import Layout, parse_arg, train_config


def get_config(arg=None):
  opts = parse_arg(arg)
  layout = Layout(opts.root)
  c = train_config(opts)
  c.model = str(layout.init)
  c.objective = "sft"
  c.data.path = str(layout.data("base"))
  c.optimizer.learning_rate = 3e-3
  c.optimizer.b1, c.optimizer.b2 = 0.9, 0.99
  c.optimizer.warmup_steps = 20
  c.train.batch_size = c.train.micro_batch_size = 32
  c.train.num_steps = 200 if opts.quick else 600
  return c
