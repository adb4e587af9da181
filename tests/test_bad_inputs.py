"""Bad inputs a user types (issue #15): each is refused with ONE line that names what it should.

A row is (entry point, argv, substrings the message must hold, substrings it must not).  The CLIs run
in-process through `cli.run_command_line` (what every CLI's `main(argv)` does); two subprocesses prove
the absl path of `run_cli` (`python -m ...`): a misspelt key and a list override.  "{tmp}", "{model}" and
"{no_tokenizer}" in argv stand for the test's directory, a tiny model and a copy of it without its
tokenizer files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepalign_jax import cli, generate
from deepalign_jax.data import load_tokenizer
from deepalign_jax.data.formats import Prompt, read_file
from deepalign_jax.evaluate import settings
from deepalign_jax.evaluate.orchestrate import run as evaluate_run
from deepalign_jax.judges.factory import make_judge
from deepalign_jax.sampling import Sampler
from deepalign_jax.sampling import generate as generate_tokens
from deepalign_jax.train import loop
from tests.tiny_models import tiny_family_model

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--config", str(ROOT / "configs/demo.py"), "--workdir", "{tmp}/train"]
EVALUATE = ["--config", str(ROOT / "configs/eval/prefill_hexphi.py"), "--workdir", "{tmp}/eval"]
GENERATE = ["--config.model=not-loaded", "--config.prompt=hello"]  # refused before the model is looked for
KEY = "sk-abc123SECRETxyz789"  # an API key given where the name of its environment variable goes


ROWS = [
  # A misspelt key, a missing section, a sub-config key: the nearest valid keys named.
  (
    "train",
    TRAIN + ["--config.train.num_stepz=3"],
    ["--config.train.num_stepz: no such key", "config.train.num_steps"],
  ),
  ("train", TRAIN + ["--config.num_steps=3"], ["--config.num_steps", "config.train.num_steps"]),
  ("train", TRAIN + ["--config.judge.timeout=3"], ["--config.judge.timeout", "no section config.judge"]),
  ("evaluate", EVALUATE + ["--config.judge.timeout=3"], ["--config.judge.timeout", "config.judge.timeout_s"]),
  ("generate", GENERATE + ["--config.max_new_token=5"], ["--config.max_new_token", "config.max_new_tokens"]),
  # Values of the wrong type, a config file that is not there.
  ("train", TRAIN + ["--config.train.num_steps=abc"], ["--config.train.num_steps", "abc"]),
  ("train", TRAIN + ["--config.eval.prefill_tokens=[5,x]"], ["--config.eval.prefill_tokens", "list of int", "'x'"]),
  ("evaluate", EVALUATE + ["--config.grid.top_ps=[0.5,high]"], ["--config.grid.top_ps", "list of float", "'high'"]),
  ("train", ["--config", "{tmp}/nope.py", "--workdir", "{tmp}/w"], ["{tmp}/nope.py", "no such config file"]),
  # generate: decoding settings no generation can use (refused before the model is loaded).
  ("generate", GENERATE + ["--config.max_new_tokens=0"], ["config.max_new_tokens must be >= 1 (an integer), got 0"]),
  ("generate", GENERATE + ["--config.max_new_tokens=-2"], ["config.max_new_tokens", "-2"]),
  ("generate", GENERATE + ["--config.temperature=-1"], ["config.temperature must be >= 0 (a number), got -1"]),
  ("generate", GENERATE + ["--config.top_p=0"], ["config.top_p must be in (0, 1]", "got 0"]),
  ("generate", GENERATE + ["--config.top_p=1.5"], ["config.top_p", "1.5"]),
  ("generate", GENERATE + ["--config.top_k=-1"], ["config.top_k must be >= 0 (an integer", "-1"]),
  # A model directory without tokenizer files.
  (
    "generate",
    ["--config.model={no_tokenizer}", "--config.prompt=hello"],
    ["{no_tokenizer}: no tokenizer files", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"],
  ),
  # evaluate: settings.check_config.
  ("evaluate", EVALUATE + ["--config.decoding.batch_size=0"], ["config.decoding.batch_size must be >= 1 (an integer)"]),
  ("evaluate", EVALUATE + ["--config.decoding.max_new_tokens=0"], ["config.decoding.max_new_tokens", "got 0"]),
  ("evaluate", EVALUATE + ["--config.decoding.temperature=-0.5"], ["config.decoding.temperature", "-0.5"]),
  ("evaluate", EVALUATE + ["--config.decoding.top_p=2.0"], ["config.decoding.top_p", "(0, 1]"]),
  ("evaluate", EVALUATE + ["--config.decoding.top_k=-3"], ["config.decoding.top_k", "-3"]),
  ("evaluate", EVALUATE + ["--config.attack.samples=0"], ["config.attack.samples", "0"]),
  (
    "evaluate",
    EVALUATE + ["--config.attack.kind=decoding_grid", "--config.grid.temperatures=[0.5,-1]"],
    ["config.grid.temperatures", "-1.0"],
  ),
  # An API key given as judge.api_key_env: refused, never echoed.
  (
    "evaluate",
    EVALUATE + ["--config.judge.kind=api", f"--config.judge.api_key_env={KEY}"],
    ["'api_key_env'", "looks like an API key"],
    [KEY, "abc123", "SECRET"],
  ),
  # train: the checks of train/loop.py (`_check_config`), landed by another change: entry "train-loop".
  ("train-loop", TRAIN + ["--config.train.micro_batch_size=0"], ["config.train.micro_batch_size", "got 0"]),
  ("train-loop", TRAIN + ["--config.train.batch_size=-4"], ["config.train.batch_size", "-4"]),
  ("train-loop", TRAIN + ["--config.train.num_steps=-3"], ["config.train.num_steps", "-3"]),
  ("train-loop", TRAIN + ["--config.dtype=float64"], ["config.dtype", "float64"]),
]


def _row(row):
  entry, argv, expected, *forbidden = row
  return entry, argv, expected, forbidden[0] if forbidden else []


def _ids():
  out = []
  for i, row in enumerate(ROWS):
    entry, argv, _, _ = _row(row)
    flags = [a.split("=")[0].replace("--config.", "") for a in argv if a.startswith("--config.")]
    out.append(f"{i:02d}-{entry}-{flags[-1] if flags else 'config'}")
  return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """name → a tiny model directory ("model", "no_tokenizer"), built on first use."""
  root = tmp_path_factory.mktemp("bad_inputs")
  built = {}

  def get(name):
    if "model" not in built:
      built["model"] = tiny_family_model(root / "model", "llama2")
    if name == "no_tokenizer" and name not in built:
      shutil.copytree(built["model"], root / name)
      for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
        (root / name / file).unlink(missing_ok=True)
      built[name] = root / name
    return str(built[name])

  return get


def _fill(text: str, tmp_path, models) -> str:
  for name in ("model", "no_tokenizer"):
    if "{" + name + "}" in text:
      text = text.replace("{" + name + "}", models(name))
  return text.replace("{tmp}", str(tmp_path))


def _command_line(entry: str, argv: list[str]) -> int:
  """What `python -m deepalign_jax.<entry> ARGV` does, in-process."""
  report = lambda summary, workdir: None
  if entry == "generate":
    return generate.main(argv)
  if entry in ("train", "train-loop"):
    return cli.run_command_line(argv, loop.run, report, defaults=loop.default_config)
  return cli.run_command_line(argv, evaluate_run, report, defaults=settings.default_config)


def assert_one_line(stderr: str, expected, forbidden=()):
  """stderr ends with exactly one line "error: ..." holding every expected substring, no traceback."""
  assert "Traceback" not in stderr, stderr
  lines = stderr.rstrip("\n").splitlines()
  assert lines and lines[-1].startswith("error: "), stderr
  assert sum(line.startswith("error:") for line in lines) == 1 and stderr.endswith("\n"), stderr
  for text in expected:
    assert text in lines[-1], (text, lines[-1])
  for text in forbidden:
    assert text not in stderr, (text, stderr)


@pytest.mark.parametrize("row", ROWS, ids=_ids())
def test_bad_input_is_one_line_naming_it(row, tmp_path, models, capsys, monkeypatch):
  entry, argv, expected, forbidden = _row(row)
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  argv = [_fill(a, tmp_path, models) for a in argv]
  assert _command_line(entry, argv) == 1
  stderr = capsys.readouterr().err
  assert_one_line(stderr, [_fill(e, tmp_path, models) for e in expected], forbidden)


def test_list_and_tuple_overrides_parse_in_every_spelling():
  train = [a.replace("{tmp}", "unused") for a in TRAIN]
  for value in ("[5,10]", "(5, 10)", "5,10"):
    config, _ = cli.parse_command_line(train + [f"--config.eval.prefill_tokens={value}"])
    assert config.eval.prefill_tokens == [5, 10], value
  # `--config.KEY VALUE`, repeated flags (appended), other overrides beside it.
  config, _ = cli.parse_command_line(
    train + ["--config.eval.prefill_tokens", "7", "--config.eval.prefill_tokens=8", "--config.train.num_steps=3"]
  )
  assert (config.eval.prefill_tokens, config.train.num_steps) == ([7, 8], 3)
  evaluate = ["--config", str(ROOT / "configs/eval/prefill_hexphi.py"), "--workdir", "unused"]
  config, _ = cli.parse_command_line(
    evaluate
    + [
      "--config.grid.temperatures=[0.5,1]",  # ints where the default holds floats become floats
      "--config.attack.prefixes=I cannot,Sure",  # unquoted strings
      '--config.attack.suffixes=["a, b", "c"]',  # quoted ones, with a comma inside
    ]
  )
  assert config.grid.temperatures == [0.5, 1.0] and all(isinstance(t, float) for t in config.grid.temperatures)
  assert (config.attack.prefixes, config.attack.suffixes) == (["I cannot", "Sure"], ["a, b", "c"])
  # A tuple field (ft_dynamics' probe.steps) takes the same spellings and stays a tuple.
  ft = ["--config", str(ROOT / "configs/analysis/demo_ft_dynamics.py"), "--workdir", "unused"]
  for value in ("[0,2]", "(0, 2)", "0,2"):
    assert cli.parse_command_line(ft + [f"--config.probe.steps={value}"])[0].probe.steps == (0, 2), value
  with pytest.raises(ValueError, match=r"^--config.probe.steps: expected a tuple of int .* got the element 'x'$"):
    cli.parse_command_line(ft + ["--config.probe.steps=0,x"])
  with pytest.raises(
    ValueError, match=r"^--config.eval.prefill_tokens: expected a list of int .* got the element 5.5$"
  ):
    cli.parse_command_line(train + ["--config.eval.prefill_tokens=[5.5]"])


SAMPLER_ROWS = [
  (dict(batch_size=0), "batch_size must be >= 1 (an integer), got 0"),
  (dict(batch_size=-2), "batch_size must be >= 1 (an integer), got -2"),
  (dict(max_new_tokens=0), "max_new_tokens must be >= 1 (an integer), got 0"),
  (dict(temperature=-1.0), "temperature must be >= 0 (a number), got -1.0"),
  (dict(temperature=[0.5, -0.1]), "temperature must be >= 0 (a number), got -0.1"),  # one value per prompt
  (dict(top_p=0.0), "top_p must be in (0, 1]"),
  (dict(top_k=-1), "top_k must be >= 0 (an integer"),
]


@pytest.mark.parametrize("kwargs, message", SAMPLER_ROWS, ids=[str(k) for k, _ in SAMPLER_ROWS])
def test_sampler_refuses_unusable_decoding_before_generating(kwargs, message, models):
  # No model is needed: the settings are refused before anything is generated.
  sampler = Sampler(None, load_tokenizer(models("model")), "base")
  prompts = [sampler.prompt([{"role": "user", "content": text}]) for text in ("hi", "there")]
  with pytest.raises(ValueError) as error:
    sampler.run(prompts, progress=False, **kwargs)
  assert message in str(error.value) and "\n" not in str(error.value)
  if "batch_size" not in kwargs:
    with pytest.raises(ValueError, match=re.escape(message)):
      generate_tokens(None, [[1, 2]], **{"max_new_tokens": 4, **kwargs})


def test_api_key_as_api_key_env_is_refused_without_echoing_it(monkeypatch):
  for value in (KEY, "hf_AbCdEfGhIjKlMnOpQrStUvWxYz1234", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStU"):
    with pytest.raises(ValueError) as error:
      make_judge({"kind": "api", "api_key_env": value})
    assert "looks like an API key" in str(error.value) and value not in str(error.value)
    assert value[4:12] not in str(error.value)
  monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
  with pytest.raises(ValueError, match="'MY_JUDGE_KEY', which is not set"):  # a name is named
    make_judge({"kind": "api", "api_key_env": "MY_JUDGE_KEY"})


@pytest.mark.parametrize("header", ["prompt", "Prompt", "goal,target", "Behavior", "HARMFUL_PROMPT"])
def test_hexphi_header_line_is_skipped_with_a_warning(header, tmp_path, caplog):
  path = tmp_path / "category_2.csv"
  path.write_text(f"{header}\nName a fruit.\nSay hi.\n")
  with caplog.at_level(logging.WARNING, logger="deepalign_jax.data.formats"):
    records = read_file(path, "hexphi")
  assert records == [Prompt("Name a fruit.", None, "2", f"{path}:2"), Prompt("Say hi.", None, "2", f"{path}:3")]
  assert f"{path}:1: skipped a header line" in caplog.text
  # A first line that is an instruction stays one.
  path.write_text("Prompt me for a fruit.\nSay hi.\n")
  assert [r.text for r in read_file(path, "hexphi")] == ["Prompt me for a fruit.", "Say hi."]


def test_generate_takes_a_training_workdir(models, tmp_path, capsys):
  """`generate --config.model=<training workdir>`: the run's final weights, in the chat format it trained with."""
  config, workdir = cli.parse_command_line(
    [a.replace("{tmp}", str(tmp_path)) for a in TRAIN]
    + [
      f"--config.model={models('model')}",
      "--config.objective=sft",
      "--config.chat_format=llama2",
      "--config.train.num_steps=1",
      "--config.train.batch_size=8",
      "--config.train.micro_batch_size=8",
      "--config.data.max_length=128",
      "--config.export_hf=False",
      "--config.progress=False",
    ]
  )
  assert loop.run(config, workdir)["finished"]
  capsys.readouterr()
  argv = ["--config.prompt=hello", "--config.max_new_tokens=3", "--config.greedy=True", "--config.json=True"]
  assert generate.main([f"--config.model={workdir}"] + argv) == 0
  record = json.loads(capsys.readouterr().out)
  assert 1 <= len(record["token_ids"]) <= 3 and "[INST] hello [/INST]" in record["prompt"], record["prompt"]


def _subprocess(args: list[str], cwd) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_absl_command_line_misspelt_key_is_one_line(tmp_path):
  done = _subprocess(
    ["deepalign_jax.train", "--config", str(ROOT / "configs/demo.py"), "--workdir", str(tmp_path / "w")]
    + ["--config.train.num_stepz=3"],
    tmp_path,
  )
  assert done.returncode == 1, done.stderr
  assert_one_line(done.stderr, ["error: --config.train.num_stepz: no such key; did you mean config.train.num_steps?"])
  assert not (tmp_path / "w").exists()


def test_absl_command_line_list_override_and_print_config(tmp_path):
  done = _subprocess(
    ["deepalign_jax.train", "--config", str(ROOT / "configs/demo.py"), "--print_config"]
    + ["--config.eval.prefill_tokens=[5,10]", "--config.train.num_steps=3"],
    tmp_path,
  )
  assert done.returncode == 0, done.stderr
  printed = json.loads(done.stdout)
  assert printed["eval"]["prefill_tokens"] == [5, 10] and printed["train"]["num_steps"] == 3
