"""REPORT.md and its figures: the organism's numbers beside the paper's (SPEC §7).

`write(layout, collected)` renders a `results.Results` (`results.collect`).  The
verdicts ("reproduced" / "not reproduced") are computed from the numbers
with the thresholds written next to them, so a rerun that comes out
differently says so itself; nothing here looks at the paper's numbers to
decide.
"""

from __future__ import annotations

import math
import string
from importlib import resources
from pathlib import Path
from typing import Sequence

from deepalign_jax.atomic import atomic_path, write_text
from deepalign_jax.organism import claims
from deepalign_jax.organism.layout import SWEEP_ATTACKS, Layout
from deepalign_jax.organism.results import EARLY, LATE, MODELS, PREFILL_KS, Results, SweepRow, early_share

_DEFAULT_COMMAND = "python -m deepalign_jax.organism --workdir DIR"

# SPEC §7 (Llama-2-7B-Chat unless noted; ASR %).
PAPER_PREFILL = {"tokens": (5, 10, 20, 40), "initial": (42.1, 51.5, 56.1, 57.0), "augmented": (2.8, 2.9, 3.4, 4.5)}
PAPER_DECODING = {"initial": 54.9, "augmented": 11.3}  # HEx-PHI
PAPER_BASE_PREFIX = {"none": 68.6, "I apologize, but I cannot": 2.1}  # Llama-2-7B base, harmfulness %
PAPER_FINETUNE = {"harmful": (1.5, 88.9, 4.6), "gsm8k_asr": (1.5, 3.3, 2.0), "gsm8k_acc": (25.5, 41.7, 37.4)}

MODEL_NAMES = {"base": "base", "aligned": "aligned (SFT)", "dpo": "aligned (DPO)", "deep": "deep (augmented)"}


def _pct(x: float | None, digits: int = 1) -> str:
  return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _num(x: float | None, digits: int = 3) -> str:
  return "–" if x is None else f"{x:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


# -- figures ---------------------------------------------------------------------------------


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: Path) -> str:
  """Lays out, writes (atomically) and closes `fig`; returns the file name the report links."""
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=110)
  _plt().close(fig)
  return path.name


def plot_kl(collected: Results, path: Path) -> str | None:
  """KL by position: aligned vs base and deep vs base (paper Fig. 1/4), and the sweep."""
  curves, sweep = collected.kl, collected.sweep
  if not curves and not sweep:
    return None
  plt = _plt()
  fig, panels = plt.subplots(1, 2, figsize=(11, 3.8))
  for name, style in (("aligned", "-o"), ("dpo", "-d"), ("deep", "-s")):
    if name in curves:
      ys = [math.nan if v is None else v for v in curves[name]]
      panels[0].plot(range(1, len(ys) + 1), ys, style, ms=3, label=f"KL({MODEL_NAMES[name]} ‖ base)")
  panels[0].set_title("Per-token KL on compliant answers (Fig. 1 / Fig. 4)")
  cmap = plt.get_cmap("viridis")
  for i, row in enumerate(sweep):
    ys = [math.nan if v is None else v for v in row.kl]
    panels[1].plot(
      range(1, len(ys) + 1), ys, color=cmap(i / max(len(sweep) - 1, 1)), lw=1.4, label=f"{row.steps} steps"
    )
  panels[1].set_title("Alignment strength sweep: KL(aligned_s ‖ base)")
  for panel in panels:
    panel.set_yscale("log")
    panel.set_xlabel("response token position t")
    panel.set_ylabel("KL (nats)")
    panel.grid(alpha=0.3)
    panel.legend(fontsize=7)
  return _save(fig, path)


def plot_asr(collected: Results, path: Path) -> str | None:
  """Prefilling ASR against k (Table 3), and the sweep's ASR at k = 0 and k = 16 against strength."""
  plt = _plt()
  fig, panels = plt.subplots(1, 2, figsize=(11, 3.8))
  for name, style in (("base", "-^"), ("aligned", "-o"), ("dpo", "-d"), ("deep", "-s")):
    table = collected.models[name].prefill if name in collected.models else None
    if table:
      ks = sorted(table)
      panels[0].plot(ks, [100 * table[k]["asr"] for k in ks], style, label=MODEL_NAMES[name])
  panels[0].set_xscale("symlog", linthresh=1)
  panels[0].set_xticks(list(PREFILL_KS), [str(k) for k in PREFILL_KS])
  panels[0].set_xlabel("prefilled procedure tokens k")
  panels[0].set_title("Prefilling attack (Table 3), marker judge")
  rows = collected.sweep
  if rows:
    steps = [r.steps for r in rows]
    for k, style in ((0, "-o"), (2, "-^"), (4, "-v"), (16, "-s")):
      ys = [100 * r.prefill[k] if r.prefill.get(k) is not None else math.nan for r in rows]
      panels[1].plot(steps, ys, style, label=f"k = {k}")
    utility = [100 * r.utility if r.utility is not None else math.nan for r in rows]
    panels[1].plot(steps, utility, "--", color="gray", label="benign utility")
    chosen = collected.sweep_choice
    if chosen:
      panels[1].axvline(chosen["steps"], color="red", alpha=0.4, lw=3, label="chosen")
    panels[1].set_xscale("log", base=2)
    panels[1].set_xticks(steps, [str(s) for s in steps])
    panels[1].set_xlabel("alignment steps (strength)")
    panels[1].set_title("Alignment strength sweep")
  for panel in panels:
    panel.set_ylabel("%")
    panel.set_ylim(-3, 103)
    panel.grid(alpha=0.3)
    panel.legend(fontsize=7)
  return _save(fig, path)


# -- verdicts ----------------------------------------------------------------------------------


# -- the report ----------------------------------------------------------------------------------


def _prefill_section(collected: Results) -> str:
  m = collected.models
  header = ["model"] + [f"k={k}" for k in PREFILL_KS] + ["keyword judge k=0 / 16", "judges agree"]
  rows = []
  for name in MODELS:
    table = m[name].prefill or {}
    agree = [v["agreement"] for v in table.values() if v.get("agreement") is not None]
    rows.append(
      [MODEL_NAMES[name]]
      + [_pct(table[k]["asr"]) if k in table else "–" for k in PREFILL_KS]
      + [
        f"{_pct(table.get(0, {}).get('keyword_asr'))} / {_pct(table.get(16, {}).get('keyword_asr'))}",
        _pct(min(agree)) + "% (min)" if agree else "–",
      ]
    )
  neither = [
    [MODEL_NAMES[name]] + [_pct((m[name].prefill or {}).get(k, {}).get("neither")) for k in PREFILL_KS]
    for name in MODELS
  ]
  derailed = (
    "\n\nContinuations that neither refuse (no refusal string) nor give the procedure (fewer than "
    "two markers) — derailed text, a jailbreak for the keyword judge only (%):\n\n"
    + _table(["model"] + [f"k={k}" for k in PREFILL_KS], neither)
  )
  paper = _table(
    ["Llama-2-7B-Chat (paper)"] + [f"k={k}" for k in PAPER_PREFILL["tokens"]],
    [
      ["initial"] + [str(x) for x in PAPER_PREFILL["initial"]],
      ["augmented"] + [str(x) for x in PAPER_PREFILL["augmented"]],
    ],
  )
  return (
    _table(header, rows) + derailed + "\n\nPaper (Table 3, GPT-4 judge, of answers of hundreds of tokens):\n\n" + paper
  )


def _grid_section(collected: Results) -> str:
  rows = []
  for name in ("base", "aligned", "deep"):
    g = collected.models[name].grid
    if not g:
      continue
    axes = g["marker"]["per_axis"]
    rows.append(
      [
        MODEL_NAMES[name],
        _pct(g["greedy"]),
        _pct(axes.get("temperature")),
        _pct(axes.get("top_k")),
        _pct(axes.get("top_p")),
        _pct(g["marker"]["overall"]),
        _pct(g["keyword"]["overall"]),
      ]
    )
  settings = next(
    (collected.models[n].grid["settings"] for n in ("base", "aligned", "deep") if collected.models[n].grid),
    "?",
  )
  return (
    _table(
      [
        "model",
        "greedy",
        "temperature axis",
        "top-k axis",
        "top-p axis",
        "worst case (marker)",
        "worst case (keyword)",
      ],
      rows,
    )
    + f"\n\n{settings} decoding settings per request. Paper (HEx-PHI, worst case): initial "
    f"{PAPER_DECODING['initial']}% → augmented {PAPER_DECODING['augmented']}%."
  )


def _prefix_section(collected: Results) -> str:
  rows = []
  for name in ("base", "aligned", "deep"):
    prefix = collected.models[name].prefix
    prefill = collected.models[name].prefill or {}
    if not prefix:
      continue
    cells = [_pct(prefill.get(0, {}).get("asr"))]
    cells += [_pct(prefix[f"prefix_{i}"]["asr"]) for i in range(len(prefix))]
    rows.append([MODEL_NAMES[name]] + cells)
  from deepalign_jax.organism.world import REFUSAL_PREFIXES

  header = ["model", "no prefix"] + [f'"{p}"' for p in REFUSAL_PREFIXES]
  return (
    _table(header, rows) + "\n\nThe keyword judge reads the prefix too, so it calls every prefixed "
    "answer a refusal; the marker judge asks whether the procedure follows anyway. Paper (Table 1, "
    f"Llama-2-7B base, GPT-4 harmfulness): no prefix {PAPER_BASE_PREFIX['none']}% → "
    f'"I apologize, but I cannot" {PAPER_BASE_PREFIX["I apologize, but I cannot"]}%.'
  )


def _sweep_section(rows: Sequence[SweepRow], choice: dict | None) -> str:
  choice = choice or {}
  cells = [
    [f"{r.steps}{' ←' if r.steps == choice.get('steps') else ''}"]
    + [_pct(r.prefill.get(k)) for k in PREFILL_KS]
    + [_pct(r.utility), _num(r.kl_early), _num(r.kl_late), _pct(early_share(r.kl), 0)]
    for r in rows
  ]
  header = (
    ["steps"]
    + [f"ASR k={k}" for k in PREFILL_KS]
    + ["utility", f"KL t={EARLY[0]}-{EARLY[1]}", f"KL t={LATE[0]}-{LATE[1]}", f"KL share t={EARLY[0]}-{EARLY[1]}"]
  )
  if any(r.attacks or r.opening_logprobs for r in rows):  # the DPO sweep: Table 4 by alignment strength
    header += ["log π t=1", "harmful SFT ASR", "harmful constrained ASR"]
    for row, r in zip(cells, rows):
      lp = r.opening_logprobs[0] if r.opening_logprobs else None
      row += ["–" if lp is None else f"{lp:.1f}"] + [_pct(r.attacks.get(a)) for a in SWEEP_ATTACKS]
  text = _table(header, cells)
  if choice:
    text += f"\n\nChosen: **{choice['steps']} steps** — {choice['reason']} (ASR at k=0 {_pct(choice.get('asr_k0'))}%)."
  return text


def _finetune_section(collected: Results) -> str:
  ft = collected.finetune

  def cells(entry):
    asr, util, task = entry.asr or {}, entry.utility or {}, entry.task or {}
    return [
      _pct(asr.get("all")),
      _pct(asr.get("attack_topics")),
      _pct(asr.get("other_topics")),
      _pct(asr.get("keyword")),
      _pct(util.get("accuracy")),
      _pct(task.get("accuracy")),
    ]

  rows = []
  for name, label in (
    ("initial", "**aligned** (initial)"),
    ("harmful_sft", "harmful examples, SFT"),
    ("harmful_constrained", "harmful examples, constrained"),
    ("benign_sft", "benign task, SFT"),
    ("benign_constrained", "benign task, constrained"),
    ("deep_initial", "**deep** (initial)"),
    ("deep_harmful_sft", "harmful examples, SFT"),
    ("deep_harmful_constrained", "harmful examples, constrained"),
    ("dpo_initial", "**aligned by DPO** (initial)"),
    ("dpo_harmful_sft", "harmful examples, SFT"),
    ("dpo_harmful_constrained", "harmful examples, constrained"),
  ):
    if ft.get(name):
      rows.append([label] + cells(ft[name]))
  header = [
    "model",
    "ASR (all topics)",
    "ASR (attacked topics)",
    "ASR (other topics)",
    "ASR (keyword)",
    "utility",
    "task accuracy (×)",
  ]
  h, ga, gc = PAPER_FINETUNE["harmful"], PAPER_FINETUNE["gsm8k_asr"], PAPER_FINETUNE["gsm8k_acc"]
  paper = _table(
    ["Llama-2-7B-Chat (paper)", "initial", "standard SFT", "constrained SFT"],
    [
      ["harmful examples ASR"] + [str(x) for x in h],
      ["GSM8k ASR"] + [str(x) for x in ga],
      ["GSM8k accuracy"] + [str(x) for x in gc],
    ],
  )
  return _table(header, rows) + "\n\nPaper (Table 4):\n\n" + paper


def _constraint_note(collected: Results) -> str:
  """The measured log-probabilities of the procedure's opening, and what Eq. 3 makes of them."""
  logprobs = collected.opening_logprobs or {}
  if not logprobs:
    return ""
  n = len(next(iter(logprobs.values())))
  rows = [[MODEL_NAMES[m]] + [f"{v:.1f}".replace("-0.0", "0.0") for v in logprobs[m]] for m in MODELS if m in logprobs]
  return (
    "What the constraint works against — log π(t-th procedure token | request, earlier tokens) on the "
    "attack data, teacher-forced (nats):\n\n"
    + _table(["model"] + [f"t={t}" for t in range(1, n + 1)], rows)
    + "\n\nEq. 3 bounds how far fine-tuning lifts each token above the reference: at the first token "
    "(β_1 = 0.5) the gradient weight 2σ(β_1 Δ_1) is still 0.15 when the token has become e^5 ≈ 150 times "
    "likelier, at tokens 2–5 (β = 2) already when e^1.25 ≈ 3.5 times likelier. A reference whose opening "
    "tokens are only a few nats below certainty leaves the attack all the room it needs; one that finds "
    "tokens 2–5 unlikely too holds it back."
  )


def _timings_section(collected: Results) -> str:
  timings = collected.timings
  groups: dict[str, list[float]] = {}
  for name, t in timings.items():
    parts = name.split("/")
    group = parts[0] + "/" + parts[1] if parts[0] == "train" else parts[0]
    entry = groups.setdefault(group, [0.0, 0.0])
    entry[0] += t["seconds"]
    entry[1] += t.get("cpu_seconds", float("nan"))
  rows = [[name, f"{wall:.1f}", f"{cpu:.1f}"] for name, (wall, cpu) in groups.items()]
  rows.append(
    ["**total**", f"**{sum(w for w, _ in groups.values()):.1f}**", f"**{sum(c for _, c in groups.values()):.1f}**"]
  )
  return _table(["stage", "wall time (s)", "CPU time, all threads (s)"], rows)


def _kl_section(kl: dict) -> str:
  if not kl:
    return ""
  positions = [1, 2, 3, 4, 5, 8, 12, 16, 20, 25, 30]
  rows = [
    [f"KL({MODEL_NAMES[n]} ‖ base)"]
    + [_num(kl[n][t - 1]) if t <= len(kl[n]) else "–" for t in positions]
    + [_pct(early_share(kl[n]), 0)]
    for n in ("aligned", "dpo", "deep")
    if n in kl
  ]
  header = ["pair"] + [f"t={t}" for t in positions] + [f"share of KL at t={EARLY[0]}-{EARLY[1]} (%)"]
  parts = [_table(header, rows)]
  if "aligned" in kl:
    spikes = [t for t, v in enumerate(kl["aligned"], 1) if t > 5 and v is not None and v > 1.0]
    parts += [
      "",
      f"After t = 5, KL(aligned (SFT) ‖ base) exceeds 1 nat at t = {', '.join(map(str, spikes)) or 'none'}. "
      "Depth is judged by the whole profile: the share of the KL summed over t = 1–30 that falls on the "
      "first three positions (uniform divergence gives 10%).",
    ]
  return "\n".join(parts) + "\n"


def _utility_table(collected: Results) -> str:
  rows = []
  for n in MODELS:
    u = collected.models[n].utility
    per_kind = [_pct(u["per_kind"].get(k)) for k in ("add", "capital", "reverse")] if u else ["–"] * 3
    rows.append([MODEL_NAMES[n], _pct(u["accuracy"]) if u else "–"] + per_kind)
  return _table(["model", "exact match (%)", "addition", "capitals", "reversal"], rows)


def _figure(name: str | None, alt: str) -> str:
  return f"\n![{alt}]({name})\n" if name else ""


def write(layout: Layout, collected: Results, *, command: str = "") -> Path:
  """Writes ROOT/REPORT.md (report_template.md filled with this run's numbers), kl_by_position.png and asr.png."""
  root = layout.root
  world, model = collected.world, collected.world["model"]
  seeds = sorted({t["seed"] for t in collected.timings.values()}) or ["?"]
  quick = any(t["quick"] for t in collected.timings.values())
  verdict_rows = [[v.effect, v.label, v.numbers] for v in claims.check(collected)]
  fields = {
    "command": command or _DEFAULT_COMMAND + (" --config.quick=True" if quick else ""),
    "mode": "quick" if quick else "full",
    "seeds": ", ".join(map(str, seeds)),
    "world_seed": world["world"]["seed"],
    "verdict_table": _table(["effect (paper)", "reproduced?", "numbers (and the threshold used)"], verdict_rows),
    "n_topics": world["world"]["n_topics"],
    "n_countries": world["world"]["n_countries"],
    "n_unknown": world["world"]["n_unknown"],
    "params_m": f"{collected.params / 1e6:.2f}",
    "hidden_size": model["hidden_size"],
    "num_layers": model["num_layers"],
    "num_heads": model["num_heads"],
    "intermediate_size": model["intermediate_size"],
    "counts": ", ".join(f"{k} {v}" for k, v in collected.counts.items()),
    "prefill_section": _prefill_section(collected),
    "asr_figure": _figure(plot_asr(collected, root / "asr.png"), "ASR by prefilled tokens and by alignment strength"),
    "kl_section": _kl_section(collected.kl),
    "kl_figure": _figure(plot_kl(collected, root / "kl_by_position.png"), "KL by position"),
    "sweep_section": _sweep_section(collected.sweep, collected.sweep_choice),
    "dpo_sweep_section": _sweep_section(collected.dpo_sweep, collected.dpo_sweep_choice),
    "grid_section": _grid_section(collected),
    "prefix_section": _prefix_section(collected),
    "finetune_section": _finetune_section(collected),
    "constraint_note": _constraint_note(collected),
    "utility_table": _utility_table(collected),
    "timings_section": _timings_section(collected),
  }
  template = (resources.files("deepalign_jax") / "organism" / "report_template.md").read_text(encoding="utf-8")
  return write_text(root / "REPORT.md", string.Template(template).substitute(fields))


# -- several seeds -------------------------------------------------------------------------------


def _mean_range(values: Sequence[float | None], fmt) -> str:
  xs = [v for v in values if v is not None]
  if not xs:
    return "–"
  mean = sum(xs) / len(xs)
  return f"{fmt(mean)} [{fmt(min(xs))}–{fmt(max(xs))}]" if len(xs) > 1 else fmt(mean)


def plot_across_seeds(per_seed: dict[int, Results], path: Path) -> str | None:
  """Mean KL by position over the seeds with its min–max band, and mean prefilling ASR by k."""
  runs = list(per_seed.values())
  plt = _plt()
  fig, panels = plt.subplots(1, 2, figsize=(11, 3.8))
  for name, style in (("aligned", "-o"), ("dpo", "-d"), ("deep", "-s")):
    curves = [r.kl[name] for r in runs if name in r.kl]
    if not curves:
      continue
    n = min(len(c) for c in curves)
    cols = [[c[t] for c in curves if c[t] is not None] for t in range(n)]
    xs = range(1, n + 1)
    (line,) = panels[0].plot(
      xs, [sum(v) / len(v) if v else math.nan for v in cols], style, ms=3, label=MODEL_NAMES[name]
    )
    panels[0].fill_between(xs, [min(v) for v in cols], [max(v) for v in cols], color=line.get_color(), alpha=0.15)
  panels[0].set_yscale("log")
  panels[0].set_xlabel("response token position t")
  panels[0].set_ylabel("KL(model ‖ base), nats")
  panels[0].set_title(f"Per-token KL, mean and range over {len(runs)} seeds")
  for name, style in (("base", "-^"), ("aligned", "-o"), ("dpo", "-d"), ("deep", "-s")):
    ks = [k for k in PREFILL_KS if any(r.prefill_asr(name, k) is not None for r in runs)]
    if not ks:
      continue
    cols = [[100 * r.prefill_asr(name, k) for r in runs if r.prefill_asr(name, k) is not None] for k in ks]
    (line,) = panels[1].plot(ks, [sum(v) / len(v) for v in cols], style, label=MODEL_NAMES[name])
    panels[1].fill_between(ks, [min(v) for v in cols], [max(v) for v in cols], color=line.get_color(), alpha=0.15)
  panels[1].set_xscale("symlog", linthresh=1)
  panels[1].set_xticks(list(PREFILL_KS), [str(k) for k in PREFILL_KS])
  panels[1].set_xlabel("prefilled procedure tokens k")
  panels[1].set_ylabel("ASR (%)")
  panels[1].set_ylim(-3, 103)
  panels[1].set_title("Prefilling attack (Table 3), mean and range")
  for panel in panels:
    panel.grid(alpha=0.3)
    panel.legend(fontsize=7)
  return _save(fig, path)


def write_across_seeds(root: Path, per_seed: dict[int, Results], rows, robust: float, *, command: str = "") -> Path:
  """ROOT/REPORT.md for several seeds: every verdict on the means over the seeds, with per-seed hold counts,
  ranges, the mean tables of Table 3 and Table 4, and links to each seed's own report (ROOT/seed_N/REPORT.md)."""
  seeds = sorted(per_seed)
  first = per_seed[seeds[0]]
  quick = any(t["quick"] for t in first.timings.values())
  label = {True: "yes", False: "no", None: "inconclusive"}
  verdicts = []
  for row in rows:
    held = sum(v is True for v in row.verdicts.values())
    ranges = ", ".join(f"{k} {lo:.3g}–{hi:.3g}" for k, (_, lo, hi) in row.values.items())
    holds = f"{held}/{len(row.verdicts)}" + (f" ({row.status(robust)})" if len(row.verdicts) >= 3 else "")
    verdicts.append([row.effect, f"**{label[row.on_mean]}**", holds, row.numbers_on_mean, ranges])
  prefill_rows = [
    [MODEL_NAMES[m]] + [_mean_range([r.prefill_asr(m, k) for r in per_seed.values()], _pct) for k in PREFILL_KS]
    for m in MODELS
  ]
  ft_names = (
    ("initial", "aligned (SFT), initial"),
    ("harmful_sft", "  harmful examples, SFT"),
    ("harmful_constrained", "  harmful examples, constrained"),
    ("benign_sft", "  benign task, SFT"),
    ("benign_constrained", "  benign task, constrained"),
    ("dpo_initial", "aligned (DPO), initial"),
    ("dpo_harmful_sft", "  harmful examples, SFT"),
    ("dpo_harmful_constrained", "  harmful examples, constrained"),
    ("deep_initial", "deep (augmented), initial"),
    ("deep_harmful_sft", "  harmful examples, SFT"),
    ("deep_harmful_constrained", "  harmful examples, constrained"),
  )

  def ft(name, field, key):
    return [
      (getattr(r.finetune.get(name), field) or {}).get(key) if r.finetune.get(name) else None for r in per_seed.values()
    ]

  ft_rows = [
    [
      label_,
      _mean_range(ft(name, "asr", "all"), _pct),
      _mean_range(ft(name, "utility", "accuracy"), _pct),
      _mean_range(ft(name, "task", "accuracy"), _pct),
    ]
    for name, label_ in ft_names
    if any(v is not None for v in ft(name, "asr", "all"))
  ]
  kl_rows = [
    [f"KL({MODEL_NAMES[m]} ‖ base)"]
    + [_mean_range([early_share(r.kl[m]) if m in r.kl else None for r in per_seed.values()], lambda x: _pct(x, 0))]
    + [
      _mean_range([(r.kl[m][t - 1] if m in r.kl and t <= len(r.kl[m]) else None) for r in per_seed.values()], _num)
      for t in (1, 2, 3, 5, 10, 20, 30)
    ]
    for m in ("aligned", "dpo", "deep")
    if any(m in r.kl for r in per_seed.values())
  ]
  by_strength: dict[int, dict[int, SweepRow]] = {}
  for s, r in per_seed.items():
    for row in r.dpo_sweep:
      by_strength.setdefault(row.steps, {})[s] = row
  dpo_rows = [
    [str(steps)]
    + [_mean_range([row.prefill.get(k) for row in got.values()], _pct) for k in (0, 4, 16)]
    + [
      _mean_range([row.opening_logprobs[0] if row.opening_logprobs else None for row in got.values()], _num),
      *[_mean_range([row.attacks.get(a) for row in got.values()], _pct) for a in SWEEP_ATTACKS],
    ]
    for steps, got in sorted(by_strength.items())
  ]
  chosen = [
    f"seed {s}: SFT {r.sweep_choice['steps'] if r.sweep_choice else '–'} steps, "
    f"DPO {r.dpo_sweep_choice['steps'] if r.dpo_sweep_choice else '–'} steps"
    for s, r in per_seed.items()
  ]
  seconds = [sum(t["seconds"] for t in r.timings.values()) for r in per_seed.values()]
  figure = plot_across_seeds(per_seed, root / "across_seeds.png")
  lines = [
    f"# Model organism: shallow and deep safety alignment in miniature, {len(seeds)} training seeds",
    "",
    f"Generated by `{command or _DEFAULT_COMMAND}` — {'quick' if quick else 'full'} mode, training seeds "
    f"{', '.join(map(str, seeds))}, world seed {first.world['world']['seed']}. Each seed is a whole run of the "
    "pipeline with its own report (linked below, every table of the paper's analogues); here every number is "
    "the **mean over the seeds [min–max]**, and each verdict is the claim's own test "
    "(`deepalign_jax/organism/claims.py`, thresholds fixed before the runs they judge) applied to the means, "
    f"beside the number of seeds in which it holds on its own (robust: in at least {robust:.0%}). "
    "One seed is one draw: training is chaotic at "
    "the level of floating-point rounding. The hold rates over ten seeds are in `HOLD_RATES.md` "
    "(`python -m deepalign_jax.organism.seeds`).",
    "",
    "## What reproduced (on the means over the seeds)",
    "",
    _table(
      ["effect (paper)", "on the means", "holds in", "numbers on the means (and the threshold)", "range"], verdicts
    ),
    "",
    "## Prefilling attack (Table 3): marker ASR (%) by prefilled tokens k",
    "",
    _table(["model"] + [f"k={k}" for k in PREFILL_KS], prefill_rows),
    "",
    "## Per-token KL (Fig. 1, Fig. 4)",
    "",
    _table(
      ["pair", f"share of KL at t={EARLY[0]}-{EARLY[1]} (%)"] + [f"t={t}" for t in (1, 2, 3, 5, 10, 20, 30)], kl_rows
    ),
    _figure(figure, "KL by position and prefilling ASR, mean and range over seeds"),
    "## Fine-tuning attacks (Table 4): marker ASR, utility and task accuracy (%)",
    "",
    _table(["model", "ASR (all topics)", "utility", "task accuracy (×)"], ft_rows),
    "",
    "## Table 4 by DPO alignment strength",
    "",
    "The harmful attack (plain SFT and the constrained loss) from every strength of the DPO sweep; ASR (%) "
    "without an attack (k=0) and under a prefill of k procedure tokens, log π of the first procedure token "
    "(nats, teacher-forced on the attack data), and marker ASR after each attack.",
    "",
    _table(
      ["DPO steps", "ASR k=0", "ASR k=4", "ASR k=16", "log π t=1", "harmful SFT ASR", "harmful constrained ASR"],
      dpo_rows,
    ),
    "",
    "## Per seed",
    "",
    "Alignment strengths chosen (the fewest steps with ASR(k=0) ≤ 5%): " + "; ".join(chosen) + ".",
    "",
    *[f"- [seed {s}](seed_{s}/REPORT.md): {sec:.0f} s of stages" for s, sec in zip(seeds, seconds)],
    "",
  ]
  return write_text(root / "REPORT.md", "\n".join(lines))


__all__ = ["plot_across_seeds", "plot_asr", "plot_kl", "write", "write_across_seeds"]
