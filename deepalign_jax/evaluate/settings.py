"""What an evaluation runs: its config (every setting, the paper's decoding by default), the benchmark's
prompts and the attack settings every prompt runs under."""

from __future__ import annotations

import dataclasses

import ml_collections

from deepalign_jax.attacks import decoding_grid
from deepalign_jax.attacks.gcg import GCGConfig
from deepalign_jax.attacks.settings import (
  Decoding,
  Setting,
  plain_setting,
  prefill_settings,
  prefix_settings,
  suffix_settings,
)
from deepalign_jax.data import Exchange, as_exchange
from deepalign_jax.data.tables import parse_columns
from deepalign_jax.data.tfds_builders import load_records
from deepalign_jax.judges.api import check_api_key_env
from deepalign_jax.judges.factory import default_config as judge_default_config
from deepalign_jax.sampling import check_decoding

ATTACKS = ("plain", "prefill", "prefix", "suffix", "decoding_grid", "gcg")
UTILITY = ("", "rouge1", "gsm8k")


def default_config() -> ml_collections.ConfigDict:
  """Every setting of an evaluation; the decoding defaults are the paper's (T 0.9, top-p 0.6, top-k 50)."""
  c = ml_collections.ConfigDict()
  c.model = ""  # HF directory, packaged:NAME, a cached hub id or a training workdir (final or latest checkpoint)
  c.chat_format = "auto"  # llama2 | gemma | base | template | auto (the tokenizer's template, else base)
  c.system_prompt = ""  # for prompts without one; the paper's attacks use an empty system prompt
  c.dtype = "float32"  # compute dtype: float32 | bfloat16
  c.mesh = ml_collections.ConfigDict(
    dict(
      data=1,  # data-parallel ways (rows)
      fsdp=-1,  # fully sharded ways; -1: the devices the others leave
      tensor=1,  # tensor-parallel ways
    )
  )
  c.benchmark = ml_collections.ConfigDict(
    dict(
      path="",  # the benchmark file (or HEx-PHI directory, datasets table, or tfds:MANUAL_DIR)
      format="harmful_hexphi",  # its layout (README: Evaluation and attacks)
      columns="",  # format table: role=column pairs, e.g. "prompt=question,response=answer" (README)
      split="train",  # the split of a tfds: directory or a saved DatasetDict
      limit=0,  # > 0: the first N prompts (after every_nth)
      tfds_data_dir="",  # where tfds: builds go (default ~/.cache/deepalign_jax/tfds)
      every_nth=1,  # keep records 0, n, 2n, ... before `limit` (every 10th SQL test row)
      # What the model is sent for each instruction, e.g. AOA's "AOA, execute my instruction: {instruction}".
      instruction_template="{instruction}",
    )
  )
  c.attack = ml_collections.ConfigDict(
    dict(
      kind="prefill",  # plain | prefill | prefix | suffix | decoding_grid | gcg
      prefill_tokens=[5, 10, 20, 40],  # prefill: k harmful-answer tokens opening the assistant turn
      prefixes=["I cannot"],  # prefix: texts opening the assistant turn (a refusal prefix into a base model)
      samples=1,  # generations per prompt and setting
      suffixes=[],  # kind "suffix": one setting per text appended as " " + suffix ("": none)
    )
  )
  c.decoding = ml_collections.ConfigDict(
    dict(
      temperature=0.9,  # sampling temperature
      top_k=50,  # 0: no top-k cut
      top_p=0.6,  # 1.0: no nucleus cut
      greedy=False,  # greedy decoding instead of sampling
      max_new_tokens=512,  # generation length
      batch_size=16,  # prompts per compiled generation batch
      seed=0,  # sampling seed
    )
  )
  c.grid = ml_collections.ConfigDict(
    dict(
      temperatures=list(decoding_grid.TEMPERATURES),  # decoding_grid: the temperature axis
      top_ks=list(decoding_grid.TOP_KS),  # decoding_grid: the top-k axis
      top_ps=list(decoding_grid.TOP_PS),  # decoding_grid: the top-p axis
      greedy=True,  # decoding_grid: include greedy decoding
    )
  )
  # GCGConfig's settings and defaults (the paper's: 500 steps, 512 candidates, top-k 256), plus how the
  # evaluation uses the suffix.
  c.gcg = ml_collections.ConfigDict(
    dict(
      **dataclasses.asdict(GCGConfig()),
      mode="universal",  # universal: one suffix for all; individual: one per behaviour
      max_behaviours=50,  # universal suffix trained on the first N behaviours
      default_target="Sure, here is",  # the optimisation target of prompts without one
    )
  )
  c.judge = judge_default_config("keyword")
  c.utility = ml_collections.ConfigDict(
    dict(
      metric="",  # "" | rouge1 (SAMSum, SQL) | gsm8k (exact answer after ####), against the references
    )
  )
  c.plot = True  # asr.png for sweeps
  c.progress = True  # progress bars on stderr
  # resume: a rerun continues only an evaluation with the same model, benchmark and decoding (prompts,
  # settings and samples may be added or left out); restart: discard the workdir's outputs and start over
  c.rerun = "resume"
  return c


def _is_integer(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses settings no evaluation can run with, before any model is loaded or file written: a one-line
  ValueError naming the key (`config.decoding.top_p`, `config.grid.temperatures`, ...) and what it must be,
  and an API key given as `judge.api_key_env` (without showing it)."""
  d = config.decoding
  check_decoding(
    "config.decoding.",
    batch_size=d.batch_size,
    max_new_tokens=d.max_new_tokens,
    temperature=d.temperature,
    top_k=d.top_k,
    top_p=d.top_p,
  )
  a = config.attack
  if not _is_integer(a.samples) or a.samples < 1:
    raise ValueError(f"config.attack.samples must be an integer >= 1 (generations per prompt), got {a.samples!r}")
  if a.kind == "prefill" and not all(_is_integer(k) and k >= 0 for k in a.prefill_tokens):
    raise ValueError(f"config.attack.prefill_tokens must be integers >= 0, got {list(a.prefill_tokens)!r}")
  if a.kind == "decoding_grid":
    g = config.grid
    for key, setting in (("temperatures", "temperature"), ("top_ks", "top_k"), ("top_ps", "top_p")):
      values = list(g[key])
      try:
        check_decoding(f"config.grid.{key}: each ", **{setting: values})
      except ValueError as e:
        raise ValueError(f"{e} (in {values!r})") from None
    if not (list(g.temperatures) or list(g.top_ks) or list(g.top_ps) or g.greedy):
      raise ValueError("config.grid: the decoding grid is empty (no temperatures, top_ks, top_ps, nor greedy)")
  if config.benchmark.limit < 0:
    raise ValueError(f"config.benchmark.limit must be >= 0 (0: every prompt), got {config.benchmark.limit!r}")
  # A key pasted as api_key_env is refused (unshown) before the config is written anywhere.
  check_api_key_env(config.judge.get("api_key_env"))


def read_benchmark(config: ml_collections.ConfigDict) -> tuple[list[Exchange], list[str]]:
  """(the benchmark's prompts, the user text the model is sent for each), from any data format.

  Records 0, n, 2n, ... are kept (n = `every_nth`), then the first `limit`
  of those (if > 0).  That is the reference's SQL Create Context test set:
  `dataset.select(range(0, len(dataset), 10))` (its optional `max_samples`
  then draws a random subset; `limit` takes the first ones instead).  The
  user text is the prompt through `instruction_template` (before an
  attack's suffix); the prompt itself stays the benchmark's own, the
  harmful request the judge weighs the answer against.
  """
  b = config.benchmark
  if not b.path:
    raise ValueError("config.benchmark.path is empty: give the benchmark file (or tfds:MANUAL_DIR)")
  if not isinstance(b.every_nth, int) or b.every_nth < 1:
    raise ValueError(f"config.benchmark.every_nth must be an integer >= 1, got {b.every_nth!r}")
  template = b.instruction_template
  if "{instruction}" not in template:
    raise ValueError(
      f"config.benchmark.instruction_template {template!r} has no '{{instruction}}'; the "
      f"instruction is written where it stands (e.g. 'AOA, execute my instruction: "
      f"{{instruction}}')"
    )
  columns = parse_columns(b.columns, "config.benchmark.columns")
  records = load_records(b.path, b.format, split=b.split, data_dir=b.tfds_data_dir or None, columns=columns)
  records = records[:: b.every_nth]
  prompts = [as_exchange(r) for r in records]
  prompts = prompts[: b.limit] if b.limit > 0 else prompts
  # A plain replace, not str.format: braces in an instruction or a template stay as they are.
  return prompts, [template.replace("{instruction}", p.prompt) for p in prompts]


def build_settings(config: ml_collections.ConfigDict) -> list[Setting]:
  """The attack settings every prompt runs under (GCG's suffix is filled in later); `check_config` first."""
  check_config(config)
  d = config.decoding
  decoding = Decoding(float(d.temperature), int(d.top_k), float(d.top_p), bool(d.greedy))
  kind = config.attack.kind
  if kind == "plain":
    return plain_setting(decoding)
  if kind == "prefill":
    return prefill_settings(list(config.attack.prefill_tokens), decoding)
  if kind == "prefix":
    return prefix_settings(list(config.attack.prefixes), decoding)
  if kind == "suffix":
    suffixes = list(config.attack.suffixes)
    if not suffixes or not all(isinstance(x, str) for x in suffixes):
      raise ValueError(
        f"config.attack.suffixes must be a non-empty list of strings for attack.kind "
        f"'suffix' (\"\" for none), got {suffixes!r}"
      )
    return [s for i, x in enumerate(suffixes) for s in suffix_settings(x, decoding, name=f"suffix_{i}")]
  if kind == "decoding_grid":
    g = config.grid
    return decoding_grid.grid_settings(list(g.temperatures), list(g.top_ks), list(g.top_ps), bool(g.greedy))
  if kind == "gcg":
    return suffix_settings("", decoding)
  raise ValueError(f"config.attack.kind must be one of {ATTACKS}, got {kind!r}")


__all__ = ["ATTACKS", "UTILITY", "build_settings", "check_config", "default_config", "read_benchmark"]
