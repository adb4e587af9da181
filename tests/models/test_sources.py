"""One model source: HF directories, cached hub ids and training workdirs (checkpoints as the train loop
writes them), restored onto the abstract model, on one device or sharded."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from deepalign_jax import sharding
from deepalign_jax.models import load_pretrained
from deepalign_jax.models.sources import load, load_model, resolve_source
from deepalign_jax.train.checkpoints import Checkpointer
from deepalign_jax.train.state import OptimizerConfig, init_train_state, make_optimizer
from tests.tiny_models import tiny_chat_model


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sources")
  return {"a": tiny_chat_model(root / "a", seed=0)}


def _params(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_hf_directory(model_dirs):
  source = resolve_source(str(model_dirs["a"]))
  assert (source.kind, source.path, source.tokenizer) == ("hf", model_dirs["a"], model_dirs["a"])
  loaded = load(source, dtype=jnp.bfloat16)
  assert loaded.embed[...].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="step=3 was given, but this is not a training workdir"):
    resolve_source(str(model_dirs["a"]), step=3)


def test_training_workdir_final_params_and_a_step_checkpoint(model_dirs, tmp_path):
  """A workdir laid out by the train loop: config.json, checkpoints/<step> (TrainState), params/."""
  model, _ = load_pretrained(model_dirs["a"])
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-3))
  _, state = init_train_state(model, optimizer)
  shifted = state._replace(params=jax.tree.map(lambda x: x + 1.0, state.params))
  (tmp_path / "config.json").write_text(
    json.dumps(
      {
        "model": str(model_dirs["a"]),
        "dtype": "float32",
        "param_dtype": "",
        "chat_format": "template",
        "optimizer": {"learning_rate": 1e-3},
      }
    )
  )
  checkpointer = Checkpointer(str((tmp_path / "checkpoints").absolute()))
  checkpointer.maybe_save(2, state, {"step": 2}, force=True)
  checkpointer.maybe_save(5, shifted, {"step": 5}, force=True)
  checkpointer.close()

  # No params/ yet: the latest checkpoint; or the one asked for.  The run's chat format comes with it.
  latest = resolve_source(str(tmp_path))
  assert latest.chat_format == "template" and resolve_source(str(model_dirs["a"])).chat_format == "auto"
  assert (latest.kind, latest.step, latest.base, latest.tokenizer) == ("training", 5, model_dirs["a"], model_dirs["a"])
  original = _params(model)
  for got, want in zip(_params(load(latest)), original):
    np.testing.assert_array_equal(got, want + 1.0)
  for got, want in zip(_params(load(resolve_source(str(tmp_path), step=2))), original):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match=r"no step 3 \(saved steps: \[2, 5\]\)"):
    resolve_source(str(tmp_path), step=3)

  # The final params/ (params only) are preferred once the run says it finished (summary.json is written
  # after the exports; params/ without it is an export the run did not finish writing).
  with ocp.StandardCheckpointer() as final:
    final.save((tmp_path / "params").absolute(), jax.tree.map(lambda x: x * 2.0, state.params))
  assert resolve_source(str(tmp_path)).step == 5
  (tmp_path / "summary.json").write_text(json.dumps({"finished": True, "steps_done": 5}))
  source = resolve_source(str(tmp_path))
  assert source.step is None
  for got, want in zip(_params(load(source)), original):
    np.testing.assert_array_equal(got, want * 2.0)

  # Sharded: every parameter restored straight into its shard, the same values.
  mesh = sharding.make_mesh(data=1, fsdp=2, tensor=4)
  sharded, tokenizer, resolved = load_model(str(tmp_path), mesh=mesh)
  assert resolved == source and tokenizer.vocab_size > 0
  embed = sharded.embed.get_value()
  assert len(embed.sharding.device_set) == 8 and not embed.sharding.is_fully_replicated
  for got, want in zip(_params(sharded), original):
    np.testing.assert_array_equal(got, want * 2.0)
  # The fingerprint follows the weights: the final export and a step checkpoint differ.
  assert source.fingerprint() != resolve_source(str(tmp_path), step=5).fingerprint()
  assert source.fingerprint() == resolve_source(str(tmp_path)).fingerprint()


def test_a_hub_id_is_found_in_the_local_hf_cache_only(model_dirs, tmp_path, monkeypatch):
  """org/name resolves to its snapshot in $HF_HOME/hub (as huggingface_hub lays it out); nothing is fetched."""
  import shutil

  snapshot = tmp_path / "hub" / "models--acme--tiny-chat" / "snapshots" / ("0" * 40)
  shutil.copytree(model_dirs["a"], snapshot)
  (tmp_path / "hub" / "models--acme--tiny-chat" / "refs").mkdir()
  (tmp_path / "hub" / "models--acme--tiny-chat" / "refs" / "main").write_text("0" * 40)
  monkeypatch.setenv("HF_HOME", str(tmp_path))
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
  monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
  source = resolve_source("acme/tiny-chat")
  assert source.kind == "hf" and source.path == snapshot
  with pytest.raises(FileNotFoundError, match="acme/not-cached: no such model directory, and not a packaged"):
    resolve_source("acme/not-cached")
