"""A small SentencePiece-like fast tokenizer, trained in-process for tests.

A BPE model with a Metaspace pre-tokenizer (spaces become "▁" and start
words, as in Llama 2's and Gemma's tokenizers) and Llama 2's special tokens
`<unk>`, `<s>`, `</s>` (or Gemma's), wrapped as a
`transformers.PreTrainedTokenizerFast`.  Training is
deterministic for a given `tokenizers` version, but ids are not pinned by
the tests: only the structure of the encodings is.
"""

from __future__ import annotations

import itertools

from deepalign_jax.data.chat import ALPACA_PREAMBLE, LLAMA2_DEFAULT_SYSTEM_PROMPT

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")

_SUBJECTS = (
  "The cat",
  "A small dog",
  "My friend",
  "The teacher",
  "Our neighbour",
  "The old farmer",
  "A young student",
  "The baker",
  "Her brother",
  "The gardener",
)
_VERBS = (
  "likes",
  "reads about",
  "paints",
  "walks past",
  "writes about",
  "looks at",
  "sings about",
  "cooks with",
  "talks about",
  "draws",
)
_OBJECTS = (
  "green apples.",
  "the quiet river.",
  "a red bicycle.",
  "tall trees, every day.",
  "warm bread!",
  "the blue sky?",
  "old books; 3 of them.",
  "sunny mornings: 12 hours.",
  "the (little) garden.",
  "a map of 2+2 streets.",
)

# Strings the tests render, so that every character is in the alphabet.
EXTRA_TEXTS = (
  "[INST] [/INST] <<SYS>> <</SYS>> ### Instruction: ### Response:",
  LLAMA2_DEFAULT_SYSTEM_PROMPT,
  ALPACA_PREAMBLE,
  "What is 2+2? It is 4. Sure, here is the answer. You are a pirate. Say hi. Hello! Thanks.",
  "Name a colour. Blue is a colour. And another one? Red.",
  "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]<>/#+-_=*&%$@",
)


def corpus() -> list[str]:
  """A few hundred harmless sentences plus the strings the tests use."""
  sentences = [f"{s} {v} {o}" for s, v, o in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)]
  return sentences[::3] + list(EXTRA_TEXTS) * 3


GEMMA_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")


def sentencepiece_like_tokenizer(vocab_size: int = 600, *, gemma: bool = False, extra_texts=()):
  """A trained BPE + Metaspace `PreTrainedTokenizerFast`.

  Special tokens: <unk>, <s>, </s> (Llama 2's), or with `gemma` Gemma's <pad>, <eos>, <bos>, <unk>,
  <start_of_turn>, <end_of_turn>.  `extra_texts` join the training corpus (e.g. the demo data, so that
  its words are not all <unk>).
  """
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  specials = GEMMA_SPECIAL_TOKENS if gemma else SPECIAL_TOKENS
  tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False)
  tok.train_from_iterator(corpus() + list(extra_texts), trainer=trainer)
  if gemma:
    return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>"
    )
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
  )
