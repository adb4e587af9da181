"""Stage 5 — fine-tuning attacks on the aligned model: plain SFT vs the token-wise constrained loss (Eq. 3).

python -m deepalign_jax.train --config configs/organism/finetune.py:ROOT,run=NAME[,quick][,seed=N] \\
    --workdir ROOT/finetune/NAME

NAME is [deep_|dpo_]DATA_OBJECTIVE:
  harmful_sft / harmful_constrained   8 forbidden → compliant pairs (4 topics × 2 phrasings),
                                       the paper's "harmful examples" attack;
  benign_sft / benign_constrained     a new benign skill (one-digit multiplication), the
                                       analogue of the paper's GSM8k fine-tuning;
  deep_harmful_sft / deep_harmful_constrained   the harmful attack on the deep (augmented) model;
  dpo_harmful_sft / dpo_harmful_constrained     ... on the DPO-aligned model;
  dpo_sweep_S_harmful_sft / dpo_sweep_S_harmful_constrained   ... on the DPO sweep's strength S
                                       (Table 4 by alignment strength).
The paper's settings scaled to this model: AdamW β1 = 0.5, β2 = 0.999, no
weight decay, gradient clip 1, warm-up then linear decay; β schedule
β_1 = 0.5, β_2..5 = 2, β_t = 0.1 after (β = 0.1, first-token factor 5, early
factor 20, early length 5).  The paper's harmful attack is 25 epochs of 100
examples at batch 64, about 40 steps: here 48 steps (24 in quick mode) of
all 8 examples, which converges within about 10; the benign task gets the
same steps over its 256 examples (6 epochs; the paper's 3 epochs of GSM8k
are far more examples).  The paper's learning rate 2e-5 is a tenth of
Llama-2's pretraining peak (3e-4): here a tenth of the base model's 3e-3.
"""

from deepalign_jax.organism.layout import FINETUNES, Layout, parse_arg, parse_sweep_attack, train_config


def get_config(arg=None):
  opts = parse_arg(arg)
  layout = Layout(opts.root)
  name = opts.require("run")
  sweep = parse_sweep_attack(name)
  if sweep is not None:
    source, rest = f"dpo_sweep_{sweep[0]}", sweep[1]
  elif name in FINETUNES:
    source, rest = next(
      ((m, name[len(m) + 1 :]) for m in ("deep", "dpo") if name.startswith(m + "_")), ("aligned", name)
    )
  else:
    raise ValueError(f"run={name!r}: expected one of {FINETUNES} or dpo_sweep_STEPS_harmful_{{sft,constrained}}")
  data, objective = rest.split("_")
  c = train_config(opts)
  c.model = str(layout.model(source))
  c.objective = "constrained_sft" if objective == "constrained" else "sft"
  c.loss.beta, c.loss.first_token_factor, c.loss.early_factor, c.loss.early_length = 0.1, 5.0, 20.0, 5
  c.optimizer.learning_rate = 3e-4
  c.optimizer.b1, c.optimizer.b2 = 0.5, 0.999
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip = 1.0
  c.optimizer.decay = "linear"
  c.data.path = str(layout.data("attack" if data == "harmful" else "task"))
  # All 8 harmful examples in every step; the benign task 32 of its 256 (8 in quick mode, where
  # the task is not learned and only the pipeline is exercised: one compiled step for all runs).
  c.train.batch_size = c.train.micro_batch_size = 8 if data == "harmful" or opts.quick else 32
  c.train.num_steps = 24 if opts.quick else 48
  c.optimizer.warmup_steps = 5
  return c
