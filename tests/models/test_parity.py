"""Logit parity with transformers' PyTorch models on tiny random configs."""

import numpy as np
import pytest
import torch
import transformers

import jax.numpy as jnp

from deepalign_jax.models import load_pretrained, save_pretrained
from tests.models.hf_fixtures import FAMILY_CONFIGS, hf_logits, left_padded_batch, random_hf_model

FAMILIES = sorted(FAMILY_CONFIGS)
# fp32 tolerance; the largest difference measured is 1.9e-5 (Gemma 3, logits up to ~8).
FP32_ATOL = 5e-5
SEQ = 24  # longer than the Gemma 2/3 sliding window of 8
LENGTHS = (24, 17, 9)


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request, tmp_path_factory):
  hf = random_hf_model(request.param)
  path = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(path)
  return request.param, hf, path


def test_logits_match_transformers(family_dir):
  family, hf, path = family_dir
  model, cfg = load_pretrained(path)
  ids, mask, positions = left_padded_batch(LENGTHS, SEQ)
  ours = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
  theirs = hf_logits(hf, ids, mask, positions)
  real = mask.astype(bool)
  assert np.abs(theirs[real]).max() > 1.0  # the comparison is not between near-zero logits
  np.testing.assert_allclose(ours[real], theirs[real], atol=FP32_ATOL, rtol=0)
  # Padding does not leak into real tokens: the unpadded row alone gives the same logits.
  short = LENGTHS[-1]
  alone = np.asarray(model(jnp.asarray(ids[-1:, -short:])))
  np.testing.assert_allclose(alone[0], ours[-1, -short:], atol=FP32_ATOL, rtol=0)


def test_save_pretrained_round_trip(family_dir, tmp_path):
  family, hf, path = family_dir
  model, cfg = load_pretrained(path)
  out = save_pretrained(model, cfg, tmp_path / "export")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                               attn_implementation="eager")
  ids, mask, positions = left_padded_batch(LENGTHS, SEQ, seed=1)
  np.testing.assert_array_equal(hf_logits(reloaded, ids, mask, positions),
                                hf_logits(hf, ids, mask, positions))
  ours_again, _ = load_pretrained(out)
  np.testing.assert_array_equal(np.asarray(ours_again(jnp.asarray(ids), attention_mask=jnp.asarray(mask))),
                                np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))))


def test_bf16_close_to_fp32(family_dir):
  family, _, path = family_dir
  model32, _ = load_pretrained(path)
  model16, _ = load_pretrained(path, dtype=jnp.bfloat16)
  ids, mask, _ = left_padded_batch(LENGTHS, SEQ)
  logits32 = np.asarray(model32(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
  logits16 = model16(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  assert logits16.dtype == jnp.float32  # logits are upcast for losses
  logits16 = np.asarray(logits16)
  real = mask.astype(bool)
  scale = np.abs(logits32[real]).max()
  # bf16 has 8 mantissa bits: errors of a few percent of the logit scale.
  assert np.abs(logits16[real] - logits32[real]).max() <= 0.05 * scale
  # and the ranking of the top token mostly survives
  agree = (logits16.argmax(-1) == logits32.argmax(-1))[real].mean()
  assert agree >= 0.9
