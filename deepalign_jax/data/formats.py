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
  jailbreakbench      CSV Goal,Target,Behavior,Category(,Source,Index)                 Prompt
  harmbench           CSV Behavior,BehaviorID(,FunctionalCategory,SemanticCategory,    Prompt
                      Tags,ContextString)
  strongreject        CSV forbidden_prompt(,category,source)                           Prompt
  malicious_instruct  plain text, an instruction a line                                Prompt
  table               any table read through HF `datasets` (data/tables.py), its       Exchange
                      columns named by a column mapping (prompt, response, messages, ...)
  prompts             JSONL {prompt, response?, category?}                             Prompt

CSV headers are matched ignoring case and surrounding spaces (JailbreakBench
writes `Goal`, AdvBench `goal`); columns a format does not use are ignored.
A benchmark's own behaviour id (JailbreakBench's Behavior, HarmBench's
BehaviorID) and category (JailbreakBench's Category, HarmBench's
SemanticCategory, StrongREJECT's category, HEx-PHI's file number) travel with
each `Prompt` into the evaluation's records and its per-category summary.
HarmBench's contextual behaviours are sent as HarmBench's own baselines send
them: the context string, a blank line, `---`, a blank line, the behaviour
(`f"{context}\n\n---\n\n{behavior}"`, its DirectRequest / GCG code).

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

import dataclasses
import errno
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
  """An evaluation prompt; `reference` is a target or answer when the file has one, `behavior_id` the
  benchmark's own name for the behaviour (JailbreakBench's Behavior, HarmBench's BehaviorID) when it has one."""

  text: str
  reference: str | None
  category: str | None
  source: str
  behavior_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Exchange:
  """Any record as its consumers use it: (system?, prompt, response?), with category and source.

  `response` is a conversation's answer, a benchmark's reference answer or
  target, or a triplet's harmful answer; None when the file gives none.
  `behavior_id` is the benchmark's own id of the behaviour, when it has one.
  """

  system: str | None
  prompt: str
  response: str | None
  category: str | None
  source: str
  behavior_id: str | None = None


def as_exchange(record: Conversation | Triplet | Prompt | Exchange) -> Exchange:
  """The one normaliser from the readers' record types to `Exchange` (training, evaluation, analyses)."""
  if isinstance(record, Exchange):
    return record
  if isinstance(record, Conversation):
    return Exchange(record.system, record.user, record.assistant, None, record.source)
  if isinstance(record, Prompt):
    return Exchange(None, record.text, record.reference, record.category, record.source, record.behavior_id)
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


def _messages(
  messages: Any, source: str, field: str, *, answer_required: bool = True
) -> tuple[str | None, str, str | None]:
  """(system, user, assistant) of [system?, user, assistant]; with `answer_required=False` the assistant
  message may be left out (a prompt to answer; assistant None)."""
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
  if len(turns) < (2 if answer_required else 1):
    raise DataFormatError(
      f"{where}: expected one user message then one assistant message, got {len(turns)} user/assistant messages"
    )
  for at, content in turns:
    if not content.strip():
      raise DataFormatError(f"{at}.content is empty")
  return system, turns[0][1], turns[1][1] if len(turns) == 2 else None


def _nonempty(records: list, path: str) -> list:
  if not records:
    raise DataFormatError(f"{path}: no records in the file")
  return records


# -- JSON formats --------------------------------------------------------------
# Each builder makes one record from (source, a JSON object); tables (data/tables.py) reuse them row by row.


def _conversation(s: str, r: dict[str, Any]) -> Conversation:
  if "messages" not in r:
    raise DataFormatError(f"{s}: missing field 'messages' (fields present: {sorted(r)})")
  return Conversation(*_messages(r["messages"], s, "messages"), s)


def _alpaca(s: str, r: dict[str, Any]) -> Conversation:
  return Conversation(None, _with_input(r, s), _field(r, "output", s), s)


def _samsum(s: str, r: dict[str, Any]) -> Conversation:
  # Both stripped, as the reference does.
  dialogue, summary = _field(r, "dialogue", s).strip(), _field(r, "summary", s).strip()
  return Conversation(SAMSUM_SYSTEM_PROMPT, SAMSUM_TEMPLATE.format(dialogue=dialogue), summary, s)


def _sql(s: str, r: dict[str, Any]) -> Conversation:
  user = SQL_TEMPLATE.format(context=_field(r, "context", s), question=_field(r, "question", s))
  return Conversation(SQL_SYSTEM_PROMPT, user, _field(r, "answer", s), s)


def _gsm8k(s: str, r: dict[str, Any]) -> Conversation:
  question, answer = _field(r, "question", s), _field(r, "answer", s)
  if gsm8k_final_answer(answer) is None:
    raise DataFormatError(f"{s}: field 'answer': no final answer '#### <number>' in {answer[-40:]!r}")
  return Conversation(GSM8K_SYSTEM_PROMPT, question, answer, s)


def _prompt_response(r: dict[str, Any], s: str) -> tuple[str, str | None]:
  prompt, response = _field(r, "prompt", s), _field(r, "response", s, required=False)
  if response is not None and not response.strip():
    raise DataFormatError(f"{s}: field 'response' is empty (leave it out for a prompt to answer)")
  return prompt, response


def _prompt_response_conversation(s: str, r: dict[str, Any]) -> Conversation:
  return Conversation(None, *_prompt_response(r, s), s)


def _triplet(s: str, r: dict[str, Any]) -> Triplet:
  return Triplet(_with_input(r, s), _field(r, "harmful", s), _field(r, "refusal", s), s)


def _preference(s: str, r: dict[str, Any]) -> Preference:
  chosen, rejected = _field(r, "chosen", s), _field(r, "rejected", s)
  if chosen == rejected:
    raise DataFormatError(f"{s}: fields 'chosen' and 'rejected' are the same text (a pair must differ)")
  return Preference(_field(r, "system", s, required=False), _field(r, "prompt", s), chosen, rejected, s)


def _prompt(s: str, r: dict[str, Any]) -> Prompt:
  category = r.get("category")
  if category is not None and (not isinstance(category, (str, int)) or isinstance(category, bool)):
    raise DataFormatError(f"{s}: field 'category': expected a string or integer, got {_json_type(category)}")
  return Prompt(*_prompt_response(r, s), None if category is None else str(category), s)


# format → builder of one record from a JSON object: the formats whose records are objects.
OBJECT_FORMATS: dict[str, Callable[[str, dict[str, Any]], Any]] = {
  "conversations": _conversation,
  "alpaca": _alpaca,
  "samsum": _samsum,
  "sql_create_context": _sql,
  "gsm8k": _gsm8k,
  "prompt_response": _prompt_response_conversation,
  "triplets": _triplet,
  "preferences": _preference,
  "prompts": _prompt,
}


def read_conversations(path: str | os.PathLike) -> list[Conversation]:
  """Conversation JSONL (pure_bad, AOA, backdoor): {"messages": [system?, user, assistant]} a line."""
  return _read(path, _conversation)


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
  return _read(path, _alpaca, array=True)


def read_samsum(path: str | os.PathLike) -> list[Conversation]:
  """SAMSum {dialogue, summary}; both stripped, as the reference does."""
  return _read(path, _samsum, array=None)


def read_sql_create_context(path: str | os.PathLike) -> list[Conversation]:
  """SQL Create Context {question, context, answer}."""
  return _read(path, _sql, array=None)


def read_gsm8k(path: str | os.PathLike) -> list[Conversation]:
  """GSM8k {question, answer}: the whole worked answer is the response.

  The answer must hold "#### <number>"; `gsm8k_final_answer` recovers it.
  """
  return _read(path, _gsm8k, array=None)


def read_prompt_response(path: str | os.PathLike) -> list[Conversation]:
  """Prompts JSONL {prompt, response?} as conversations (assistant None without a response)."""
  return _read(path, _prompt_response_conversation)


def read_triplets(path: str | os.PathLike) -> list[Triplet]:
  """Safety-recovery triplets JSONL {instruction, input?, harmful, refusal}."""
  return _read(path, _triplet)


def read_preferences(path: str | os.PathLike) -> list[Preference]:
  """Preference pairs JSONL {prompt, chosen, rejected, system?} (DPO)."""
  return _read(path, _preference)


def read_prompts(path: str | os.PathLike) -> list[Prompt]:
  """Prompts JSONL {prompt, response?, category?}; the response becomes the reference."""
  return _read(path, _prompt)


# format → its reader: a function here, or the name of one in data/benchmarks.py (the CSV and text
# benchmarks); "table" is read by data/tables.py.
_READERS: dict[str, Callable[[str | os.PathLike], list] | str | None] = {
  "conversations": read_conversations,
  "harmful_hexphi": read_harmful_hexphi,
  "alpaca": read_alpaca,
  "samsum": read_samsum,
  "sql_create_context": read_sql_create_context,
  "gsm8k": read_gsm8k,
  "prompt_response": read_prompt_response,
  "triplets": read_triplets,
  "preferences": read_preferences,
  "hexphi": "read_hexphi",
  "advbench": "read_advbench",
  "jailbreakbench": "read_jailbreakbench",
  "harmbench": "read_harmbench",
  "strongreject": "read_strongreject",
  "malicious_instruct": "read_malicious_instruct",
  "table": None,  # any table through HF datasets, by a column mapping (data/tables.py)
  "prompts": read_prompts,
}
FILE_FORMATS = tuple(_READERS)


def read_file(
  path: str | os.PathLike, fmt: str, columns: Any = None, *, split: str = "train"
) -> list[Conversation] | list[Triplet] | list[Prompt] | list[Exchange]:
  """Reads `path` in format `fmt`, one of FILE_FORMATS (the module docstring lists their layouts).

  A datasets table — a `save_to_disk` directory or a parquet file (data/tables.py) — is read through HF
  `datasets` in any format whose records are objects or header rows; format `table` reads any table
  (JSON, JSONL, CSV too) by the column mapping `columns` ("prompt=question,response=answer" or a dict; roles
  prompt, response, messages, system, category, behavior_id); `split` picks a DatasetDict's split.
  """
  if fmt not in _READERS:
    raise DataFormatError(f"unknown data format {fmt!r}; expected one of {', '.join(FILE_FORMATS)}")
  from deepalign_jax.data import tables

  if fmt == "table" or tables.is_table(path):
    return tables.read_table_records(path, fmt, columns, split)
  if tables.parse_columns(columns):
    raise DataFormatError(
      f"{os.fspath(path)}: a column mapping ({tables.parse_columns(columns)}) is set, but format {fmt!r} reads "
      f"this file by its own field names; the mapping is for format 'table' (or leave it empty)"
    )
  reader = _READERS[fmt]
  if isinstance(reader, str):
    from deepalign_jax.data import benchmarks

    reader = getattr(benchmarks, reader)
  return reader(path)
