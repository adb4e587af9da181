"""`python -m deepalign_jax.train`: end to end on a tiny model and the shipped demo data."""

import json
from importlib import resources

import jax
import numpy as np
import pytest
import transformers

from deepalign_jax.models import load_pretrained
from deepalign_jax.train.__main__ import training_hooks
from deepalign_jax.train.loop import default_config, run
from tests.tiny_models import override, tiny_chat_model

ASSETS = resources.files("deepalign_jax") / "assets/demo"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
  return tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def _config(model_dir, **overrides):
  c = default_config()
  c.model = str(model_dir)
  c.chat_format = "template"
  c.objective = "constrained_sft"
  c.data.path = str(ASSETS / "conversations.jsonl")
  c.data.max_length = 96
  c.train.batch_size, c.train.micro_batch_size = 4, 2
  c.train.epochs, c.train.num_steps = 1, 4
  c.optimizer.learning_rate, c.optimizer.warmup_steps = 1e-3, 1
  c.progress = False
  c.tensorboard = False
  # 8 simulated devices: micro-batches of 2 rows over fsdp=2, the rest tensor-parallel.
  c.mesh.fsdp, c.mesh.tensor = 2, -1
  return override(c, overrides)


def _metrics(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_constrained_run_writes_checkpoints_metrics_and_an_hf_export(tiny_model_dir, tmp_path):
  summary = run(_config(tiny_model_dir, **{"checkpoint.every_steps": 2, "tensorboard": True}), tmp_path)
  assert summary["finished"] and summary["steps_done"] == summary["total_steps"] == 4
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
  # The data iterator's position is committed with the state.
  assert json.loads(next((tmp_path / "checkpoints/4/data").glob("process_0*.json")).read_text()) == {"next_index": 4}
  metrics = _metrics(tmp_path)
  assert [m["step"] for m in metrics] == [1, 2, 3, 4]
  assert all(np.isfinite(m["loss"]) and m["tokens"] > 0 and m["tokens_per_s"] > 0 for m in metrics)
  # The constraint's diagnostics: w_t starts at exactly 1 (policy = reference), per position.
  first = metrics[0]
  assert len(first["weight_by_position"]) == len(first["delta_by_position"]) == 8
  np.testing.assert_allclose(first["weight_by_position"][:3], 1.0, atol=1e-5)
  np.testing.assert_allclose(first["delta_by_position"][:3], 0.0, atol=1e-5)
  assert first["mean_weight"] == pytest.approx(1.0, abs=1e-5)
  assert metrics[-1]["mean_weight"] != pytest.approx(1.0, abs=1e-4)
  assert (tmp_path / "reference_logps.npz").exists()
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 0
  assert (tmp_path / "params").is_dir()
  # The export is read back by us and by transformers, with the same logits.
  ours, _ = load_pretrained(tmp_path / "hf")
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager")
  ids = np.array([[1, 2, 3, 4, 5, 6]])
  import torch

  with torch.no_grad():
    theirs = hf(input_ids=torch.as_tensor(ids)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours(ids)), theirs, atol=1e-5)
  # The workdir as a model source: its final params, with the chat format it was trained in.
  from deepalign_jax.models.sources import resolve_source

  source = resolve_source(str(tmp_path))
  assert (source.kind, source.step, source.chat_format) == ("training", None, "template")
  original, _ = load_pretrained(tiny_model_dir)
  assert not np.allclose(np.asarray(original(ids)), np.asarray(ours(ids)))  # training changed it


def test_resumed_run_equals_uninterrupted_run(tiny_model_dir, tmp_path):
  straight = tmp_path / "straight"
  run(_config(tiny_model_dir), straight)
  resumed = tmp_path / "resumed"
  first = run(_config(tiny_model_dir, **{"train.stop_after_steps": 2, "checkpoint.every_steps": 1}), resumed)
  assert not first["finished"] and not (resumed / "hf").exists()
  second = run(_config(tiny_model_dir), resumed)
  assert second["finished"]
  assert [m["loss"] for m in _metrics(resumed)] == pytest.approx([m["loss"] for m in _metrics(straight)], rel=1e-6)
  a, _ = load_pretrained(straight / "hf")
  b, _ = load_pretrained(resumed / "hf")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
  # A workdir without hf/ is evaluated from its latest checkpoint: the same weights.
  from deepalign_jax.models.sources import load_model

  (resumed / "hf").rename(resumed / "exported")
  c, _, _ = load_model(resumed)
  for x, y in zip(jax.tree.leaves(b), jax.tree.leaves(c)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_augmented_objective_feeds_recovery_and_utility_rows(tiny_model_dir, tmp_path, monkeypatch):
  """The batches the loop hands to the step: safety rows (group 0) are prompt + h[:k] + r masked to r, with
  k = epoch_k(seed, epoch, triplet) re-drawn each epoch; utility rows (group 1) are the utility data."""
  from deepalign_jax.data import (
    ChatRenderer,
    load_tokenizer,
    prepare_recovery,
    read_file,
    recovery_example,
    tokenize_conversation,
  )
  from deepalign_jax.data.examples import epoch_k
  from deepalign_jax.data.pipeline import StepOrder
  from deepalign_jax.train import loop

  fed = []
  real_step = loop.shared_train_step

  def recording_step(graphdef, state, batch, hyperparameters, *, loss_config):
    fed.append({k: np.asarray(v) for k, v in batch.items()})
    return real_step(graphdef, state, batch, hyperparameters, loss_config=loss_config)

  monkeypatch.setattr(loop, "shared_train_step", recording_step)
  # 12 triplets, 4 per step: 3 steps per epoch, so step 4 draws epoch 1's k.
  config = _config(
    tiny_model_dir, objective="augmented", **{"train.num_steps": 4, "train.micro_batch_size": 4, "train.seed": 3}
  )
  config.data.safety_path = str(ASSETS / "triplets.jsonl")
  config.data.utility_path = str(ASSETS / "utility.json")
  config.data.safety_per_step, config.data.utility_per_step = 4, 4
  config.data.recovery_C = 10
  config.loss.alpha = 0.2
  # The in-training prefilling evaluation, every other step.
  config.eval.every_steps, config.eval.path, config.eval.limit = 2, str(ASSETS / "attack_prompts.jsonl"), 4
  config.eval.max_new_tokens, config.eval.batch_size, config.eval.prefill_tokens = 4, 4, [0, 3]
  summary = run(config, tmp_path, hooks=training_hooks(config))
  assert summary["finished"] and summary["examples"] == 12 and len(fed) == 4

  tokenizer = load_tokenizer(tiny_model_dir)
  renderer = ChatRenderer(tokenizer, "template")
  triplets = [
    prepare_recovery(renderer, t.instruction, t.harmful, t.refusal, source=t.source)
    for t in read_file(ASSETS / "triplets.jsonl", "triplets")
  ]
  utility = {
    tuple(tokenize_conversation(renderer, r.system, r.user, r.assistant)[0].input_ids)
    for r in read_file(ASSETS / "utility.json", "alpaca")
  }
  ks_by_epoch = {0: set(), 1: set()}
  for step, batch in enumerate(fed):
    rows = {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}
    np.testing.assert_array_equal(rows["group"], [0] * 4 + [1] * 4)
    epoch = step // 3
    # Which triplets the step draws is the data order's business (StepOrder, tested with the pipeline);
    # the demo file repeats its triplets, so rows are matched to triplets by that order, not by their text.
    for row, index in enumerate(StepOrder(12, 4, seed=3).indices(step)):
      length = int(rows["attention_mask"][row].sum())
      ids, mask = rows["input_ids"][row, :length], rows["loss_mask"][row, :length]
      k = epoch_k(3, epoch, int(index), triplets[index].harmful_length, C=10, p_zero=0.5)
      expected = recovery_example(triplets[index], k)
      np.testing.assert_array_equal(ids, expected.input_ids)
      np.testing.assert_array_equal(mask, expected.loss_mask)
      # The loss falls on the refusal (and its end-of-turn) only.
      np.testing.assert_array_equal(ids[mask == 1], triplets[index].refusal_ids)
      ks_by_epoch[epoch].add((int(index), k))
    for row in range(4, 8):
      length = int(rows["attention_mask"][row].sum())
      assert tuple(rows["input_ids"][row, :length]) in utility
  # k is re-drawn per epoch: some triplet of step 4 got another k than in epoch 0.
  epoch0 = dict(ks_by_epoch[0])
  assert any(epoch0.get(i, k) != k for i, k in ks_by_epoch[1])

  # The logged in-training ASR is the hook's on the weights after that step: rerun the hook on the export.
  metrics = _metrics(tmp_path)
  assert [("eval/asr_prefill_0" in m) for m in metrics] == [False, True, False, True]
  hook = training_hooks(config)[0][1]
  final, _ = load_pretrained(tmp_path / "hf")
  assert hook(4, final) == {k: v for k, v in metrics[-1].items() if k.startswith("eval/")}


def test_pure_bf16_run_trains_checkpoints_and_exports(tiny_model_dir, tmp_path):
  """dtype bfloat16 without param_dtype: bf16 weights and AdamW moments end to end, the loss going down."""
  summary = run(
    _config(
      tiny_model_dir,
      objective="sft",
      dtype="bfloat16",
      **{
        "train.num_steps": 6,
        "checkpoint.every_steps": 3,
        "optimizer.learning_rate": 3e-3,
        "optimizer.warmup_steps": 0,
        "optimizer.decay": "constant",
        "data.every_nth": 3,
      },
    ),
    tmp_path,
  )
  assert summary["finished"] and summary["examples"] == 8  # records 0, 3, ..., 21 of 24
  losses = [m["loss"] for m in _metrics(tmp_path)]
  assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
  import orbax.checkpoint as ocp

  saved = ocp.StandardCheckpointer().metadata(tmp_path / "checkpoints/6/state").item_metadata
  assert {leaf.dtype for leaf in jax.tree.leaves(saved["params"])} == {np.dtype("bfloat16")}
  assert {leaf.dtype for leaf in jax.tree.leaves(saved["opt_state"]) if leaf.shape} == {np.dtype("bfloat16")}
  exported, _ = load_pretrained(tmp_path / "hf")
  assert np.isfinite(np.asarray(exported(np.array([[1, 2, 3]])))).all()


@pytest.mark.parametrize(
  "overrides, error, pattern",
  [
    (
      {"train.micro_batch_size": 3},
      ValueError,
      r"config\.train\.batch_size=4 is not a multiple of config\.train\.micro_batch_size=3",
    ),
    (
      {"objective": "ppo"},
      ValueError,
      r"config\.objective must be one of \('sft', 'constrained_sft', 'augmented', 'dpo'\), got 'ppo'",
    ),
    ({"data.path": "/nonexistent/data.jsonl"}, FileNotFoundError, r"/nonexistent/data\.jsonl"),
    ({"data.format": "alpaca"}, Exception, r"conversations\.jsonl"),
    ({"data.format": "csv"}, Exception, r"unknown data format 'csv'; expected one of conversations, "),
    (
      {"data.path": "tfds:/nonexistent/manual"},
      FileNotFoundError,
      r"/nonexistent/manual: manual directory for deepalign_conversations does not exist",
    ),
    ({"model": ""}, ValueError, r"config\.model is empty"),
    ({"model": "/nonexistent/model"}, Exception, r"/nonexistent/model"),
    ({"chat_format": "vicuna"}, Exception, r"vicuna"),
    (
      {"mesh.fsdp": 4},
      ValueError,
      r"config\.train\.micro_batch_size=2 must be a multiple of the mesh's data × fsdp = 4",
    ),
    (
      {"objective": "augmented"},
      ValueError,
      r"config\.data\.safety_path is empty: the augmented objective reads triplets records from it",
    ),
    ({"data.path": ""}, ValueError, r"config\.data\.path is empty"),
    ({"dtype": "float16"}, ValueError, r"config\.dtype='float16' is not supported; expected one of float32, bfloat16"),
    ({"param_dtype": "fp32"}, ValueError, r"config\.param_dtype='fp32' is not supported"),
    ({"data.every_nth": 0}, ValueError, r"config\.data\.every_nth must be >= 1, got 0"),
  ],
)
def test_bad_configs_fail_with_a_clear_message(tiny_model_dir, tmp_path, overrides, error, pattern):
  with pytest.raises(error, match=pattern):
    run(_config(tiny_model_dir, **overrides), tmp_path)


def test_reference_cache_is_recomputed_for_other_data(tiny_model_dir, tmp_path):
  """A rerun on other data is refused; continued on purpose (rerun=change), its reference log-probs are
  computed again from the starting model, never taken from the cache of the first data."""
  from deepalign_jax.identity import RerunRefused
  from deepalign_jax.train import reference

  run(_config(tiny_model_dir, **{"train.num_steps": 1}), tmp_path / "run")
  cache = tmp_path / "run" / "reference_logps.npz"
  first = reference.cache_identity(cache)
  fewer = tmp_path / "fewer.jsonl"
  fewer.write_text("".join((ASSETS / "conversations.jsonl").read_text().splitlines(True)[:-1]))
  other = {"train.num_steps": 2, "data.path": str(fewer)}
  with pytest.raises(
    RerunRefused, match=r"content of config\.data\.path \(.*conversations\.jsonl.* -> .*fewer\.jsonl\"\): "
  ):
    run(_config(tiny_model_dir, **other), tmp_path / "run")
  run(_config(tiny_model_dir, rerun="change", **other), tmp_path / "run")
  assert reference.cache_identity(cache) not in ("", first)
  with np.load(cache) as data:
    assert len(data["lengths"]) == len(fewer.read_text().splitlines())
  fresh = tmp_path / "fresh"
  run(_config(tiny_model_dir, **{"train.num_steps": 1, "data.path": str(fewer)}), fresh)
  with np.load(cache) as a, np.load(fresh / "reference_logps.npz") as b:
    np.testing.assert_allclose(a["values"], b["values"], rtol=1e-6, atol=1e-6)


def test_cli_runs_the_demo_config_shortened(tiny_model_dir, tmp_path):
  import os
  import subprocess
  import sys

  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "deepalign_jax.train",
      "--config",
      "configs/demo.py",
      "--workdir",
      str(tmp_path),
      f"--config.model={tiny_model_dir}",
      "--config.train.num_steps=2",
      "--config.progress=False",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads(result.stdout)
  assert summary["finished"] and summary["steps_done"] == 2
  assert (tmp_path / "hf" / "config.json").exists()
  bad = subprocess.run(
    [
      sys.executable,
      "-m",
      "deepalign_jax.train",
      "--config",
      "configs/demo.py",
      "--workdir",
      str(tmp_path / "bad"),
      "--config.model=/nonexistent",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
  )
  assert bad.returncode == 1 and "error: /nonexistent: no such model directory" in bad.stderr


def test_training_reads_a_tfds_build_of_the_manual_directory(tiny_model_dir, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "train.jsonl").write_text((ASSETS / "conversations.jsonl").read_text())
  plain = run(
    _config(tiny_model_dir, objective="sft", **{"train.num_steps": 2, "export_hf": False}), tmp_path / "plain"
  )
  via_tfds = run(
    _config(
      tiny_model_dir,
      objective="sft",
      **{
        "train.num_steps": 2,
        "export_hf": False,
        "data.path": f"tfds:{manual}",
        "data.tfds_data_dir": str(tmp_path / "tfds"),
      },
    ),
    tmp_path / "tfds_run",
  )
  assert via_tfds["examples"] == plain["examples"]
  assert list((tmp_path / "tfds").rglob("*.array_record-*"))
  # Same records in the same order: the same losses.
  assert [m["loss"] for m in _metrics(tmp_path / "tfds_run")] == pytest.approx(
    [m["loss"] for m in _metrics(tmp_path / "plain")], rel=1e-6
  )


@pytest.mark.slow  # three training runs, two of them CLI processes: ~45 s on 2 idle cores
def test_kill_9_at_any_moment_then_rerun_reproduces_the_uninterrupted_run(tiny_model_dir, tmp_path):
  """The CLI is killed (SIGKILL) after its first checkpoint commits, mid-run; the same command finishes."""
  import os
  import signal
  import subprocess
  import sys
  import time

  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  workdir = tmp_path / "killed"
  command = [
    sys.executable,
    "-m",
    "deepalign_jax.train",
    "--config",
    "configs/demo.py",
    "--workdir",
    str(workdir),
    f"--config.model={tiny_model_dir}",
    "--config.train.num_steps=6",
    "--config.checkpoint.every_steps=1",
    "--config.data.max_length=96",
    "--config.progress=False",
    "--config.export_hf=False",
  ]
  process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if (workdir / "checkpoints" / "2").exists():  # step 2 being written or just committed
      break
    time.sleep(0.05)
  assert process.poll() is None, process.stderr.read().decode()[-2000:]
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  assert json.loads(done.stdout)["finished"]
  config = _config(
    tiny_model_dir, **{"train.num_steps": 6, "export_hf": False, "mesh.fsdp": 2, "mesh.tensor": 1, "mesh.data": 1}
  )
  config.data.max_length = 96
  import importlib.util

  spec = importlib.util.spec_from_file_location("demo", "configs/demo.py")
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  reference = demo.get_config()
  reference.model, reference.progress, reference.tensorboard = str(tiny_model_dir), False, False
  reference.train.num_steps, reference.data.max_length, reference.export_hf = 6, 96, False
  reference.mesh.fsdp, reference.mesh.tensor = 2, 4
  del config
  run(reference, tmp_path / "straight")
  killed = _metrics(workdir)
  assert [m["step"] for m in killed] == list(range(1, 7))
  assert [m["loss"] for m in killed] == pytest.approx([m["loss"] for m in _metrics(tmp_path / "straight")], rel=1e-5)


def test_cli_refuses_a_misspelt_config_key(tmp_path):
  import subprocess
  import sys

  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "deepalign_jax.train",
      "--config",
      "configs/demo.py",
      "--workdir",
      str(tmp_path),
      "--config.train.num_step=2",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode != 0 and "num_step" in result.stderr


def test_dpo_on_triplets_prefers_the_refusal_and_resumes_exactly(tiny_model_dir, tmp_path):
  """The dpo objective on the shipped triplets (refusal ≻ harmful answer): step 1 starts at log 2 (the policy
  is its cached reference), the refusals gain on the harmful answers, and a resumed run equals an
  uninterrupted one."""
  settings = {
    "objective": "dpo",
    "data.path": str(ASSETS / "triplets.jsonl"),
    "data.format": "triplets",
    "train.batch_size": 2,
    "train.micro_batch_size": 2,
    "train.num_steps": 6,
    "loss.dpo_beta": 0.5,
    "mesh.fsdp": 1,
  }
  straight = run(_config(tiny_model_dir, **settings), tmp_path / "straight")
  assert straight["finished"] and (tmp_path / "straight/reference_logps.npz").exists()
  metrics = _metrics(tmp_path / "straight")
  assert metrics[0]["loss"] == pytest.approx(np.log(2), abs=1e-4)
  assert metrics[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
  assert metrics[-1]["reward_margin"] > 0.5 and metrics[-1]["reward_accuracy"] == 1.0
  resumed = tmp_path / "resumed"
  run(_config(tiny_model_dir, **{**settings, "train.stop_after_steps": 3, "checkpoint.every_steps": 3}), resumed)
  run(_config(tiny_model_dir, **{**settings, "checkpoint.every_steps": 3}), resumed)
  assert [m["loss"] for m in _metrics(resumed)] == pytest.approx([m["loss"] for m in metrics], rel=1e-6)
  with pytest.raises(ValueError, match=r"not preference data \(Conversation records\)"):
    run(
      _config(
        tiny_model_dir, **{**settings, "data.format": "conversations", "data.path": str(ASSETS / "conversations.jsonl")}
      ),
      tmp_path / "c",
    )
