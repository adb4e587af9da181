"""Chat rendering: messages → token ids, response start and loss mask.

The formats are those of SPEC §2, exact to the character:

  llama2    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {assistant} </s>
            later turns: <s>[INST] {user} [/INST] {assistant} </s>
            (one space after [/INST] everywhere; the reference code used two in
            training strings and one at inference.)
  gemma     <bos><start_of_turn>user\\n{system}\\n{user}<end_of_turn>\\n<start_of_turn>model\\n{assistant}<end_of_turn>
  base      Alpaca-style "### Instruction:" / "### Response:" for base models
  template  the tokenizer's own chat_template (ChatML for SmolLM2, Gemma 3's, ...)

A rendering is a string with special tokens written as text, tokenised once;
character offsets tell which tokens belong to the response, so the loss mask
covers exactly the response tokens and the end-of-turn token that closes
them.  With `assistant_prefix` the assistant turn is left open (prefilling).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from deepalign_jax.models.tokenizers import load_tokenizer as load_tokenizer  # re-exported by data

LLAMA2_DEFAULT_SYSTEM_PROMPT = (
  "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
  "while being safe. Your answers should not include any harmful, unethical, racist, sexist, "
  "toxic, dangerous, or illegal content. Please ensure that your responses are socially "
  "unbiased and positive in nature.\n\n"
  "If a question does not make any sense, or is not factually coherent, explain why instead of "
  "answering something not correct. If you don't know the answer to a question, please don't "
  "share false information."
)

ALPACA_PREAMBLE = (
  "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)

FORMATS = ("llama2", "gemma", "base", "template")
RESPONSE_ENDS = ("turn", "eos")

# End-of-turn markers of common chat formats; those in the vocabulary stop generation.
_END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


class ChatFormatError(ValueError):
  """Messages or a tokenizer that the chosen chat format cannot render."""


@dataclasses.dataclass(frozen=True)
class Rendered:
  """A rendered conversation.

  Attributes:
    input_ids: token ids [L].
    response_start: index of the first response token (= len(input_ids)
      when the conversation ends before the assistant speaks).
    loss_mask: [L] 1 on response tokens (with the closing end-of-turn token
      when the turn is closed), 0 elsewhere.
    text: the rendered string, special tokens written out.
    response_end: index after the last response token (its end-of-turn when
      closed); anything after it (ChatML's trailing newline) is not response.
  """

  input_ids: tuple[int, ...]
  response_start: int
  loss_mask: tuple[int, ...]
  text: str
  response_end: int

  @property
  def prompt_ids(self) -> tuple[int, ...]:
    return self.input_ids[: self.response_start]

  @property
  def response_ids(self) -> tuple[int, ...]:
    return self.input_ids[self.response_start : self.response_end]

  def with_response_prefix(self, k: int) -> tuple[int, ...]:
    """Prompt plus the first k response tokens: an open assistant turn."""
    if not 0 <= k <= self.response_end - self.response_start:
      raise ValueError(f"k={k} is outside the response's {self.response_end - self.response_start} tokens")
    return self.input_ids[: self.response_start + k]


def _validate(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[dict[str, str]]]:
  """(system, turns) after checking roles and contents."""
  system = None
  turns = []
  for i, message in enumerate(messages):
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
      raise ChatFormatError(f"message {i}: expected a mapping with 'role' and 'content', got {message!r}")
    role, content = message["role"], message["content"]
    if not isinstance(content, str):
      raise ChatFormatError(f"message {i}: 'content' must be a string, got {type(content).__name__}")
    if role == "system":
      if i != 0:
        raise ChatFormatError(f"message {i}: a system message may only come first")
      system = content
      continue
    expected = "user" if len(turns) % 2 == 0 else "assistant"
    if role != expected:
      raise ChatFormatError(f"message {i}: expected role {expected!r}, got {role!r}")
    turns.append({"role": role, "content": content})
  if not turns:
    raise ChatFormatError("no user message to render")
  return system, turns


class ChatRenderer:
  """Renders conversations for one tokenizer in one chat format.

  Args:
    tokenizer: a transformers tokenizer (fast: offsets are needed).
    chat_format: 'llama2', 'gemma', 'base', 'template' or 'auto' (the
      tokenizer's chat_template when it has one, else 'base').
    system_prompt: used when the messages carry no system message (None: no
      system block; "" for Llama-2 gives the empty `<<SYS>>\\n\\n<</SYS>>`).
    response_end: how a closed (training) response ends.  'turn' (default): the
      format's end-of-turn marker, what the model emits at inference
      (`<end_of_turn>` for Gemma, ` </s>` for Llama-2).  'eos': the reference
      code's Gemma training strings, `{assistant} <eos>` with no `<end_of_turn>`
      (gemma format only; Llama-2's turn already ends with EOS).
  """

  def __init__(
    self, tokenizer, chat_format: str = "auto", system_prompt: str | None = None, response_end: str = "turn"
  ):
    if chat_format == "auto":
      chat_format = "template" if getattr(tokenizer, "chat_template", None) else "base"
    if chat_format not in FORMATS:
      raise ChatFormatError(f"unknown chat format {chat_format!r}; expected one of {FORMATS} or 'auto'")
    if not getattr(tokenizer, "is_fast", False):
      raise ChatFormatError("a fast (Rust) tokenizer is needed for offsets")
    if chat_format == "template" and not getattr(tokenizer, "chat_template", None):
      raise ChatFormatError("chat format 'template' needs a tokenizer with a chat_template")
    if response_end not in RESPONSE_ENDS:
      raise ChatFormatError(f"unknown response_end {response_end!r}; expected one of {RESPONSE_ENDS}")
    if response_end == "eos" and chat_format != "gemma":
      raise ChatFormatError(
        f"response_end 'eos' is the reference's Gemma training ending; the "
        f"{chat_format!r} format closes a response its own way (use 'turn')"
      )
    if response_end == "eos" and tokenizer.eos_token is None:
      raise ChatFormatError("response_end 'eos' needs a tokenizer with an EOS token")
    self.tokenizer = tokenizer
    self.chat_format = chat_format
    self.system_prompt = system_prompt
    self.response_end = response_end
    # Vocabulary look-ups happen once here: get_vocab() builds a dict of the
    # whole vocabulary (262k entries for Gemma), too slow to do per example.
    vocab = tokenizer.get_vocab()
    required = {
      "llama2": (tokenizer.bos_token, tokenizer.eos_token),
      "gemma": ("<bos>", "<start_of_turn>", "<end_of_turn>"),
    }.get(chat_format, ())
    missing = [t for t in required if t is None or t not in vocab]
    if missing:
      raise ChatFormatError(f"chat format {chat_format!r} needs tokens {missing} that this tokenizer does not have")
    stops = {vocab[t] for t in _END_OF_TURN_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
      stops.add(tokenizer.eos_token_id)
    self._stop_token_ids = tuple(sorted(stops))
    # Special-token text inside a message would be tokenised as the real token
    # (a "</s>" in a scraped answer would end the turn early): refused.
    structural = {tokenizer.bos_token, tokenizer.eos_token, "<start_of_turn>", "<|im_start|>", *_END_OF_TURN_TOKENS}
    self._structural_tokens = tuple(sorted(t for t in structural if t and t in vocab))
    # A base model sees BOS first only if its tokenizer adds one to plain text.
    with_specials = tokenizer("x")["input_ids"]
    adds_bos = (
      tokenizer.bos_token is not None
      and len(with_specials) > 0
      and with_specials[0] == tokenizer.bos_token_id
      and len(with_specials) > len(tokenizer("x", add_special_tokens=False)["input_ids"])
    )
    self._base_bos = tokenizer.bos_token if adds_bos else ""

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    """Ids that end an assistant turn: EOS and the format's end-of-turn tokens."""
    return self._stop_token_ids

  # -- strings ---------------------------------------------------------------

  def _llama2(self, system, turns):
    bos, eos = self.tokenizer.bos_token, self.tokenizer.eos_token
    parts, spans = [], []
    for i in range(0, len(turns), 2):
      user = turns[i]["content"]
      if i == 0 and system is not None:
        user = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}"
      parts.append(f"{bos}[INST] {user} [/INST]")
      if i + 1 < len(turns):
        parts.append(" ")
        spans.append(len("".join(parts)))
        parts.append(f"{turns[i + 1]['content']} {eos}")
    return parts, spans

  def _gemma(self, system, turns):
    parts, spans = ["<bos>"], []
    for i in range(0, len(turns), 2):
      user = turns[i]["content"]
      if i == 0 and system is not None:
        user = f"{system}\n{user}"
      if i > 0:
        parts.append("\n")
      parts.append(f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n")
      if i + 1 < len(turns):
        spans.append(len("".join(parts)))
        last = i + 2 == len(turns)
        end = f" {self.tokenizer.eos_token}" if last and self.response_end == "eos" else "<end_of_turn>"
        parts.append(f"{turns[i + 1]['content']}{end}")
    return parts, spans

  def _base(self, system, turns):
    tok = self.tokenizer
    preamble = ALPACA_PREAMBLE if system is None else system
    parts, spans = [self._base_bos + (f"{preamble}\n\n" if preamble else "")], []
    for i in range(0, len(turns), 2):
      parts.append(f"### Instruction:\n{turns[i]['content']}\n\n### Response:\n")
      if i + 1 < len(turns):
        spans.append(len("".join(parts)))
        parts.append(f"{turns[i + 1]['content']}{tok.eos_token or ''}")
        if i + 2 < len(turns):
          parts.append("\n\n")
    return parts, spans

  def _template(self, system, turns):
    msgs = ([{"role": "system", "content": system}] if system is not None else []) + turns
    if turns[-1]["role"] == "user":
      text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
      return [text], []
    prompt = self.tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    full = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    content = turns[-1]["content"]
    # Templates that trim the content (Llama 3's) only contain its stripped form.
    start = full.find(content, len(prompt)) if content else len(prompt)
    if start < 0 and content.strip():
      start = full.find(content.strip(), len(prompt))
    if not full.startswith(prompt) or start < 0:
      raise ChatFormatError(
        "the tokenizer's chat_template does not render the conversation up to "
        "the last assistant turn as a prefix of the full conversation"
      )
    return [full[:start], full[start:]], [start]

  def render_text(self, messages, assistant_prefix: str | None = None) -> tuple[str, int | None, bool]:
    """(text, char index where the last assistant content starts, turn closed)."""
    system, turns = _validate(messages)
    for i, text in enumerate([system or "", assistant_prefix or ""] + [t["content"] for t in turns]):
      found = [t for t in self._structural_tokens if t in text]
      if found:
        where = {0: "the system prompt", 1: "assistant_prefix"}.get(i, f"turn {i - 2}")
        raise ChatFormatError(
          f"{where} contains the special token text {found[0]!r}, which would be tokenised as the real token"
        )
    if system is None:
      system = self.system_prompt
    if assistant_prefix is not None and turns[-1]["role"] == "assistant":
      raise ChatFormatError("pass assistant_prefix with a conversation that ends with the user")
    builder = getattr(self, f"_{self.chat_format}")
    if turns[-1]["role"] == "user":
      parts, _ = builder(system, turns)
      text = "".join(parts)
      if assistant_prefix is None:
        return text, None, False
      # Llama-2 separates [/INST] from the answer by one space; a prompt for
      # free generation ends at "[/INST]" (the model emits "▁Sure" itself).
      if self.chat_format == "llama2":
        text += " "
      return text + assistant_prefix, len(text), False
    parts, spans = builder(system, turns)
    return "".join(parts), spans[-1], True

  # -- tokens ----------------------------------------------------------------

  def render(self, messages, assistant_prefix: str | None = None) -> Rendered:
    """Token ids, response start and loss mask of a conversation.

    A conversation ending with an assistant message renders it as the
    response (closed by its end-of-turn token, which the loss mask covers).
    One ending with the user renders the prompt; `assistant_prefix` then
    opens the assistant turn with that text and leaves it open.
    """
    text, start_char, closed = self.render_text(messages, assistant_prefix)
    encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    if start_char is None:
      return Rendered(tuple(ids), len(ids), (0,) * len(ids), text, len(ids))
    # The first token that reaches into the response is a response token (a
    # SentencePiece "▁word" piece carries the separating space with it).
    start = next((i for i, (_, end) in enumerate(offsets) if end > start_char), len(ids))
    end = len(ids)
    if closed:
      stops = set(self.stop_token_ids)
      end = next((i + 1 for i in range(start, len(ids)) if ids[i] in stops), None)
      if end is None:
        raise ChatFormatError(
          f"the {self.chat_format!r} rendering does not close the assistant "
          f"turn with a stop token {sorted(stops)}: {text[-60:]!r}"
        )
    mask = [0] * start + [1] * (end - start) + [0] * (len(ids) - end)
    return Rendered(tuple(ids), start, tuple(mask), text, end)
