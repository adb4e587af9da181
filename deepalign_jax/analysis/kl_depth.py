"""KL between models, position by position along harmful answers (paper Fig. 1 and 4; docs/analysis.md).

    python -m deepalign_jax.analysis.kl_depth --config configs/analysis/<name>.py --workdir DIR

For every (prompt, response) record and every pair (p, q) of the config,
D_KL(π_p(·|x, y_<t) ‖ π_q(·|x, y_<t)) over the full vocabulary at response
positions t = 1..num_positions, each model reading the prompt in its own
format (`prompts.PromptFormat`) followed by the same response token ids.
The models must share a tokenizer (same vocabulary), or the run stops.

Models are loaded one at a time: each is run over the dataset and only its
final hidden states at the reported positions are kept (host memory,
n × N × D); the KLs are then formed from those and the output heads, a
vocabulary chunk at a time.

DIR receives
  kl_by_position.json   per pair: mean, standard error, count per position;
                        per model: source, prompt format, system prompt and
                        the rendering of a placeholder prompt
  kl_by_position.csv    pair,p,q,position,mean,stderr,count
  kl_by_position.png    all pairs on one axis (log scale with `log_scale`)
  kl_per_example.npz    per pair: kl [n, N] and valid [n, N]
  prompts.jsonl         per record: its source and every model's rendered prompt
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from ml_collections import config_dict

from deepalign_jax import atomic
from deepalign_jax.analysis.plots import plot_by_position
from deepalign_jax.analysis.positions import position_stats
from deepalign_jax.analysis.prompts import PromptFormat, read_pairs
from deepalign_jax.analysis.teacher_forcing import kl_from_hidden, response_hidden_states
from deepalign_jax.cli import run_cli
from deepalign_jax.data import load_tokenizer
from deepalign_jax.models import dtype_from_name
from deepalign_jax.models.sources import load, resolve_source


def model_entry(
  path: str = "", chat_format: str = "auto", system_prompt: str | None = None, dtype: str = "float32", step: int = 0
) -> ml_collections.ConfigDict:
  """One model of a comparison.

  path: HF directory, 'packaged:NAME' or a training workdir; step: that
  workdir's checkpoint step (0: its final params); chat_format: llama2 |
  gemma | base | template | auto | raw; system_prompt: for the chat formats
  (None: none, unless a record carries one).
  """
  return ml_collections.ConfigDict(
    dict(
      path=path,
      chat_format=chat_format,
      dtype=dtype,
      step=step,
      system_prompt=config_dict.placeholder(str) if system_prompt is None else system_prompt,
    )
  )


def default_config() -> ml_collections.ConfigDict:
  """Every setting of a KL-by-position run; a config file adds `models` and `pairs`."""
  c = ml_collections.ConfigDict()
  c.models = ml_collections.ConfigDict()  # name → model_entry(...)
  c.pairs = ()  # ((p, q), ...): KL(p ‖ q), e.g. (("aligned", "base"),)
  c.response_from = ""  # model whose format tokenises the responses ("": p of the first pair)
  c.data = ml_collections.ConfigDict(
    dict(
      path="",  # the (prompt, harmful answer) file every model is teacher-forced on
      format="harmful_hexphi",  # harmful_hexphi | conversations | prompt_response | triplets
      max_examples=0,  # 0: all records
    )
  )
  c.num_positions = 40  # response positions 1..N measured
  c.batch_size = 8  # examples per forward pass
  c.vocab_chunk = 8192  # 0: full [batch, N, V] logits (small vocabularies)
  c.position_chunk = 0  # 0: all positions of a batch at once
  c.log_scale = True  # logarithmic y axis of the plot
  c.title = "Per-token KL divergence on harmful responses"  # the plot's title
  c.plot = True  # kl_by_position.png (matplotlib)
  return c


def _pairs(config) -> list[tuple[str, str]]:
  names = set(config.models.keys())
  if not names:
    raise ValueError("config.models is empty: name at least two models (model_entry(...))")
  pairs = [tuple(pair) for pair in config.pairs]
  if not pairs:
    raise ValueError("config.pairs is empty: give ((p, q), ...) to compute KL(p ‖ q)")
  for pair in pairs:
    if len(pair) != 2 or any(name not in names for name in pair):
      raise ValueError(f"config.pairs: {pair!r} is not a (p, q) pair of model names; models: {sorted(names)}")
  return pairs


def _check_tokenizers(names: list[str], tokenizers: dict, sources: dict) -> None:
  first = names[0]
  vocab = tokenizers[first].get_vocab()
  for name in names[1:]:
    other = tokenizers[name].get_vocab()
    if other != vocab:
      raise ValueError(
        f"models {first!r} ({sources[first].tokenizer}) and {name!r} ({sources[name].tokenizer}) have "
        f"different tokenizers ({len(vocab)} vs {len(other)} tokens, or different ids); the KL is "
        "teacher-forced on one tokenisation of each response, so all models must share a tokenizer"
      )


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
  """Computes KL by position for every pair; writes the outputs; returns the JSON summary."""
  workdir = Path(workdir)
  pairs = _pairs(config)
  if config.num_positions < 1:
    raise ValueError(f"config.num_positions must be >= 1, got {config.num_positions}")
  response_from = config.response_from or pairs[0][0]
  if response_from not in config.models:
    raise ValueError(f"config.response_from={response_from!r} is not one of the models {sorted(config.models)}")
  names = sorted({name for pair in pairs for name in pair} | {response_from})
  for name in names:
    dtype_from_name(config.models[name].dtype, f"config.models.{name}.dtype")

  sources = {}
  for name in names:
    try:
      sources[name] = resolve_source(config.models[name].path, config.models[name].step)
    except (ValueError, FileNotFoundError) as e:
      raise type(e)(f"config.models.{name}: {e}") from None
  tokenizers = {name: load_tokenizer(sources[name].tokenizer) for name in names}
  _check_tokenizers(names, tokenizers, sources)
  formats = {
    name: PromptFormat(tokenizers[name], config.models[name].chat_format, config.models[name].system_prompt)
    for name in names
  }
  records = read_pairs(config.data.path, config.data.format, config.data.max_examples)
  responses = [
    formats[response_from].response(system, user, answer, source) for system, user, answer, source in records
  ]
  prompts = {
    name: [formats[name].prompt(system, user, source) for system, user, _, source in records] for name in names
  }

  n_pos = config.num_positions
  hidden, heads, valid = {}, {}, None
  # Entries that differ only in their prompt format share one load of the weights.
  by_weights: dict[tuple, list[str]] = {}
  for name in names:
    key = (sources[name].path, sources[name].step, config.models[name].dtype)
    by_weights.setdefault(key, []).append(name)
  for group in by_weights.values():
    model = load(sources[group[0]], dtype=dtype_from_name(config.models[group[0]].dtype))
    head = model.output_head()
    head = head._replace(weights=np.asarray(head.weights))
    for name in group:
      hidden[name], valid = response_hidden_states(
        model, [ids for ids, _ in prompts[name]], responses, n_pos, batch_size=config.batch_size
      )
      heads[name] = head
    del model  # one model in device memory at a time

  results, per_example = [], {}
  for p, q in pairs:
    kl = kl_from_hidden(
      hidden[p],
      hidden[q],
      valid,
      heads[p],
      heads[q],
      batch_size=config.batch_size,
      vocab_chunk=config.vocab_chunk,
      position_chunk=config.position_chunk or None,
    )
    results.append({"p": p, "q": q, "label": f"KL({p} ‖ {q})", **position_stats(kl, valid)})
    per_example[f"{p}__{q}__kl"] = kl
  per_example["valid"] = valid

  summary = {
    "positions": list(range(1, n_pos + 1)),
    "examples": len(records),
    "data": {"path": str(config.data.path), "format": config.data.format},
    "response_from": response_from,
    "response_tokens": {
      "min": min(map(len, responses)),
      "max": max(map(len, responses)),
      "mean": float(np.mean([len(r) for r in responses])),
    },
    "models": {
      name: {
        **sources[name].describe(),
        "dtype": config.models[name].dtype,
        "chat_format": formats[name].chat_format,
        "system_prompt": config.models[name].system_prompt,
        "prompt_format": formats[name].describe(),
        "first_prompt": prompts[name][0][1],
      }
      for name in names
    },
    "pairs": results,
  }
  _write(workdir, config, summary, per_example, records, prompts)
  return summary


def _write(workdir: Path, config, summary, per_example, records, prompts) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  atomic.write_json(workdir / "kl_by_position.json", summary)
  with atomic.atomic_path(workdir / "kl_by_position.csv") as tmp, open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["pair", "p", "q", "position", "mean", "stderr", "count"])
    for pair in summary["pairs"]:
      for t, (mean, stderr, count) in enumerate(zip(pair["mean"], pair["stderr"], pair["count"]), start=1):
        writer.writerow(
          [
            pair["label"],
            pair["p"],
            pair["q"],
            t,
            "" if mean is None else repr(mean),
            "" if stderr is None else repr(stderr),
            count,
          ]
        )
  with atomic.atomic_path(workdir / "kl_per_example.npz") as tmp:
    np.savez(tmp, **per_example)
  atomic.write_jsonl(
    workdir / "prompts.jsonl",
    (
      {
        "source": source,
        "prompts": {name: prompts[name][i][1] for name in prompts},
        "prompt_tokens": {name: len(prompts[name][i][0]) for name in prompts},
      }
      for i, (_, _, _, source) in enumerate(records)
    ),
  )
  if config.plot:
    plot_by_position(
      {pair["label"]: pair for pair in summary["pairs"]},
      workdir / "kl_by_position.png",
      ylabel="KL divergence (nats)",
      title=config.title,
      log_scale=config.log_scale,
    )


def _report(summary, workdir) -> None:
  for pair in summary["pairs"]:
    shown = ", ".join("-" if m is None else f"{m:.3g}" for m in pair["mean"][:10])
    print(f"{pair['label']}, positions 1-10: {shown}")
  print(f"wrote {Path(workdir) / 'kl_by_position.json'} (and .csv, .png)")


if __name__ == "__main__":
  run_cli(run, _report, defaults=default_config)
