"""Stage 4 — deep alignment: the safety-recovery augmentation (paper Eq. 2) from the aligned model.

python -m deepalign_jax.train --config configs/organism/deep.py:ROOT[,quick][,seed=N] --workdir ROOT/deep

Triplets (forbidden request, compliant procedure, refusal) become
prompt + the first k procedure tokens + refusal, loss on the refusal only;
k = 0 with probability 1/2, else uniform up to the whole procedure
(C = 100 exceeds every procedure's 30 tokens, as the paper's C = 100 covers
most of its answers).  Utility data D_B: benign examples with the world's
exact answers (the paper distils them from the aligned model; here the
aligned model answers benign prompts with those answers already, up to its
accuracy).  α = 0.2 as in the paper, each step 16 safety + 16 utility rows;
10 epochs over D_H, no warm-up, as the paper.
"""

from deepalign_jax.organism.layout import Layout, parse_arg, train_config


def get_config(arg=None):
  opts = parse_arg(arg)
  layout = Layout(opts.root)
  c = train_config(opts)
  c.model = str(layout.model("aligned"))
  c.objective = "augmented"
  c.data.safety_path = str(layout.data("triplets"))
  c.data.utility_path = str(layout.data("utility"))
  c.data.utility_format = "conversations"
  c.data.safety_per_step, c.data.utility_per_step = 16, 16
  c.data.recovery_C, c.data.recovery_p_zero = 100, 0.5
  c.data.max_length = 56  # prompt (≤ 12) + the longest prefix (29) + a refusal (≤ 11): nothing truncated
  c.loss.alpha = 0.2
  c.optimizer.learning_rate = 3e-4
  c.optimizer.b1, c.optimizer.b2 = 0.9, 0.999
  c.optimizer.warmup_steps = 0
  c.train.batch_size = c.train.micro_batch_size = 32
  c.train.epochs = 6 if opts.quick else 10
  return c
