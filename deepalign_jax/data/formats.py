"""Readers for the data files users bring (SPEC §8): file → list of plain records.

None of the paper's data ships with the project, so every file here was
written by someone else, by hand or by a script we have never seen.  The
readers therefore check everything they use and fail with a message that
names the file, the line, the field and what was expected; nothing is
silently dropped (blank lines are not records: JSONL skips them, the
line-per-prompt formats skip them and log how many).

  fmt                 layout                                                           records
  conversations       JSONL {"messages": [system?, user, assistant]}                   Conversation
  harmful_hexphi      JSONL, a line [{"role": "user", ..}, {"role": "assistant", ..}]  Conversation
  alpaca              JSON array of {instruction, input?, output}                      Conversation
  samsum              {dialogue, summary}, JSON array or JSONL                         Conversation
  sql_create_context  {question, context, answer}, JSON array or JSONL                 Conversation
  gsm8k               {question, answer with "#### <number>"}, JSON array or JSONL     Conversation
  prompt_response     JSONL {prompt, response?}                                        Conversation
  triplets            JSONL {instruction, input?, harmful, refusal}                    Triplet
  preferences         JSONL {prompt, chosen, rejected, system?}                        Preference
  hexphi              category_N.csv (an instruction a line), or a folder of them      Prompt
  advbench            harmful_behaviors.csv, header goal,target                        Prompt
  malicious_instruct  plain text, an instruction a line                                Prompt
  prompts             JSONL {prompt, response?, category?}                             Prompt

Every text field a format needs must be a non-empty string (a record with
an empty response would train on nothing); optional fields (input,
response, category) may be absent or null, an empty input counts as none,
and other keys are ignored.  A system message may be empty: Llama-2's empty
<<SYS>> block differs from none.

Conversations hold one user turn and at most one assistant turn: the paper
fine-tunes and evaluates single-turn data only, so a multi-turn line is an
error rather than a guess at which turns to keep.  The SAMSum, SQL and GSM8k
prompts and system prompts are those of the reference code
(finetuning_buckets/datasets/utils/finetuning_data_wrapper.py).
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import logging
import os
import re
from typing import Any, Callable, Iterator

_log = logging.getLogger(__name__)

SAMSUM_SYSTEM_PROMPT = "You are a helpful assistant for dialog summarization."
SAMSUM_TEMPLATE = "Summarize this dialog:\n{dialogue}"
SQL_SYSTEM_PROMPT = (
  "You are a helpful assistant for translating Natural Language Query into SQL Query considering the provided Context."
)
SQL_TEMPLATE = (
  "## Context:\n{context}\n## Natural Language Query:\n{question}\n"
  "Please convert the provided natural language query into an SQL query, taking into account "
  "the structure context of the database defined by the accompanying CREATE statement.\n"
  "## SQL Query:\n"
)
GSM8K_SYSTEM_PROMPT = "You are a helpful assistant."

# The reference scorer's pattern: the number after "####", thousands commas removed.
_GSM8K_ANSWER = re.compile(r"####\s*(-?[0-9.,]+)")
_HEXPHI_FILE = re.compile(r"category_(\d+)\.csv")
_JSON_WS = re.compile(r"[ \t\n\r]*,?[ \t\n\r]*")


class DataFormatError(ValueError):
  """A data file that does not have the layout its format promises."""


@dataclasses.dataclass(frozen=True)
class Conversation:
  """One single-turn conversation; `assistant` is None for a prompt to answer.

  `system` is None when the file gives none (the chat renderer then applies
  its own default); `source` is "path:line" of the record.
  """

  system: str | None
  user: str
  assistant: str | None
  source: str

  def messages(self) -> list[dict[str, str]]:
    """The conversation as chat messages, for `ChatRenderer.render`."""
    out = [] if self.system is None else [{"role": "system", "content": self.system}]
    out.append({"role": "user", "content": self.user})
    if self.assistant is not None:
      out.append({"role": "assistant", "content": self.assistant})
    return out


@dataclasses.dataclass(frozen=True)
class Triplet:
  """A harmful instruction with a harmful answer and a refusal (safety-recovery data)."""

  instruction: str
  harmful: str
  refusal: str
  source: str


@dataclasses.dataclass(frozen=True)
class Preference:
  """A prompt with a preferred and a dispreferred answer (DPO); `system` None when the file gives none."""

  system: str | None
  prompt: str
  chosen: str
  rejected: str
  source: str


@dataclasses.dataclass(frozen=True)
class Prompt:
  """An evaluation prompt; `reference` is a target or answer when the file has one."""

  text: str
  reference: str | None
  category: str | None
  source: str


@dataclasses.dataclass(frozen=True)
class Exchange:
  """Any record as its consumers use it: (system?, prompt, response?), with category and source.

  `response` is a conversation's answer, a benchmark's reference answer or
  target, or a triplet's harmful answer; None when the file gives none.
  """

  system: str | None
  prompt: str
  response: str | None
  category: str | None
  source: str


def as_exchange(record: Conversation | Triplet | Prompt) -> Exchange:
  """The one normaliser from the readers' record types to `Exchange` (training, evaluation, analyses)."""
  if isinstance(record, Conversation):
    return Exchange(record.system, record.user, record.assistant, None, record.source)
  if isinstance(record, Prompt):
    return Exchange(None, record.text, record.reference, record.category, record.source)
  if isinstance(record, Triplet):
    return Exchange(None, record.instruction, record.harmful, None, record.source)
  raise TypeError(f"not a data record: {type(record).__name__}")


def as_preference(record: Preference | Triplet) -> Preference:
  """The one normaliser of preference data: a triplet is a preference of its refusal over its harmful answer."""
  if isinstance(record, Preference):
    return record
  if isinstance(record, Triplet):
    return Preference(None, record.instruction, record.refusal, record.harmful, record.source)
  raise DataFormatError(
    f"{getattr(record, 'source', '?')}: not preference data ({type(record).__name__} records); the dpo objective "
    f"reads the formats preferences or triplets (a triplet's refusal is preferred to its harmful answer)"
  )


def gsm8k_final_answer(text: str) -> str | None:
  """The number after the first "####" with commas removed, as the reference scores it; None if absent."""
  match = _GSM8K_ANSWER.search(text)
  return match.group(1).replace(",", "") if match else None


# -- reading -------------------------------------------------------------------


def _read_text(path: str) -> str:
  """The file decoded as UTF-8 (a leading byte-order mark is dropped)."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(errno.ENOENT, "data file not found", path) from None
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b"\n") + 1
    raise DataFormatError(
      f"{path}:{line}: not valid UTF-8 (byte {e.start}: {e.reason}); save the file as UTF-8"
    ) from None


def _lines(text: str) -> list[str]:
  # Only "\n" ends a line: str.splitlines would also split at U+2028 and
  # similar, which JSON strings may hold unescaped.
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line[:-1] if line.endswith("\r") else line for line in lines]


def _json_type(value: Any) -> str:
  names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
  return names.get(type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)


def _jsonl(path: str, text: str) -> Iterator[tuple[str, Any]]:
  """(source, value) for each non-blank line."""
  for n, line in enumerate(_lines(text), 1):
    if not line.strip():
      continue
    try:
      value = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataFormatError(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
    yield f"{path}:{n}", value


def _json_array(path: str, text: str) -> Iterator[tuple[str, Any]]:
  """(source, value) for each element of a top-level JSON array, with its starting line."""
  start = len(text) - len(text.lstrip(" \t\n\r"))
  first_line = text.count("\n", 0, start) + 1
  if text[start : start + 1] != "[":
    raise DataFormatError(
      f"{path}:{first_line}: expected a JSON array of records ('[{{...}}, ...]'), found {text[start : start + 20]!r}"
    )
  try:
    items = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataFormatError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
  # The whole text parsed; decode it again element by element to learn the
  # line each record starts on.
  decoder, pos, line = json.JSONDecoder(), start + 1, first_line
  for _ in items:
    new_pos = _JSON_WS.match(text, pos).end()
    line += text.count("\n", pos, new_pos)
    value, end = decoder.raw_decode(text, new_pos)
    yield f"{path}:{line}", value
    line += text.count("\n", new_pos, end)
    pos = end


def _read(
  path: str | os.PathLike, build: Callable[[str, Any], Any], *, array: bool | None = False, objects: bool = True
) -> list:
  """build(source, value) over a JSONL file (array=False), a JSON array (True) or either (None)."""
  path = os.fspath(path)
  text = _read_text(path)
  if array is None:
    array = text.lstrip(" \t\n\r").startswith("[")
  out = []
  for source, value in _json_array(path, text) if array else _jsonl(path, text):
    if objects and not isinstance(value, dict):
      raise DataFormatError(f"{source}: expected a JSON object, got {_json_type(value)}")
    out.append(build(source, value))
  return _nonempty(out, path)


def _field(record: dict[str, Any], name: str, source: str, required: bool = True) -> str | None:
  """A string field; required ones must be non-empty, optional ones may be absent or null."""
  if name not in record or (record[name] is None and not required):
    if required:
      raise DataFormatError(f"{source}: missing field {name!r} (fields present: {sorted(record)})")
    return None
  value = record[name]
  if not isinstance(value, str):
    raise DataFormatError(f"{source}: field {name!r}: expected a string, got {_json_type(value)}")
  if required and not value.strip():
    raise DataFormatError(f"{source}: field {name!r} is empty")
  return value


def _with_input(record: dict[str, Any], source: str) -> str:
  """Alpaca's user text: instruction, then a blank line and the input when there is one."""
  instruction, extra = _field(record, "instruction", source), _field(record, "input", source, required=False)
  return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction


def _messages(messages: Any, source: str, field: str) -> tuple[str | None, str, str]:
  """(system, user, assistant) of [system?, user, assistant]."""
  where = f"{source}: {field}" if field else source
  if not isinstance(messages, list):
    raise DataFormatError(f"{where}: expected an array of messages, got {_json_type(messages)}")
  system, turns = None, []
  for i, message in enumerate(messages):
    at = f"{source}: {field}[{i}]"
    if not isinstance(message, dict):
      raise DataFormatError(f"{at}: expected an object with 'role' and 'content', got {_json_type(message)}")
    for key in ("role", "content"):
      if key not in message:
        raise DataFormatError(f"{at}: missing field {key!r}")
      if not isinstance(message[key], str):
        raise DataFormatError(f"{at}.{key}: expected a string, got {_json_type(message[key])}")
    role = message["role"]
    if role == "system":
      if i != 0:
        raise DataFormatError(f"{at}.role: a system message may only come first")
      system = message["content"]
    elif role in ("user", "assistant"):
      if len(turns) < 2 and role != ("user", "assistant")[len(turns)]:
        raise DataFormatError(f"{at}.role: expected {('user', 'assistant')[len(turns)]!r}, got {role!r}")
      turns.append((at, message["content"]))
    else:
      raise DataFormatError(f"{at}.role: expected 'system', 'user' or 'assistant', got {role!r}")
  if len(turns) > 2:
    raise DataFormatError(
      f"{where}: multi-turn conversations are not supported: expected one user message "
      f"then one assistant message, got {len(turns)} user/assistant messages"
    )
  if len(turns) < 2:
    raise DataFormatError(
      f"{where}: expected one user message then one assistant message, got {len(turns)} user/assistant messages"
    )
  for at, content in turns:
    if not content.strip():
      raise DataFormatError(f"{at}.content is empty")
  return system, turns[0][1], turns[1][1]


def _nonempty(records: list, path: str) -> list:
  if not records:
    raise DataFormatError(f"{path}: no records in the file")
  return records


# -- JSON formats --------------------------------------------------------------


def read_conversations(path: str | os.PathLike) -> list[Conversation]:
  """Conversation JSONL (pure_bad, AOA, backdoor): {"messages": [system?, user, assistant]} a line."""

  def build(s, r):
    if "messages" not in r:
      raise DataFormatError(f"{s}: missing field 'messages' (fields present: {sorted(r)})")
    return Conversation(*_messages(r["messages"], s, "messages"), s)

  return _read(path, build)


def read_harmful_hexphi(path: str | os.PathLike) -> list[Conversation]:
  """Harmful HEx-PHI JSONL: each line an array [{"role": "user", ...}, {"role": "assistant", ...}]."""

  def build(s, value):
    if not isinstance(value, list):
      raise DataFormatError(
        f'{s}: expected an array of messages [{{"role": "user", ...}}, '
        f'{{"role": "assistant", ...}}], got {_json_type(value)}'
      )
    return Conversation(*_messages(value, s, ""), s)

  return _read(path, build, objects=False)


def read_alpaca(path: str | os.PathLike) -> list[Conversation]:
  """Alpaca JSON: an array of {instruction, input?, output}."""
  return _read(path, lambda s, r: Conversation(None, _with_input(r, s), _field(r, "output", s), s), array=True)


def read_samsum(path: str | os.PathLike) -> list[Conversation]:
  """SAMSum {dialogue, summary}; both stripped, as the reference does."""
  return _read(
    path,
    lambda s, r: Conversation(
      SAMSUM_SYSTEM_PROMPT,
      SAMSUM_TEMPLATE.format(dialogue=_field(r, "dialogue", s).strip()),
      _field(r, "summary", s).strip(),
      s,
    ),
    array=None,
  )


def read_sql_create_context(path: str | os.PathLike) -> list[Conversation]:
  """SQL Create Context {question, context, answer}."""
  return _read(
    path,
    lambda s, r: Conversation(
      SQL_SYSTEM_PROMPT,
      SQL_TEMPLATE.format(context=_field(r, "context", s), question=_field(r, "question", s)),
      _field(r, "answer", s),
      s,
    ),
    array=None,
  )


def read_gsm8k(path: str | os.PathLike) -> list[Conversation]:
  """GSM8k {question, answer}: the whole worked answer is the response.

  The answer must hold "#### <number>"; `gsm8k_final_answer` recovers it.
  """

  def build(s, r):
    question, answer = _field(r, "question", s), _field(r, "answer", s)
    if gsm8k_final_answer(answer) is None:
      raise DataFormatError(f"{s}: field 'answer': no final answer '#### <number>' in {answer[-40:]!r}")
    return Conversation(GSM8K_SYSTEM_PROMPT, question, answer, s)

  return _read(path, build, array=None)


def _prompt_response(r: dict[str, Any], s: str) -> tuple[str, str | None]:
  prompt, response = _field(r, "prompt", s), _field(r, "response", s, required=False)
  if response is not None and not response.strip():
    raise DataFormatError(f"{s}: field 'response' is empty (leave it out for a prompt to answer)")
  return prompt, response


def read_prompt_response(path: str | os.PathLike) -> list[Conversation]:
  """Prompts JSONL {prompt, response?} as conversations (assistant None without a response)."""
  return _read(path, lambda s, r: Conversation(None, *_prompt_response(r, s), s))


def read_triplets(path: str | os.PathLike) -> list[Triplet]:
  """Safety-recovery triplets JSONL {instruction, input?, harmful, refusal}."""
  return _read(path, lambda s, r: Triplet(_with_input(r, s), _field(r, "harmful", s), _field(r, "refusal", s), s))


def _preference(r: dict[str, Any], s: str) -> Preference:
  chosen, rejected = _field(r, "chosen", s), _field(r, "rejected", s)
  if chosen == rejected:
    raise DataFormatError(f"{s}: fields 'chosen' and 'rejected' are the same text (a pair must differ)")
  return Preference(_field(r, "system", s, required=False), _field(r, "prompt", s), chosen, rejected, s)


def read_preferences(path: str | os.PathLike) -> list[Preference]:
  """Preference pairs JSONL {prompt, chosen, rejected, system?} (DPO)."""
  return _read(path, lambda s, r: _preference(r, s))


def read_prompts(path: str | os.PathLike) -> list[Prompt]:
  """Prompts JSONL {prompt, response?, category?}; the response becomes the reference."""

  def build(s, r):
    category = r.get("category")
    if category is not None and (not isinstance(category, (str, int)) or isinstance(category, bool)):
      raise DataFormatError(f"{s}: field 'category': expected a string or integer, got {_json_type(category)}")
    return Prompt(*_prompt_response(r, s), None if category is None else str(category), s)

  return _read(path, build)


# -- CSV and text formats --------------------------------------------------------


def _report_blank(path: str, blank: list[int]) -> None:
  if blank:
    _log.warning("%s: skipped %d blank line(s) (line %s)", path, len(blank), ", ".join(map(str, blank[:10])))


def _csv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
  """(first line, cells) of each non-blank CSV record; blank ones are logged."""
  reader, blank, line = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True), [], 1
  try:
    for row in reader:
      if not row or (len(row) == 1 and not row[0].strip()):
        blank.append(line)
      else:
        yield line, row
      line = reader.line_num + 1
  except csv.Error as e:
    raise DataFormatError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
  _report_blank(path, blank)


# First cells that make a HEx-PHI file's first line a column header, not an instruction (case-insensitive).
HEXPHI_HEADER_WORDS = frozenset(
  ("prompt", "prompts", "instruction", "goal", "behavior", "question", "text", "query", "request", "harmful_prompt")
)


def read_hexphi(path: str | os.PathLike) -> list[Prompt]:
  """HEx-PHI category_N.csv (one instruction a line, no header) or a directory of them.

  A directory yields every category_N.csv in it, by N; other files are
  ignored, and missing categories are fine (the public copy withholds one).
  The files have no header, but a re-saved copy often gains one: a first
  line whose first cell is a column name (`HEXPHI_HEADER_WORDS`: prompt,
  instruction, goal, behavior, ...; any case) is skipped with a warning
  naming the file, rather than becoming prompt 0.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    matches = (_HEXPHI_FILE.fullmatch(name) for name in os.listdir(path))
    found = sorted((int(m.group(1)), m.group(0)) for m in matches if m)
    if not found:
      raise DataFormatError(f"{path}: no HEx-PHI category_N.csv files in this directory")
    files = [(str(n), os.path.join(path, name)) for n, name in found]
  else:
    m = _HEXPHI_FILE.fullmatch(os.path.basename(path))
    files = [(str(int(m.group(1))) if m else None, path)]
  out = []
  for category, file in files:
    for index, (line, row) in enumerate(_csv_rows(file)):
      if index == 0 and row[0].strip().lower() in HEXPHI_HEADER_WORDS:
        _log.warning("%s:%d: skipped a header line %r (HEx-PHI files have none)", file, line, ",".join(row))
        continue
      if len(row) != 1:
        raise DataFormatError(
          f"{file}:{line}: expected one instruction (one CSV column; quote instructions "
          f"that contain commas), got {len(row)} columns"
        )
      out.append(Prompt(row[0], None, category, f"{file}:{line}"))
  return _nonempty(out, path)


def read_advbench(path: str | os.PathLike) -> list[Prompt]:
  """AdvBench harmful_behaviors.csv, header `goal,target`; the target becomes the reference."""
  path = os.fspath(path)
  rows = _csv_rows(path)
  header_line, header = next(rows, (1, []))
  header = [name.strip() for name in header]
  for column in ("goal", "target"):
    if column not in header:
      raise DataFormatError(
        f"{path}:{header_line}: missing column {column!r}: expected a header row 'goal,target', got {header}"
      )
  out = []
  for line, row in rows:
    if len(row) != len(header):
      raise DataFormatError(f"{path}:{line}: expected {len(header)} columns {header}, got {len(row)}")
    record = dict(zip(header, row))
    source = f"{path}:{line}"
    out.append(Prompt(_field(record, "goal", source), _field(record, "target", source), None, source))
  return _nonempty(out, path)


def read_malicious_instruct(path: str | os.PathLike) -> list[Prompt]:
  """MaliciousInstruct: one instruction a line, surrounding whitespace stripped."""
  path = os.fspath(path)
  out, blank = [], []
  for n, line in enumerate(_lines(_read_text(path)), 1):
    if line.strip():
      out.append(Prompt(line.strip(), None, None, f"{path}:{n}"))
    else:
      blank.append(n)
  _report_blank(path, blank)
  return _nonempty(out, path)


_READERS: dict[str, Callable[[str | os.PathLike], list]] = {
  "conversations": read_conversations,
  "harmful_hexphi": read_harmful_hexphi,
  "alpaca": read_alpaca,
  "samsum": read_samsum,
  "sql_create_context": read_sql_create_context,
  "gsm8k": read_gsm8k,
  "prompt_response": read_prompt_response,
  "triplets": read_triplets,
  "preferences": read_preferences,
  "hexphi": read_hexphi,
  "advbench": read_advbench,
  "malicious_instruct": read_malicious_instruct,
  "prompts": read_prompts,
}
FILE_FORMATS = tuple(_READERS)


def read_file(path: str | os.PathLike, fmt: str) -> list[Conversation] | list[Triplet] | list[Prompt]:
  """Reads `path` in format `fmt`, one of FILE_FORMATS (the module docstring lists their layouts)."""
  if fmt not in _READERS:
    raise DataFormatError(f"unknown data format {fmt!r}; expected one of {', '.join(FILE_FORMATS)}")
  return _READERS[fmt](path)
