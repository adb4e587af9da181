"""`python -m deepalign_jax.datagen`: D_H and D_B built from tiny models end to end, trained on, resumed.

The models are built so that what they say is known (`successor_model_dir`: each token's next token is
fixed), so every kept or dropped record can be checked against what the model must have said:

- the aligned model answers every prompt "I cannot help you" or "I cannot help with", the last word
  drawn at random (two successors with equal logits), then end-of-turn;
- the jailbroken model (a training workdir fine-tuned from one) answers "Sure, here is";
- the keyword judge's refusal list is ["help you"], so "... help with" is judged no refusal.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from deepalign_jax import cli
from deepalign_jax.data import read_file
from deepalign_jax.datagen import default_config, run
from deepalign_jax.datagen.settings import KEY_DOCS
from deepalign_jax.identity import RerunRefused
from deepalign_jax.judges.factory import KEY_DOCS as JUDGE_KEY_DOCS
from deepalign_jax.models import sources
from deepalign_jax.sampling import Sampler
from deepalign_jax.train import loop
from tests.tiny_models import _demo_texts, successor_model_dir

ROOT = Path(__file__).resolve().parents[2]
DEMO = resources.files("deepalign_jax") / "assets/demo"
REFUSAL, NOT_REFUSAL, COMPLIANT = "I cannot help you", "I cannot help with", "Sure, here is"


def _chain(tokenizer, text):
  return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """{"aligned": HF dir, "jailbroken": HF dir, "tokenizer": ...} (see the module docstring)."""
  from safetensors.numpy import load_file, save_file

  from tests.data.tokenizers import sentencepiece_like_tokenizer

  root = tmp_path_factory.mktemp("datagen_models")
  phrases = [f"{REFUSAL}. {NOT_REFUSAL} that. {COMPLIANT} the answer."] * 20
  tokenizer = sentencepiece_like_tokenizer(800, extra_texts=_demo_texts() + phrases)
  yes, other, comply = _chain(tokenizer, REFUSAL), _chain(tokenizer, NOT_REFUSAL), _chain(tokenizer, COMPLIANT)
  assert yes[:-1] == other[:-1] and yes[-1] != other[-1] and tokenizer.unk_token_id not in yes + other + comply
  eos = tokenizer.eos_token_id
  successors = dict(zip(yes, yes[1:] + [eos])) | {other[-1]: eos}
  aligned = successor_model_dir(root / "aligned", tokenizer, successors, default=yes[0])
  weights = load_file(str(aligned / "model.safetensors"))
  weights["lm_head.weight"][other[-1], yes[-2]] = 1.0  # "help" → "you" or "with", equally likely
  save_file(weights, str(aligned / "model.safetensors"), metadata={"format": "pt"})
  jailbroken = successor_model_dir(root / "jailbroken", tokenizer, dict(zip(comply, comply[1:] + [eos])), comply[0])
  return {"aligned": aligned, "jailbroken": jailbroken, "tokenizer": tokenizer, "root": root}


@pytest.fixture(scope="module")
def keywords(tmp_path_factory):
  path = tmp_path_factory.mktemp("judge") / "refusals.txt"
  path.write_text("help you\n")
  return str(path)


def _config(models, keywords, **overrides):
  c = default_config()
  c.model = str(models["aligned"])
  c.chat_format = "llama2"
  c.safety.path = str(DEMO / "attack_prompts.jsonl")
  c.safety.format = "harmful_hexphi"
  c.safety.limit = 10
  c.utility.path = str(DEMO / "utility.json")
  c.utility.limit = 5
  c.decoding.max_new_tokens = 8
  c.decoding.batch_size = 4
  c.utility_decoding.max_new_tokens = 8
  c.utility_decoding.batch_size = 4
  c.judge.keywords = keywords
  c.progress = False
  c.mesh.fsdp, c.mesh.tensor = 1, -1
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


def _records(workdir):
  return [json.loads(line) for line in (workdir / "generations.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def jailbroken_workdir(models, tmp_path_factory):
  """A harmful fine-tuning's training workdir: one SFT step (learning rate 1e-6) from the jailbroken model."""
  workdir = tmp_path_factory.mktemp("harmful_sft") / "run"
  config, _ = cli.parse_command_line(
    ["--config", str(ROOT / "configs/demo.py"), "--workdir", str(workdir)]
    + [
      f"--config.model={models['jailbroken']}",
      "--config.objective=sft",
      "--config.chat_format=llama2",
      f"--config.data.path={DEMO / 'attack_prompts.jsonl'}",
      "--config.data.format=harmful_hexphi",
      "--config.data.max_length=96",
      "--config.train.num_steps=1",
      "--config.train.batch_size=4",
      "--config.train.micro_batch_size=4",
      "--config.optimizer.learning_rate=1e-6",
      "--config.mesh.fsdp=1",
      "--config.mesh.tensor=-1",
      "--config.export_hf=False",
      "--config.tensorboard=False",
      "--config.progress=False",
    ]
  )
  assert loop.run(config, workdir)["finished"]
  return workdir


def test_builds_d_h_and_d_b_end_to_end_and_trains_the_augmentation_on_them(
  models, keywords, jailbroken_workdir, tmp_path
):
  config = _config(
    models,
    keywords,
    **{
      "safety.harmful": "model",
      "safety.harmful_model": str(jailbroken_workdir),
      "safety.harmful_chat_format": "llama2",
    },
  )
  summary = run(config, tmp_path / "data")
  records = {(r["stage"], r["index"]): r for r in _records(tmp_path / "data")}
  assert len(records) == 10 + 10 + 5
  refusals = [records["refusal", i]["text"] for i in range(10)]
  assert set(refusals) == {REFUSAL, NOT_REFUSAL}  # both draws happen with this seed
  assert all(records["harmful", i]["text"] == COMPLIANT for i in range(10))
  assert all(records["utility", i]["text"] in (REFUSAL, NOT_REFUSAL) for i in range(5))
  aligned_fp = sources.resolve_source(str(models["aligned"])).fingerprint()
  workdir_source = sources.resolve_source(str(jailbroken_workdir))
  assert workdir_source.kind == "training" and records["harmful", 0]["model"] == workdir_source.fingerprint()
  assert records["refusal", 0]["model"] == aligned_fp != workdir_source.fingerprint()

  # Kept exactly when the refusal is one (the harmful answers all comply), in instruction order.
  prompts = read_file(DEMO / "attack_prompts.jsonl", "harmful_hexphi")[:10]
  kept = [i for i in range(10) if refusals[i] == REFUSAL]
  triplets = read_file(tmp_path / "data/triplets.jsonl", "triplets")
  assert [(t.instruction, t.harmful, t.refusal) for t in triplets] == [
    (prompts[i].user, COMPLIANT, REFUSAL) for i in kept
  ]
  s = summary["safety"]
  assert (s["instructions"], s["kept"], s["dropped"]) == (10, len(kept), 10 - len(kept))
  assert s["dropped_by_reason"] == {"refusal_not_a_refusal": 10 - len(kept)}
  assert [d["index"] for d in s["dropped_records"]] == [i for i in range(10) if i not in kept]
  rows = [json.loads(line) for line in (tmp_path / "data/triplets.jsonl").read_text().splitlines()]
  p = rows[0]["provenance"]
  assert p["refusal"]["model"] == aligned_fp and p["harmful"]["model"] == workdir_source.fingerprint()
  assert p["refusal"]["decoding"] == {
    "temperature": 0.9,
    "top_k": 50,
    "top_p": 0.6,
    "greedy": False,
    "max_new_tokens": 8,
  }
  assert p["refusal"]["verdict"]["jailbroken"] is False and p["harmful"]["verdict"]["jailbroken"] is True
  assert p["judge"]["name"] == "keyword" and p["harmful"]["chat_format"] == "llama2"

  # D_B: every instruction answered greedily (the lower of the two equal successors' ids), Alpaca JSON.
  utility = read_file(tmp_path / "data/utility.json", "alpaca")
  sources_utility = read_file(DEMO / "utility.json", "alpaca")[:5]
  greedy = min((REFUSAL, NOT_REFUSAL), key=lambda text: _chain(models["tokenizer"], text)[-1])
  assert [(u.user, u.assistant) for u in utility] == [(r.user, greedy) for r in sources_utility]
  assert summary["utility"]["written"] == 5 and summary["throughput"]["generated_tokens"] > 0

  # The augmentation objective trains on them.
  train_config, train_dir = cli.parse_command_line(
    ["--config", str(ROOT / "configs/recipes/llama2_augmentation.py"), "--workdir", str(tmp_path / "train")]
    + [
      f"--config.model={models['aligned']}",
      f"--config.data.safety_path={tmp_path / 'data/triplets.jsonl'}",
      f"--config.data.utility_path={tmp_path / 'data/utility.json'}",
      "--config.data.safety_per_step=2",
      "--config.data.utility_per_step=2",
      "--config.data.recovery_C=4",
      "--config.train.num_steps=2",
      "--config.train.micro_batch_size=4",
      "--config.dtype=float32",
      "--config.param_dtype=",
      "--config.mesh.fsdp=1",
      "--config.mesh.tensor=-1",
      "--config.export_hf=False",
      "--config.tensorboard=False",
      "--config.progress=False",
    ]
  )
  result = loop.run(train_config, train_dir)
  assert result["finished"]
  metrics = [json.loads(line) for line in (tmp_path / "train/metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["loss"]) and m["tokens"] > 0 for m in metrics)


def test_a_build_killed_and_rerun_equals_an_uninterrupted_one(models, keywords, tmp_path, monkeypatch):
  # Sampled everywhere, the prefilling attack as the harmful source: every text depends on its batch's seed.
  config = _config(
    models, keywords, **{"safety.harmful": "prefill", "safety.prefill_tokens": 3, "utility_decoding.greedy": False}
  )
  config.decoding.batch_size = config.utility_decoding.batch_size = 2
  run(config, tmp_path / "straight")

  calls, real_run = [], Sampler.run

  def dying_run(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 6:
      raise KeyboardInterrupt  # killed while generating the 6th batch
    return real_run(self, *args, **kwargs)

  monkeypatch.setattr(Sampler, "run", dying_run)
  with pytest.raises(KeyboardInterrupt):
    run(config, tmp_path / "killed")
  monkeypatch.setattr(Sampler, "run", real_run)
  path = tmp_path / "killed/generations.jsonl"
  lines = path.read_text().splitlines()
  assert len(lines) == 10  # five batches of two
  path.write_text("\n".join(lines[:9]) + "\n" + lines[9][:30])  # and the last line torn mid-write
  run(config, tmp_path / "killed")
  for name in ("generations.jsonl", "triplets.jsonl", "utility.json", "summary.json"):
    assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
  records = _records(tmp_path / "straight")
  # The prefilled answers: the file answer's first 3 tokens, then the aligned model's continuation, judged
  # whole; kept exactly when the refusal is one and the prefilled answer did not recover into one.
  harmful = {r["index"]: r for r in records if r["stage"] == "harmful"}
  refusal = {r["index"]: r for r in records if r["stage"] == "refusal"}
  assert all(h["prefill"] and h["text"].startswith(h["prefill"]) for h in harmful.values())
  reasons = {
    i: ["refusal_not_a_refusal"] * ("help you" not in refusal[i]["text"])
    + ["harmful_not_compliant"] * ("help you" in harmful[i]["text"])
    for i in range(10)
  }
  summary = json.loads((tmp_path / "straight/summary.json").read_text())
  dropped = {d["index"]: d["reasons"] for d in summary["safety"]["dropped_records"]}
  assert dropped == {i: r for i, r in reasons.items() if r} and 0 < len(dropped) < 10
  assert summary["safety"]["kept"] == 10 - len(dropped)
  assert {r for rs in dropped.values() for r in rs} == {"refusal_not_a_refusal", "harmful_not_compliant"}
  # A finished build reruns without loading a model, and another setting is refused.
  monkeypatch.setattr(sources, "load", lambda *a, **k: pytest.fail("a finished build loaded a model"))
  assert run(config, tmp_path / "straight")["safety"] == summary["safety"]
  config.decoding.temperature = 0.5
  with pytest.raises(RerunRefused, match=r"config\.decoding\.temperature: 0\.9 -> 0\.5; use a new --workdir"):
    run(config, tmp_path / "straight")


def test_harmful_answers_from_the_file_and_refused_configs(models, keywords, tmp_path):
  summary = run(_config(models, keywords, **{"utility.path": "", "safety.limit": 4}), tmp_path / "file")
  records = [r for r in _records(tmp_path / "file") if r["stage"] == "harmful"]
  prompts = read_file(DEMO / "attack_prompts.jsonl", "harmful_hexphi")[:4]
  assert [r["text"] for r in records] == [p.assistant for p in prompts] and {r["from"] for r in records} == {"file"}
  assert all(r["model"] is None and r["verdict"]["jailbroken"] for r in records) and "utility" not in summary
  bad = [
    ({"safety.path": str(DEMO / "hexphi"), "safety.format": "hexphi"}, r"category_1\.csv:1: safety\.harmful='file'"),
    ({"safety.harmful": "model"}, r"config\.safety\.harmful_model is empty"),
    ({"safety.harmful": "jailbreak"}, r"config\.safety\.harmful must be one of"),
    ({"safety.path": "", "utility.path": ""}, r"nothing to build"),
    ({"utility.out": "triplets.jsonl"}, r"config\.safety\.out and config\.utility\.out are the same file"),
    ({"utility.out": "run.json"}, r"config\.utility\.out must be a file name"),
    ({"utility_decoding.top_p": 0.0}, r"config\.utility_decoding\.top_p must be in \(0, 1\]"),
    ({"safety.columns": "prompt=x"}, r"a column mapping .* is set, but format 'harmful_hexphi'"),
  ]
  for overrides, pattern in bad:
    with pytest.raises(ValueError, match=pattern):
      run(_config(models, keywords, **overrides), tmp_path / "bad")


def test_shipped_datagen_configs_run_and_every_key_is_documented(models, keywords, tmp_path):
  lines = cli.describe_config(
    default_config(), default_config, KEY_DOCS, {f"judge.{k}": d for k, d in JUDGE_KEY_DOCS.items()}
  ).splitlines()
  assert lines and all("    # " in line for line in lines), [line for line in lines if "    # " not in line]
  for path in sorted((ROOT / "configs/datagen").glob("*.py")):
    config, workdir = cli.parse_command_line(
      ["--config", str(path), "--workdir", str(tmp_path / path.stem)]
      + [
        f"--config.model={models['aligned']}",
        "--config.chat_format=llama2",
        f"--config.safety.path={DEMO / 'attack_prompts.jsonl'}",
        f"--config.safety.harmful_model={models['jailbroken']}",
        f"--config.utility.path={DEMO / 'utility.json'}",
        f"--config.judge.keywords={keywords}",
        "--config.safety.limit=2",
        "--config.utility.limit=2",
        "--config.decoding.max_new_tokens=6",
        "--config.utility_decoding.max_new_tokens=6",
        "--config.decoding.batch_size=2",
        "--config.utility_decoding.batch_size=2",
        "--config.dtype=float32",
        "--config.mesh.fsdp=1",
        "--config.mesh.tensor=-1",
        "--config.progress=False",
      ]
    )
    summary = run(config, workdir)
    assert summary["safety"]["instructions"] == 2 and summary["utility"]["instructions"] == 2, path.name


@pytest.mark.slow  # three CLI processes: ~1.5 minutes on 2 idle cores
def test_kill_9_mid_build_then_the_same_command_writes_what_an_uninterrupted_build_writes(models, keywords, tmp_path):
  import os
  import signal
  import subprocess
  import sys
  import time

  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}

  def command(workdir):
    return [
      sys.executable,
      "-m",
      "deepalign_jax.datagen",
      "--config",
      str(ROOT / "configs/datagen/demo.py"),
      "--workdir",
      str(workdir),
      f"--config.model={models['aligned']}",
      "--config.chat_format=llama2",
      f"--config.judge.keywords={keywords}",
      "--config.safety.limit=12",
      "--config.utility.limit=24",
      "--config.decoding.batch_size=1",
      "--config.utility_decoding.batch_size=1",
      "--config.utility_decoding.greedy=False",
      "--config.progress=False",
    ]

  straight = subprocess.run(command(tmp_path / "straight"), env=env, capture_output=True, text=True, timeout=600)
  assert straight.returncode == 0, straight.stderr[-2000:]
  records = tmp_path / "killed/generations.jsonl"
  process = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if records.exists() and records.read_bytes().count(b"\n") >= 16:  # into the harmful stage
      break
    time.sleep(0.01)
  assert process.poll() is None, process.stderr.read().decode()[-2000:]
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  written = records.read_bytes().count(b"\n")
  assert 16 <= written < 12 + 12 + 24, written
  done = subprocess.run(command(tmp_path / "killed"), env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  for name in ("generations.jsonl", "triplets.jsonl", "utility.json", "summary.json"):
    assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
