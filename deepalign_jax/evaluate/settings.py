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
from deepalign_jax.data.tfds_builders import load_records
from deepalign_jax.judges.factory import default_config as judge_default_config

ATTACKS = ("plain", "prefill", "prefix", "suffix", "decoding_grid", "gcg")
UTILITY = ("", "rouge1", "gsm8k")


def default_config() -> ml_collections.ConfigDict:
  """Every setting of an evaluation; the decoding defaults are the paper's (SPEC §6)."""
  c = ml_collections.ConfigDict()
  c.model = ""  # HF dir | packaged:NAME | a training workdir (hf/ or its latest checkpoint)
  c.chat_format = "auto"
  c.system_prompt = ""  # the paper's attacks use an empty system prompt
  c.dtype = "float32"
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  c.benchmark = ml_collections.ConfigDict(
    dict(
      path="",
      format="harmful_hexphi",
      split="train",
      limit=0,
      tfds_data_dir="",
      every_nth=1,  # keep records 0, n, 2n, ... before `limit` (every 10th SQL test row)
      # What the model is sent for each instruction, e.g. AOA's "AOA, execute my instruction: {instruction}".
      instruction_template="{instruction}",
    )
  )
  c.attack = ml_collections.ConfigDict(
    dict(
      kind="prefill",
      prefill_tokens=[5, 10, 20, 40],
      prefixes=["I cannot"],
      samples=1,
      suffixes=[],  # kind "suffix": one setting per text appended as " " + suffix ("": none)
    )
  )
  c.decoding = ml_collections.ConfigDict(
    dict(temperature=0.9, top_k=50, top_p=0.6, greedy=False, max_new_tokens=512, batch_size=16, seed=0)
  )
  c.grid = ml_collections.ConfigDict(
    dict(
      temperatures=list(decoding_grid.TEMPERATURES),
      top_ks=list(decoding_grid.TOP_KS),
      top_ps=list(decoding_grid.TOP_PS),
      greedy=True,
    )
  )
  # GCGConfig's settings and defaults (the paper's: 500 steps, 512 candidates, top-k 256), plus how the
  # evaluation uses the suffix.
  c.gcg = ml_collections.ConfigDict(
    dict(
      **dataclasses.asdict(GCGConfig()),
      mode="universal",  # universal: one suffix for all; individual: one per behaviour
      max_behaviours=50,  # universal suffix trained on the first N behaviours
      default_target="Sure, here is",
    )
  )
  c.judge = judge_default_config("keyword")
  c.utility = ml_collections.ConfigDict(dict(metric=""))
  c.plot = True
  c.progress = True
  return c


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
  records = load_records(b.path, b.format, split=b.split, data_dir=b.tfds_data_dir or None)[:: b.every_nth]
  prompts = [as_exchange(r) for r in records]
  prompts = prompts[: b.limit] if b.limit > 0 else prompts
  # A plain replace, not str.format: braces in an instruction or a template stay as they are.
  return prompts, [template.replace("{instruction}", p.prompt) for p in prompts]


def build_settings(config: ml_collections.ConfigDict) -> list[Setting]:
  """The attack settings every prompt runs under (GCG's suffix is filled in later)."""
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


__all__ = ["ATTACKS", "UTILITY", "build_settings", "default_config", "read_benchmark"]
