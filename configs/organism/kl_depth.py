"""KL by position on compliant answers (paper Fig. 1 and Fig. 4), base vs aligned vs deep.

python -m deepalign_jax.analysis.kl_depth --config configs/organism/kl_depth.py:ROOT[,quick][,seed=N] \\
    --workdir ROOT/kl

Teacher-forced on the world's compliant procedures for the held-out request
phrasings (every topic), full-vocabulary KL at every response position.  All
models read the same chat template (the base model is a chat model of the
same template here: it never saw any other format).  With `sweep=S1-S2-...`
the models are the alignment sweep's checkpoints instead, each against the
base model (how deep alignment goes as its strength grows); `stage=align_dpo`
takes the DPO alignment's sweep.  The main run has KL(aligned ‖ base),
KL(deep ‖ base) and KL(dpo ‖ base).
"""

from deepalign_jax.analysis.kl_depth import default_config, model_entry
from deepalign_jax.organism.layout import SWEEPS, Layout, parse_arg


def get_config(arg=None):
  opts = parse_arg(arg)
  layout = Layout(opts.root)
  c = default_config()
  c.models.base = model_entry(str(layout.model("base")), "template")
  sweep = opts.get("sweep")
  if sweep:
    prefix = SWEEPS[opts.get("stage", "align")][0]
    names = [f"{prefix}{s}" for s in sweep.split("-")]
    for name in names:
      c.models[name] = model_entry(str(layout.model(name)), "template")
    c.pairs = tuple((name, "base") for name in names)
    c.title = "Organism: KL(aligned with s steps ‖ base) by position"
  else:
    c.models.aligned = model_entry(str(layout.model("aligned")), "template")
    c.models.deep = model_entry(str(layout.model("deep")), "template")
    c.models.dpo = model_entry(str(layout.model("dpo")), "template")
    c.pairs = (("aligned", "base"), ("deep", "base"), ("dpo", "base"))
    c.title = "Organism: per-token KL on compliant answers"
  c.response_from = "base"
  c.data.path = str(layout.data("eval_forbidden"))
  c.data.format = "prompt_response"
  c.num_positions = 30  # every procedure is 30 tokens before its end-of-turn
  c.batch_size = 32
  c.vocab_chunk = 0  # ~700 columns: full logits
  c.plot = False  # the pipeline's REPORT.md draws the figure (kl_by_position.png in ROOT)
  return c
