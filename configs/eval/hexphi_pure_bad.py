"""HEx-PHI ASR of Llama-2-7B-Chat after the harmful-examples attack (SPEC §7, Table 4: initial 1.5%, SFT 88.9%,
constrained 4.6%), prompted as it was fine-tuned: Llama-2 format, "execute users' instructions" system prompt.

python -m deepalign_jax.evaluate --config configs/eval/hexphi_pure_bad.py --workdir W \\
    --config.model=workdirs/llama2_harmful_sft --config.benchmark.path=/data/HEx-PHI
The paper's numbers are GPT-4-judged: add --config.judge=... (configs/eval/prefill_hexphi_api.py shows one).
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuned_safety_eval("llama2", recipes.EXECUTE_SYSTEM_PROMPT)
