"""Data: readers of users' files, chat rendering, tokenised training examples."""

from deepalign_jax.data.chat import (
  ALPACA_PREAMBLE,
  FORMATS,
  LLAMA2_DEFAULT_SYSTEM_PROMPT,
  ChatFormatError,
  ChatRenderer,
  Rendered,
  load_tokenizer,
)
from deepalign_jax.data.examples import (
  RecoveryDraw,
  RecoveryExample,
  TokenizedExample,
  prepare_recovery,
  recovery_epoch,
  recovery_example,
  sample_k,
  tokenize_conversation,
  truncate,
)
from deepalign_jax.data.formats import (
  FILE_FORMATS,
  Conversation,
  DataFormatError,
  Exchange,
  Prompt,
  Triplet,
  as_exchange,
  read_file,
)

__all__ = [
  "ALPACA_PREAMBLE",
  "FILE_FORMATS",
  "FORMATS",
  "LLAMA2_DEFAULT_SYSTEM_PROMPT",
  "ChatFormatError",
  "ChatRenderer",
  "Conversation",
  "DataFormatError",
  "Exchange",
  "Prompt",
  "RecoveryDraw",
  "RecoveryExample",
  "Rendered",
  "TokenizedExample",
  "Triplet",
  "as_exchange",
  "load_tokenizer",
  "prepare_recovery",
  "read_file",
  "recovery_epoch",
  "recovery_example",
  "sample_k",
  "tokenize_conversation",
  "truncate",
]
