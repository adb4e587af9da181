"""How each model of a comparison sees a prompt, made explicit (SPEC §5).

The paper compares an aligned chat model with its base model on the same
harmful answers, but how the base model was prompted is not stated (an open
question of the reference code's users).  Here every model names its own
format, and the rendering is recorded with the results:

  llama2 | gemma | base | template | auto   `ChatRenderer`: the prompt with
      the assistant turn opened (e.g. "... [/INST]", "<start_of_turn>model\\n",
      "### Response:\\n"), exactly as for generation;
  raw   the user text tokenised as it is (with BOS when the tokenizer adds
      one to plain text); no system prompt.

The response is tokenised once, by one model's format (its rendering of the
full conversation, the closing end-of-turn token dropped), and those ids
follow every model's prompt: all models are teacher-forced on the same
tokens, so the KL at position t compares the same next-token question.
"""

from __future__ import annotations

from deepalign_jax.data.chat import FORMATS, ChatRenderer
from deepalign_jax.data.formats import as_exchange, read_file

PROMPT_FORMATS = FORMATS + ("auto", "raw")


def read_pairs(path: str, fmt: str, max_examples: int = 0) -> list[tuple[str | None, str, str, str]]:
  """(system, user, response, source) of each record of a data file.

  Formats giving (prompt, response) pairs: harmful_hexphi, conversations,
  prompt_response (with responses), alpaca, ..., and triplets (the harmful
  answer is the response).  A record without a response is an error naming
  it; `max_examples` > 0 keeps the first ones.
  """
  out = []
  for record in map(as_exchange, read_file(path, fmt)):
    if record.response is None:
      raise ValueError(
        f"{record.source}: the record has no response; format {fmt!r} must give (prompt, response) pairs here"
      )
    out.append((record.system, record.prompt, record.response, record.source))
  return out[:max_examples] if max_examples > 0 else out


class PromptFormat:
  """One model's prompt rendering.

  Args:
    tokenizer: a transformers fast tokenizer.
    chat_format: one of PROMPT_FORMATS.
    system_prompt: for the chat formats, used when a record has no system
      message (None: the format's default, i.e. none); must be None for raw.
  """

  def __init__(self, tokenizer, chat_format: str, system_prompt: str | None = None):
    if chat_format not in PROMPT_FORMATS:
      raise ValueError(f"unknown prompt format {chat_format!r}; expected one of {PROMPT_FORMATS}")
    self.tokenizer = tokenizer
    self.system_prompt = system_prompt
    if chat_format == "raw":
      if system_prompt is not None:
        raise ValueError(
          "prompt format 'raw' tokenises the user text as it is and has no place "
          f"for a system prompt (got {system_prompt!r})"
        )
      self.renderer = None
      self.chat_format = "raw"
      plain = tokenizer("x", add_special_tokens=False)["input_ids"]
      with_specials = tokenizer("x")["input_ids"]
      self._bos = (
        tokenizer.bos_token
        if tokenizer.bos_token is not None
        and len(with_specials) > len(plain)
        and with_specials[0] == tokenizer.bos_token_id
        else ""
      )
    else:
      self.renderer = ChatRenderer(tokenizer, chat_format, system_prompt)
      self.chat_format = self.renderer.chat_format  # 'auto' resolved

  def _messages(self, system: str | None, user: str, source: str) -> list[dict[str, str]]:
    if self.renderer is None and system is not None:
      raise ValueError(f"{source}: the record has a system message, which prompt format 'raw' cannot render")
    return ([] if system is None else [{"role": "system", "content": system}]) + [{"role": "user", "content": user}]

  def prompt(self, system: str | None, user: str, source: str = "") -> tuple[list[int], str]:
    """(ids, text) of the prompt, ending where the response begins."""
    messages = self._messages(system, user, source)
    if self.renderer is None:
      ids = self.tokenizer(user, add_special_tokens=False)["input_ids"]
      if self._bos:
        ids = [self.tokenizer.bos_token_id] + ids
      return list(ids), self._bos + user
    rendered = self.renderer.render(messages)
    return list(rendered.input_ids), rendered.text

  def response(self, system: str | None, user: str, assistant: str, source: str = "") -> list[int]:
    """Token ids of the response as this format tokenises it after the prompt, without the end of turn."""
    if self.renderer is None:
      ids = list(self.tokenizer(assistant, add_special_tokens=False)["input_ids"])
    else:
      messages = self._messages(system, user, source) + [{"role": "assistant", "content": assistant}]
      # The closing end-of-turn token differs between formats: not part of the shared response;
      # nor is a separator before it (Llama-2's "{answer} </s>" tokenises the space as its own "▁").
      ids = list(self.renderer.render(messages).response_ids[:-1])
      while ids and not assistant[-1:].isspace() and not self.tokenizer.decode(ids[-1:]).strip():
        ids.pop()
    if not ids:
      raise ValueError(f"{source or 'a record'}: the response tokenises to no tokens")
    return ids

  def describe(self) -> str:
    """The prompt of a placeholder instruction, showing the format exactly."""
    return self.prompt(None, "{instruction}")[1]


__all__ = ["PROMPT_FORMATS", "PromptFormat", "read_pairs"]
