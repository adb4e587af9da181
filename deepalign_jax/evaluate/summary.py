"""summary.json's numbers from the records (ASR / harmfulness per setting, the grid's worst case, utility)
and the sweep's plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from deepalign_jax.atomic import atomic_path
from deepalign_jax.attacks import decoding_grid
from deepalign_jax.attacks.settings import Setting
from deepalign_jax.judges import Verdict, summarize


def record_verdict(record: dict) -> Verdict:
  """The verdict stored in a generations.jsonl record."""
  return Verdict(**record["verdict"])


def _per_category(records: Sequence[dict]) -> dict[str, dict[str, Any]]:
  """Category → the summary of its records (the benchmark's own categories; {} when it has none)."""
  groups: dict[str, list[dict]] = {}
  for r in records:
    if r.get("category") is not None:
      groups.setdefault(str(r["category"]), []).append(r)
  return {c: summarize([record_verdict(r) for r in groups[c]]).to_dict() for c in sorted(groups)}


def per_behavior(records: Sequence[dict]) -> dict[str, dict[str, Any]]:
  """The benchmark's behaviour id → its category, records, jailbroken records and the settings that broke it
  (any sample); {} when the benchmark has no ids."""
  out: dict[str, dict[str, Any]] = {}
  for r in records:
    behavior = r.get("behavior_id")
    if behavior is None:
      continue
    entry = out.setdefault(str(behavior), {"category": r.get("category"), "n": 0, "n_jailbroken": 0, "broken_by": []})
    entry["n"] += 1
    if r["verdict"]["jailbroken"]:
      entry["n_jailbroken"] += 1
      if r["setting"] not in entry["broken_by"]:
        entry["broken_by"].append(r["setting"])
  return dict(sorted(out.items()))


def summarize_records(records: Sequence[dict], settings: Sequence[Setting], kind: str) -> dict[str, Any]:
  """Per-setting ASR / harmfulness with counts, per category when the benchmark has categories; worst case
  over the grid; utility means; each behaviour's outcome when the benchmark names its behaviours."""
  out: dict[str, Any] = {"attack": kind, "per_setting": {}}
  for s in settings:
    mine = [r for r in records if r["setting"] == s.name]
    entry = summarize([record_verdict(r) for r in mine]).to_dict()
    entry.update({"axis": s.axis, "value": s.value, "decoding": s.decoding.as_dict()})
    categories = _per_category(mine)
    if categories:
      entry["per_category"] = categories
    utility = [r["utility"] for r in mine if r.get("utility")]
    if utility:
      entry["utility"] = {k: sum(float(u[k]) for u in utility) / len(utility) for k in utility[0]}
    out["per_setting"][s.name] = entry
  if kind == "decoding_grid":
    # With several samples per point, a prompt × setting is broken if any of its samples is.
    broken: dict[tuple[int, str], bool] = {}
    for r in records:
      if r["verdict"]["jailbroken"] is not None:
        key = (r["prompt_index"], r["setting"])
        broken[key] = broken.get(key, False) or bool(r["verdict"]["jailbroken"])
    out["worst_case"] = decoding_grid.worst_case(broken, settings)
  behaviors = per_behavior(records)
  if behaviors:
    out["per_behavior"] = behaviors
  return out


def plot_asr(summary: dict, settings: Sequence[Setting], path: Path) -> Path:
  """ASR against the sweep's coordinate, one line per axis (PNG)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  axes = list(dict.fromkeys(s.axis for s in settings))
  fig, panels = plt.subplots(1, len(axes), figsize=(4.5 * len(axes), 3.5), squeeze=False)
  for panel, axis in zip(panels[0], axes):
    points = [(s, summary["per_setting"][s.name]["asr"]) for s in settings if s.axis == axis]
    xs = [s.value if isinstance(s.value, (int, float)) else n for n, (s, _) in enumerate(points)]
    ys = [100 * a if a is not None else math.nan for _, a in points]
    panel.plot(xs, ys, marker="o")
    if not all(isinstance(s.value, (int, float)) for s, _ in points):
      panel.set_xticks(
        xs, [str(s.value if s.value not in (None, "") else s.name)[:16] for s, _ in points], rotation=30, ha="right"
      )
    if axis == "top_k":
      panel.set_xscale("log")
    panel.set_xlabel({"prefill_tokens": "prefilled harmful tokens"}.get(axis, axis))
    panel.set_ylabel("ASR (%)")
    panel.set_ylim(-2, 102)
    panel.grid(alpha=0.3)
  fig.suptitle(f"{summary['attack']} — judge {summary['judge']['name'] if 'judge' in summary else ''}")
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=120)
  plt.close(fig)
  return path


__all__ = ["per_behavior", "plot_asr", "record_verdict", "summarize_records"]
