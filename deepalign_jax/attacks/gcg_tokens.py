"""The token side of GCG: where suffix and target sit, which tokens a suffix may use.

Everything here is host-side Python over a transformers tokenizer:

- `build_layout`: renders one behaviour through the `ChatRenderer` with the
  user message `instruction + " " + suffix` and the target as an open
  assistant turn, then finds the suffix tokens from character offsets and
  the target tokens from the renderer's `response_start`.  Nothing is
  hand-counted, so every chat format (Llama-2, Gemma, ChatML templates, ...)
  gets its slices from the same code that renders it for evaluation.
- `allowed_tokens`: the vocabulary mask of the reference code's
  `get_nonascii_toks`: printable ASCII only, never special or added tokens,
  never ids past the tokenizer (padded embedding tables).
- `round_trip_filter`: the reference code's decode→encode filter, made exact:
  a candidate survives only if the *whole rendered prompt*, with the
  candidate's decoded text in place of the suffix, tokenises back to the very
  ids the attack optimised (so the suffix text that is reported and
  evaluated is the suffix that was optimised).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# The attacked prompt is `instruction + SUFFIX_SEPARATOR + suffix_text` (SPEC §6).
SUFFIX_SEPARATOR = " "


class GCGLayoutError(ValueError):
  """A behaviour whose rendered prompt does not split cleanly into prefix, suffix, target."""


def attacked_prompt(instruction: str, suffix_text: str) -> str:
  """The user message that carries the adversarial suffix."""
  return instruction + SUFFIX_SEPARATOR + suffix_text


def suffix_text(tokenizer, suffix_ids: Sequence[int]) -> str:
  """The text of suffix ids, without the separator space.

  The separating space usually belongs to the first suffix token (byte-level
  BPE "Ġ!", SentencePiece "▁!"); `attacked_prompt` adds it back.  Whether
  the text really re-tokenises to `suffix_ids` is `round_trip_filter`'s job.
  """
  return suffix_texts(tokenizer, [suffix_ids])[0]


def suffix_texts(tokenizer, rows: Sequence[Sequence[int]]) -> list[str]:
  """`suffix_text` of many suffixes at once."""
  texts = _decode(tokenizer, rows)
  return [t[len(SUFFIX_SEPARATOR) :] if t.startswith(SUFFIX_SEPARATOR) else t for t in texts]


def _decode(tokenizer, rows: Sequence[Sequence[int]]) -> list[str]:
  """Texts of id rows, special tokens kept, no clean-up of spaces.

  The Rust tokenizer is called directly: `tokenizer.batch_decode` converts
  its input element by element in Python, seconds for a whole vocabulary.
  It is what `tokenizer.decode(ids, clean_up_tokenization_spaces=False)`
  runs, and every decode of this module goes through here, so the filter
  and the reported text agree.
  """
  return tokenizer.backend_tokenizer.decode_batch([[int(i) for i in row] for row in rows], skip_special_tokens=False)


@dataclasses.dataclass(frozen=True)
class PromptLayout:
  """One behaviour rendered with a suffix: input_ids = before + suffix + after.

  Attributes:
    instruction, target: the behaviour.
    input_ids: [L] the full rendering, prompt then the target as an open
      assistant turn (the renderer's `render(..., assistant_prefix=target)`).
    suffix_start, suffix_length: the suffix tokens are
      input_ids[suffix_start : suffix_start + suffix_length].
    target_start: the first target token; the target runs to the end.
    text_before, text_after: the rendered text around the suffix text, so
      that text_before + suffix_text + text_after is the rendering of any
      other suffix.
  """

  instruction: str
  target: str
  input_ids: tuple[int, ...]
  suffix_start: int
  suffix_length: int
  target_start: int
  text_before: str
  text_after: str

  @property
  def suffix_end(self) -> int:
    return self.suffix_start + self.suffix_length

  @property
  def suffix_ids(self) -> tuple[int, ...]:
    return self.input_ids[self.suffix_start : self.suffix_end]

  @property
  def target_ids(self) -> tuple[int, ...]:
    return self.input_ids[self.target_start :]

  def with_suffix(self, suffix_ids: Sequence[int]) -> tuple[int, ...]:
    """The full ids with other suffix ids spliced in."""
    if len(suffix_ids) != self.suffix_length:
      raise ValueError(f"expected {self.suffix_length} suffix ids, got {len(suffix_ids)}")
    return self.input_ids[: self.suffix_start] + tuple(int(i) for i in suffix_ids) + self.input_ids[self.suffix_end :]


def _render(renderer, instruction: str, target: str, text: str):
  return renderer.render([{"role": "user", "content": attacked_prompt(instruction, text)}], assistant_prefix=target)


def build_layout(renderer, instruction: str, target: str, suffix: str) -> PromptLayout:
  """Renders (instruction + " " + suffix, target) and locates suffix and target tokens.

  The suffix tokens are those whose character span overlaps the suffix text;
  the first may also hold the separating space, but no token may hold
  characters of both the suffix and its surroundings.

  Raises:
    GCGLayoutError: the suffix merges into neighbouring tokens, the template
      does not contain the user message verbatim, or the target is empty.
  """
  if not suffix or suffix != suffix.strip():
    raise GCGLayoutError(f"the suffix must be non-empty without surrounding spaces, got {suffix!r}")
  tokenizer = renderer.tokenizer
  rendered = _render(renderer, instruction, target, suffix)
  content = attacked_prompt(instruction, suffix)
  at = rendered.text.find(content)
  if at < 0:
    raise GCGLayoutError(
      f"the {renderer.chat_format!r} rendering does not contain the user message "
      f"verbatim, so the suffix cannot be located: {rendered.text!r}"
    )
  first_char = at + len(instruction) + len(SUFFIX_SEPARATOR)
  end_char = first_char + len(suffix)
  encoded = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
  ids, offsets = tuple(encoded["input_ids"]), encoded["offset_mapping"]
  assert ids == rendered.input_ids, "re-tokenising the rendered text changed its ids"
  inside = [i for i, (s, e) in enumerate(offsets) if e > first_char and s < end_char and e > s]
  where = f"behaviour {instruction[:60]!r}"
  if not inside or inside != list(range(inside[0], inside[-1] + 1)):
    raise GCGLayoutError(f"{where}: the suffix {suffix!r} does not map to a run of tokens")
  start, stop = inside[0], inside[-1] + 1
  if offsets[start][0] < first_char - len(SUFFIX_SEPARATOR) or offsets[stop - 1][1] > end_char:
    raise GCGLayoutError(
      f"{where}: the suffix {suffix!r} shares a token with the text around it "
      f"({rendered.text[offsets[start][0] : offsets[stop - 1][1]]!r})"
    )
  if rendered.response_start < stop or rendered.response_start >= len(ids):
    raise GCGLayoutError(f"{where}: the target {target!r} renders to no tokens after the suffix")
  return PromptLayout(
    instruction=instruction,
    target=target,
    input_ids=ids,
    suffix_start=start,
    suffix_length=stop - start,
    target_start=rendered.response_start,
    text_before=rendered.text[:first_char],
    text_after=rendered.text[end_char:],
  )


def check_render(renderer, layout: PromptLayout, suffix_ids: Sequence[int]) -> None:
  """Asserts that rendering the attacked prompt from text gives the spliced ids.

  This is the guarantee the attack rests on: the prompt an evaluation
  builds from `attacked_prompt(instruction, suffix_text)` is token for token
  the prompt whose target loss was minimised.
  """
  text = suffix_text(renderer.tokenizer, suffix_ids)
  rendered = _render(renderer, layout.instruction, layout.target, text).input_ids
  expected = layout.with_suffix(suffix_ids)
  if rendered != expected:
    raise GCGLayoutError(
      f"behaviour {layout.instruction[:60]!r} with suffix {text!r}: the rendered "
      f"prompt tokenises to {len(rendered)} ids that differ from the "
      f"{len(expected)} optimised ones (first difference at "
      f"{next(i for i, (a, b) in enumerate(zip(rendered + (-1,), expected)) if a != b)})"
    )


def allowed_tokens(tokenizer, vocab_size: int, *, allow_non_ascii: bool = False) -> np.ndarray:
  """[vocab_size] bool: the ids a suffix may use.

  Excluded: special and added tokens (`<|im_start|>`, `<s>`, ...), ids the
  tokenizer does not have (a padded embedding table) and — unless
  `allow_non_ascii` — tokens whose text is not printable ASCII (the
  reference code's `get_nonascii_toks`).
  """
  n = min(len(tokenizer), vocab_size)
  texts = _decode(tokenizer, [[i] for i in range(n)])
  allowed = np.zeros(vocab_size, np.bool_)
  allowed[:n] = [allow_non_ascii or (t.isascii() and t.isprintable()) for t in texts]
  special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
  allowed[[i for i in special if 0 <= i < vocab_size]] = False
  return allowed


def round_trip_filter(tokenizer, layouts: Sequence[PromptLayout], candidates: np.ndarray) -> np.ndarray:
  """[C] bool: candidates whose text renders back to their own ids in every layout.

  Args:
    tokenizer: the renderer's tokenizer.
    layouts: the behaviours (all of them, so a suffix found on some also
      renders exactly in the others).
    candidates: [C, S] int suffix ids.
  """
  texts = suffix_texts(tokenizer, candidates.tolist())
  keep = np.ones(len(candidates), np.bool_)
  for layout in layouts:
    before = list(layout.input_ids[: layout.suffix_start])
    after = list(layout.input_ids[layout.suffix_end :])
    start, stop, total = layout.suffix_start, layout.suffix_end, len(layout.input_ids)
    encoded = tokenizer([layout.text_before + t + layout.text_after for t in texts], add_special_tokens=False)[
      "input_ids"
    ]
    for row, ids in enumerate(encoded):
      keep[row] &= (
        len(ids) == total
        and ids[start:stop] == candidates[row].tolist()
        and ids[:start] == before
        and ids[stop:] == after
      )
  return keep
