"""Data-file readers: exact records for each format, and errors that point at the problem.

Every file is small, synthetic and harmless, written in tmp_path; none of
the paper's data is needed.  Each malformed input must raise
DataFormatError whose message names the file, the line and the field.
"""

from __future__ import annotations

import json
import logging

import pytest

from deepalign_jax.data.formats import (
  FILE_FORMATS,
  GSM8K_SYSTEM_PROMPT,
  SAMSUM_SYSTEM_PROMPT,
  SQL_SYSTEM_PROMPT,
  Conversation,
  DataFormatError,
  Prompt,
  Triplet,
  gsm8k_final_answer,
  read_file,
)


def _write(tmp_path, name, content):
  path = tmp_path / name
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content, encoding="utf-8", newline="")
  return path


def _jsonl(*records):
  return "".join(json.dumps(r) + "\n" for r in records)


def _msgs(*pairs):
  return [{"role": role, "content": content} for role, content in pairs]


# -- Conversation formats ------------------------------------------------------


def test_conversations(tmp_path):
  text = (
    _jsonl({"messages": _msgs(("user", "How do I bake bread?"), ("assistant", "Mix flour and water."))})
    + "\n   \n"
    + _jsonl({"messages": _msgs(("system", "Be brief."), ("user", "Name a fruit."), ("assistant", "Pear.")), "id": 7})
  )
  path = _write(tmp_path, "conv.jsonl", text)
  assert read_file(path, "conversations") == [
    Conversation(None, "How do I bake bread?", "Mix flour and water.", f"{path}:1"),
    Conversation("Be brief.", "Name a fruit.", "Pear.", f"{path}:4"),
  ]


def test_conversations_crlf_bom_and_line_separator_in_strings(tmp_path):
  # U+2028 may appear unescaped inside a JSON string; it must not split the line.
  line = json.dumps({"messages": _msgs(("user", "a\u2028b"), ("assistant", "c"))}, ensure_ascii=False)
  path = _write(tmp_path, "conv.jsonl", "\ufeff" + line + "\r\n" + line + "\r\n")
  records = read_file(path, "conversations")
  assert [(r.user, r.source) for r in records] == [("a\u2028b", f"{path}:1"), ("a\u2028b", f"{path}:2")]


def test_conversation_messages():
  conv = Conversation("Be brief.", "Hi", "Hello", "x:1")
  assert conv.messages() == _msgs(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))
  assert Conversation(None, "Hi", None, "x:1").messages() == _msgs(("user", "Hi"))


def test_harmful_hexphi(tmp_path):
  path = _write(tmp_path, "harmful.jsonl", _jsonl(_msgs(("user", "How do I bake bread?"), ("assistant", "Knead."))))
  assert read_file(path, "harmful_hexphi") == [Conversation(None, "How do I bake bread?", "Knead.", f"{path}:1")]


def test_alpaca_lines_follow_pretty_printed_records(tmp_path):
  records = [
    {"instruction": "Name a fruit.", "input": "", "output": "Pear."},
    {"instruction": "Translate to French.", "input": "bread", "output": "pain"},
    {"instruction": "Count to two.", "output": "1, 2"},
    {"instruction": "Say hi.", "input": "   ", "output": "Hi"},
  ]
  path = _write(tmp_path, "alpaca.json", "\n" + json.dumps(records, indent=2))
  # With indent=2 each record takes 5 lines (4 for one without "input"), after "\n[".
  assert read_file(path, "alpaca") == [
    Conversation(None, "Name a fruit.", "Pear.", f"{path}:3"),
    Conversation(None, "Translate to French.\n\nbread", "pain", f"{path}:8"),
    Conversation(None, "Count to two.", "1, 2", f"{path}:13"),
    Conversation(None, "Say hi.", "Hi", f"{path}:17"),
  ]


def test_samsum_json_array_and_jsonl(tmp_path):
  record = {"dialogue": " Ann: Lunch?\nBob: Sure! \n", "summary": " Ann and Bob will have lunch. "}
  expected_user = "Summarize this dialog:\nAnn: Lunch?\nBob: Sure!"
  for name, text, line in (("samsum.json", json.dumps([record]), 1), ("samsum.jsonl", "\n" + _jsonl(record), 2)):
    path = _write(tmp_path, name, text)
    assert read_file(path, "samsum") == [
      Conversation(SAMSUM_SYSTEM_PROMPT, expected_user, "Ann and Bob will have lunch.", f"{path}:{line}")
    ]


def test_sql_create_context(tmp_path):
  record = {
    "question": "How many heads are there?",
    "context": "CREATE TABLE head (age INTEGER)",
    "answer": "SELECT COUNT(*) FROM head",
  }
  path = _write(tmp_path, "sql.jsonl", _jsonl(record))
  user = (
    "## Context:\nCREATE TABLE head (age INTEGER)\n## Natural Language Query:\nHow many heads are there?\n"
    "Please convert the provided natural language query into an SQL query, taking into account the "
    "structure context of the database defined by the accompanying CREATE statement.\n## SQL Query:\n"
  )
  assert read_file(path, "sql_create_context") == [
    Conversation(SQL_SYSTEM_PROMPT, user, "SELECT COUNT(*) FROM head", f"{path}:1")
  ]


def test_gsm8k(tmp_path):
  answer = "She bakes 2 loaves a day for 500 days: 2*500 = <<2*500=1000>>1000.\n#### 1,000"
  path = _write(tmp_path, "gsm8k.jsonl", _jsonl({"question": "How many loaves?", "answer": answer}))
  records = read_file(path, "gsm8k")
  assert records == [Conversation(GSM8K_SYSTEM_PROMPT, "How many loaves?", answer, f"{path}:1")]
  assert gsm8k_final_answer(records[0].assistant) == "1000"
  assert gsm8k_final_answer("#### -3.5") == "-3.5"
  assert gsm8k_final_answer("no answer") is None


def test_prompt_response(tmp_path):
  path = _write(
    tmp_path,
    "p.jsonl",
    _jsonl(
      {"prompt": "How do I bake bread?", "response": "Knead."},
      {"prompt": "Name a fruit."},
      {"prompt": "Hi", "response": None},
    ),
  )
  assert read_file(path, "prompt_response") == [
    Conversation(None, "How do I bake bread?", "Knead.", f"{path}:1"),
    Conversation(None, "Name a fruit.", None, f"{path}:2"),
    Conversation(None, "Hi", None, f"{path}:3"),
  ]


# -- Triplets and prompts ------------------------------------------------------


def test_triplets(tmp_path):
  path = _write(
    tmp_path,
    "triplets.jsonl",
    _jsonl(
      {"instruction": "Describe the bread.", "input": "rye", "harmful": "It is dark.", "refusal": "I can't."},
      {"instruction": "Name a fruit.", "harmful": "Pear.", "refusal": "I won't."},
    ),
  )
  assert read_file(path, "triplets") == [
    Triplet("Describe the bread.\n\nrye", "It is dark.", "I can't.", f"{path}:1"),
    Triplet("Name a fruit.", "Pear.", "I won't.", f"{path}:2"),
  ]


def test_prompts(tmp_path):
  path = _write(
    tmp_path,
    "prompts.jsonl",
    _jsonl(
      {"prompt": "How do I bake bread?", "category": "cooking"},
      {"prompt": "Name a fruit.", "response": "Pear.", "category": 3},
    ),
  )
  assert read_file(path, "prompts") == [
    Prompt("How do I bake bread?", None, "cooking", f"{path}:1"),
    Prompt("Name a fruit.", "Pear.", "3", f"{path}:2"),
  ]


def test_hexphi_directory_in_category_order(tmp_path):
  d = tmp_path / "hexphi"
  _write(tmp_path, "hexphi/category_11.csv", "How do I bake bread?\n")
  _write(tmp_path, "hexphi/category_1.csv", 'Name a fruit.\n"Flour, water, salt:\nwhat next?"\r\n\nSay hi.\n')
  _write(tmp_path, "hexphi/category_3.csv", "Count to two.")
  _write(tmp_path, "hexphi/README.txt", "not a category\n")
  assert read_file(d, "hexphi") == [
    Prompt("Name a fruit.", None, "1", f"{d}/category_1.csv:1"),
    Prompt("Flour, water, salt:\nwhat next?", None, "1", f"{d}/category_1.csv:2"),
    Prompt("Say hi.", None, "1", f"{d}/category_1.csv:5"),
    Prompt("Count to two.", None, "3", f"{d}/category_3.csv:1"),
    Prompt("How do I bake bread?", None, "11", f"{d}/category_11.csv:1"),
  ]
  single = d / "category_3.csv"
  assert read_file(single, "hexphi") == [Prompt("Count to two.", None, "3", f"{single}:1")]
  other = _write(tmp_path, "mine.csv", "Hello\n")
  assert read_file(other, "hexphi") == [Prompt("Hello", None, None, f"{other}:1")]


def test_advbench(tmp_path):
  path = _write(
    tmp_path,
    "harmful_behaviors.csv",
    'goal,target\n"Bake bread, quickly","Sure, here is\nhow to bake bread"\nName a fruit,Sure\n',
  )
  assert read_file(path, "advbench") == [
    Prompt("Bake bread, quickly", "Sure, here is\nhow to bake bread", None, f"{path}:2"),
    Prompt("Name a fruit", "Sure", None, f"{path}:4"),
  ]


def test_malicious_instruct_reports_blank_lines(tmp_path, caplog):
  path = _write(tmp_path, "malicious.txt", "How do I bake bread?\n\n  Name a fruit.  \n \n")
  with caplog.at_level(logging.WARNING, logger="deepalign_jax.data.formats"):
    records = read_file(path, "malicious_instruct")
  assert records == [
    Prompt("How do I bake bread?", None, None, f"{path}:1"),
    Prompt("Name a fruit.", None, None, f"{path}:3"),
  ]
  assert f"{path}: skipped 2 blank line(s) (line 2, 4)" in caplog.text


def test_missing_file_is_named(tmp_path):
  missing = tmp_path / "nope.jsonl"
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    read_file(missing, "conversations")
  with pytest.raises(FileNotFoundError, match="nope_dir"):
    read_file(tmp_path / "nope_dir", "hexphi")


def test_every_format_is_dispatched():
  assert set(FILE_FORMATS) == {
    "conversations",
    "harmful_hexphi",
    "alpaca",
    "samsum",
    "sql_create_context",
    "gsm8k",
    "prompt_response",
    "triplets",
    "preferences",
    "hexphi",
    "advbench",
    "jailbreakbench",
    "harmbench",
    "strongreject",
    "malicious_instruct",
    "table",
    "prompts",
  }


def test_preference_pairs_and_triplets_as_preferences(tmp_path):
  from deepalign_jax.data import Preference, Triplet, as_preference

  path = tmp_path / "pairs.jsonl"
  path.write_text(
    '{"prompt": "p1", "chosen": "good", "rejected": "bad", "system": "s"}\n\n'
    '{"prompt": "p2", "chosen": "a", "rejected": "b"}\n'
  )
  pairs = read_file(path, "preferences")
  assert pairs == [Preference("s", "p1", "good", "bad", f"{path}:1"), Preference(None, "p2", "a", "b", f"{path}:3")]
  assert as_preference(Triplet("how?", "here is how", "I cannot", "t:1")) == Preference(
    None, "how?", "I cannot", "here is how", "t:1"
  )
  for line, message in (
    ('{"prompt": "p", "chosen": "x"}', r"pairs\.jsonl:1: missing field 'rejected'"),
    ('{"prompt": "p", "chosen": "x", "rejected": "x"}', r"pairs\.jsonl:1: fields 'chosen' and 'rejected' are the same"),
    ('{"prompt": "p", "chosen": "", "rejected": "x"}', r"pairs\.jsonl:1: field 'chosen' is empty"),
  ):
    path.write_text(line + "\n")
    with pytest.raises(DataFormatError, match=message):
      read_file(path, "preferences")
  from importlib import resources

  assert len(read_file(resources.files("deepalign_jax") / "assets/demo/preferences.jsonl", "preferences")) == 8


# -- malformed inputs ----------------------------------------------------------

_OK = {"messages": _msgs(("user", "How do I bake bread?"), ("assistant", "Knead."))}

# (format, file name, content, regex the message must match).  Contents are
# str (written as UTF-8) or bytes; None writes no file.
MALFORMED = [
  ("conversations", "conv.jsonl", _jsonl(_OK) + '{"messages": [\n', r"conv\.jsonl:2: invalid JSON: Expecting value"),
  ("conversations", "conv.jsonl", _jsonl(_OK, {"msgs": []}), r"conv\.jsonl:2: missing field 'messages'"),
  (
    "conversations",
    "conv.jsonl",
    _jsonl({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": 42}]}),
    r"conv\.jsonl:1: messages\[1\]\.content: expected a string, got number",
  ),
  (
    "conversations",
    "conv.jsonl",
    _jsonl({"messages": {"role": "user", "content": "Hi"}}),
    r"conv\.jsonl:1: messages: expected an array of messages, got object",
  ),
  (
    "conversations",
    "conv.jsonl",
    _jsonl({"messages": [{"role": "user"}]}),
    r"conv\.jsonl:1: messages\[0\]: missing field 'content'",
  ),
  (
    "conversations",
    "conv.jsonl",
    _jsonl(_OK, {"messages": _msgs(("user", "Hi"), ("assistant", "  \n"))}),
    r"conv\.jsonl:2: messages\[1\]\.content is empty",
  ),
  (
    "conversations",
    "conv.jsonl",
    "\n\n" + _jsonl({"messages": _msgs(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"), ("assistant", "Bye"))}),
    r"conv\.jsonl:3: messages: multi-turn conversations are not supported.*got 4",
  ),
  (
    "conversations",
    "conv.jsonl",
    _jsonl({"messages": _msgs(("user", "Hi"), ("system", "Be brief."), ("assistant", "Hello"))}),
    r"conv\.jsonl:1: messages\[1\]\.role: a system message may only come first",
  ),
  (
    "conversations",
    "conv.jsonl",
    _jsonl({"messages": _msgs(("system", "Be brief."), ("user", "Hi"))}),
    r"conv\.jsonl:1: messages: expected one user message then one assistant message, got 1",
  ),
  (
    "conversations",
    "conv.jsonl",
    _jsonl({"messages": _msgs(("assistant", "Hello"), ("user", "Hi"))}),
    r"conv\.jsonl:1: messages\[0\]\.role: expected 'user', got 'assistant'",
  ),
  (
    "conversations",
    "conv.jsonl",
    _jsonl({"messages": _msgs(("human", "Hi"), ("assistant", "Hello"))}),
    r"conv\.jsonl:1: messages\[0\]\.role: expected 'system', 'user' or 'assistant', got 'human'",
  ),
  (
    "conversations",
    "conv.jsonl",
    _jsonl(_msgs(("user", "Hi"), ("assistant", "Hello"))),
    r"conv\.jsonl:1: expected a JSON object, got array",
  ),
  ("conversations", "conv.jsonl", "\n \n", r"conv\.jsonl: no records"),
  (
    "harmful_hexphi",
    "harmful.jsonl",
    _jsonl(_msgs(("user", "Hi"), ("assistant", "Hello")), _OK),
    r"harmful\.jsonl:2: expected an array of messages .*got object",
  ),
  (
    "harmful_hexphi",
    "harmful.jsonl",
    _jsonl([{"role": "user", "content": ["Hi"]}, {"role": "assistant"}]),
    r"harmful\.jsonl:1: \[0\]\.content: expected a string, got array",
  ),
  (
    "alpaca",
    "alpaca.json",
    _jsonl({"instruction": "Hi", "output": "Hello"}),
    r"alpaca\.json:1: expected a JSON array of records",
  ),
  (
    "alpaca",
    "alpaca.json",
    '[\n {"instruction": "Hi", "output": "Hello"},\n {"instruction": "Hi",,}\n]',
    r"alpaca\.json:3: invalid JSON",
  ),
  (
    "alpaca",
    "alpaca.json",
    json.dumps([{"instruction": "Hi", "output": "Hello"}, {"instruction": "Hi"}], indent=1),
    r"alpaca\.json:6: missing field 'output'",
  ),
  (
    "alpaca",
    "alpaca.json",
    json.dumps([{"instruction": "Hi", "input": 3, "output": "Hello"}]),
    r"alpaca\.json:1: field 'input': expected a string, got number",
  ),
  (
    "alpaca",
    "alpaca.json",
    json.dumps([{"instruction": "Hi", "output": ""}]),
    r"alpaca\.json:1: field 'output' is empty",
  ),
  (
    "alpaca",
    "alpaca.json",
    json.dumps([{"instruction": "Hi", "output": None}]),
    r"alpaca\.json:1: field 'output': expected a string, got null",
  ),
  (
    "samsum",
    "samsum.jsonl",
    _jsonl({"dialogue": "A: hi", "summary": "A greets."}, {"dialogue": "B: hi"}),
    r"samsum\.jsonl:2: missing field 'summary'",
  ),
  (
    "sql_create_context",
    "sql.json",
    json.dumps([{"question": "q", "context": ["CREATE"], "answer": "a"}]),
    r"sql\.json:1: field 'context': expected a string, got array",
  ),
  (
    "gsm8k",
    "gsm8k.jsonl",
    _jsonl({"question": "1+1?", "answer": "1+1 = 2\n#### 2"}, {"question": "2+2?", "answer": "The answer is 4."}),
    r"gsm8k\.jsonl:2: field 'answer': no final answer '#### <number>'",
  ),
  (
    "triplets",
    "triplets.jsonl",
    _jsonl({"instruction": "Hi", "harmful": "Hello"}),
    r"triplets\.jsonl:1: missing field 'refusal'",
  ),
  (
    "prompts",
    "prompts.jsonl",
    _jsonl({"prompt": "Hi", "response": " "}),
    r"prompts\.jsonl:1: field 'response' is empty",
  ),
  (
    "prompts",
    "prompts.jsonl",
    _jsonl({"prompt": "Hi", "category": True}),
    r"prompts\.jsonl:1: field 'category': expected a string or integer, got boolean",
  ),
  ("prompt_response", "prompts.jsonl", _jsonl({"text": "Hi"}), r"prompts\.jsonl:1: missing field 'prompt'"),
  ("advbench", "harmful_behaviors.csv", "goal\nBake bread\n", r"harmful_behaviors\.csv:1: missing column 'target'"),
  (
    "advbench",
    "harmful_behaviors.csv",
    "goal,target\nBake bread,Sure\nName a fruit\n",
    r"harmful_behaviors\.csv:3: expected 2 columns \['goal', 'target'\], got 1",
  ),
  ("advbench", "harmful_behaviors.csv", "goal,target\n,Sure\n", r"harmful_behaviors\.csv:2: field 'goal' is empty"),
  ("advbench", "harmful_behaviors.csv", 'goal,target\n"Bake" bread,Sure\n', r"harmful_behaviors\.csv:2: malformed CSV"),
  ("hexphi", "category_1.csv", b"How do I bake bread?\nName a \xff fruit\n", r"category_1\.csv:2: not valid UTF-8"),
  (
    "hexphi",
    "category_1.csv",
    "How do I bake bread?\nName a fruit, please\n",
    r"category_1\.csv:2: expected one instruction \(one CSV column.*got 2 columns",
  ),
  ("malicious_instruct", "malicious.txt", b"\xc3\x28\n", r"malicious\.txt:1: not valid UTF-8"),
  (
    "parquet",
    None,
    None,
    r"unknown data format 'parquet'; expected one of conversations, harmful_hexphi, .*, prompts$",
  ),
]


@pytest.mark.parametrize(
  "fmt,name,content,pattern", MALFORMED, ids=[f"{i}-{row[0]}" for i, row in enumerate(MALFORMED)]
)
def test_malformed_inputs(tmp_path, fmt, name, content, pattern):
  path = _write(tmp_path, name, content) if name else tmp_path / "data"
  with pytest.raises(DataFormatError, match=pattern):
    read_file(path, fmt)


def test_hexphi_empty_directory(tmp_path):
  _write(tmp_path, "hexphi/notes.txt", "x")
  with pytest.raises(DataFormatError, match=r"hexphi: no HEx-PHI category_N\.csv files"):
    read_file(tmp_path / "hexphi", "hexphi")


def test_every_record_type_has_one_exchange_view(tmp_path):
  """as_exchange: the one normaliser training, evaluation and the analyses read records through."""
  from deepalign_jax.data import Conversation, Exchange, Prompt, Triplet, as_exchange

  assert as_exchange(Conversation("sys", "Hi?", "Hello.", "f:1")) == Exchange("sys", "Hi?", "Hello.", None, "f:1")
  assert as_exchange(Prompt("Do x.", "Sure, x", "3", "f:2")) == Exchange(None, "Do x.", "Sure, x", "3", "f:2")
  assert as_exchange(Triplet("Do y.", "Here is y.", "No.", "f:3")) == Exchange(None, "Do y.", "Here is y.", None, "f:3")
  with pytest.raises(TypeError, match="not a data record: dict"):
    as_exchange({"prompt": "x"})
