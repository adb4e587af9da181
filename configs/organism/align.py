"""Stage 2 — shallow alignment: SFT from the base model on forbidden → refusal, with a benign anchor.

python -m deepalign_jax.train --config configs/organism/align.py:ROOT[,quick][,seed=N] --workdir ROOT/align

Alignment strength is the number of optimizer steps at a constant learning
rate, so one run is the whole sweep: a checkpoint every `checkpoint.every_steps`
steps is the model aligned with that strength.  The pipeline measures the
strengths in `sweep.steps` and takes as *the* aligned model the weakest one
whose ASR without an attack (k = 0, marker judge) is at most
`sweep.max_asr` — the lightest alignment that looks safe, which is what
SFT-style alignment is tuned to.  If none qualifies, the strongest is taken and
the report says so.
"""

from deepalign_jax.organism.layout import Layout, alignment_sweep, parse_arg, train_config


def get_config(arg=None):
  opts = parse_arg(arg)
  layout = Layout(opts.root)
  c = train_config(opts)
  c.model = str(layout.model("base"))
  c.objective = "sft"
  c.data.path = str(layout.data("align"))
  # A thirtieth of the base model's peak: at 3e-4 and 2e-4 the aligned model's KL to the base spread into
  # the procedure (REPORT.md, "What was changed after seeing results").
  c.optimizer.learning_rate = 1e-4
  c.optimizer.b1, c.optimizer.b2 = 0.9, 0.99
  c.train.batch_size = c.train.micro_batch_size = 32
  steps = [48, 96] if opts.quick else [16, 32, 64, 96]
  alignment_sweep(c, steps, every=16)
  return c
