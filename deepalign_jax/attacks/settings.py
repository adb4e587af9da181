"""Attack settings: how one prompt is attacked and decoded (SPEC §6).

A `Setting` is one point of an attack sweep — prefill k tokens of the
harmful answer, open the turn with a fixed prefix, append a suffix (GCG's,
or a backdoor trigger), or decode with one (temperature, top-k, top-p,
greedy).  An evaluation runs every prompt under every setting; records and
summaries are keyed by `Setting.name`, and `axis`/`value` say where it sits
in its sweep.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


@dataclasses.dataclass(frozen=True)
class Decoding:
  """Decoding parameters of one generation (paper defaults: T 0.9, top-p 0.6, top-k 50)."""

  temperature: float = 0.9
  top_k: int = 50
  top_p: float = 0.6
  greedy: bool = False

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Setting:
  """One way of attacking a prompt.

  name: unique key in outputs ("prefill_10", "top_p_0.35", "gcg", ...).
  axis, value: the sweep it belongs to and its coordinate there (plots,
    per-axis aggregation); axis "none" for a plain run.
  prefill_tokens: open the assistant turn with the first k tokens of the
    prompt's reference (harmful) answer.
  prefix: open the assistant turn with this text instead.
  suffix: appended to the user message (" " + suffix), e.g. a GCG suffix.
  decoding: how to sample.
  """

  name: str
  axis: str = "none"
  value: float | int | str | None = None
  prefill_tokens: int = 0
  prefix: str | None = None
  suffix: str = ""
  decoding: Decoding = Decoding()

  def as_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["decoding"] = self.decoding.as_dict()
    return out


def plain_setting(decoding: Decoding = Decoding()) -> list[Setting]:
  """No attack: the prompt as it is."""
  return [Setting("plain", decoding=decoding)]


def prefill_settings(ks: Sequence[int], decoding: Decoding = Decoding()) -> list[Setting]:
  """The prefilling attack: the first k tokens of the harmful answer, for each k (paper 5/10/20/40)."""
  if not ks or any(int(k) < 0 for k in ks):
    raise ValueError(f"prefill token counts must be a non-empty list of k >= 0, got {list(ks)}")
  return [Setting(f"prefill_{int(k)}", "prefill_tokens", int(k), prefill_tokens=int(k), decoding=decoding) for k in ks]


def prefix_settings(prefixes: Sequence[str], decoding: Decoding = Decoding()) -> list[Setting]:
  """A fixed assistant-turn prefix, e.g. a refusal prefix into a base model (SPEC §6, Table 1)."""
  if not prefixes:
    raise ValueError("prefix attack needs at least one prefix")
  return [
    Setting(f"prefix_{i}", "prefix", prefix, prefix=prefix, decoding=decoding) for i, prefix in enumerate(prefixes)
  ]


def suffix_settings(suffix: str, decoding: Decoding = Decoding(), name: str = "gcg") -> list[Setting]:
  """A suffix after the instruction: GCG's adversarial one, or a fixed text such as a backdoor trigger
  (attack kind "suffix": one setting per text, named suffix_0, suffix_1, ...; "" for none)."""
  return [Setting(name, "suffix", suffix, suffix=suffix, decoding=decoding)]


__all__ = ["Decoding", "Setting", "plain_setting", "prefill_settings", "prefix_settings", "suffix_settings"]
