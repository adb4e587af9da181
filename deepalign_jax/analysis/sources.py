"""Where an analysed model comes from: an HF directory, a packaged checkpoint, or a training run.

  /path/to/hf_dir            config.json + safetensors (and the tokenizer)
  packaged:smollm2           a SPEC §9 checkpoint, converted on first use
  /path/to/training/workdir  a `python -m deepalign_jax.train` workdir: its
                             final `params/`, or `checkpoints/<step>` when a
                             step is asked for (or no `params/` exists yet)

A training workdir's architecture, dtypes and tokenizer are those of the
model it trained (its `config.json` names it); only the parameters are read
from the checkpoint (the optimizer state is not restored).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from deepalign_jax.models import Transformer, dtype_from_name, load_pretrained, read_config
from deepalign_jax.models.gguf import packaged_checkpoint
from deepalign_jax.train.checkpoints import read_params



@dataclasses.dataclass(frozen=True)
class ModelSource:
  """A resolved model location.

  kind: "hf" or "training".
  path: the HF directory, or the training workdir.
  base: the HF directory that defines the architecture (= path for "hf").
  tokenizer: directory to load the tokenizer from.
  step: for "training", the checkpoint step (None: the final `params/`).
  """
  kind: str
  path: Path
  base: Path
  tokenizer: Path
  step: int | None = None

  def describe(self) -> dict:
    return {"kind": self.kind, "path": str(self.path), "base": str(self.base),
            "step": self.step if self.kind == "training" else None}


def _hf_dir(spec: str) -> Path:
  if spec.startswith("packaged:"):
    return packaged_checkpoint(spec.split(":", 1)[1])
  return Path(spec)


def _checkpoint_steps(workdir: Path) -> list[int]:
  folder = workdir / "checkpoints"
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def resolve_source(spec: str, step: int = 0) -> ModelSource:
  """Resolves a model spec (see the module docstring); `step` > 0 picks a training checkpoint."""
  if not spec:
    raise ValueError("model path is empty: give an HF directory, 'packaged:NAME' or a training workdir")
  path = _hf_dir(spec)
  if (path / "config.json").is_file():
    try:
      config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f"{path / 'config.json'}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if isinstance(config, dict) and "model_type" not in config and "model" in config:
      return _training_source(path, config, step)
  if step:
    raise ValueError(f"{spec}: step={step} was given, but this is not a training workdir "
                     "(no config.json with a 'model' entry)")
  read_config(path)  # a clear error now for a directory that is not an HF model
  return ModelSource("hf", path, path, path)


def _training_source(workdir: Path, config: dict, step: int) -> ModelSource:
  base = _hf_dir(str(config["model"]))
  export = workdir / "hf"
  tokenizer = export if (export / "tokenizer_config.json").is_file() else base
  steps = _checkpoint_steps(workdir)
  if not step and (workdir / "params").is_dir():
    return ModelSource("training", workdir, base, tokenizer, None)
  if not steps:
    raise ValueError(f"{workdir}: a training workdir without params/ or checkpoints/<step>; "
                     "has the run saved anything yet?")
  if step and step not in steps:
    raise ValueError(f"{workdir}/checkpoints: no step {step} (saved steps: {steps})")
  return ModelSource("training", workdir, base, tokenizer, step or steps[-1])


def _training_dtypes(workdir: Path) -> tuple:
  config = json.loads((workdir / "config.json").read_text())
  where = f"{workdir}/config.json"
  dtype = dtype_from_name(config.get("dtype") or "float32", f"{where}: dtype")
  param_dtype = (dtype_from_name(config["param_dtype"], f"{where}: param_dtype") if config.get("param_dtype")
                 else dtype)
  return dtype, param_dtype


def load_model(source: ModelSource, dtype=jnp.float32) -> Transformer:
  """The model of `source` on the default device (`dtype` applies to HF directories)."""
  if source.kind == "hf":
    return load_pretrained(source.path, dtype=dtype)[0]
  compute_dtype, param_dtype = _training_dtypes(source.path)
  cfg = read_config(source.base)
  # The model's structure only: the starting weights are never read, the workdir's replace them.
  abstract = nnx.eval_shape(lambda: Transformer(cfg, dtype=compute_dtype, param_dtype=param_dtype,
                                                rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)
  return nnx.merge(graphdef, read_params(source.path, like, source.step))


__all__ = ["ModelSource", "load_model", "resolve_source"]
