"""Tiny random transformers models of every family, saved as HF directories.

Shapes are small but realistic (head_dim 64, hidden 256, GQA, sequences
longer than the sliding window), and every weight — norms included — is
random, so a (1 + w) vs w mix-up or a missing soft-cap shows in the logits.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

VOCAB = 512

COMMON = dict(
  vocab_size=VOCAB,
  hidden_size=256,
  intermediate_size=512,
  num_hidden_layers=4,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=64,
  max_position_embeddings=512,
)

FAMILY_CONFIGS = {
  "llama": lambda: transformers.LlamaConfig(
    **COMMON,
    tie_word_embeddings=False,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
  ),
  # Llama 3.1-style RoPE scaling whose original context is short enough to
  # bend frequencies inside the test sequence.
  "llama3": lambda: transformers.LlamaConfig(
    **COMMON,
    tie_word_embeddings=True,
    rope_parameters={
      "rope_type": "llama3",
      "rope_theta": 500000.0,
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 32,
    },
  ),
  "gemma": lambda: transformers.GemmaConfig(**COMMON, hidden_act="gelu_pytorch_tanh"),
  "gemma2": lambda: transformers.Gemma2Config(
    **COMMON, query_pre_attn_scalar=48, sliding_window=8, attn_logit_softcapping=2.0, final_logit_softcapping=3.0
  ),
  "gemma3": lambda: transformers.Gemma3TextConfig(
    **{**COMMON, "num_hidden_layers": 6},
    query_pre_attn_scalar=64,
    sliding_window=8,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
    rope_parameters={
      "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 4.0},
      "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    },
  ),
}


def random_hf_model(family: str, seed: int = 0):
  """A transformers model of `family` with every parameter random."""
  torch.manual_seed(seed)
  config = FAMILY_CONFIGS[family]()
  config._attn_implementation = "eager"
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(0.5 + 0.3 * torch.randn_like(p))
      else:
        p.copy_(0.06 * torch.randn_like(p))
  return model.eval()


def left_padded_batch(lengths, seq_len, seed=0, vocab=VOCAB):
  """(input_ids, attention_mask, position_ids) numpy arrays with left padding."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, size=(len(lengths), seq_len))
  mask = np.zeros_like(ids)
  for row, n in enumerate(lengths):
    mask[row, seq_len - n :] = 1
  ids = np.where(mask == 1, ids, 0)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return ids, mask, positions


def hf_logits(model, ids, mask, positions) -> np.ndarray:
  with torch.no_grad():
    out = model(
      input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), position_ids=torch.as_tensor(positions)
    )
  return out.logits.float().numpy()
