"""What a data build runs: its config (every setting), the instructions it reads, and the checks made before
any model is loaded."""

from __future__ import annotations

import ml_collections

from deepalign_jax.attacks.settings import Decoding
from deepalign_jax.data import Exchange, as_exchange
from deepalign_jax.data.tables import parse_columns
from deepalign_jax.data.tfds_builders import load_records
from deepalign_jax.judges.api import check_api_key_env
from deepalign_jax.judges.factory import default_config as judge_default_config
from deepalign_jax.sampling import check_decoding

HARMFUL_SOURCES = ("file", "prefill", "model")
RERUN = ("resume", "restart")


def _decoding(greedy: bool, max_new_tokens: int) -> ml_collections.ConfigDict:
  paper = Decoding()
  return ml_collections.ConfigDict(
    dict(
      temperature=paper.temperature,
      top_k=paper.top_k,
      top_p=paper.top_p,
      greedy=greedy,
      max_new_tokens=max_new_tokens,
      batch_size=16,
      seed=0,
    )
  )


def default_config() -> ml_collections.ConfigDict:
  """Every setting of a data build (SPEC §4: D_H triplets and D_B distilled utility answers)."""
  c = ml_collections.ConfigDict()
  c.model = ""  # the initial aligned model: refusals, prefilled answers, distilled utility answers
  c.chat_format = "auto"  # llama2 | gemma | base | template | auto (a training workdir's own, else the template)
  c.system_prompt = ml_collections.config_dict.placeholder(str)  # for records without one (None: no system block)
  c.dtype = "float32"  # compute dtype: float32 | bfloat16
  c.mesh = ml_collections.ConfigDict(
    dict(
      data=1,  # data-parallel ways (rows)
      fsdp=-1,  # fully sharded ways; -1: the devices the others leave
      tensor=1,  # tensor-parallel ways
    )
  )
  c.safety = ml_collections.ConfigDict(
    dict(
      path="",  # harmful instructions ('': no D_H); any prompt format, a datasets table, or tfds:DIR
      format="harmful_hexphi",  # their layout (README: Data files)
      columns="",  # format table: role=column pairs, e.g. "prompt=question,response=answer"
      split="train",  # the split of a tfds: directory or a saved DatasetDict
      limit=0,  # > 0: the first N instructions
      harmful="file",  # where harmful answers come from: file | prefill | model
      prefill_tokens=10,  # harmful=prefill: the file answer's first k tokens open the aligned model's turn
      harmful_model="",  # harmful=model: a jailbroken model (e.g. a harmful fine-tuning's training workdir)
      harmful_chat_format="auto",  # harmful=model: its chat format (auto: a training workdir's own)
      harmful_system_prompt=ml_collections.config_dict.placeholder(str),  # harmful=model: its system prompt
      out="triplets.jsonl",  # D_H, in the workdir: the triplets JSONL the augmentation recipe reads
    )
  )
  c.utility = ml_collections.ConfigDict(
    dict(
      path="",  # utility instructions ('': no D_B), e.g. Alpaca JSON; any conversation or prompt format
      format="alpaca",  # their layout
      columns="",  # format table: role=column pairs
      split="train",  # the split of a tfds: directory or a saved DatasetDict
      limit=0,  # > 0: the first N instructions
      out="utility.json",  # D_B, in the workdir: Alpaca JSON with the aligned model's answers
    )
  )
  # Sampling of D_H's refusals and generated harmful answers (the paper's evaluation decoding).
  c.decoding = _decoding(greedy=False, max_new_tokens=512)
  # D_B's distilled answers: greedy by default, sampled with greedy=False.
  c.utility_decoding = _decoding(greedy=True, max_new_tokens=512)
  # Decides which triplets are kept: the refusal judged a refusal and the harmful answer judged compliant.
  c.judge = judge_default_config("keyword")
  c.progress = True  # progress bar with tokens/s on stderr
  # resume: a rerun continues only a build with the same models, files and settings; restart: start over
  c.rerun = "resume"
  return c


_DECODING_DOCS = {
  "temperature": "sampling temperature",
  "top_k": "0: no top-k cut",
  "top_p": "1.0: no nucleus cut",
  "greedy": "greedy decoding instead of sampling",
  "max_new_tokens": "generation length",
  "batch_size": "prompts per compiled generation batch (a batch is also the unit a rerun resumes from)",
  "seed": "sampling seed",
}
KEY_DOCS = {
  f"{section}.{key}": doc for section in ("decoding", "utility_decoding") for key, doc in _DECODING_DOCS.items()
}


def check_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for settings no build can use, before a model is loaded or a file written."""
  if not config.safety.path and not config.utility.path:
    raise ValueError("config.safety.path and config.utility.path are both empty: nothing to build")
  if config.rerun not in RERUN:
    raise ValueError(f"config.rerun must be one of {RERUN}, got {config.rerun!r}")
  s = config.safety
  if s.harmful not in HARMFUL_SOURCES:
    raise ValueError(f"config.safety.harmful must be one of {HARMFUL_SOURCES}, got {s.harmful!r}")
  if s.harmful == "model" and s.path and not s.harmful_model:
    raise ValueError(
      "config.safety.harmful is 'model' but config.safety.harmful_model is empty: give the jailbroken model"
    )
  if s.harmful == "prefill" and (not isinstance(s.prefill_tokens, int) or s.prefill_tokens < 1):
    raise ValueError(f"config.safety.prefill_tokens must be an integer >= 1, got {s.prefill_tokens!r}")
  for section in ("decoding", "utility_decoding"):
    d = config[section]
    check_decoding(
      f"config.{section}.",
      batch_size=d.batch_size,
      max_new_tokens=d.max_new_tokens,
      temperature=d.temperature,
      top_k=d.top_k,
      top_p=d.top_p,
    )
  for section in ("safety", "utility"):
    if config[section].limit < 0:
      raise ValueError(f"config.{section}.limit must be >= 0 (0: every record), got {config[section].limit!r}")
    if config[section].out in ("", "run.json", "summary.json", "generations.jsonl") or "/" in config[section].out:
      raise ValueError(
        f"config.{section}.out must be a file name in the workdir other than run.json, summary.json and "
        f"generations.jsonl, got {config[section].out!r}"
      )
  if config.safety.path and config.utility.path and config.safety.out == config.utility.out:
    raise ValueError(f"config.safety.out and config.utility.out are the same file {config.safety.out!r}")
  check_api_key_env(config.judge.get("api_key_env"))


def read_instructions(section: ml_collections.ConfigDict, where: str) -> list[Exchange]:
  """The records of `config.safety` or `config.utility` (`where` names it), the first `limit` of them."""
  columns = parse_columns(section.columns, f"{where}.columns")
  records = [as_exchange(r) for r in load_records(section.path, section.format, split=section.split, columns=columns)]
  return records[: section.limit] if section.limit > 0 else records


__all__ = ["HARMFUL_SOURCES", "KEY_DOCS", "RERUN", "check_config", "default_config", "read_instructions"]
