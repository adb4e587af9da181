"""The tokenizer saved beside an HF model: local files only, no remote code."""

from __future__ import annotations

import json
import os
from pathlib import Path

# tokenizer_config.json classes that are transformers' generic fast tokenizer: loaded without
# AutoTokenizer, whose model-config registry imports PyTorch (seconds) when it is installed.
_GENERIC_FAST = ("TokenizersBackend", "PreTrainedTokenizerFast")

# The files one of which a tokenizer directory holds (fast, SentencePiece, its config, BPE / WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt")


def load_tokenizer(path: str | os.PathLike):
  """The tokenizer saved beside an HF model (local files only, no remote code).

  A directory without any of `TOKENIZER_FILES` is refused with a FileNotFoundError naming it and the
  files looked for (transformers would otherwise fail with a paragraph about converting slow tokenizers).
  """
  import transformers

  if not Path(path).is_dir():
    raise FileNotFoundError(f"{path}: no such tokenizer directory")
  if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
    raise FileNotFoundError(
      f"{path}: no tokenizer files (looked for {', '.join(TOKENIZER_FILES)}); save the model's tokenizer "
      f"beside its weights (tokenizer.save_pretrained(DIR))"
    )
  config = Path(path) / "tokenizer_config.json"
  if config.is_file() and (Path(path) / "tokenizer.json").is_file():
    try:
      name = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    except ValueError:
      name = None  # AutoTokenizer reports the broken file
    if name in _GENERIC_FAST:
      return transformers.PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
  return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


__all__ = ["TOKENIZER_FILES", "load_tokenizer"]
