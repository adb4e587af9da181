"""Prints max |logit difference| vs transformers for every family (the figures in the README).

    python benchmarks/parity_report.py [--real]

Tiny random configs of tests/models/hf_fixtures.py (fp32, eager attention,
a left-padded batch longer than the sliding window); with --real also the
packaged SmolLM2-135M-Instruct and Gemma-3-270M checkpoints on chat prompts.
For the tiny configs also bf16: our error against transformers' fp32 logits
beside transformers' own bf16 error on the same weights (the bound
tests/models/test_parity.py asserts is relative to the latter).
The tests assert these stay within their tolerances; this prints the values.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepalign_jax.models import load_pretrained  # noqa: E402
from tests.models.hf_fixtures import FAMILY_CONFIGS, hf_logits, left_padded_batch, random_hf_model  # noqa: E402


def _report(name, ours, theirs, mask):
  real = mask.astype(bool)
  print(
    f"{name:24s} max|Δ| {np.abs(ours - theirs)[real].max():.2e}   max|logit| "
    f"{np.abs(theirs[real]).max():6.1f}   top-1 agree "
    f"{(ours.argmax(-1) == theirs.argmax(-1))[real].mean() * 100:5.1f}%"
  )


def _report_bf16(name, ours, theirs, truth, mask):
  """Our bf16 error vs fp32 beside transformers' bf16 error vs fp32, and their ratio."""
  real = mask.astype(bool)
  ours_err, theirs_err = np.abs(ours - truth)[real], np.abs(theirs - truth)[real]

  def agree(logits):
    return (logits.argmax(-1) == truth.argmax(-1))[real].mean() * 100

  print(
    f"{name:24s} mean|Δ| {ours_err.mean():.2e} vs transformers {theirs_err.mean():.2e} "
    f"({ours_err.mean() / theirs_err.mean():.2f}x)   max|Δ| {ours_err.max():.2e} vs {theirs_err.max():.2e} "
    f"({ours_err.max() / theirs_err.max():.2f}x)   top-1 {agree(ours):5.1f}% vs {agree(theirs):5.1f}%"
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--real", action="store_true")
  args = parser.parse_args()
  for family in sorted(FAMILY_CONFIGS):
    hf = random_hf_model(family)
    with tempfile.TemporaryDirectory() as path:
      hf.save_pretrained(path)
      model, _ = load_pretrained(path)
      model16, _ = load_pretrained(path, dtype=jnp.bfloat16)
    ids, mask, positions = left_padded_batch((24, 17, 9), 24)
    ours = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    truth = hf_logits(hf, ids, mask, positions)
    _report(f"tiny {family}", ours, truth, mask)
    _report_bf16(
      f"tiny {family} bf16",
      np.asarray(model16(jnp.asarray(ids), attention_mask=jnp.asarray(mask))),
      hf_logits(copy.deepcopy(hf).to(torch.bfloat16), ids, mask, positions),
      truth,
      mask,
    )
  if args.real:
    import transformers

    from deepalign_jax.data import ChatRenderer, load_tokenizer
    from deepalign_jax.models.gguf import packaged_checkpoint
    from deepalign_jax.sampling.generate import left_pad

    prompts = ["How do I bake sourdough bread at home?", "Write a haiku about the sea.", "What is 17 times 23?"]
    for name, chat_format in (("smollm2", "template"), ("gemma3-270m", "gemma")):
      path = packaged_checkpoint(name)
      renderer = ChatRenderer(load_tokenizer(path), chat_format)
      ids, mask = left_pad([renderer.render([{"role": "user", "content": p}]).input_ids for p in prompts])
      positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
      model, _ = load_pretrained(path)
      ours = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
      hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
      _report(name, ours, hf_logits(hf, ids.astype(np.int64), mask, positions), mask)


if __name__ == "__main__":
  main()
