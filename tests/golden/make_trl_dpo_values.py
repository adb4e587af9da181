"""Writes trl_dpo_values.json: TRL's DPO loss and reward metrics on fixed log-probabilities.

The golden values `tests/test_losses.py` compares `deepalign_jax.losses.dpo_loss` (and the train step's
optional SFT term) with.  They come from TRL's own `DPOTrainer._compute_loss`, run on a stub model whose
fused LM head returns the given per-token log-probs, with the reference log-probs precomputed — so what
is compared is TRL's arithmetic on the same numbers.  Regenerate (TRL is not a dependency of the
project or its tests):

    python -m venv --system-site-packages /tmp/trl && /tmp/trl/bin/pip install trl==1.16.0
    /tmp/trl/bin/python tests/golden/make_trl_dpo_values.py
"""

from __future__ import annotations

import collections
import json
import types
from pathlib import Path

import numpy as np
import torch
import trl
from trl import DPOTrainer

PAIRS, LENGTH = 6, 12
CASES = [
  {"beta": 0.1, "loss_types": ["sigmoid"], "loss_weights": [1.0]},
  {"beta": 0.5, "loss_types": ["sigmoid"], "loss_weights": [1.0]},
  {"beta": 0.1, "loss_types": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
]


def inputs(seed: int = 0) -> dict:
  """Random per-token log-probs, completion masks of varied lengths, and reference sequence log-probs."""
  rng = np.random.default_rng(seed)
  rows = 2 * PAIRS  # TRL's layout: the chosen rows, then the rejected ones
  mask = np.zeros((rows, LENGTH), np.int64)
  for row in range(rows):
    start = int(rng.integers(2, 6))
    mask[row, start : start + int(rng.integers(2, LENGTH - start + 1))] = 1
  token_logps = -rng.gamma(2.0, 0.6, size=(rows, LENGTH - 1))
  ref = (token_logps + rng.normal(0, 0.4, size=token_logps.shape)) * mask[:, 1:]
  return {
    "completion_mask": mask.tolist(),
    "token_logps": token_logps.tolist(),
    "ref_chosen_logps": ref[:PAIRS].sum(1).tolist(),
    "ref_rejected_logps": ref[PAIRS:].sum(1).tolist(),
  }


def trl_values(data: dict, case: dict) -> dict:
  mask = torch.tensor(data["completion_mask"])
  shift = mask[:, 1:].float()
  log_probs = torch.tensor(data["token_logps"], dtype=torch.float64) * shift  # what TRL's fused head gives

  class Stub(torch.nn.Module):
    def forward(self, **kwargs):
      zeros = torch.zeros_like(log_probs)
      return types.SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

  trainer = object.__new__(DPOTrainer)
  model = Stub().train()
  accelerator = types.SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x)
  trainer.__dict__.update(
    model=model,
    accelerator=accelerator,
    aux_loss_enabled=False,
    ld_alpha=None,
    precompute_ref_logps=True,
    f_divergence_type="reverse_kl",
    loss_types=case["loss_types"],
    loss_weights=case["loss_weights"],
    beta=case["beta"],
    use_weighting=False,
    _metrics={"train": collections.defaultdict(list)},
    _total_train_tokens=0,
    _tp_size=1,
  )
  batch = {
    "input_ids": torch.ones_like(mask),
    "attention_mask": torch.ones_like(mask),
    "completion_mask": mask,
    "ref_chosen_logps": torch.tensor(data["ref_chosen_logps"], dtype=torch.float64),
    "ref_rejected_logps": torch.tensor(data["ref_rejected_logps"], dtype=torch.float64),
  }
  loss = trainer._compute_loss(model, batch, return_outputs=False)
  metrics = trainer._metrics["train"]
  return {
    "loss": float(loss),
    **{k: metrics[k][-1] for k in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")},
  }


def main() -> None:
  data = inputs()
  out = {"trl_version": trl.__version__, "pairs": PAIRS, "inputs": data, "cases": []}
  for case in CASES:
    out["cases"].append({**case, "trl": trl_values(data, case)})
  path = Path(__file__).with_name("trl_dpo_values.json")
  path.write_text(json.dumps(out, indent=1) + "\n")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
