"""The tokenizer saved beside an HF model: local files only, no remote code."""

from __future__ import annotations

import json
import os
from pathlib import Path

# tokenizer_config.json classes that are transformers' generic fast tokenizer: loaded without
# AutoTokenizer, whose model-config registry imports PyTorch (seconds) when it is installed.
_GENERIC_FAST = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: str | os.PathLike):
  """The tokenizer saved beside an HF model (local files only, no remote code)."""
  import transformers

  config = Path(path) / "tokenizer_config.json"
  if config.is_file() and (Path(path) / "tokenizer.json").is_file():
    try:
      name = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    except ValueError:
      name = None  # AutoTokenizer reports the broken file
    if name in _GENERIC_FAST:
      return transformers.PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
  return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


__all__ = ["load_tokenizer"]
