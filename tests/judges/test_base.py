"""Verdicts, items, aggregation and make_judge (judge-independent behaviour)."""

import json

import ml_collections
import pytest

from deepalign_jax.judges import (
  DEFAULTS,
  ApiJudge,
  Judge,
  JudgeConfigError,
  JudgeItem,
  KeywordJudge,
  Verdict,
  as_items,
  default_config,
  make_judge,
  summarize,
)
from deepalign_jax.judges.base import fill_template, load_template


def _v(jailbroken, score=None, error=None):
  return Verdict(jailbroken=jailbroken, score=score, error=error, judge="j", judge_version="1")


def test_asr_leaves_errors_out_and_counts_them():
  verdicts = [_v(True, 5.0), _v(False, 1.0), _v(False, 2.0), _v(True, 5.0), _v(None, error="HTTP 500")]
  s = summarize(verdicts)
  assert (s.n, s.n_judged, s.n_errors, s.n_jailbroken) == (5, 4, 1, 2)
  assert s.asr == 0.5  # 2 of the 4 judged; the error is not a "safe"
  assert s.n_scored == 4 and s.harmfulness == pytest.approx((5 + 1 + 2 + 5) / 4)
  assert (s.judge, s.judge_version) == ("j", "1")
  assert json.loads(json.dumps(s.to_dict()))["asr"] == 0.5


def test_summary_without_scores_or_verdicts():
  s = summarize([_v(True), _v(False), _v(False), _v(False)])
  assert s.asr == 0.25 and s.harmfulness is None and s.n_scored == 0
  empty = summarize([_v(None, error="x")])
  assert empty.asr is None and empty.n_errors == 1
  mixed = [_v(True), Verdict(jailbroken=True, judge="other", judge_version="1")]
  with pytest.raises(ValueError, match="different judges"):
    summarize(mixed)


def test_items_from_pairs_and_mappings():
  items = as_items(
    [
      ("how?", "like so"),
      ["q", "a"],
      {"prompt": "p", "response": "r"},
      {"instruction": "i", "response": "r2"},
      JudgeItem("x", "y"),
    ]
  )
  assert items == [("how?", "like so"), ("q", "a"), ("p", "r"), ("i", "r2"), ("x", "y")]
  with pytest.raises(TypeError, match="item 1: the response must be a string"):
    as_items([("a", "b"), ("a", None)])
  with pytest.raises(TypeError, match="item 0: a mapping needs"):
    as_items([{"prompt": "p", "answer": "a"}])
  with pytest.raises(TypeError, match="item 0: expected an"):
    as_items([("a", "b", "c")])


def test_fill_template_substitutes_once():
  # A literal "{response}" in the instruction must not be replaced by the response.
  out = fill_template("Q: {instruction}\nA: {response}", "say {response} {x}", "ok")
  assert out == "Q: say {response} {x}\nA: ok"


def test_template_files_are_checked(tmp_path):
  bad = tmp_path / "rubric.txt"
  bad.write_text("Score this: {response}")
  with pytest.raises(JudgeConfigError, match=r"lacks the placeholder\(s\) \['\{instruction\}'\]"):
    load_template(str(bad), "unused")
  with pytest.raises(JudgeConfigError, match="cannot read the prompt template"):
    load_template(str(tmp_path / "missing.txt"), "unused")
  good = tmp_path / "mine.txt"
  good.write_text("{instruction} / {response}")
  text, ident = load_template(str(good), "unused")
  good.write_text("{instruction} // {response}")
  assert ident.startswith("mine-") and load_template(str(good), "unused")[1] != ident


def test_make_judge_from_dict_and_config_dict(monkeypatch):
  judge = make_judge({"kind": "keyword", "keywords": "llm_attacks"})
  assert isinstance(judge, KeywordJudge) and isinstance(judge, Judge)
  assert judge.keywords[0] == "I'm sorry" and len(judge.keywords) == 7
  config = default_config("keyword")
  assert isinstance(config, ml_collections.ConfigDict)
  assert make_judge(config).version == make_judge({"kind": "keyword"}).version
  monkeypatch.setenv("MY_JUDGE_KEY", "k")
  api = default_config("api")
  api.api_key_env, api.model, api.cache_dir = "MY_JUDGE_KEY", "judge-model", "/tmp/unused-judge-cache"
  built = make_judge(api)
  assert isinstance(built, ApiJudge) and built.version.startswith("judge-model/rubric_v1-")
  assert built.cache is not None and str(built.cache.path).startswith("/tmp/unused-judge-cache")
  model = default_config("model")
  model.template = "some/path.txt"  # None placeholders accept strings


def test_reads_defaults_follow_the_reference():
  """Keyword judge: the continuation (the reference's keyword evaluation); API judge: prefill +
  continuation (its GPT-4 prefilling evaluation); model judge: the whole answer too."""
  assert {kind: DEFAULTS[kind]["reads"] for kind in DEFAULTS} == {
    "keyword": "continuation",
    "api": "response",
    "model": "response",
  }
  assert make_judge({"kind": "keyword"}).reads == "continuation"
  assert make_judge({"kind": "keyword", "reads": "response"}).reads == "response"
  assert make_judge(default_config("keyword")).reads == "continuation"
  api_config = default_config("api")
  api_config.api_key_env = ""
  assert make_judge(api_config).reads == "response"
  api = make_judge({"kind": "api", "api_key_env": ""})
  assert api.reads == "response"
  assert make_judge({"kind": "api", "api_key_env": "", "reads": "continuation"}).reads == "continuation"
  for config in ({"kind": "keyword", "reads": "prefill"}, {"kind": "api", "api_key_env": "", "reads": "all"}):
    with pytest.raises(JudgeConfigError, match=r"'reads' must be one of \('continuation', 'response'\)"):
      make_judge(config)


@pytest.mark.parametrize(
  "config,pattern",
  [
    ({}, "'kind' must be one of"),
    ({"kind": "gpt4"}, "'kind' must be one of"),
    ({"kind": "keyword", "keyword": "qi2025"}, r"unknown key\(s\) \['keyword'\]; a 'keyword' judge takes \['keywords'"),
    ({"kind": "keyword", "base_url": "http://x"}, r"\['base_url'\] set, but a judge of kind 'keyword' does not take"),
    ({"kind": "api", "concurency": 4, "api_key_env": ""}, r"unknown key\(s\) \['concurency'\]"),
    ({"kind": "api", "api_key_env": "", "concurrency": 0}, "concurrency must be an integer >= 1"),
    ({"kind": "api", "api_key_env": "", "base_url": "localhost:8000"}, "base_url must start with"),
    ({"kind": "model"}, "needs 'model'"),
  ],
)
def test_make_judge_errors_name_the_key(config, pattern):
  with pytest.raises(JudgeConfigError, match=pattern):
    make_judge(config)


def test_verdict_round_trips_through_json():
  v = Verdict(jailbroken=True, score=5.0, raw="#thescore: 5", judge="api_rubric", judge_version="m/r")
  assert Verdict(**json.loads(json.dumps(v.to_dict()))) == v


def test_the_command_line_switches_the_judge_kind_and_sets_its_keys():
  """The judge section holds every kind's keys (None: the kind's default), so a locked config takes
  --config.judge.kind=api with the API judge's keys; a key the kind does not take is refused."""
  from deepalign_jax.cli import parse_command_line
  from deepalign_jax.judges import ApiJudge

  base = ["--config", "configs/eval/prefill_hexphi.py", "--workdir", "unused"]
  config, _ = parse_command_line(base)
  assert config.judge.kind == "keyword" and isinstance(make_judge(config.judge), KeywordJudge)
  config, _ = parse_command_line(
    base
    + [
      "--config.judge.kind=api",
      "--config.judge.base_url=http://127.0.0.1:9/v1",
      "--config.judge.api_key_env=",
      "--config.judge.score_rule=first",
      "--config.judge.concurrency=2",
    ]
  )
  judge = make_judge(config.judge)
  assert isinstance(judge, ApiJudge) and judge.url == "http://127.0.0.1:9/v1/chat/completions"
  assert judge.concurrency == 2 and judge.reads == "response" and "score-first" in judge.version
  config, _ = parse_command_line(base + ["--config.judge.keywords=llm_attacks", "--config.judge.kind=api"])
  with pytest.raises(JudgeConfigError, match=r"\['keywords'\] set, but a judge of kind 'api' does not take them"):
    make_judge(config.judge)


def test_every_judge_key_has_a_help_line():
  from deepalign_jax.judges.factory import KEY_DOCS

  assert set(KEY_DOCS) == set(default_config().keys())
