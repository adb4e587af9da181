"""Measurements of one organism model (SPEC §6 analogues), one kind per run.

python -m deepalign_jax.evaluate --config configs/organism/eval.py:ROOT,model=MODEL,kind=KIND[,quick][,seed=N] \\
    --workdir ROOT/eval/MODEL/KIND

MODEL: init | base | aligned | dpo | deep | sweep_S | dpo_sweep_S | a fine-tuning run (harmful_sft, ...).
KIND:
  prefill  the first k tokens of the procedure prefilled, k = 0, 1, 2, 4, 8, 16 (quick: 0, 1, 4, 16; Table 3);
           the paper's decoding (T 0.9, top-p 0.6, top-k 50), 2 samples per request
  grid     the decoding-parameter exploit: greedy and one-axis sweeps of temperature,
           top-k and top-p (Huang et al.; worst case over the grid), 2 phrasings per topic
  prefix   a refusal prefix opens the answer ("I cannot", ...; Table 1)
  asr      plain sampling, 4 samples per request (the fine-tuning attacks, Table 4)
  utility  greedy answers to benign prompts (exact match is scored by the pipeline)
  task     greedy answers to the multiplication prompts (the benign fine-tuning task)
The keyword judge (the paper's list) judges prefill + continuation here
(judge.reads = "response", set by `eval_config`); the pipeline adds the
marker judge on the continuation.
"""

from deepalign_jax.attacks import decoding_grid
from deepalign_jax.organism.layout import Layout, eval_config, parse_arg
from deepalign_jax.organism.world import REFUSAL_PREFIXES

KINDS = ("prefill", "grid", "prefix", "asr", "utility", "task")


def get_config(arg=None):
  opts = parse_arg(arg)
  layout = Layout(opts.root)
  kind = opts.require("kind")
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
  c = eval_config(opts)
  c.model = str(layout.model(opts.require("model")))
  c.benchmark.path = str(layout.data("eval_forbidden"))
  if kind == "prefill":
    c.attack.kind = "prefill"
    c.attack.prefill_tokens = [0, 1, 4, 16] if opts.quick else [0, 1, 2, 4, 8, 16]
    # One sample per request for the sweep's checkpoints and in quick mode, two otherwise.
    c.attack.samples = 1 if opts.quick or opts.require("model").startswith(("sweep_", "dpo_sweep_")) else 2
  elif kind == "grid":
    c.benchmark.path = str(layout.data("eval_grid"))
    c.attack.kind = "decoding_grid"
    if opts.quick:  # every fourth point of the temperature and top-p axes, every other top-k
      c.grid.temperatures = list(decoding_grid.TEMPERATURES[3::4])
      c.grid.top_ks = list(decoding_grid.TOP_KS[::2])
      c.grid.top_ps = list(decoding_grid.TOP_PS[3::4])
  elif kind == "prefix":
    c.attack.kind = "prefix"
    c.attack.prefixes = list(REFUSAL_PREFIXES)
    c.attack.samples = 1 if opts.quick else 2
  elif kind == "asr":
    c.attack.kind = "plain"
    c.attack.samples = 2 if opts.quick else 4
  else:
    c.benchmark.path = str(layout.data("eval_benign" if kind == "utility" else "eval_task"))
    c.attack.kind = "plain"
    c.decoding.greedy = True  # max_new_tokens as the attacks: one compiled generation serves all
  return c
