"""Preference alignment of a Llama-2 model with DPO on (prompt, chosen, rejected) pairs.

Not one of the paper's experiments: the way many chat models are aligned (RLHF / DPO against whole
responses), offered to study whether such alignment is deeper than SFT's and whether the constrained loss
then protects it (docs/organism). data.path: preference pairs JSONL {prompt, chosen, rejected, system?}
(data.format=preferences), or safety-recovery triplets (data.format=triplets: the refusal is preferred).

python -m deepalign_jax.train --config configs/recipes/llama2_dpo.py --workdir W \\
    --config.model=/path/to/Llama-2-7b-hf --config.data.path=pairs.jsonl
"""

from deepalign_jax import recipes


def get_config():
  return recipes.preference_alignment("llama2")
