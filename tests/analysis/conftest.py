"""Tiny random models sharing the synthetic test tokenizer, saved as HF directories."""

import functools
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepalign_jax.models import config_from_hf, create_model, save_pretrained
from tests.data.tokenizers import sentencepiece_like_tokenizer

DEMO = Path(str(resources.files("deepalign_jax") / "assets/demo"))


def tiny_config(vocab_size: int, *, tie: bool = False):
  return config_from_hf(
    dict(
      model_type="llama",
      vocab_size=vocab_size,
      hidden_size=64,
      intermediate_size=128,
      num_hidden_layers=2,
      num_attention_heads=2,
      num_key_value_heads=1,
      head_dim=32,
      tie_word_embeddings=tie,
    )
  )


@pytest.fixture(scope="session")
def tokenizer():
  return sentencepiece_like_tokenizer()


@pytest.fixture(scope="session")
def model_dirs(tokenizer, tmp_path_factory):
  """{"a": seed 0, "b": seed 1} tiny Llamas with the synthetic tokenizer saved beside them."""
  root = tmp_path_factory.mktemp("analysis_models")
  cfg = tiny_config(len(tokenizer))
  return {
    name: save_pretrained(create_model(cfg, seed=seed), cfg, root / name, tokenizer=tokenizer)
    for name, seed in (("a", 0), ("b", 1))
  }


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, ids):
  model = nnx.merge(graphdef, state)
  return model(ids), model.hidden_states(ids)[0]


def forward(model, ids, width=32):
  """(logits [1, L, V], hidden [1, L, D]) of one sequence: the plain full-sequence path.

  Right-padded to one width (one compilation); causal attention leaves the first L positions as they are.
  """
  padded = jnp.asarray([list(ids) + [0] * (width - len(ids))])
  return [np.asarray(x)[:, : len(ids)] for x in _forward(*nnx.split(model), padded)]


def torch_model(model_dir):
  """The transformers (PyTorch) model of an HF directory: an implementation independent of ours."""
  import torch
  import transformers

  return transformers.AutoModelForCausalLM.from_pretrained(
    model_dir, dtype=torch.float32, attn_implementation="eager"
  ).eval()


def torch_logits(model, ids) -> np.ndarray:
  """fp32 logits [L, V] of one unpadded sequence."""
  import torch

  with torch.no_grad():
    return model(input_ids=torch.as_tensor([list(ids)])).logits[0].numpy()
