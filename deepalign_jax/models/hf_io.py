"""Hugging Face checkpoints in and out: config.json + safetensors.

`load_pretrained` builds the model abstractly (`nnx.eval_shape`, nothing
allocated), then fills each parameter from the safetensors files, one
parameter at a time: the host holds one (stacked) tensor, and with a mesh
each device receives only its own shard (`jax.make_array_from_callback`), so
the whole model is never materialised on one device.

`save_pretrained` writes the inverse: a directory transformers loads with
identical logits.  Only safetensors are read or written; pickled `.bin`
checkpoints are refused, never opened.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from deepalign_jax import sharding
from deepalign_jax.atomic import atomic_directory
from deepalign_jax.models.config import ModelConfig
from deepalign_jax.models.families import ConfigError, config_from_hf, hf_config_from, match_tensor, tensor_rules
from deepalign_jax.models.transformer import Transformer


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be loaded as asked."""


def read_config(path: str | os.PathLike) -> ModelConfig:
  """ModelConfig from `path/config.json`."""
  config_file = Path(path) / "config.json"
  if not config_file.is_file():
    raise CheckpointError(f"{path}: no config.json (expected a Hugging Face model directory)")
  try:
    hf = json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_file}: invalid JSON at line {e.lineno}: {e.msg}") from None
  if not isinstance(hf, dict):
    raise CheckpointError(f"{config_file}: expected a JSON object, got {type(hf).__name__}")
  return config_from_hf(hf, where=str(config_file))


def _weight_files(path: Path) -> list[Path]:
  index = path / "model.safetensors.index.json"
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text()).get("weight_map")
    except (json.JSONDecodeError, AttributeError) as e:
      raise CheckpointError(f"{index}: not a JSON object ({e})") from None
    if not isinstance(weight_map, dict):
      raise CheckpointError(f"{index}: missing 'weight_map'")
    files = sorted({path / f for f in weight_map.values()})
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
      raise CheckpointError(f"{index}: lists shards that do not exist: {', '.join(missing)}")
    return files
  files = sorted(path.glob("*.safetensors"))
  if files:
    return files
  pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
  if pickles:
    raise CheckpointError(
      f"{path}: only pickled weights ({', '.join(pickles)}); deepalign_jax never unpickles. "
      "Convert them to safetensors with a tool you trust first."
    )
  raise CheckpointError(f"{path}: no *.safetensors weights")


def _abstract_model(cfg, dtype, param_dtype, rules, remat):
  return nnx.eval_shape(
    lambda: Transformer(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat, rules=rules, rngs=nnx.Rngs(0))
  )


def _place(host: np.ndarray, variable, rules: sharding.ShardingRules | None) -> jax.Array:
  if rules is None:
    return jnp.asarray(host)
  target = sharding.named_sharding(sharding.param_axes(variable, host.shape), host.shape, rules)
  return jax.make_array_from_callback(host.shape, target, lambda index: host[index])


def create_model(
  cfg: ModelConfig, *, dtype=jnp.float32, param_dtype=None, mesh=None, remat: str = "none", seed: int = 0
) -> Transformer:
  """A randomly initialised model; with a mesh, parameters are created sharded."""
  param_dtype = param_dtype or dtype
  rules = sharding.ShardingRules(mesh) if mesh is not None else None
  if rules is None:
    return Transformer(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat, rngs=nnx.Rngs(seed))
  graphdef, abstract_state = nnx.split(_abstract_model(cfg, dtype, param_dtype, rules, remat))
  shardings = sharding.state_shardings(abstract_state, rules)

  @jax.jit
  def init():
    model = Transformer(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat, rules=rules, rngs=nnx.Rngs(seed))
    state = nnx.state(model)
    return jax.lax.with_sharding_constraint(state, shardings)

  return nnx.merge(graphdef, init())


def load_pretrained(
  path: str | os.PathLike, *, dtype=None, param_dtype=None, mesh=None, remat: str = "none"
) -> tuple[Transformer, ModelConfig]:
  """Loads an HF model directory into a `Transformer`.

  Args:
    path: directory with config.json and one or many *.safetensors (with
      model.safetensors.index.json when sharded).
    dtype: compute dtype (default float32).
    param_dtype: parameter dtype (default: `dtype`).
    mesh: a (data, fsdp, tensor) mesh from `sharding.make_mesh`; parameters
      are placed directly into their shards.
    remat: rematerialisation policy of the layer scan ('none', 'dots', 'full').

  Returns:
    (model, config).
  """
  path = Path(path)
  cfg = read_config(path)
  dtype = dtype or jnp.float32
  param_dtype = np.dtype(param_dtype or dtype)
  rules = sharding.ShardingRules(mesh) if mesh is not None else None
  graphdef, abstract_state = nnx.split(_abstract_model(cfg, dtype, param_dtype, rules, remat))
  params = dict(nnx.to_flat_state(abstract_state))

  # Which HF tensor goes where.
  rules_table = tensor_rules(cfg)
  sources: dict[tuple[str, ...], dict[int | None, tuple[Path, str]]] = defaultdict(dict)
  unexpected = []
  for file in _weight_files(path):
    try:
      with safe_open(file, framework="numpy") as f:
        names = list(f.keys())
    except Exception as e:  # safetensors raises its own error type on corrupt files
      raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None
    for name in names:
      hit = match_tensor(name, rules_table)
      if hit is None:
        # Tied models sometimes also store lm_head.weight (a copy of the embedding).
        if not (cfg.tie_embeddings and name == "lm_head.weight"):
          unexpected.append(name)
        continue
      rule, layer = hit
      if layer is not None and layer >= cfg.num_layers:
        unexpected.append(name)
        continue
      sources[rule.path][layer] = (file, name)
  missing = []
  for rule in rules_table:
    layers = range(cfg.num_layers) if rule.stacked else [None]
    missing += [rule.hf_name.format(i=i) for i in layers if i not in sources[rule.path]]
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"missing tensors: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
    if unexpected:
      parts.append(f"unexpected tensors: {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""))
    raise CheckpointError(f"{path} does not match its config.json ({cfg.family}): " + "; ".join(parts))

  for rule in rules_table:
    variable = params[rule.path]
    expected = tuple(variable.get_value().shape)
    pieces = []
    for layer in range(cfg.num_layers) if rule.stacked else [None]:
      file, name = sources[rule.path][layer]
      with safe_open(file, framework="numpy") as f:
        raw = f.get_tensor(name)
      if rule.path == ("embed",) and raw.shape[0] != cfg.vocab_size:
        raise CheckpointError(
          f"{file}: {name} has {raw.shape[0]} rows but config.json vocab_size is "
          f"{cfg.vocab_size}; the embedding must have exactly vocab_size rows (a vocabulary "
          "padded for sharding must be padded in config.json too)"
        )
      want = expected[1:] if rule.stacked else expected
      hf_shape = rule.to_hf(np.empty(want, np.float32), cfg).shape
      if tuple(raw.shape) != tuple(hf_shape):
        raise CheckpointError(
          f"{file}: {name} has shape {tuple(raw.shape)}, expected {tuple(hf_shape)} for this config.json"
        )
      pieces.append(rule.to_nnx(raw, cfg).astype(param_dtype))
    host = np.stack(pieces) if rule.stacked else pieces[0]
    del pieces
    variable.set_value(_place(host, variable, rules))
  model = nnx.merge(graphdef, nnx.from_flat_state(params))
  return model, cfg


def _gather(value: jax.Array) -> np.ndarray:
  if not value.is_fully_addressable:
    from jax.experimental import multihost_utils

    value = multihost_utils.process_allgather(value, tiled=True)
  return np.asarray(jax.device_get(value))


def save_pretrained(
  model: Transformer,
  config: ModelConfig,
  path: str | os.PathLike,
  *,
  dtype=None,
  tokenizer: Any = None,
  max_shard_bytes: int = 2 * 1024**3,
) -> Path:
  """Writes `model` as an HF directory (config.json + safetensors) at `path`.

  The directory is assembled beside `path` and renamed into place, so a crash
  never leaves a half-written checkpoint where a complete one was.  On a
  multi-host run every process must call this (parameters are gathered), and
  only process 0 writes.
  """
  path = Path(path)
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  save_dtype = None if dtype is None else np.dtype(dtype)
  shards: list[dict[str, np.ndarray]] = [{}]
  shard_bytes = 0
  for rule in tensor_rules(config):
    value = _gather(flat[rule.path].get_value())
    if save_dtype is not None:
      value = value.astype(save_dtype)
    pieces = (
      [(rule.hf_name.format(i=i), value[i]) for i in range(config.num_layers)]
      if rule.stacked
      else [(rule.hf_name, value)]
    )
    for name, piece in pieces:
      tensor = rule.to_hf(piece, config)
      if shard_bytes and shard_bytes + tensor.nbytes > max_shard_bytes:
        shards.append({})
        shard_bytes = 0
      shards[-1][name] = tensor
      shard_bytes += tensor.nbytes
  if jax.process_index() != 0:
    return path

  hf = dict(config.hf_config) or hf_config_from(config)
  stored = next(iter(shards[0].values())).dtype
  hf["dtype"] = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[stored.name]
  hf.pop("torch_dtype", None)
  with atomic_directory(path) as tmp:
    names = (
      ["model.safetensors"]
      if len(shards) == 1
      else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for name, shard in zip(names, shards):
      save_file(shard, str(tmp / name), metadata={"format": "pt"})
    if len(shards) > 1:
      index = {
        "metadata": {"total_size": sum(t.nbytes for s in shards for t in s.values())},
        "weight_map": {t: n for n, s in zip(names, shards) for t in s},
      }
      (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True))
    if tokenizer is not None:
      tokenizer.save_pretrained(str(tmp))
  return path


__all__ = ["CheckpointError", "ConfigError", "create_model", "load_pretrained", "read_config", "save_pretrained"]
