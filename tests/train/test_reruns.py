"""A training workdir holds one run: reruns with changed settings, extended runs, restarts, poisoned
checkpoints and a full disk, as a user meets them by rerunning a command."""

import errno
import json

import jax
import numpy as np
import pytest

from deepalign_jax.identity import RerunRefused
from deepalign_jax.models import load_pretrained
from deepalign_jax.train.loop import NonFiniteError, run
from tests.tiny_models import tiny_chat_model
from tests.train.test_loop import ASSETS, _config, _metrics


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  return {
    "base": tiny_chat_model(root / "base", seed=0),
    "same_shape": tiny_chat_model(root / "same_shape", seed=1),
    "other_shape": tiny_chat_model(root / "other_shape", seed=0, hidden_size=32, head_dim=16),
  }


@pytest.fixture(scope="module")
def finished(models, tmp_path_factory):
  """A finished 4-step run (checkpoints at 2 and 4) to copy and rerun."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  run(_config(models["base"], **{"checkpoint.every_steps": 2}), workdir)
  return workdir


def _copy(workdir, tmp_path):
  import shutil

  target = tmp_path / "run"
  shutil.copytree(workdir, target)
  config = json.loads((target / "config.json").read_text())
  return target, config


def _params(workdir):
  from deepalign_jax.models.sources import load_model

  model, _, source = load_model(workdir)
  return model, source


@pytest.mark.parametrize(
  "overrides, named",
  [
    ({"optimizer.learning_rate": 1e-1}, r"config\.optimizer\.learning_rate: 0\.001 -> 0\.1"),
    ({"train.batch_size": 8}, r"config\.train\.batch_size: 4 -> 8"),
    ({"data.max_length": 64}, r"config\.data\.max_length: 96 -> 64"),
    ({"objective": "sft"}, r"config\.objective: \"constrained_sft\" -> \"sft\""),
    ({"loss.beta": 0.5}, r"config\.loss\.beta: 0\.1 -> 0\.5"),
    ({"train.seed": 1}, r"config\.train\.seed: 0 -> 1"),
    ({"dtype": "bfloat16"}, r"config\.dtype: \"float32\" -> \"bfloat16\""),
    ({"model": "same_shape"}, r"model fingerprint: \"\w+\" -> \"\w+\""),
    ({"model": "other_shape"}, r"model fingerprint: "),
  ],
)
def test_a_rerun_with_other_settings_is_refused_naming_each_key(models, finished, tmp_path, overrides, named):
  workdir, _ = _copy(finished, tmp_path)
  before = (workdir / "metrics.jsonl").read_text(), (workdir / "config.json").read_text()
  overrides = {k: str(models[v]) if k == "model" else v for k, v in overrides.items()}
  config = _config(models["base"], **{"checkpoint.every_steps": 2, **overrides})
  with pytest.raises(RerunRefused, match=named) as refused:
    run(config, workdir)
  message = str(refused.value)
  assert "\n" not in message and "--config.rerun=restart" in message and "new --workdir" in message
  # Nothing of the first run was touched: its record of what ran, its metrics, its exports.
  assert ((workdir / "metrics.jsonl").read_text(), (workdir / "config.json").read_text()) == before
  assert (workdir / "params").is_dir() and (workdir / "hf").is_dir()


def test_the_data_file_edited_in_place_is_another_run(models, finished, tmp_path):
  data = tmp_path / "data.jsonl"
  data.write_text((ASSETS / "conversations.jsonl").read_text())
  workdir = tmp_path / "run"
  run(_config(models["base"], **{"data.path": str(data), "train.num_steps": 1}), workdir)
  data.write_text("".join(data.read_text().splitlines(True)[:-1]))
  with pytest.raises(
    RerunRefused, match=r"content of config\.data\.path \(edited in place: .*data\.jsonl\"\): \"\w+\" -> "
  ):
    run(_config(models["base"], **{"data.path": str(data), "train.num_steps": 1}), workdir)


def test_a_start_that_failed_before_its_first_step_does_not_block_the_corrected_rerun(models, tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=r"unknown data format 'jsonl'"):
    run(_config(models["base"], **{"data.format": "jsonl", "train.num_steps": 1}), workdir)
  assert (workdir / "run.json").exists() and not (workdir / "metrics.jsonl").exists()
  assert run(_config(models["base"], **{"train.num_steps": 1}), workdir)["finished"]


def test_the_same_data_moved_elsewhere_is_the_same_run(models, finished, tmp_path):
  import shutil

  workdir, _ = _copy(finished, tmp_path)
  moved = tmp_path / "moved.jsonl"
  shutil.copyfile(ASSETS / "conversations.jsonl", moved)
  again = run(_config(models["base"], **{"checkpoint.every_steps": 2, "data.path": str(moved)}), workdir)
  assert again["finished"] and again["run"] == json.loads((workdir / "run.json").read_text())["id"]


@pytest.mark.parametrize(
  "overrides",
  [
    {"progress": True},
    {"tensorboard": True},
    {"checkpoint.keep": 5, "checkpoint.every_steps": 1},
    {"data.prefetch": 4},
    {"remat": "full"},
    {"scan_layers": False},
    {"attention": "xla"},
    {"mesh.fsdp": 1, "mesh.tensor": -1},
    {"eval.limit": 3},
  ],
)
def test_settings_that_change_nothing_computed_never_block_a_rerun(models, finished, tmp_path, overrides):
  workdir, _ = _copy(finished, tmp_path)
  metrics, summary = (workdir / "metrics.jsonl").read_text(), json.loads((workdir / "summary.json").read_text())
  again = run(_config(models["base"], **{"checkpoint.every_steps": 2, **overrides}), workdir)
  assert again["finished"] and again["steps_done"] == 4 and again["run"] == summary["run"]
  assert (workdir / "metrics.jsonl").read_text() == metrics  # nothing was trained again


def test_an_interrupted_run_resumes_with_harmless_changes_and_matches_an_uninterrupted_one(models, finished, tmp_path):
  workdir = tmp_path / "run"
  first = run(_config(models["base"], **{"checkpoint.every_steps": 2, "train.stop_after_steps": 2}), workdir)
  assert not first["finished"]
  # The rest trains with the layers unrolled: another compiled program, the same numbers.
  resumed = {"checkpoint.every_steps": 1, "progress": True, "data.prefetch": 1, "scan_layers": False}
  run(_config(models["base"], **resumed), workdir)
  ours = _metrics(workdir)
  assert [m["loss"] for m in ours] == pytest.approx([m["loss"] for m in _metrics(finished)], rel=1e-6)
  assert {m["run"] for m in ours} == {json.loads((finished / "run.json").read_text())["id"]}


def test_a_run_through_dot_product_attention_trains_what_the_einsums_train(models, finished, tmp_path, monkeypatch):
  # config.attention reaches the model (the kernel is traced), with the same losses within the kernels'
  # fp32 summation-order difference (tests/models/test_transformer.py); a kernel that does not exist
  # is refused up front.
  import jax

  calls = []
  kernel = jax.nn.dot_product_attention
  monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, **k: calls.append(k) or kernel(*a, **k))
  workdir = tmp_path / "xla"
  run(_config(models["base"], **{"checkpoint.every_steps": 2, "attention": "xla"}), workdir)
  assert calls and all(k["implementation"] == "xla" for k in calls)
  ours, einsum = [m["loss"] for m in _metrics(workdir)], [m["loss"] for m in _metrics(finished)]
  assert len(ours) == len(einsum) == 4
  assert ours == pytest.approx(einsum, rel=1e-5)
  with pytest.raises(ValueError, match=r"^config\.attention must be one of einsum, xla, cudnn, auto, got 'flash'$"):
    run(_config(models["base"], **{"attention": "flash"}), tmp_path / "flash")


def test_an_extended_run_rewrites_params_hf_and_summary_at_the_new_step(models, finished, tmp_path):
  workdir, _ = _copy(finished, tmp_path)
  with pytest.raises(RerunRefused, match=r"config\.train\.num_steps: 4 -> 8"):
    run(_config(models["base"], **{"checkpoint.every_steps": 2, "train.num_steps": 8}), workdir)
  # Extended on purpose, stopped half-way: no export claims to be the latest weights.
  half = run(
    _config(
      models["base"], rerun="change", **{"checkpoint.every_steps": 2, "train.num_steps": 8, "train.stop_after_steps": 2}
    ),
    workdir,
  )
  assert not half["finished"] and half["steps_done"] == 6
  assert not (workdir / "params").exists() and not (workdir / "hf").exists()
  model, source = _params(workdir)
  assert source.step == 6
  # Finished: params/, hf/ and summary.json all describe step 8.
  done = run(_config(models["base"], **{"checkpoint.every_steps": 2, "train.num_steps": 8}), workdir)
  assert done["finished"] and done["steps_done"] == 8
  final, source = _params(workdir)
  assert source.step is None  # the finished export
  from deepalign_jax.models.sources import load_model

  checkpoint_8, _, _ = load_model(workdir, step=8)
  exported, _ = load_pretrained(workdir / "hf")
  for a, b, c in zip(jax.tree.leaves(final), jax.tree.leaves(checkpoint_8), jax.tree.leaves(exported)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  history = json.loads((workdir / "run.json").read_text())["history"]
  assert [h["event"] for h in history] == ["start", "change"]
  assert history[1]["step"] == 4 and history[1]["changed"] == {"config.train.num_steps": [4, 8]}
  assert [m["step"] for m in _metrics(workdir)] == list(range(1, 9))
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 8


def test_restart_discards_the_previous_run(models, finished, tmp_path):
  workdir, _ = _copy(finished, tmp_path)
  old = json.loads((workdir / "run.json").read_text())["id"]
  summary = run(_config(models["base"], rerun="restart", **{"optimizer.learning_rate": 3e-3}), workdir)
  assert summary["finished"] and summary["run"] != old
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4"]  # every_steps 0: only the end
  assert {m["run"] for m in _metrics(workdir)} == {summary["run"]} and len(_metrics(workdir)) == 4
  assert [h["event"] for h in json.loads((workdir / "run.json").read_text())["history"]] == ["start"]


def test_another_model_is_refused_even_when_changing_on_purpose(models, finished, tmp_path):
  workdir, _ = _copy(finished, tmp_path)
  with pytest.raises(RerunRefused, match=r"config\.model is another model .* new --workdir or --config\.rerun=restart"):
    run(_config(models["same_shape"], rerun="change"), workdir)
  # A workdir from before run.json, adopted on purpose with a model of another shape: one line, not
  # Orbax's traceback.
  (workdir / "run.json").unlink()
  with pytest.raises(RerunRefused, match=r"without run\.json"):
    run(_config(models["other_shape"]), workdir)
  with pytest.raises(ValueError, match=r"checkpoints/4: the checkpoint does not fit this run's model") as error:
    run(_config(models["other_shape"], rerun="change"), workdir)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("every", [1, 3])
def test_a_non_finite_step_removes_the_checkpoints_that_fed_it_and_the_named_one_resumes(
  models, tmp_path, monkeypatch, every
):
  """The loss of step 5 turns NaN (injected): the weights of update 4 fed it, so checkpoint 4 goes; the
  checkpoint the error names resumes, and the rerun ends with the weights of an uninterrupted run."""
  import jax.numpy as jnp

  import deepalign_jax.train.loop as loop

  real = loop.shared_train_step

  def poisoned(graphdef, state, batch, hyperparameters, *, loss_config):
    state, metrics = real(graphdef, state, batch, hyperparameters, loss_config=loss_config)
    return state, {**metrics, "loss": jnp.where(state.step == 5, jnp.nan, metrics["loss"])}

  settings = {"checkpoint.every_steps": every, "checkpoint.keep": 5, "train.num_steps": 6}
  monkeypatch.setattr(loop, "shared_train_step", poisoned)
  good = 4 - every if every == 1 else 3  # every 1: 1..4 saved, 4 fed step 5; every 3: 3 (6 is never reached)
  with pytest.raises(NonFiniteError, match=rf"step 5: loss=nan, .*checkpoint step {good} in .* is the last good one"):
    run(_config(models["base"], **settings), tmp_path / "run")
  steps = sorted(int(p.name) for p in (tmp_path / "run/checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == good
  assert [m["step"] for m in _metrics(tmp_path / "run")] == [1, 2, 3, 4]  # step 5 was never logged
  monkeypatch.setattr(loop, "shared_train_step", real)
  assert run(_config(models["base"], **settings), tmp_path / "run")["finished"]
  run(_config(models["base"], **settings), tmp_path / "straight")
  for a, b in zip(jax.tree.leaves(_params(tmp_path / "run")[0]), jax.tree.leaves(_params(tmp_path / "straight")[0])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_an_overflowing_learning_rate_stops_and_a_lower_one_resumes_from_the_named_checkpoint(models, tmp_path):
  """lr 1e30 after one warm-up step at 0: update 2 makes the weights overflow; checkpoint 1 (the initial
  weights) is good, and a rerun with a sane learning rate, changed on purpose, finishes from it."""
  blowup = {
    "objective": "sft",
    "optimizer.learning_rate": 1e30,
    "optimizer.warmup_steps": 2,
    "optimizer.grad_clip": 0.0,
    "checkpoint.every_steps": 1,
    "train.num_steps": 5,
  }
  workdir = tmp_path / "run"
  with pytest.raises(NonFiniteError, match=r"step 2: the update made the weights non-finite .* checkpoint step 1 in"):
    run(_config(models["base"], **blowup), workdir)
  sane = {**blowup, "optimizer.learning_rate": 1e-3}
  with pytest.raises(RerunRefused, match=r"config\.optimizer\.learning_rate: 1e\+30 -> 0\.001"):
    run(_config(models["base"], **sane), workdir)
  summary = run(_config(models["base"], rerun="change", **sane), workdir)
  assert summary["finished"] and summary["steps_done"] == 5
  metrics = _metrics(workdir)
  assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5] and all(np.isfinite(m["loss"]) for m in metrics)
  model, _ = _params(workdir)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(model))


def test_a_full_disk_stops_with_one_line_and_the_last_checkpoint_resumes(models, tmp_path, monkeypatch):
  """TensorStore reports a full disk as a ValueError with the OS error code (what Orbax raised on a 40 MB
  tmpfs); the run stops with one line naming the directory, and the complete checkpoint before it resumes."""
  import orbax.checkpoint as ocp

  real = ocp.CheckpointManager.save

  def full(self, step, *args, **kwargs):
    if step == 4:
      raise ValueError(
        f'RESOURCE_EXHAUSTED: Error writing "params.embed.value/0.0" in OCDBT database: Failed writing: '
        f"\"{self.directory}/4.orbax-checkpoint-tmp/state/d/0\": No space left on device [os_error_code='28']"
      )
    return real(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  settings = {"checkpoint.every_steps": 2, "objective": "sft"}
  with pytest.raises(OSError, match=r"no space left on the device .* last complete checkpoint is step 2") as error:
    run(_config(models["base"], **settings), tmp_path / "run")
  assert error.value.errno == errno.ENOSPC and "\n" not in str(error.value)
  monkeypatch.setattr(ocp.CheckpointManager, "save", real)
  assert run(_config(models["base"], **settings), tmp_path / "run")["finished"]
  assert [m["step"] for m in _metrics(tmp_path / "run")] == [1, 2, 3, 4]


@pytest.mark.parametrize(
  "overrides, pattern",
  [
    ({"train.micro_batch_size": 0}, r"config\.train\.micro_batch_size must be a positive integer, got 0"),
    ({"train.batch_size": -4}, r"config\.train\.batch_size must be a positive integer, got -4"),
    ({"train.num_steps": -3}, r"config\.train\.num_steps must be >= 0, got -3"),
    ({"rerun": "again"}, r"config\.rerun must be one of \('resume', 'restart', 'change'\)"),
  ],
)
def test_impossible_settings_are_refused_before_anything_is_written(models, tmp_path, overrides, pattern):
  with pytest.raises(ValueError, match=pattern):
    run(_config(models["base"], **overrides), tmp_path / "run")
  assert not (tmp_path / "run" / "run.json").exists()


def test_the_train_cli_prints_a_non_finite_stop_as_one_line(models, tmp_path, capsys):
  from deepalign_jax.cli import run_command_line
  from deepalign_jax.train.__main__ import _report, _run
  from deepalign_jax.train.loop import default_config

  argv = [
    "--config",
    "configs/demo.py",
    "--workdir",
    str(tmp_path / "run"),
    f"--config.model={models['base']}",
    "--config.chat_format=template",
    "--config.train.num_steps=3",
    "--config.train.batch_size=2",
    "--config.train.micro_batch_size=2",
    "--config.optimizer.learning_rate=1e30",
    "--config.optimizer.warmup_steps=0",
    "--config.optimizer.grad_clip=0.0",
    "--config.progress=False",
    "--config.tensorboard=False",
    "--config.mesh.fsdp=2",
    "--config.mesh.tensor=-1",
  ]
  assert run_command_line(argv, _run, _report, defaults=default_config) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: step ") and "not finite" in err[0]
  assert "--config.rerun=change" in err[0] and "Traceback" not in err[0]
