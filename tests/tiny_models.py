"""A tiny chat model for end-to-end tests, and config overrides by dotted key."""

from deepalign_jax.data import load_tokenizer
from deepalign_jax.models import config_from_hf, create_model, save_pretrained
from tests.real_checkpoints import real_tokenizer


def tiny_chat_model(path, seed=0):
  """A 2-layer Llama (hidden 64) with SmolLM2's tokenizer (ChatML), random weights, saved at `path`."""
  tokenizer = load_tokenizer(real_tokenizer("smollm2"))
  cfg = config_from_hf(dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=64,
                            intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=32, tie_word_embeddings=True))
  return save_pretrained(create_model(cfg, seed=seed), cfg, path, tokenizer=tokenizer)


def override(config, overrides):
  """Sets `{"a.b": value}` entries on a ConfigDict; returns it."""
  for key, value in overrides.items():
    target = config
    *parents, last = key.split(".")
    for parent in parents:
      target = target[parent]
    target[last] = value
  return config
