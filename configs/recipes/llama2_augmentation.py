"""Safety-recovery data augmentation of Llama-2-7B-Chat (SPEC §4, paper Eq. 2; Table 3: prefilling 5 / 10 /
20 / 40 tokens 42.1 / 51.5 / 56.1 / 57.0% → 2.8 / 2.9 / 3.4 / 4.5%).

data.safety_path: triplets JSONL (instruction, harmful, refusal; 256 in the paper);
data.utility_path: Alpaca JSON whose outputs were distilled from the initial model.
Each step: 16 safety + 64 utility rows, one token mean over them (the reference code's weighting); set
loss.alpha=0.2 for the paper's explicit α.  k ~ P_k is re-drawn every epoch: 0 with probability 1/2, else
Uniform{1..min(100, |h|)}.  Both kinds of example get Llama-2's default system prompt, as in the reference.
Evaluate with configs/eval/prefill_hexphi.py (--config.chat_format=llama2).
"""

from deepalign_jax import recipes


def get_config():
  return recipes.augmentation("llama2")
