"""Data: chat rendering (and, later, readers and the input pipeline)."""

from deepalign_jax.data.chat import (ALPACA_PREAMBLE, FORMATS, LLAMA2_DEFAULT_SYSTEM_PROMPT, ChatFormatError,
                                     ChatRenderer, Rendered, load_tokenizer)

__all__ = ["ALPACA_PREAMBLE", "FORMATS", "LLAMA2_DEFAULT_SYSTEM_PROMPT", "ChatFormatError", "ChatRenderer",
           "Rendered", "load_tokenizer"]
