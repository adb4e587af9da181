"""Benchmarks' own behaviour ids and categories through `deepalign_jax.evaluate`: carried into every
generations.jsonl record, per-category ASR and per-behaviour outcomes in summary.json (checked against the
records, counted here), JailbreakBench's targets feeding GCG."""

import json
from importlib import resources

import pytest

from deepalign_jax import attacks
from deepalign_jax.data import read_file
from deepalign_jax.evaluate import default_config, orchestrate, run
from deepalign_jax.models import sources
from tests.tiny_models import override, tiny_chat_model

ASSETS = resources.files("deepalign_jax") / "assets/demo"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
  return tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model", seed=1)


def _config(model_dir, fmt, **overrides):
  c = default_config()
  c.model = str(model_dir)
  c.chat_format = "template"
  c.benchmark.path = str(ASSETS / f"{fmt}.csv")
  c.benchmark.format = fmt
  c.attack.kind = "plain"
  c.decoding.max_new_tokens = 4
  c.decoding.batch_size = 4
  c.progress = False
  c.plot = False
  c.mesh.fsdp, c.mesh.tensor = 1, -1
  return override(c, overrides)


@pytest.mark.parametrize("fmt", ["jailbreakbench", "harmbench"])
def test_behaviour_ids_and_categories_reach_records_and_summary(tiny_model_dir, tmp_path, fmt):
  config = _config(tiny_model_dir, fmt, **{"attack.samples": 2})
  summary = run(config, tmp_path)
  records = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
  prompts = read_file(config.benchmark.path, fmt)
  assert len(records) == 2 * len(prompts)
  for r in records:
    p = prompts[r["prompt_index"]]
    assert (r["behavior_id"], r["category"], r["instruction"]) == (p.behavior_id, p.category, p.text)
  entry = summary["per_setting"]["plain"]
  categories = sorted({p.category for p in prompts})
  assert sorted(entry["per_category"]) == categories
  for category in categories:
    mine = [r for r in records if r["category"] == category]
    broken = sum(r["verdict"]["jailbroken"] for r in mine)
    got = entry["per_category"][category]
    assert (got["n"], got["n_jailbroken"], got["asr"]) == (len(mine), broken, broken / len(mine))
  assert sum(c["n"] for c in entry["per_category"].values()) == entry["n"]
  behaviors = summary["per_behavior"]
  assert sorted(behaviors) == sorted(p.behavior_id for p in prompts)
  for p in prompts:
    mine = [r for r in records if r["behavior_id"] == p.behavior_id]
    broken = [r for r in mine if r["verdict"]["jailbroken"]]
    assert behaviors[p.behavior_id] == {
      "category": p.category,
      "n": 2,
      "n_jailbroken": len(broken),
      "broken_by": ["plain"] if broken else [],
    }
  written = json.loads((tmp_path / "summary.json").read_text())
  assert written["per_behavior"] == behaviors and written["per_setting"]["plain"]["per_category"]


def test_a_benchmark_without_ids_or_categories_adds_neither(tiny_model_dir, tmp_path):
  summary = run(_config(tiny_model_dir, "advbench", **{"benchmark.limit": 2}), tmp_path)
  assert "per_behavior" not in summary and "per_category" not in summary["per_setting"]["plain"]


def test_jailbreakbench_targets_feed_gcg(tiny_model_dir, tmp_path, monkeypatch):
  seen = []

  class Result:
    suffix_text = "! !"

  def fake_run_gcg(model, tokenizer, renderer, behaviours, config, **kwargs):
    seen.extend(behaviours)
    return Result()

  monkeypatch.setattr(attacks, "run_gcg", fake_run_gcg)
  config = _config(tiny_model_dir, "jailbreakbench", **{"attack.kind": "gcg", "gcg.max_behaviours": 3})
  run(config, tmp_path)
  prompts = read_file(config.benchmark.path, "jailbreakbench")
  assert seen == [(p.text, p.reference) for p in prompts[:3]]
  assert seen[0][1].startswith("Sure, here is")


def test_an_empty_column_mapping_is_not_part_of_the_evaluations_identity(tiny_model_dir):
  """Workdirs written before `benchmark.columns` existed resume: an empty mapping is no setting."""
  config = _config(tiny_model_dir, "jailbreakbench")
  source = sources.resolve_source(config.model)
  assert not any("columns" in k for k in orchestrate.evaluation_identity(config, source, "template"))
  config.benchmark.columns = "prompt=Goal"
  assert orchestrate.evaluation_identity(config, source, "template")["config.benchmark.columns"] == "prompt=Goal"


def test_uniform_gcg_positions_keep_the_identity_of_runs_from_before_the_option(tiny_model_dir):
  """GCG evaluations written before `gcg.positions` existed drew positions uniformly: that setting is
  their identity (they resume with positions="uniform"); the default, "even", is another evaluation."""
  config = _config(tiny_model_dir, "jailbreakbench", **{"attack.kind": "gcg"})
  source = sources.resolve_source(config.model)
  assert orchestrate.evaluation_identity(config, source, "template")["config.gcg.positions"] == "even"
  config.gcg.positions = "uniform"
  ident = orchestrate.evaluation_identity(config, source, "template")
  assert not any("positions" in k for k in ident) and "config.gcg.topk" in ident
