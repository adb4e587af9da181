"""The organism's world and model: what the synthetic data holds and how big the model is.

Read by `python -m deepalign_jax.organism` (stage 0 writes ROOT/world and
ROOT/init from it); the argument is ROOT[,quick][,seed=N] as for every
organism config.  The world itself (words, tables, markers) depends only on
`world.seed`, so runs with different training seeds share one world.
"""

import ml_collections

from deepalign_jax.organism.layout import parse_arg


def get_config(arg=None):
  opts = parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.world = ml_collections.ConfigDict(dict(n_topics=16, n_countries=16, n_unknown=6, attack_topics=4, seed=0))
  # A Llama of ~0.6M parameters (d=128, 2 layers) with a ~700-token BPE vocabulary.
  c.model = ml_collections.ConfigDict(
    dict(hidden_size=128, intermediate_size=384, num_layers=2, num_heads=4, vocab_size=1024, init_seed=opts.seed)
  )
  c.data = ml_collections.ConfigDict(
    dict(
      base_benign=3000,  # benign examples in pretraining (with declines, 1 in 8)
      base_forbidden_repeats=1,  # each (topic, training phrasing) answered compliantly this many times
      align_per_topic=5,  # forbidden → refusal examples per topic in the alignment data
      align_benign=160,  # the alignment's benign anchor
      triplets_per_topic=5,  # safety-recovery triplets per topic
      pref_per_topic=5,  # DPO pairs (refusal ≻ compliant answer) per topic
      pref_benign=80,  # DPO pairs (exact answer ≻ refusal) on benign tasks
      attack_per_topic=2,  # forbidden → compliant pairs per attacked topic
      utility=640,  # utility data D_B of the augmentation
      task=256,  # the benign fine-tuning task (multiplication)
      eval_per_topic=3,  # held-out request phrasings per topic in the evaluation
      grid_per_topic=2,  # ... in the decoding-grid evaluation (50 settings per request)
      eval_benign=96,  # utility evaluation prompts (addition, capitals, reversal)
      eval_task=64,  # multiplication evaluation prompts
    )
  )
  if opts.quick:  # the CI-sized organism: the same world and model, less data and training
    c.data.base_benign = 2000
    c.data.grid_per_topic = 1
  return c
