"""Demo (CPU, offline): one checkpoint, two prompt formats — how much the format alone moves the distribution.

SmolLM2-135M-Instruct reading its ChatML template vs the same weights reading
the Alpaca-style base prompt, on the shipped synthetic triplets (a fictional
guild's "sealed recipe" as the harmful answer).  A minute on 2 CPU cores.

python -m deepalign_jax.analysis.kl_depth --config configs/analysis/demo_kl_depth.py --workdir workdirs/kl_demo
"""

from importlib import resources

from deepalign_jax.analysis.kl_depth import default_config, model_entry


def get_config():
  c = default_config()
  c.models.chat = model_entry("packaged:smollm2", "template")
  c.models.alpaca = model_entry("packaged:smollm2", "base")
  c.pairs = (("chat", "alpaca"),)
  c.data.path = str(resources.files("deepalign_jax") / "assets/demo/triplets.jsonl")
  c.data.format = "triplets"
  c.vocab_chunk = 0  # 49k columns: the full logits of a batch fit easily
  c.title = "SmolLM2-135M-Instruct: ChatML vs Alpaca prompt"
  return c
