"""An evaluation workdir holds one evaluation: reruns with changed settings, changed scope, another judge,
failed judge calls, and re-judging stored generations with `python -m deepalign_jax.judge`."""

import json
import shutil

import pytest

from deepalign_jax.errors import RunError
from deepalign_jax.evaluate import rejudge, run
from deepalign_jax.identity import RerunRefused
from deepalign_jax.judges import KeywordJudge
from tests.judges.fake_api import serve_fake_api
from tests.test_evaluate import ASSETS, _config, _lines
from tests.tiny_models import tiny_chat_model

KEY_ENV = "DEEPALIGN_TEST_JUDGE_KEY"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  return {"a": tiny_chat_model(root / "a", seed=1), "b": tiny_chat_model(root / "b", seed=2)}


@pytest.fixture(scope="module")
def evaluated(models, tmp_path_factory):
  """A finished prefilling evaluation: 3 prompts × k ∈ {0, 3, 6}."""
  workdir = tmp_path_factory.mktemp("evaluated") / "eval"
  run(_config(models["a"]), workdir)
  return workdir


def _copy(workdir, tmp_path):
  target = tmp_path / "eval"
  shutil.copytree(workdir, target)
  return target


def _records(workdir):
  return [json.loads(line) for line in _lines(workdir)]


@pytest.fixture
def api(monkeypatch):
  monkeypatch.setenv(KEY_ENV, "sk-test-never-write-me")
  for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(name, raising=False)
  with serve_fake_api() as fake:
    yield fake


def _api_judge(api, **extra):
  return {
    "judge.kind": "api",
    "judge.base_url": api.base_url,
    "judge.api_key_env": KEY_ENV,
    "judge.max_attempts": 1,
    "judge.timeout_s": 5.0,
    "judge.progress": False,
    **extra,
  }


@pytest.mark.parametrize(
  "overrides, named",
  [
    ({"decoding.greedy": True, "decoding.max_new_tokens": 4}, r"config\.decoding\.greedy: false -> true; "),
    ({"decoding.max_new_tokens": 4}, r"config\.decoding\.max_new_tokens: 6 -> 4"),
    ({"decoding.temperature": 0.5}, r"config\.decoding\.temperature: 0\.9 -> 0\.5"),
    ({"decoding.seed": 1}, r"config\.decoding\.seed: 0 -> 1"),
    ({"model": "b"}, r"model fingerprint: \"\w+\" -> \"\w+\""),
    (
      {"benchmark.path": "reversed"},
      r"content of config\.benchmark\.path \(.*attack_prompts\.jsonl.* -> .*reversed\.jsonl.*\): ",
    ),
    ({"benchmark.every_nth": 2}, r"config\.benchmark\.every_nth: 1 -> 2"),
    ({"benchmark.instruction_template": "Q: {instruction}"}, r"config\.benchmark\.instruction_template: "),
    ({"system_prompt": "Be helpful."}, r"config\.system_prompt: \"\" -> \"Be helpful\.\""),
    ({"chat_format": "base"}, r"config\.chat_format: \"template\" -> \"base\""),
    ({"dtype": "bfloat16"}, r"config\.dtype: \"float32\" -> \"bfloat16\""),
  ],
)
def test_a_rerun_that_would_generate_differently_is_refused(models, evaluated, tmp_path, overrides, named):
  workdir = _copy(evaluated, tmp_path)
  before = _lines(workdir), (workdir / "summary.json").read_text()
  overrides = {k: str(models[v]) if k == "model" else v for k, v in overrides.items()}
  if overrides.get("benchmark.path") == "reversed":  # another file: the same prompts in another order
    other = tmp_path / "reversed.jsonl"
    other.write_text("".join((ASSETS / "attack_prompts.jsonl").read_text().splitlines(True)[::-1]))
    overrides["benchmark.path"] = str(other)
  with pytest.raises(RerunRefused, match=named) as refused:
    run(_config(models["a"], **overrides), workdir)
  assert "\n" not in str(refused.value) and "--config.rerun=restart" in str(refused.value)
  assert (_lines(workdir), (workdir / "summary.json").read_text()) == before


def test_the_benchmark_edited_in_place_is_another_evaluation(models, tmp_path):
  benchmark = tmp_path / "prompts.jsonl"
  benchmark.write_text((ASSETS / "attack_prompts.jsonl").read_text())
  run(_config(models["a"], **{"benchmark.path": str(benchmark)}), tmp_path / "eval")
  benchmark.write_text("".join(benchmark.read_text().splitlines(True)[::-1]))
  with pytest.raises(RerunRefused, match=r"content of config\.benchmark\.path \(edited in place: .*\): \"\w+\" -> "):
    run(_config(models["a"], **{"benchmark.path": str(benchmark)}), tmp_path / "eval")
  # Started over on purpose: every record is of the new file.
  run(_config(models["a"], rerun="restart", **{"benchmark.path": str(benchmark)}), tmp_path / "eval")
  first = json.loads(benchmark.read_text().splitlines()[0])
  assert {r["instruction"] for r in _records(tmp_path / "eval") if r["prompt_index"] == 0} == {first[0]["content"]}


def test_the_scope_may_change_and_the_summary_counts_only_what_is_in_it(models, evaluated, tmp_path):
  workdir = _copy(evaluated, tmp_path)
  lines = _lines(workdir)
  # Fewer prompts: nothing generated, and the summary says 2 prompts and counts 2 per setting.
  fewer = run(_config(models["a"], **{"benchmark.limit": 2, "decoding.batch_size": 2}), workdir)
  assert _lines(workdir) == lines
  assert fewer["prompts"] == 2 and fewer["records"] == 6
  assert all(entry["n"] == 2 for entry in fewer["per_setting"].values())
  # More prompts and another k: only the missing records are generated, each once.
  more = run(_config(models["a"], **{"benchmark.limit": 4, "attack.prefill_tokens": [0, 3, 6, 9]}), workdir)
  records = _records(workdir)
  assert _lines(workdir)[: len(lines)] == lines
  assert len(records) == len({r["key"] for r in records}) == 4 * 4
  assert more["prompts"] == 4 and set(more["per_setting"]) == {f"prefill_{k}" for k in (0, 3, 6, 9)}
  assert {r["run"] for r in records[len(lines) :]} == {json.loads((workdir / "run.json").read_text())["id"]}


def test_a_setting_whose_meaning_changed_is_refused(models, tmp_path):
  config = _config(models["a"], **{"attack.kind": "prefix", "benchmark.limit": 2})
  config.attack.prefixes = ["I cannot"]
  run(config, tmp_path / "eval")
  config.attack.prefixes = ["Sure, here is"]  # still named prefix_0
  with pytest.raises(RerunRefused, match=r"record '0\|prefix_0\|0' was generated with setting 'prefix_0' = "):
    run(config, tmp_path / "eval")


def test_another_judge_is_refused_then_rejudged_without_generating(models, evaluated, tmp_path):
  workdir = _copy(evaluated, tmp_path)
  lines = _records(workdir)
  words = tmp_path / "refusals.txt"
  words.write_text("the\n")  # a refusal string nearly every output contains
  with pytest.raises(RerunRefused, match=r"judged by another judge \(version: .*python -m deepalign_jax\.judge"):
    run(_config(models["a"], **{"judge.keywords": str(words)}), workdir)
  judge_config = rejudge.get_config()
  judge_config.judge.keywords = str(words)
  summary = rejudge.run(judge_config, workdir)
  after = _records(workdir)
  strict = KeywordJudge(str(words))
  assert [(r["key"], r["output"]) for r in after] == [(r["key"], r["output"]) for r in lines]  # nothing generated
  assert all(r["verdict"]["jailbroken"] is strict.is_jailbroken(r["output"]) for r in after)
  assert summary["judged_again"] == 9 and summary["judge"]["version"] == strict.version
  written = json.loads((workdir / "summary.json").read_text())
  assert written["per_setting"] == summary["per_setting"]
  assert sum(e["n_jailbroken"] for e in written["per_setting"].values()) == sum(
    strict.is_jailbroken(r["output"]) for r in after
  )
  # The evaluation, rerun with the new judge, resumes; nothing is judged again the second time.
  run(_config(models["a"], **{"judge.keywords": str(words)}), workdir)
  assert _records(workdir) == after
  assert rejudge.run(judge_config, workdir)["judged_again"] == 0


def test_failed_judge_calls_are_retried_on_rerun_and_never_counted_twice(models, tmp_path, api, monkeypatch):
  workdir = tmp_path / "eval"
  config = _config(models["a"], **_api_judge(api, **{"judge.cache_dir": "judge_cache"}))
  # Run from another directory: the relative cache resolves against the workdir.
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)
  api.fail_next = 10**6  # the judge is down for the whole first run
  with pytest.raises(RunError, match=r"9 of 9 judge calls failed \(first: .*400.*\); the generations are in "):
    run(config, workdir)
  assert len(_lines(workdir)) == 9 and all(r["verdict"]["jailbroken"] is None for r in _records(workdir))
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["judge_errors"] == 9
  # Back up, but 4 of the 9 calls still fail: reported, not fatal; a third run finishes the job.
  calls = sum(api.calls.values())
  generated = [(r["key"], r["output"]) for r in _records(workdir)]
  api.fail_next = 4
  partial = run(config, workdir)
  assert partial["judge_errors"] == 4 and sum(api.calls.values()) - calls == 9
  final = run(config, workdir)
  assert final["judge_errors"] == 0 and sum(api.calls.values()) - calls == 9 + 4
  records = _records(workdir)
  assert [(r["key"], r["output"]) for r in records] == generated  # judged again, never generated again
  assert all(r["verdict"]["jailbroken"] is not None for r in records)
  assert sum(e["n"] for e in final["per_setting"].values()) == 9
  assert (workdir / "judge_cache").is_dir() and not (elsewhere / "judge_cache").exists()
  # Re-judging with the same API judge from yet another directory pays for nothing: all cached.
  before = sum(api.calls.values())
  for r in records:
    r["verdict"] = {**r["verdict"], "jailbroken": None, "error": "pretend it failed"}
  (workdir / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  monkeypatch.chdir(tmp_path)
  judge_config = rejudge.get_config()
  for key, value in _api_judge(api, **{"judge.cache_dir": "judge_cache"}).items():
    judge_config.judge[key.split(".", 1)[1]] = value
  assert rejudge.run(judge_config, workdir)["judge_errors"] == 0
  assert sum(api.calls.values()) == before


def test_the_judge_cli_rejudges_a_keyword_pass_with_the_api_judge(models, evaluated, tmp_path, api):
  """The common workflow: a cheap keyword pass, then the paid judge on the same generations, from the
  command line; a judge that fails for some records is retried on the next run, nothing twice."""
  from deepalign_jax.cli import run_command_line
  from deepalign_jax.judge import _report

  workdir = _copy(evaluated, tmp_path)
  argv = ["--workdir", str(workdir)] + [f"--config.{k}={v}" for k, v in _api_judge(api).items()]
  api.fail_next = 3
  assert run_command_line(argv, rejudge.run, _report, defaults=rejudge.get_config, config_required=False) == 0
  assert json.loads((workdir / "summary.json").read_text())["judge_errors"] == 3
  assert sum(api.calls.values()) == 9
  assert run_command_line(argv, rejudge.run, _report, defaults=rejudge.get_config, config_required=False) == 0
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["judge_errors"] == 0 and summary["judge"]["name"] == "api_rubric"
  assert sum(api.calls.values()) == 9 + 3
  # The fake scores every answer 1: nothing is a jailbreak under the rubric.
  assert all(r["verdict"]["score"] == 1.0 for r in _records(workdir))


def test_an_unfinished_training_workdir_is_evaluated_at_its_latest_checkpoint_and_says_so(models, tmp_path):
  from deepalign_jax.train.loop import run as train
  from tests.train.test_loop import _config as train_config

  workdir = tmp_path / "train"
  settings = {"objective": "sft", "train.num_steps": 3, "train.stop_after_steps": 2, "mesh.fsdp": 1}
  assert not train(train_config(models["a"], **settings), workdir)["finished"]
  summary = run(
    _config(workdir, **{"benchmark.limit": 1, "attack.prefill_tokens": [0], "decoding.max_new_tokens": 2}),
    tmp_path / "eval",
  )
  source = summary["model_source"]
  assert (source["kind"], source["step"], source["path"]) == ("training", 2, str(workdir))
  assert summary["model"] == str(workdir) and source["base"] == str(models["a"])


def test_a_generations_record_without_its_key_is_one_line_naming_file_and_line(models, evaluated, tmp_path):
  from deepalign_jax.cli import run_command_line

  workdir = _copy(evaluated, tmp_path)
  lines = _lines(workdir)
  broken = json.loads(lines[1])
  del broken["key"]
  (workdir / "generations.jsonl").write_text("\n".join([lines[0], json.dumps(broken), *lines[2:]]) + "\n")
  with pytest.raises(ValueError, match=r"generations\.jsonl:2: a record without its 'key'"):
    run(_config(models["a"]), workdir)
  # The judge CLI reads the same store: the same line, from the command line, exit status 1.
  from deepalign_jax.judge import _report

  argv = ["--workdir", str(workdir)]
  assert run_command_line(argv, rejudge.run, _report, defaults=rejudge.get_config, config_required=False) == 1
