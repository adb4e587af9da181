"""python -m deepalign_jax.organism.seeds --workdir DIR [--config.seeds=10] [--config.quick=True]

Runs the organism for several training seeds (each in DIR/seed_N, reusing the
stages a seed has finished) and writes how robust each verdict is:
DIR/HOLD_RATES.md and DIR/hold_rates.json — per claim, the verdict of every
seed, its hold rate (the share of seeds where it is reproduced), the mean and
range over seeds of each number it is decided on, and the verdict on those
means against the claim's own thresholds (`claims.CLAIMS`, fixed before any
run they judge).  An effect counts as robust when it holds in at least
`robust` (default 90%) of the seeds; below that the table calls it fragile
(inconclusive when no seed's numbers could decide it).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Mapping, Sequence

import ml_collections

from deepalign_jax.organism.runtime import DEFAULT_JAX_CACHE, prepare_runtime


def get_config() -> ml_collections.ConfigDict:
  """Which seeds, and the pipeline's settings for each."""
  c = ml_collections.ConfigDict()
  c.seeds = 10  # how many training seeds
  c.first_seed = 0  # seeds first_seed .. first_seed + seeds - 1
  c.quick = False  # the CI-sized pipeline for every seed
  c.robust = 0.9  # the hold rate an effect needs to be called robust
  c.publish = ""  # copy HOLD_RATES.md and hold_rates.json to this directory (docs/organism for the committed table)
  c.jax_cache = DEFAULT_JAX_CACHE  # persistent JAX compilation cache ('' disables)
  # added to XLA_FLAGS (None: the fast-compile flags on the jaxlib they were measured on; '' adds none)
  c.xla_flags = ml_collections.config_dict.placeholder(str)
  # glibc's malloc keeps freed memory for the next step (runtime.reuse_freed_memory: ~25% off a train step)
  c.reuse_memory = True
  return c


@dataclasses.dataclass(frozen=True)
class ClaimAcrossSeeds:
  """One claim over several seeds.

  verdicts: seed → True / False / None (inconclusive); seeds whose stages lack the claim's numbers are absent.
  values: number name → (mean, min, max) over the seeds with a verdict.
  on_mean: the claim's own test applied to the mean numbers.
  """

  effect: str
  verdicts: Mapping[int, bool | None]
  values: Mapping[str, tuple[float, float, float]]
  on_mean: bool | None
  numbers_on_mean: str

  @property
  def hold_rate(self) -> float | None:
    """The share of the seeds with numbers where the claim holds (an inconclusive seed does not)."""
    seen = list(self.verdicts.values())
    return sum(v is True for v in seen) / len(seen) if seen else None

  def robust(self, threshold: float) -> bool:
    return self.hold_rate is not None and self.hold_rate >= threshold

  def status(self, threshold: float) -> str:
    """robust, fragile, or inconclusive (no seed could decide it)."""
    if all(v is None for v in self.verdicts.values()):
      return "inconclusive"
    return "robust" if self.robust(threshold) else "fragile"


def across_seeds(per_seed: Mapping[int, object], claims_table=None) -> list[ClaimAcrossSeeds]:
  """Every claim of `claims_table` (default `claims.CLAIMS`) over the seeds' `results.Results`."""
  from deepalign_jax.organism import claims

  table = claims.CLAIMS if claims_table is None else claims_table
  out = []
  for claim in table:
    verdicts, values = {}, {}
    for seed, collected in sorted(per_seed.items()):
      numbers = claim.measure(collected)
      if numbers is None:
        continue
      verdicts[seed] = claim.holds(numbers, claim.thresholds)
      for key, value in numbers.items():
        values.setdefault(key, []).append(float(value))
    if not verdicts:
      continue
    means = {k: statistics.fmean(v) for k, v in values.items()}
    out.append(
      ClaimAcrossSeeds(
        claim.effect,
        verdicts,
        {k: (means[k], min(v), max(v)) for k, v in values.items()},
        claim.holds(means, claim.thresholds),
        claims.format_numbers(claim, means),
      )
    )
  return out


def markdown(rows: Sequence[ClaimAcrossSeeds], seeds: Sequence[int], robust: float, command: str = "") -> str:
  """HOLD_RATES.md: one row per claim, its verdict per seed, hold rate, means and ranges."""
  from deepalign_jax.organism.report import _table

  label = {True: "yes", False: "no", None: "–"}
  lines = [
    "# How robust each verdict is across training seeds",
    "",
    f"Seeds {', '.join(map(str, seeds))}; each verdict is the claim's own test (deepalign_jax/organism/claims.py) "
    f"on that seed's numbers. An effect is **robust** when it holds in at least {robust:.0%} of the seeds, "
    "**fragile** otherwise. The last columns apply the same test to the numbers' means over the seeds.",
    "",
  ]
  if command:
    lines += ["Regenerate with", "", "```bash", command, "```", ""]
  body = []
  for row in rows:
    rate = row.hold_rate
    body.append(
      [
        row.effect,
        " ".join(label[row.verdicts.get(s)] if s in row.verdicts else "·" for s in seeds),
        f"{sum(v is True for v in row.verdicts.values())}/{len(row.verdicts)}"
        + (f" ({rate:.0%})" if rate is not None else ""),
        row.status(robust),
        label[row.on_mean],
        row.numbers_on_mean,
      ]
    )
  lines.append(
    _table(["effect (paper)", "per seed", "holds", "", "on the means", "mean numbers (and the threshold used)"], body)
  )
  lines += ["", "Mean, min and max over the seeds of every number a verdict reads:", ""]
  ranges = []
  for row in rows:
    for key, (mean, low, high) in row.values.items():
      ranges.append([row.effect[:60], key, f"{mean:.3g}", f"{low:.3g}", f"{high:.3g}"])
  lines.append(_table(["effect", "number", "mean", "min", "max"], ranges))
  return "\n".join(lines) + "\n"


def summary_json(rows: Sequence[ClaimAcrossSeeds], seeds: Sequence[int], quick: bool, robust: float) -> dict:
  """hold_rates.json: per claim, every seed's verdict, the hold rate, its status and the numbers' ranges."""
  return {
    "seeds": list(seeds),
    "quick": quick,
    "robust": robust,
    "claims": [
      {
        "effect": r.effect,
        "verdicts": {str(s): v for s, v in r.verdicts.items()},
        "hold_rate": r.hold_rate,
        "robust": r.robust(robust),
        "status": r.status(robust),
        "on_mean": r.on_mean,
        "values": {k: dict(zip(("mean", "min", "max"), v)) for k, v in r.values.items()},
      }
      for r in rows
    ],
  }


def run_seeds(root: Path, seeds: Sequence[int], quick: bool, log=print) -> dict[int, object]:
  """Runs (or reuses) the pipeline of every seed in ROOT/seed_N; returns seed → `results.Results`."""
  from deepalign_jax.organism.layout import Options
  from deepalign_jax.organism.stages import Pipeline

  per_seed = {}
  for i, seed in enumerate(seeds):
    log(f"[organism] seed {seed} ({i + 1} of {len(seeds)}): {root / f'seed_{seed}'}")
    per_seed[seed] = Pipeline(Options(root / f"seed_{seed}", quick, seed), log=log).run()
  return per_seed


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or reuses) every seed's pipeline under `workdir`; writes HOLD_RATES.md and hold_rates.json."""
  import shlex

  prepare_runtime(config.xla_flags, config.jax_cache, config.reuse_memory)
  from deepalign_jax.atomic import write_json, write_text

  if config.seeds < 1:
    raise ValueError(f"config.seeds must be >= 1, got {config.seeds}")
  root = Path(workdir)
  seeds = list(range(config.first_seed, config.first_seed + config.seeds))
  rows = across_seeds(run_seeds(root, seeds, config.quick))
  command = "python -m deepalign_jax.organism.seeds " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  write_text(root / "HOLD_RATES.md", markdown(rows, seeds, config.robust, command))
  summary = summary_json(rows, seeds, config.quick, config.robust)
  write_json(root / "hold_rates.json", summary)
  print(f"[organism.seeds] {root / 'HOLD_RATES.md'}")
  if config.publish:
    import shutil

    Path(config.publish).mkdir(parents=True, exist_ok=True)
    for name in ("HOLD_RATES.md", "hold_rates.json"):
      shutil.copyfile(root / name, Path(config.publish) / name)
      print(f"[organism.seeds] published {Path(config.publish) / name}")
  return summary


def _report(summary, workdir) -> None:
  del workdir
  print(json.dumps({c["effect"][:70]: c["hold_rate"] for c in summary["claims"]}, indent=2))


if __name__ == "__main__":
  from deepalign_jax.cli import run_cli

  run_cli(run, _report, defaults=get_config, config_required=False, multi_process=False)
