"""Text in, text out: chat rendering + batched generation + decoding.

`Sampler` is what attacks, judges and the CLI use: conversations are
rendered by the model's chat format (optionally with the assistant turn
opened by a prefix string, or by the first k tokens of a given response —
the prefilling attack), grouped into fixed-size batches so that one
compilation serves the whole run, generated, and decoded.  The returned text
excludes the prompt and the prefill.

Stop strings end a generation at a piece of text rather than a token: a base
model prompted in the Alpaca format ("### Instruction:" / "### Response:")
otherwise answers and runs on into instructions it invents, so that format
stops at the next "###" (the reference stops its base models on the "###"
header tokens, SPEC §11).  The decode loop is compiled with stop *ids*, so
every vocabulary token whose text contains a stop string becomes one, and
each decoded sample is cut at the first stop string — which also catches a
string spread over several tokens ("##" + "#"), though generation then runs
on (to a stop token or max_new_tokens) before the cut.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from tqdm.auto import tqdm

from deepalign_jax.data.chat import ChatRenderer
from deepalign_jax.sampling.generate import check_decoding, generate

Messages = Sequence[Mapping[str, Any]]


@dataclasses.dataclass
class Sample:
  """One generation.

  prompt_text: the rendered prompt, special tokens written out, prefill included.
  prefill: the assistant-turn prefix placed before generation ('' if none).
  text: the generated continuation, decoded without special tokens.
  response: the assistant's answer as a reader sees it — prefill and
    continuation decoded together.  Not `prefill + text`: SentencePiece
    tokenizers drop the space at that boundary when the two are decoded apart
    ("I" + "cannot" → "Icannot"), which would hide a refusal from a judge.
  prompt_ids / token_ids: the prompt's and the generated ids (stop token included;
    after a stop string, up to the token that completes it).
  stopped: whether a stop token or stop string ended it (False: max_new_tokens
    was reached).  `text` and `response` end before a stop string.
  """

  prompt_text: str
  prefill: str
  text: str
  response: str
  prompt_ids: list[int]
  token_ids: list[int]
  stopped: bool

  def read_as(self, reads: str) -> str:
    """What a judge with `reads` sees: 'continuation' (`text`) or 'response' (prefill and continuation)."""
    return self.response if reads == "response" else self.text


class RenderedPrompt(NamedTuple):
  """One prompt for `Sampler.run`: ids, prefill text, prompt text, and how many of the ids are the prefill."""

  ids: list[int]
  prefill: str
  text: str
  prefill_length: int


# The next Alpaca header ("### Instruction:") ends a base-format answer (module docstring).
BASE_STOP_STRINGS = ("###",)


def stop_string_token_ids(tokenizer, stop_strings: Sequence[str]) -> tuple[int, ...]:
  """Ids of every vocabulary token whose decoded text contains one of `stop_strings`.

  For SmolLM2's byte-level BPE "###" gives "###", " ###", "####", ...; a
  SentencePiece vocabulary gives "▁###" (which decodes to "###").
  """
  if not stop_strings:
    return ()
  texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
  return tuple(i for i, text in enumerate(texts) if any(s in text for s in stop_strings))


def _first_stop(text: str, stop_strings: Sequence[str]) -> int:
  """Index of the first occurrence of any stop string in `text`, -1 if none."""
  found = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
  return min(found) if found else -1


def cut_at_stop_strings(
  tokenizer, prefill_ids: Sequence[int], tokens: Sequence[int], stop_strings: Sequence[str]
) -> tuple[list[int], str, str, bool]:
  """(token_ids, text, response, cut) of one generation, ended at its first stop string.

  text = the continuation decoded, up to (not including) the first stop
  string; token_ids end with the token that completes it (as a stop token
  is kept); response = prefill + continuation decoded together, cut at the
  same place — a stop string inside the prefill itself (a prefilled harmful
  answer in markdown) does not count, only the continuation's.  Without a
  stop string in the continuation: the decodings as they are, cut=False.
  """
  tokens = list(tokens)
  text = tokenizer.decode(tokens, skip_special_tokens=True)
  at = _first_stop(text, stop_strings)
  if at < 0:
    return tokens, text, tokenizer.decode(list(prefill_ids) + tokens, skip_special_tokens=True), False
  # The shortest token prefix whose text holds a stop string (decoding is monotone in the prefix).
  low, high = 1, len(tokens)
  while low < high:
    mid = (low + high) // 2
    if _first_stop(tokenizer.decode(tokens[:mid], skip_special_tokens=True), stop_strings) >= 0:
      high = mid
    else:
      low = mid + 1
  kept = tokens[:low]
  full = tokenizer.decode(kept, skip_special_tokens=True)
  at = _first_stop(full, stop_strings)
  tail = full[at:]  # the stop string and whatever its token carried after it
  response = tokenizer.decode(list(prefill_ids) + kept, skip_special_tokens=True)
  # The continuation's text ends the response, so the same tail comes off it (the last resort, for a
  # tokenizer whose joint decoding differs at the end, is the last stop string).
  if response.endswith(tail):
    response = response[: len(response) - len(tail)]
  else:
    last = max(response.rfind(s) for s in stop_strings)
    response = response[:last] if last >= 0 else response
  return kept, full[:at], response, True


class Sampler:
  """Generates from chat conversations (or raw text) with one model.

  Args:
    model: a `Transformer`.
    tokenizer: its tokenizer.
    chat_format, system_prompt: passed to `ChatRenderer`.
    stop_strings: texts that end a generation (see the module docstring);
      None: the format's, ("###",) for 'base' and none for the others.
      Every sample's text and response end before the first one, raw
      prompts' (`sample_raw`) included.  "###" also cuts a GSM8k-style
      "#### 42" answer line: pass () (or other strings) where answers use it.
  """

  def __init__(
    self,
    model,
    tokenizer,
    chat_format: str = "auto",
    system_prompt: str | None = None,
    stop_strings: Sequence[str] | None = None,
  ):
    self.model = model
    self.tokenizer = tokenizer
    self.renderer = ChatRenderer(tokenizer, chat_format, system_prompt)
    self._vocab_limit = len(tokenizer)
    if stop_strings is None:
      stop_strings = BASE_STOP_STRINGS if self.renderer.chat_format == "base" else ()
    if isinstance(stop_strings, str) or not all(isinstance(s, str) and s for s in stop_strings):
      raise ValueError(f"stop_strings must be a sequence of non-empty strings, got {stop_strings!r}")
    self.stop_strings = tuple(stop_strings)
    self._stop_string_ids = stop_string_token_ids(tokenizer, self.stop_strings)

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    """Ids that end a generation: the renderer's end-of-turn ids and every token holding a stop string."""
    return tuple(sorted(set(self.renderer.stop_token_ids) | set(self._stop_string_ids)))

  def prompt(
    self, messages: Messages, prefix: str | None = None, response: str | None = None, prefill_tokens: int | None = None
  ) -> RenderedPrompt:
    """One conversation as `sample` renders it (assistant turn open, optionally prefilled)."""
    if response is not None:
      full = self.renderer.render(list(messages) + [{"role": "assistant", "content": response}])
      # Never prefill the closing end-of-turn token: the turn stays open.
      body = full.response_ids[:-1] if full.response_ids else ()
      k = min(prefill_tokens or 0, len(body))
      ids = list(full.with_response_prefix(k))
      return RenderedPrompt(ids, self.tokenizer.decode(body[:k]), self.tokenizer.decode(ids), k)
    rendered = self.renderer.render(messages, assistant_prefix=prefix or None)
    ids = list(rendered.input_ids)
    length = 0
    if prefix:
      # The prefill is what follows the plain open turn (the template ends in a
      # special token or newline, so the prefix never merges into it).
      opened = self.renderer.render(messages).input_ids
      common = next((i for i, (a, b) in enumerate(zip(opened, ids)) if a != b), min(len(opened), len(ids)))
      length = len(ids) - common
    return RenderedPrompt(ids, prefix or "", rendered.text, length)

  def sample(
    self,
    conversations: Sequence[Messages],
    *,
    assistant_prefixes: Sequence[str | None] | None = None,
    responses: Sequence[str] | None = None,
    prefill_tokens: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 512,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    greedy=False,
    seed: int = 0,
    progress: bool = True,
  ) -> list[Sample]:
    """Generates one sample per conversation.

    Each conversation ends with a user message. `assistant_prefixes[i]` opens
    the assistant turn with that text; alternatively `responses[i]` with
    `prefill_tokens=k` opens it with the first k tokens of that response (k=0:
    no prefill).  Decoding parameters are scalars, the same for every prompt.
    Sampling is reproducible for the same seed, prompts and batch size.
    """
    n = len(conversations)
    if assistant_prefixes is not None and len(assistant_prefixes) != n:
      raise ValueError(f"{len(assistant_prefixes)} assistant_prefixes for {n} conversations")
    if responses is not None and len(responses) != n:
      raise ValueError(f"{len(responses)} responses for {n} conversations")
    prompts = [
      self.prompt(
        conv,
        assistant_prefixes[i] if assistant_prefixes else None,
        responses[i] if responses is not None else None,
        prefill_tokens,
      )
      for i, conv in enumerate(conversations)
    ]
    return self.run(
      prompts,
      batch_size=batch_size,
      max_new_tokens=max_new_tokens,
      seed=seed,
      progress=progress,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      greedy=greedy,
    )

  def sample_raw(self, texts: Sequence[str], *, add_special_tokens: bool = True, **kwargs) -> list[Sample]:
    """Generates from plain strings tokenised as they are (no chat format)."""
    prompts = [
      RenderedPrompt(list(self.tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"]), "", t, 0)
      for t in texts
    ]
    return self.run(prompts, **kwargs)

  def run(
    self,
    prompts: Sequence[RenderedPrompt],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 512,
    seed: int = 0,
    progress: bool = True,
    **decoding,
  ) -> list[Sample]:
    """Generates from prompts already rendered (`prompt`), in fixed-size batches.

    decoding: temperature, top_k, top_p, greedy — each a scalar or one value
    per prompt (a decoding sweep then runs in the same compiled batches).
    A batch_size or max_new_tokens below 1, a negative temperature, a negative
    top_k or a top_p outside (0, 1] is refused (ValueError) before anything runs.
    """
    n = len(prompts)
    check_decoding(
      batch_size=batch_size,
      max_new_tokens=max_new_tokens,
      **{k: v for k, v in decoding.items() if k in ("temperature", "top_k", "top_p")},
    )
    for key, value in decoding.items():
      if not np.isscalar(value) and len(value) != n:
        raise ValueError(f"{key}: {len(value)} values for {n} prompts")
    stops = set(self.stop_token_ids)
    pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
    samples: list[Sample] = []
    generated = 0
    start = time.perf_counter()
    bar = tqdm(total=n, desc="generating", unit="prompt", disable=not progress, file=sys.stderr)
    for offset in range(0, n, batch_size):
      chunk = [p.ids for p in prompts[offset : offset + batch_size]]
      # A short last batch is filled with copies so the compiled shape is reused.
      padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
      rows = {}
      for key, value in decoding.items():
        if np.isscalar(value):
          rows[key] = value
        else:
          part = list(value[offset : offset + batch_size])
          rows[key] = part + [part[-1]] * (batch_size - len(part))
      out = generate(
        self.model,
        padded,
        max_new_tokens=max_new_tokens,
        stop_tokens=sorted(stops),
        seed=seed + offset,
        pad_id=pad,
        vocab_limit=self._vocab_limit,
        **rows,
      )
      for row, ids in enumerate(chunk):
        tokens = out.tokens[row, : out.lengths[row]].tolist()
        p = prompts[offset + row]
        prefill_ids = list(ids[len(ids) - p.prefill_length :]) if p.prefill_length else []
        tokens, text, response, cut = cut_at_stop_strings(self.tokenizer, prefill_ids, tokens, self.stop_strings)
        stopped = cut or (bool(tokens) and tokens[-1] in stops)
        samples.append(
          Sample(
            prompt_text=p.text,
            prefill=p.prefill,
            text=text,
            response=response,
            prompt_ids=list(ids),
            token_ids=tokens,
            stopped=stopped,
          )
        )
        generated += len(tokens)
      bar.update(len(chunk))
      bar.set_postfix(tokens_per_s=f"{generated / (time.perf_counter() - start):.1f}")
    bar.close()
    return samples
