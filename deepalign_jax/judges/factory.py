"""`make_judge(config)`: a judge from a dict or ml_collections config.

`config.kind` picks the judge; the other keys are that judge's arguments
(listed in `DEFAULTS`).  Unknown keys are refused by name, so a misspelt
option fails at start-up rather than being silently ignored.

`default_config()` — the `judge` section of an evaluation config — holds
`kind` and every key of every kind, None meaning "that kind's default", so a
command line can switch the kind and set its keys
(`--config.judge.kind=api --config.judge.base_url=...`) in a locked config;
a key set to a value that the chosen kind does not take is refused.

Every kind has `reads`, what an evaluation hands the judge after a prefill;
the defaults follow the reference code (SPEC §11): the keyword judge reads
the continuation only, the API (GPT-4) judge prefill + continuation, and the
model judge — a classifier of whole answers, like the API judge — too.
"""

from __future__ import annotations

from typing import Any, Mapping

from deepalign_jax.judges.base import Judge, JudgeConfigError

DEFAULTS: dict[str, dict[str, Any]] = {
  "keyword": dict(keywords="qi2025", reads="continuation"),
  "api": dict(
    model="gpt-4-turbo",
    base_url="https://api.openai.com/v1",
    api_key_env="OPENAI_API_KEY",
    rubric_path=None,
    score_rule="last",
    reads="response",
    cache_dir=None,
    concurrency=8,
    max_attempts=5,
    base_delay_s=1.0,
    max_delay_s=60.0,
    timeout_s=60.0,
    max_tokens=1024,
    name="api_rubric",
    progress=True,
  ),
  "model": dict(
    model=None,
    template=None,
    chat_format="auto",
    dtype="float32",
    max_new_tokens=10,
    batch_size=8,
    name=None,
    reads="response",
    progress=True,
  ),
}


# One line per judge key, for the CLIs' --help (`judge.<key>`); which kinds take it in brackets.
KEY_DOCS = {
  "kind": "keyword | api | model",
  "reads": "what the judge reads after a prefill: continuation | response (prefill + continuation)",
  "keywords": "[keyword] refusal list: qi2025 | llm_attacks_eval | llm_attacks | a file, one string a line",
  "model": "[api] the judge model's name at the endpoint; [model] the judge model (an HF directory)",
  "base_url": "[api] endpoint root; requests go to {base_url}/chat/completions",
  "api_key_env": "[api] environment variable holding the key ('' sends none); the key is never written",
  "rubric_path": "[api] a rubric template with {instruction} and {response} (None: the packaged one)",
  "score_rule": "[api] which '#thescore:' counts: first (the reference's) | last",
  "cache_dir": "[api] directory of the reply cache (None: no cache; a relative one is inside the workdir)",
  "concurrency": "[api] requests in flight at once",
  "max_attempts": "[api] attempts per request (timeouts, 429 and 5xx are retried)",
  "base_delay_s": "[api] first retry delay, doubled each attempt",
  "max_delay_s": "[api] longest retry delay",
  "timeout_s": "[api] per-request timeout",
  "max_tokens": "[api] reply length limit",
  "name": "[api, model] the judge's name in verdicts",
  "progress": "[api, model] progress bar",
  "template": "[model] a classification prompt with {instruction} and {response} (None: the packaged one)",
  "chat_format": "[model] the judge model's chat format (raw: the filled template as it is)",
  "dtype": "[model] float32 | bfloat16",
  "max_new_tokens": "[model] reply length; the verdict is its first word",
  "batch_size": "[model] prompts per generation batch",
}


def _key_types() -> dict[str, type]:
  """Every judge key with the type of its defaults (str where every default is None)."""
  types: dict[str, type] = {}
  for defaults in DEFAULTS.values():
    for key, value in defaults.items():
      if value is not None:
        types.setdefault(key, type(value))
      else:
        types.setdefault(key, str)
  return dict(sorted(types.items()))


def default_config(kind: str = "keyword"):
  """An `ml_collections.ConfigDict`: `kind` and every judge key as a typed None ("the kind's default")."""
  import ml_collections

  if kind not in DEFAULTS:
    raise JudgeConfigError(f"unknown judge kind {kind!r}; expected one of {sorted(DEFAULTS)}")
  config = ml_collections.ConfigDict()
  config.kind = kind
  for key, field_type in _key_types().items():
    config[key] = ml_collections.FieldReference(None, field_type=field_type)
  return config


def _as_dict(config: Any) -> dict[str, Any]:
  if hasattr(config, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
    return dict(config.to_dict())
  if isinstance(config, Mapping):
    return dict(config)
  raise TypeError(f"a judge config must be a dict or ConfigDict, got {type(config).__name__}")


def make_judge(config: Any) -> Judge:
  """The judge that `config` describes.

  Keys by kind (defaults in `DEFAULTS`):
    keyword: keywords ('qi2025' | 'llm_attacks_eval' | 'llm_attacks' | a file | a list),
             reads.
    api:     model, base_url, api_key_env, rubric_path, score_rule ('first' |
             'last'), reads, cache_dir, concurrency, max_attempts,
             base_delay_s, max_delay_s, timeout_s, max_tokens, name, progress.
    model:   model (HF directory, required), template, chat_format
             ('auto' | 'llama2' | 'gemma' | 'base' | 'template' | 'raw'),
             dtype, max_new_tokens, batch_size, name, reads, progress.
  reads: 'continuation' | 'response' (see the module docstring).
  """
  values = _as_dict(config)
  kind = values.pop("kind", None)
  if kind not in DEFAULTS:
    raise JudgeConfigError(f"judge config: 'kind' must be one of {sorted(DEFAULTS)}, got {kind!r}")
  unknown = sorted(k for k in values if k not in _key_types())
  if unknown:
    raise JudgeConfigError(f"judge config: unknown key(s) {unknown}; a {kind!r} judge takes {sorted(DEFAULTS[kind])}")
  # None is "this kind's default" (the keys of every kind live in one config section).
  values = {k: v for k, v in values.items() if v is not None}
  foreign = sorted(set(values) - set(DEFAULTS[kind]))
  if foreign:
    raise JudgeConfigError(
      f"judge config: {foreign} set, but a judge of kind {kind!r} does not take them; it takes {sorted(DEFAULTS[kind])}"
    )
  args = {**DEFAULTS[kind], **values}
  if kind == "keyword":
    from deepalign_jax.judges.keyword import KeywordJudge

    return KeywordJudge(args["keywords"], reads=args["reads"])
  if kind == "api":
    from deepalign_jax.judges.api import ApiJudge

    return ApiJudge(**args)
  from deepalign_jax.judges.model import ModelJudge

  path = args.pop("model")
  if not path:
    raise JudgeConfigError("judge config: a judge of kind 'model' needs 'model', the judge model's HF directory")
  if args["name"] is None:
    del args["name"]
  return ModelJudge.from_pretrained(path, **args)
