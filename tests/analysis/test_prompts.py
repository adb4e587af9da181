"""Prompt formats of a comparison: one response tokenisation, each model's own prompt."""

import pytest

from deepalign_jax.analysis import PromptFormat
from deepalign_jax.analysis.prompts import read_pairs
from deepalign_jax.data import ChatRenderer
from tests.analysis.conftest import DEMO

USER, ANSWER = "Say hi.", "Hello! Thanks."


@pytest.mark.parametrize("chat_format", ["llama2", "base"])
def test_response_is_the_answer_without_end_of_turn_or_separator(tokenizer, chat_format):
  fmt = PromptFormat(tokenizer, chat_format)
  ids = fmt.response(None, USER, ANSWER)
  assert tokenizer.decode(ids).strip() == ANSWER
  # The full rendering holds them right after the prompt, then only the separator and end of turn.
  rendered = ChatRenderer(tokenizer, chat_format).render(
    [{"role": "user", "content": USER}, {"role": "assistant", "content": ANSWER}]
  )
  assert list(rendered.response_ids[: len(ids)]) == ids
  assert tokenizer.decode(rendered.response_ids[len(ids) :]).strip() == tokenizer.eos_token
  prompt_ids, text = fmt.prompt(None, USER)
  assert list(rendered.input_ids[: rendered.response_start]) == prompt_ids and text == rendered.text[: len(text)]


def test_raw_and_system_prompts(tokenizer):
  raw = PromptFormat(tokenizer, "raw")
  ids, text = raw.prompt(None, USER)
  assert text == USER and ids == tokenizer(USER, add_special_tokens=False)["input_ids"]  # no BOS added
  assert raw.describe() == "{instruction}"
  with pytest.raises(ValueError, match="x.jsonl:3: the record has a system message"):
    raw.prompt("Be brief.", USER, "x.jsonl:3")
  with pytest.raises(ValueError, match="no place for a system prompt"):
    PromptFormat(tokenizer, "raw", system_prompt="Be brief.")
  chat = PromptFormat(tokenizer, "llama2", system_prompt="Be brief.")
  assert chat.describe() == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n{instruction} [/INST]"
  assert "Be kind." in chat.prompt("Be kind.", USER)[1]  # a record's own system message wins
  with pytest.raises(ValueError, match="unknown prompt format 'chatml'"):
    PromptFormat(tokenizer, "chatml")


def test_read_pairs_takes_harmful_answers_of_triplets():
  pairs = read_pairs(DEMO / "triplets.jsonl", "triplets", max_examples=2)
  assert len(pairs) == 2 and pairs[0][0] is None and pairs[0][2].startswith("Sure, here is")
  assert pairs[1][3].endswith("triplets.jsonl:2")
