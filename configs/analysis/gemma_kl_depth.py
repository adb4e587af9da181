"""Fig. 1 (Gemma): KL(Gemma-1.1-7B-IT ‖ Gemma-7B) by position on Harmful HEx-PHI.

The base model reads the same Gemma chat prompt (only the weights differ),
and, as a second curve, the Alpaca-style base-model prompt.  Gemma's 256k
vocabulary is scanned 8192 columns at a time.

python -m deepalign_jax.analysis.kl_depth --config configs/analysis/gemma_kl_depth.py --workdir W \\
    --config.models.aligned.path=/path/to/gemma-1.1-7b-it --config.models.base.path=/path/to/gemma-7b \\
    --config.models.base_alpaca.path=/path/to/gemma-7b --config.data.path=harmful_hexphi.jsonl
"""

from deepalign_jax.analysis.kl_depth import default_config, model_entry


def get_config():
  c = default_config()
  c.models.aligned = model_entry("", "gemma", dtype="bfloat16")
  c.models.base = model_entry("", "gemma", dtype="bfloat16")
  c.models.base_alpaca = model_entry("", "base", dtype="bfloat16")
  c.pairs = (("aligned", "base"), ("aligned", "base_alpaca"))
  c.response_from = "aligned"
  c.data.format = "harmful_hexphi"
  c.vocab_chunk = 8192
  c.title = "Gemma-7B-IT vs Gemma-7B on Harmful HEx-PHI"
  return c
