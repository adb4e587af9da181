"""Fig. 1 (Llama): KL(Llama-2-7B-Chat ‖ Llama-2-7B) by position on Harmful HEx-PHI.

How the base model was prompted is not stated by the paper; both readings
are computed and plotted together: the base model given the same Llama-2
chat prompt (only the weights differ), and the base model given the
Alpaca-style base-model prompt.  No system prompt for the chat model.

python -m deepalign_jax.analysis.kl_depth --config configs/analysis/llama2_kl_depth.py --workdir W \\
    --config.models.aligned.path=/path/to/Llama-2-7b-chat-hf \\
    --config.models.base.path=/path/to/Llama-2-7b-hf \\
    --config.models.base_alpaca.path=/path/to/Llama-2-7b-hf \\
    --config.data.path=harmful_hexphi.jsonl
"""

from deepalign_jax.analysis.kl_depth import default_config, model_entry


def get_config():
  c = default_config()
  c.models.aligned = model_entry("", "llama2", dtype="bfloat16")
  c.models.base = model_entry("", "llama2", dtype="bfloat16")
  c.models.base_alpaca = model_entry("", "base", dtype="bfloat16")
  c.pairs = (("aligned", "base"), ("aligned", "base_alpaca"))
  c.response_from = "aligned"
  c.data.format = "harmful_hexphi"
  c.title = "Llama-2-7B-Chat vs Llama-2-7B on Harmful HEx-PHI"
  return c
