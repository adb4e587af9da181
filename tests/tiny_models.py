"""Tiny chat models for end-to-end tests, one per chat format family, and config overrides by dotted key."""

from importlib import resources
from pathlib import Path

from deepalign_jax.data import load_tokenizer
from deepalign_jax.models import config_from_hf, create_model, save_pretrained
from tests.real_checkpoints import real_tokenizer

_SHAPE = dict(
  hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32
)


def tiny_chat_model(path, seed=0, **shape):
  """A 2-layer Llama (hidden 64; `shape` overrides HF config keys) with SmolLM2's tokenizer (ChatML),
  random weights, saved at `path`."""
  tokenizer = load_tokenizer(real_tokenizer("smollm2"))
  cfg = config_from_hf(
    dict(model_type="llama", vocab_size=len(tokenizer), tie_word_embeddings=True, **{**_SHAPE, **shape})
  )
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


def successor_model_dir(path, tokenizer, successors: dict[int, int], default: int):
  """A 1-layer Llama directory whose greedy next token after token a is successors.get(a, default).

  Known by construction, so a test knows what the model says: the attention and MLP output projections
  are zero, so each position's hidden state is its token's one-hot embedding (hidden size = vocabulary
  size), and the untied output head maps each token to its successor.  Written from numpy under the HF
  names (building it through `create_model` would cost seconds).
  """
  import json

  import numpy as np
  from safetensors.numpy import save_file

  from deepalign_jax.models import hf_config_from

  vocab = hidden = len(tokenizer)
  inter, heads, kv, head_dim = 32, 2, 1, 16
  cfg = config_from_hf(
    dict(
      model_type="llama",
      vocab_size=vocab,
      hidden_size=hidden,
      intermediate_size=inter,
      num_hidden_layers=1,
      num_attention_heads=heads,
      num_key_value_heads=kv,
      head_dim=head_dim,
      tie_word_embeddings=False,
    )
  )
  head = np.zeros((vocab, hidden), np.float32)
  head[default, :] = 1.0
  for a, b in successors.items():
    head[:, a] = 0.0
    head[b, a] = 1.0
  rng = np.random.default_rng(0)
  small = lambda *shape: (0.1 * rng.standard_normal(shape)).astype(np.float32)
  ones = np.ones(hidden, np.float32)
  tensors = {
    "model.embed_tokens.weight": np.eye(vocab, dtype=np.float32),
    "model.norm.weight": ones,
    "lm_head.weight": head,
    "model.layers.0.input_layernorm.weight": ones,
    "model.layers.0.post_attention_layernorm.weight": ones,
    "model.layers.0.self_attn.q_proj.weight": small(heads * head_dim, hidden),
    "model.layers.0.self_attn.k_proj.weight": small(kv * head_dim, hidden),
    "model.layers.0.self_attn.v_proj.weight": small(kv * head_dim, hidden),
    "model.layers.0.self_attn.o_proj.weight": np.zeros((hidden, heads * head_dim), np.float32),
    "model.layers.0.mlp.gate_proj.weight": small(inter, hidden),
    "model.layers.0.mlp.up_proj.weight": small(inter, hidden),
    "model.layers.0.mlp.down_proj.weight": np.zeros((hidden, inter), np.float32),
  }
  Path(path).mkdir(parents=True)
  save_file(tensors, str(Path(path) / "model.safetensors"), metadata={"format": "pt"})
  (Path(path) / "config.json").write_text(json.dumps(hf_config_from(cfg)))
  tokenizer.save_pretrained(str(path))
  return Path(path)


def override(config, overrides):
  """Sets `{"a.b": value}` entries on a ConfigDict; returns it."""
  for key, value in overrides.items():
    target = config
    *parents, last = key.split(".")
    for parent in parents:
      target = target[parent]
    target[last] = value
  return config
