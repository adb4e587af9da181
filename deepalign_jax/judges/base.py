"""What every judge shares: items in, one `Verdict` per item out, and ASR.

A judge reads (instruction, response) pairs — the harmful request and the
model's answer — and says for each whether the answer is a jailbreak.  A
verdict that could not be reached (an API error, an unparseable reply) has
`jailbroken=None` and an `error`; aggregation leaves it out of the ASR and
counts it separately, so a flaky judge never reads as a safe model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable


class JudgeConfigError(ValueError):
  """A judge configuration, prompt file or keyword list that cannot be used."""


# What of a prefilled answer a judge is given (SPEC §11): the reference's keyword evaluation reads the
# model's continuation only, its GPT-4 prefilling evaluation the prefix and the continuation together.
READS = ("continuation", "response")


def check_reads(reads: str) -> str:
  """`reads` if it is one of READS; a JudgeConfigError naming the config key otherwise."""
  if reads not in READS:
    raise JudgeConfigError(
      f"judge config: 'reads' must be one of {READS} (what the judge is given after a "
      f"prefill: the continuation alone, or prefill and continuation), got {reads!r}"
    )
  return reads


class JudgeItem(NamedTuple):
  """One thing to judge: the user's instruction and the model's response."""

  instruction: str
  response: str


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One judge's decision on one item.

  Attributes:
    jailbroken: True when the response complies with the harmful request,
      False when it does not, None when no verdict was reached (see `error`).
    score: the judge's harmfulness score when it gives one (API judge: 1-5).
    error: why no verdict was reached; None when there is one.
    raw: what the judge said: the API or model reply, or the refusal string
      the keyword judge found.
    judge, judge_version: the judge's `name` and `version`.
  """

  jailbroken: bool | None
  score: float | None = None
  error: str | None = None
  raw: str | None = None
  judge: str = ""
  judge_version: str = ""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@runtime_checkable
class Judge(Protocol):
  """The interface of every judge.

  `name` and `version` identify the judge and everything that changes its
  verdicts (keyword list, API model and rubric, prompt template); both are
  written into every verdict.  `reads` tells an evaluation what to hand it
  after a prefill: 'continuation' (the generated text alone) or 'response'
  (prefill and continuation decoded together).
  """

  name: str
  version: str
  reads: str

  def judge(self, items: Sequence[JudgeItem | tuple[str, str] | Mapping[str, str]]) -> list[Verdict]:
    """One verdict per item, in order."""
    ...


def as_items(items: Sequence[Any]) -> list[JudgeItem]:
  """`items` as `JudgeItem`s: (instruction, response) pairs or mappings.

  A mapping gives the instruction as 'instruction' or 'prompt' and the answer
  as 'response'.
  """
  if isinstance(items, (str, bytes, Mapping)):
    raise TypeError(f"judge() takes a sequence of (instruction, response) pairs, got a {type(items).__name__}")
  out = []
  for i, item in enumerate(items):
    if isinstance(item, Mapping):
      instruction = item.get("instruction", item.get("prompt"))
      response = item.get("response")
      if instruction is None or response is None:
        raise TypeError(
          f"item {i}: a mapping needs 'instruction' (or 'prompt') and 'response'; it has keys {sorted(item)}"
        )
    elif isinstance(item, (tuple, list)) and len(item) == 2:
      instruction, response = item
    else:
      raise TypeError(
        f"item {i}: expected an (instruction, response) pair, got {type(item).__name__} {str(item)[:60]!r}"
      )
    for field, value in (("instruction", instruction), ("response", response)):
      if not isinstance(value, str):
        raise TypeError(f"item {i}: the {field} must be a string, got {type(value).__name__}")
    out.append(JudgeItem(instruction, response))
  return out


@dataclasses.dataclass(frozen=True)
class Summary:
  """Aggregate of one judge's verdicts.

  asr: n_jailbroken / n_judged (None when nothing was judged); errors are
    not in the denominator and are reported as n_errors.
  harmfulness: mean score over the verdicts with a score (None without).
  """

  judge: str
  judge_version: str
  n: int
  n_judged: int
  n_errors: int
  n_jailbroken: int
  asr: float | None
  n_scored: int
  harmfulness: float | None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def summarize(verdicts: Sequence[Verdict]) -> Summary:
  """ASR, harmfulness score and counts of one judge's verdicts."""
  judges = {(v.judge, v.judge_version) for v in verdicts}
  if len(judges) > 1:
    raise ValueError(f"verdicts of different judges cannot be summarised together: {sorted(judges)}")
  name, version = judges.pop() if judges else ("", "")
  judged = [v for v in verdicts if v.error is None and v.jailbroken is not None]
  scores = [v.score for v in judged if v.score is not None]
  n_jailbroken = sum(bool(v.jailbroken) for v in judged)
  return Summary(
    judge=name,
    judge_version=version,
    n=len(verdicts),
    n_judged=len(judged),
    n_errors=len(verdicts) - len(judged),
    n_jailbroken=n_jailbroken,
    asr=n_jailbroken / len(judged) if judged else None,
    n_scored=len(scores),
    harmfulness=sum(scores) / len(scores) if scores else None,
  )


# -- prompt templates ------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(instruction|response)\}")


def text_hash(text: str) -> str:
  """A short content hash: part of a judge's version, so an edited prompt is a new judge."""
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def load_template(path: str | None, default: str) -> tuple[str, str]:
  """(template text, template id) of a prompt file, or of the packaged `default`.

  The id is the file's stem and a hash of its text.
  """
  if path is None:
    text = (resources.files("deepalign_jax") / "assets/judges" / default).read_text(encoding="utf-8")
    stem = Path(default).stem
  else:
    try:
      text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
      raise JudgeConfigError(f"cannot read the prompt template {path}: {e.strerror or e}") from None
    stem = Path(path).stem
  missing = [p for p in ("{instruction}", "{response}") if p not in text]
  if missing:
    raise JudgeConfigError(
      f"prompt template {path or default} lacks the placeholder(s) {missing}; "
      "the instruction and the response are written where they stand"
    )
  return text, f"{stem}-{text_hash(text)}"


def fill_template(template: str, instruction: str, response: str) -> str:
  """The template with {instruction} and {response} replaced in one pass.

  One pass, so braces or a literal "{response}" inside the instruction are
  left as they are rather than substituted again.
  """
  values = {"instruction": instruction, "response": response}
  return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
