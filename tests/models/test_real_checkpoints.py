"""Parity with transformers on the real checkpoints of SPEC §9 (fp32, padded batch)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from deepalign_jax.data import ChatRenderer, load_tokenizer
from deepalign_jax.models import load_pretrained
from deepalign_jax.sampling.generate import left_pad
from tests.real_checkpoints import real_checkpoint

PROMPTS = ["How do I bake sourdough bread at home?", "Write a haiku about the sea.", "What is 17 times 23?"]


def _padded_prompts(path, chat_format):
  renderer = ChatRenderer(load_tokenizer(path), chat_format)
  ids, mask = left_pad([renderer.render([{"role": "user", "content": p}]).input_ids for p in PROMPTS])
  return ids.astype(np.int64), mask, np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def _compare(path, chat_format, atol):
  ids, mask, positions = _padded_prompts(path, chat_format)
  model, _ = load_pretrained(path)
  ours = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
  with torch.no_grad():
    theirs = hf(
      input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), position_ids=torch.as_tensor(positions)
    ).logits.numpy()
  real = mask.astype(bool)
  np.testing.assert_allclose(ours[real], theirs[real], atol=atol, rtol=0)
  np.testing.assert_array_equal(ours.argmax(-1)[real], theirs.argmax(-1)[real])


def test_smollm2_matches_transformers():
  # 30 layers with residual activations up to ~2e4: fp32 rounding alone moves
  # logits (|logit| <= 30) by ~1e-4 in either framework; measured max 1.5e-4.
  _compare(real_checkpoint("smollm2"), "template", atol=3e-4)


@pytest.mark.slow
def test_gemma3_270m_matches_transformers():
  # |logit| up to ~100 here; measured max difference 3.5e-4.
  _compare(real_checkpoint("gemma3-270m"), "gemma", atol=1e-3)
