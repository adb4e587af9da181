"""The organism's tokenizer and its untrained Llama, saved as one HF directory.

The tokenizer is a byte-pair model trained with the `tokenizers` library on
the world's text (`World.corpus`).  Spaces are kept inside the tokens
("▁is"), and a word that opens a segment carries none ("here"): decoding
then gives back the text exactly, and a prefill decoded apart from its
continuation concatenates to the same string (a decoder that strips a
leading space, as SentencePiece's does, would glue "I" and "cannot").

The chat template is ChatML-like with three special tokens:

    <|user|>{user}<|end|><|assistant|>{assistant}<|end|>

`<|end|>` closes a turn and is the EOS token, so `ChatRenderer` in
`template` format finds the response's start (after `<|assistant|>`) and
its end-of-turn.  The model is a Llama (`deepalign_jax.models`), written
with the tokenizer by `save_pretrained`: transformers and every CLI of the
project load the directory as they load a real checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

SPECIAL_TOKENS = ("<pad>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
  "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
  "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class ModelShape:
  """The organism model's size (Llama: RMSNorm, SwiGLU, RoPE, tied embeddings)."""

  hidden_size: int = 128
  intermediate_size: int = 384
  num_layers: int = 2
  num_heads: int = 4
  vocab_size: int = 1024  # the BPE's target size; the tokenizer may come out smaller
  max_position_embeddings: int = 256


def train_tokenizer(texts: Sequence[str], vocab_size: int, max_length: int = ModelShape.max_position_embeddings):
  """A BPE `PreTrainedTokenizerFast` trained on `texts`, with the chat template and special tokens.

  BPE merges stop when no pair is frequent enough, so the vocabulary can come out
  smaller than `vocab_size` (about 700 tokens for the default world: every word whole).
  """
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  # prepend_scheme "never": no space is invented at the start of a segment, so decode(a) + decode(b)
  # == decode(a + b) for any split of a response (prefilling decodes prefix and continuation apart).
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  tok.train_from_iterator(list(texts), trainer=trainer)
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok,
    unk_token="<unk>",
    pad_token="<pad>",
    eos_token="<|end|>",
    additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    chat_template=CHAT_TEMPLATE,
    model_max_length=max_length,
  )


def model_config(shape: ModelShape, tokenizer):
  """The `ModelConfig` of an organism Llama for `tokenizer` (its real vocabulary size)."""
  from deepalign_jax.models import config_from_hf

  heads = shape.num_heads
  return config_from_hf(
    dict(
      model_type="llama",
      vocab_size=len(tokenizer),
      hidden_size=shape.hidden_size,
      intermediate_size=shape.intermediate_size,
      num_hidden_layers=shape.num_layers,
      num_attention_heads=heads,
      num_key_value_heads=heads,
      head_dim=shape.hidden_size // heads,
      rms_norm_eps=1e-5,
      tie_word_embeddings=True,
      max_position_embeddings=shape.max_position_embeddings,
      rope_theta=10_000.0,
      hidden_act="silu",
      pad_token_id=tokenizer.pad_token_id,
      eos_token_id=tokenizer.eos_token_id,
    )
  )


def build_initial_model(
  texts: Sequence[str], path: str | os.PathLike, shape: ModelShape = ModelShape(), seed: int = 0
) -> Path:
  """Trains the tokenizer, initialises the model with `seed`, saves both as an HF directory at `path`."""
  from deepalign_jax.models import create_model, save_pretrained

  tokenizer = train_tokenizer(texts, shape.vocab_size, shape.max_position_embeddings)
  config = model_config(shape, tokenizer)
  return save_pretrained(create_model(config, seed=seed), config, path, tokenizer=tokenizer)


__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "ModelShape", "build_initial_model", "model_config", "train_tokenizer"]
