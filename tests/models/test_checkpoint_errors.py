"""Broken checkpoints give one clear error naming the file and what was expected.

Each case copies a valid tiny Llama directory, breaks one thing, and checks the
exception class and message of `load_pretrained`.
"""

import json
import re
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from deepalign_jax.models import FULL, SLIDING, CheckpointError, ConfigError, config_from_hf, load_pretrained
from tests.models.hf_fixtures import VOCAB, random_hf_model


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("llama")
  random_hf_model("llama").save_pretrained(path)
  return path


@pytest.fixture
def ckpt(llama_dir, tmp_path):
  path = tmp_path / "ckpt"
  shutil.copytree(llama_dir, path)
  return path


_DELETE = object()  # marks a config.json key to delete


def _edit_config(**changes):
  def breaker(path):
    hf = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
      if value is _DELETE:
        del hf[key]
      else:
        hf[key] = value
    (path / "config.json").write_text(json.dumps(hf))

  return breaker


def _edit_tensors(fn):
  def breaker(path):
    file = path / "model.safetensors"
    tensors = load_file(str(file))
    fn(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})

  return breaker


def _no_config(path):
  (path / "config.json").unlink()


def _bad_json(path):
  (path / "config.json").write_text('{"model_type": "llama",')


def _only_pickles(path):
  for f in path.glob("*.safetensors"):
    f.unlink()
  # Any unpickler (pickle, torch.load) would fail on this with its own error.
  (path / "pytorch_model.bin").write_bytes(b"not a pickle")


def _no_weights(path):
  for f in path.glob("*.safetensors"):
    f.unlink()


def _index_with_missing_shard(path):
  names = list(load_file(str(path / "model.safetensors")))
  index = {"metadata": {}, "weight_map": {n: "model-00002-of-00002.safetensors" for n in names}}
  (path / "model.safetensors.index.json").write_text(json.dumps(index))


def _drop(name):
  return _edit_tensors(lambda t: t.pop(name))


def _add(name, value):
  return _edit_tensors(lambda t: t.__setitem__(name, value))


def _transpose(name):
  return _edit_tensors(lambda t: t.__setitem__(name, np.ascontiguousarray(t[name].T)))


UP1 = "model.layers.1.mlp.up_proj.weight"
Q_BIAS = "model.layers.0.self_attn.q_proj.bias"
DOWN0 = "model.layers.0.mlp.down_proj.weight"
K0 = "model.layers.0.self_attn.k_proj.weight"

# (id, breaker, exception class, regex the message must match)
CASES = [
  ("no_config", _no_config, CheckpointError, r"ckpt: no config\.json"),
  ("invalid_json", _bad_json, CheckpointError, r"config\.json: invalid JSON at line 1"),
  (
    "unknown_model_type",
    _edit_config(model_type="mistral"),
    ConfigError,
    r"config\.json: model_type 'mistral' is not supported; "
    r"supported: gemma, gemma2, gemma3_text, llama$",
  ),
  ("missing_field", _edit_config(hidden_size=_DELETE), ConfigError, r"config\.json: missing field 'hidden_size'"),
  (
    "rope_yarn",
    _edit_config(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}),
    ConfigError,
    r"config\.json: RoPE type 'yarn' is not supported \(default, linear, llama3\)",
  ),
  (
    "attention_bias",
    _edit_config(attention_bias=True),
    ConfigError,
    r"config\.json: attention_bias=true is not supported",
  ),
  (
    "only_pickles",
    _only_pickles,
    CheckpointError,
    r"only pickled weights \(pytorch_model\.bin\); deepalign_jax never unpickles",
  ),
  ("no_weights", _no_weights, CheckpointError, r"ckpt: no \*\.safetensors weights"),
  (
    "missing_tensor",
    _drop(UP1),
    CheckpointError,
    rf"does not match its config\.json \(llama\): missing tensors: {re.escape(UP1)}$",
  ),
  (
    "extra_tensor",
    _add(Q_BIAS, np.zeros(256, np.float32)),
    CheckpointError,
    rf"does not match its config\.json \(llama\): unexpected tensors: {re.escape(Q_BIAS)}$",
  ),
  (
    "wrong_shape",
    _transpose(DOWN0),
    CheckpointError,
    rf"model\.safetensors: {re.escape(DOWN0)} has shape \(512, 256\), expected "
    r"\(256, 512\) for this config\.json$",
  ),
  # Same element count, wrong layout: must not be reshaped into scrambled weights.
  ("transposed_k", _transpose(K0), CheckpointError, rf"{re.escape(K0)} has shape \(256, 128\), expected \(128, 256\)"),
  (
    "corrupt_safetensors",
    lambda p: (p / "model.safetensors").write_bytes(b"\x08" + b"\0" * 20),
    CheckpointError,
    r"model\.safetensors: not a readable safetensors file",
  ),
  (
    "index_not_json",
    lambda p: (p / "model.safetensors.index.json").write_text("{"),
    CheckpointError,
    r"model\.safetensors\.index\.json: not a JSON object",
  ),
  (
    "config_not_object",
    lambda p: (p / "config.json").write_text("[]"),
    CheckpointError,
    r"config\.json: expected a JSON object, got list",
  ),
  ("null_field", _edit_config(hidden_size=None), ConfigError, r"config\.json: a field has the wrong type or value"),
  (
    "vocab_mismatch",
    _edit_config(vocab_size=600),
    CheckpointError,
    rf"model\.safetensors: model\.embed_tokens\.weight has {VOCAB} rows but config\.json "
    r"vocab_size is 600",
  ),
  (
    "index_missing_shard",
    _index_with_missing_shard,
    CheckpointError,
    r"model\.safetensors\.index\.json: lists shards that do not exist: "
    r".*model-00002-of-00002\.safetensors$",
  ),
]


def test_intact_copy_loads(ckpt):
  """The control: every broken case below starts from a directory that loads."""
  model, cfg = load_pretrained(ckpt)
  assert cfg.family == "llama" and cfg.vocab_size == VOCAB


@pytest.mark.parametrize("breaker, error, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_checkpoint(ckpt, breaker, error, pattern):
  breaker(ckpt)
  with pytest.raises(error, match=pattern) as info:
    load_pretrained(ckpt)
  assert type(info.value) is error
  message = str(info.value)
  assert "\n" not in message
  assert str(ckpt) in message  # the directory or file is named in full


def _v4_base(**extra):
  return {
    "vocab_size": 512,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "query_pre_attn_scalar": 64,
    "sliding_window": 8,
    **extra,
  }


def test_gemma3_v4_layout():
  cfg = config_from_hf(
    _v4_base(
      model_type="gemma3_text", num_hidden_layers=12, rope_theta=1e6, rope_local_base_freq=1e4, sliding_window_pattern=6
    )
  )
  assert cfg.layer_types == ((SLIDING,) * 5 + (FULL,)) * 2
  assert cfg.rope_global.theta == 1e6 and cfg.rope_global.scaling is None
  assert cfg.rope_local.theta == 1e4 and cfg.rope_local.scaling is None
  assert cfg.sliding_window == 8 and cfg.qk_norm


def test_gemma2_v4_layout():
  cfg = config_from_hf(_v4_base(model_type="gemma2", num_hidden_layers=5, rope_theta=1e4))
  assert cfg.layer_types == (SLIDING, FULL, SLIDING, FULL, SLIDING)
  assert cfg.rope_global == cfg.rope_local and cfg.rope_global.theta == 1e4
