"""Stage 3b — preference alignment: DPO from the base model, a refusal preferred to the compliant answer.

python -m deepalign_jax.train --config configs/organism/align_dpo.py:ROOT[,quick][,seed=N] --workdir ROOT/align_dpo

How many chat models are aligned (RLHF / DPO): trained against whole
compliant answers, not only towards the refusal's first tokens.  The pairs
are the world's `preferences` file: on the forbidden requests' training
phrasings a refusal ≻ the procedure, and on benign tasks the exact answer ≻
a refusal (the helpfulness half, so refusing is not preferred everywhere).
π_ref is the base model (log-probs cached before the first step), β = 0.1,
plus the SFT term on the chosen responses (weight 1).  As for the SFT alignment, strength is the number of steps at a
constant learning rate and one run is the whole sweep (a checkpoint every
`checkpoint.every_steps`); the pipeline takes the weakest strength whose
k = 0 ASR is at most `sweep.max_asr` (the same criterion as the SFT sweep)
and asks whether that model is shallow and whether the constrained loss
protects it (the paper's Table 4 on a shallowly aligned chat model).  The
sweep runs five times as long as the lightest safe strength: chat models are
aligned well past the point where they first look safe, and the pipeline runs
the harmful attack (SFT and constrained) from every strength, which shows how
the constraint's hold grows as the reference makes the compliant opening less
likely.
"""

from deepalign_jax.organism.layout import Layout, alignment_sweep, parse_arg, train_config


def get_config(arg=None):
  opts = parse_arg(arg)
  layout = Layout(opts.root)
  c = train_config(opts)
  c.model = str(layout.model("base"))
  c.objective = "dpo"
  c.data.format = "preferences"
  c.data.path = str(layout.data("preferences"))
  # β as Zephyr's; plus the chosen (refusal or answer) responses' NLL, as many DPO recipes add: pure DPO
  # (seed 0, 3e-4) left ASR(k=0) at 10% after 32 steps, with every training pair already won — DPO alone
  # only has to make the refusal likelier than the procedure, not likely
  c.loss.dpo_beta, c.loss.sft_weight = 0.1, 1.0
  # 3e-4, three times the SFT alignment's: at 1e-4 the 96 steps of the first sweep left log π(first procedure
  # token) at -5.4 nats, no lower than SFT's, and the constrained attack got 100% (REPORT.md, "What was
  # changed after seeing results"); at 3e-4 it falls to about -10 nats by 480 steps (HOLD_RATES.md: the model
  # then still shallow by prefilling in 8 of 10 seeds, its KL spread into the procedure).
  c.optimizer.learning_rate = 3e-4
  c.optimizer.b1, c.optimizer.b2 = 0.9, 0.99
  c.train.batch_size, c.train.micro_batch_size = 32, 64  # 32 pairs a step, all 64 rows in one micro-batch
  steps = [48, 96] if opts.quick else [96, 192, 288, 384, 480]
  alignment_sweep(c, steps, every=steps[0])
  return c
