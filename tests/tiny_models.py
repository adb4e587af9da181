"""Tiny chat models for end-to-end tests, one per chat format family, and config overrides by dotted key."""

from importlib import resources
from pathlib import Path

from deepalign_jax.data import load_tokenizer
from deepalign_jax.models import config_from_hf, create_model, save_pretrained
from tests.real_checkpoints import real_tokenizer

_SHAPE = dict(
  hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32
)


def tiny_chat_model(path, seed=0):
  """A 2-layer Llama (hidden 64) with SmolLM2's tokenizer (ChatML), random weights, saved at `path`."""
  tokenizer = load_tokenizer(real_tokenizer("smollm2"))
  cfg = config_from_hf(dict(model_type="llama", vocab_size=len(tokenizer), tie_word_embeddings=True, **_SHAPE))
  return save_pretrained(create_model(cfg, seed=seed), cfg, path, tokenizer=tokenizer)


def _demo_texts() -> list[str]:
  """The shipped demo data's text, so that the test tokenizers know its words."""
  folder = resources.files("deepalign_jax") / "assets/demo"
  files = [p for p in Path(str(folder)).rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".csv", ".txt")]
  return [p.read_text(encoding="utf-8") for p in sorted(files)]


def tiny_family_model(path, family: str, seed=0):
  """A tiny random model whose tokenizer has the tokens `family`'s chat format needs, saved at `path`.

  family: 'llama2' (a Llama with a SentencePiece-like tokenizer: <s>, </s>, no chat template, so 'auto'
  renders the base format), 'gemma' (a Gemma with <bos>, <start_of_turn>, <end_of_turn>, <eos>) or
  'template' (`tiny_chat_model`: SmolLM2's ChatML template).
  """
  from tests.data.tokenizers import sentencepiece_like_tokenizer

  if family == "template":
    return tiny_chat_model(path, seed)
  if family not in ("llama2", "gemma"):
    raise ValueError(f"no tiny model for family {family!r}")
  tokenizer = sentencepiece_like_tokenizer(800, gemma=family == "gemma", extra_texts=_demo_texts())
  if family == "gemma":
    hf = dict(model_type="gemma", vocab_size=len(tokenizer), hidden_act="gelu_pytorch_tanh", **_SHAPE)
  else:
    hf = dict(model_type="llama", vocab_size=len(tokenizer), tie_word_embeddings=False, **_SHAPE)
  cfg = config_from_hf(hf)
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
