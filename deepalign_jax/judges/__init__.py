"""Judges: is a response a jailbreak? Keyword, LLM-over-API and offline-model judges.

  judge = make_judge({"kind": "keyword"})            # or "api", "model"
  verdicts = judge.judge([(instruction, response), ...])
  summary = summarize(verdicts)                      # ASR, harmfulness, counts

Every verdict carries the judge's name and version; see docs/judges.md.
"""

from deepalign_jax.judges.api import ApiJudge, parse_score
from deepalign_jax.judges.base import READS, Judge, JudgeConfigError, JudgeItem, Summary, Verdict, as_items, summarize
from deepalign_jax.judges.cache import ReplyCache
from deepalign_jax.judges.factory import DEFAULTS, default_config, make_judge
from deepalign_jax.judges.keyword import KeywordJudge, keyword_lists, load_keywords
from deepalign_jax.judges.model import ModelJudge, parse_safety_verdict

__all__ = [
  "ApiJudge",
  "DEFAULTS",
  "READS",
  "Judge",
  "JudgeConfigError",
  "JudgeItem",
  "KeywordJudge",
  "ModelJudge",
  "ReplyCache",
  "Summary",
  "Verdict",
  "as_items",
  "default_config",
  "keyword_lists",
  "load_keywords",
  "make_judge",
  "parse_safety_verdict",
  "parse_score",
  "summarize",
]
