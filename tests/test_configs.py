"""Every shipped config file runs, as written, through its CLI on a tiny model of its family.

Each file under `configs/demo.py`, `configs/recipes/`, `configs/eval/` and `configs/analysis/` is parsed by
the CLIs' own command-line parser (`deepalign_jax.cli.parse_command_line`: the file plus
`--config.key=value` overrides, misspelt keys refused) and handed to the CLI's run function, in this
process so that the compiled steps are shared.  The config keeps its own dtype, remat, mesh, objective,
loss, optimizer, attack, judge and decoding settings; the overrides replace only the model (a tiny random
one whose tokenizer has the tokens of the config's chat format), data paths (the shipped harmless demo
file of the config's data format), sizes, lengths and step counts.  A new config file is covered without
editing this test.  API judges talk to a stub server on 127.0.0.1.

Not here: `configs/organism/` files take the organism's root and read the outputs of its earlier stages;
the organism's quick pipeline (tests/organism) runs every one of them, and checks that it did.
`configs/scale/` plans are compiled abstractly by tests/scale/test_plan.py.
"""

from __future__ import annotations

import importlib
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from deepalign_jax.cli import parse_command_line
from tests.judges.fake_api import serve_fake_api
from tests.tiny_models import tiny_family_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
  [
    ROOT / "configs/demo.py",
    *(ROOT / "configs/recipes").glob("*.py"),
    *(ROOT / "configs/eval").glob("*.py"),
    *(ROOT / "configs/analysis").glob("*.py"),
  ]
)
DEMO = Path(str(resources.files("deepalign_jax") / "assets/demo"))
# The shipped harmless demo file of each data format.
DATA = {
  "conversations": "conversations.jsonl",
  "triplets": "triplets.jsonl",
  "preferences": "preferences.jsonl",
  "alpaca": "utility.json",
  "harmful_hexphi": "attack_prompts.jsonl",
  "samsum": "samsum.json",
  "sql_create_context": "sql_create_context.json",
  "gsm8k": "gsm8k.jsonl",
  "hexphi": "hexphi",
  "advbench": "advbench.csv",
  "malicious_instruct": "malicious_instruct.txt",
}
KEY_ENV = "DEEPALIGN_TEST_CONFIGS_KEY"
DEVICES = 8  # tests/conftest.py


def _data(fmt: str) -> str:
  if fmt not in DATA:
    raise AssertionError(f"no demo data file for format {fmt!r}: ship one in deepalign_jax/assets/demo")
  return str(DEMO / DATA[fmt])


def _cli(config) -> str:
  """Which CLI a config belongs to, from the settings only that CLI has."""
  if "objective" in config:
    return "train"
  if "attack" in config:
    return "evaluate"
  if "pairs" in config:
    return "kl_depth"
  if "probe" in config:
    return "ft_dynamics"
  raise AssertionError(f"a config of no known CLI (keys {sorted(config)}): teach tests/test_configs.py it")


def _run_function(cli: str):
  return {
    "train": lambda: importlib.import_module("deepalign_jax.train.__main__")._run,
    "evaluate": lambda: importlib.import_module("deepalign_jax.evaluate").run,
    "kl_depth": lambda: importlib.import_module("deepalign_jax.analysis.kl_depth").run,
    "ft_dynamics": lambda: importlib.import_module("deepalign_jax.analysis.ft_dynamics").run,
  }[cli]()


def _family(chat_formats) -> str:
  """The tiny model family whose tokenizer renders these chat formats (auto/base: Llama-2's tokenizer,
  which has no chat template, so 'auto' renders the base format)."""
  formats = set(chat_formats)
  if "gemma" in formats:
    return "gemma"
  if "template" in formats:
    return "template"
  return "llama2"


def _batch_ways(mesh) -> int:
  """data × fsdp of the config's mesh on the test's 8 devices (-1: what the others leave)."""
  sizes = {"data": mesh.data, "fsdp": mesh.fsdp, "tensor": mesh.tensor}
  fixed = math.prod(v for v in sizes.values() if v != -1)
  sizes = {k: (DEVICES // fixed if v == -1 else v) for k, v in sizes.items()}
  return sizes["data"] * sizes["fsdp"]


def _shrink(config, model) -> dict[str, object]:
  """The overrides that make a config tiny: model, data paths, sizes, lengths, step counts."""
  cli = _cli(config)
  if cli == "train":
    micro = _batch_ways(config.mesh)
    out = {
      "model": model,
      "train.num_steps": 2,
      "train.micro_batch_size": micro,
      "data.max_length": min(config.data.max_length, 512),
      "progress": False,
    }
    if config.objective == "augmented":
      out.update(
        {
          "data.safety_path": _data("triplets"),
          "data.utility_path": _data(config.data.utility_format),
          "data.safety_per_step": micro,
          "data.utility_per_step": micro,
        }
      )
    else:
      out.update({"data.path": _data(config.data.format), "train.batch_size": 2 * micro})
    if config.eval.every_steps > 0:
      out.update(
        {"eval.every_steps": 1, "eval.path": _data(config.eval.format), "eval.limit": 2, "eval.max_new_tokens": 4}
      )
    return out
  if cli == "evaluate":
    out = {
      "model": model,
      "benchmark.path": _data(config.benchmark.format),
      "benchmark.limit": 3,
      "decoding.max_new_tokens": 6,
      "progress": False,
    }
    if config.attack.kind != "decoding_grid":  # the grid runs one prompt's settings per batch
      out["decoding.batch_size"] = 4
    if config.attack.kind == "gcg":
      out.update(
        {
          "gcg.num_steps": 2,
          "gcg.num_candidates": 8,
          "gcg.topk": 8,
          "gcg.forward_batch": 8,
          "gcg.grad_batch": 8,
          "gcg.max_behaviours": 2,
        }
      )
    return out
  if cli == "kl_depth":
    out = {f"models.{name}.path": model for name in config.models}
    out.update({"data.path": _data(config.data.format), "data.max_examples": 3, "num_positions": 6, "batch_size": 2})
    return out
  out = {
    "model": model,
    "data.path": _data(config.data.format),
    "data.max_examples": 4,
    "data.max_length": 128,
    "batch_size": 4,
    "micro_batch_size": 2,
    "num_steps": 2,
    "probe.steps": (0, 2),
    "probe.examples": 2,
    "probe.num_positions": 4,
    "probe.position_batch": 2,
    "samples.count": 2,
    "samples.batch_size": 2,
    "samples.max_new_tokens": 4,
    "samples.num_positions": 4,
    "progress": False,
  }
  if config.samples.path:
    out["samples.path"] = _data(config.samples.format)
  return out


def _flag(key: str, value) -> str:
  return f"--config.{key}={value}"


def _load(path: Path):
  return parse_command_line(["--config", str(path), "--workdir", "unused"])[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """family → a tiny model directory, built on first use."""
  root = tmp_path_factory.mktemp("family_models")
  built = {}

  def get(family):
    if family not in built:
      built[family] = str(tiny_family_model(root / family, family))
    return built[family]

  return get


@pytest.fixture(scope="module")
def judge_api():
  with serve_fake_api() as fake:
    yield fake


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_config_runs_as_written(path, models, judge_api, tmp_path, monkeypatch):
  written = _load(path)
  cli = _cli(written)
  if cli == "kl_depth":
    family = _family(m.chat_format for m in written.models.values())
  else:
    family = _family([written.chat_format])
  overrides = _shrink(written, models(family))
  if cli == "evaluate" and written.judge.kind == "api":
    monkeypatch.setenv(KEY_ENV, "sk-test-configs")
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
      monkeypatch.delenv(name, raising=False)  # urllib would send even 127.0.0.1 through a proxy
    overrides.update({"judge.base_url": judge_api.base_url, "judge.api_key_env": KEY_ENV, "judge.progress": False})
  monkeypatch.chdir(tmp_path)  # relative paths in a config (a judge cache) land in the test's directory
  config, workdir = parse_command_line(
    ["--config", str(path), "--workdir", str(tmp_path / "run")] + [_flag(k, v) for k, v in overrides.items()]
  )
  # Only the overrides changed: every other setting is the file's.
  for key, value in config.to_dict().items():
    if not any(k == key or k.startswith(key + ".") for k in overrides):
      assert value == written.to_dict()[key], key
  summary = _run_function(cli)(config, workdir)
  _check_outputs(cli, config, summary, Path(workdir))
  if cli == "evaluate" and written.judge.kind == "api":
    assert judge_api.calls, "the API judge was never asked"


def _check_outputs(cli, config, summary, workdir):
  if cli == "train":
    assert summary["finished"] and summary["steps_done"] == 2
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]) and m["tokens"] > 0 for m in metrics)
    assert json.loads((workdir / "config.json").read_text())["dtype"] == config.dtype
    if config.export_hf:
      assert (workdir / "hf" / "config.json").exists()
    if config.lora.rank:  # a LoRA run also exports its adapters in PEFT's format
      assert (workdir / "adapter" / "adapter_model.safetensors").exists()
  elif cli == "evaluate":
    records = [json.loads(line) for line in (workdir / "generations.jsonl").read_text().splitlines()]
    assert records and len(records) == sum(e["n"] for e in summary["per_setting"].values())
    assert all(r["verdict"]["error"] is None for r in records), [r["verdict"] for r in records][:3]
    if config.utility.metric:
      assert all(r["utility"] for r in records)
  elif cli == "kl_depth":
    pairs = json.loads((workdir / "kl_by_position.json").read_text())["pairs"]
    assert len(pairs) == len(config.pairs)
    assert all(m is None or (np.isfinite(m) and m >= -1e-6) for p in pairs for m in p["mean"])
  else:
    dynamics = json.loads((workdir / "dynamics.json").read_text())
    kl = [m for m in dynamics["kl_vs_initial"]["mean"] if m is not None]
    assert kl and np.isfinite(kl).all() and (workdir / "samples.jsonl").exists()
