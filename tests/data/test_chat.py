"""Chat rendering: exact strings, exact ids, loss masks, prefilling, errors.

The strings are those of SPEC §2.  Ids are pinned for the two real
tokenizers (SmolLM2's ChatML template, Gemma 3's tokenizer in the 'gemma' and
'base' formats); Llama-2 is rendered with a small SentencePiece-like
tokenizer trained in-process, whose ids are checked for structure only.
"""

from __future__ import annotations

import re
import types

import pytest

from deepalign_jax.data.chat import (
  ALPACA_PREAMBLE,
  LLAMA2_DEFAULT_SYSTEM_PROMPT,
  ChatFormatError,
  ChatRenderer,
  Rendered,
  load_tokenizer,
)
from tests.data.tokenizers import sentencepiece_like_tokenizer
from tests.real_checkpoints import real_tokenizer

# -- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
  return load_tokenizer(real_tokenizer("smollm2"))


@pytest.fixture(scope="module")
def gemma3():
  return load_tokenizer(real_tokenizer("gemma3-270m"))


@pytest.fixture(scope="module")
def spm():
  return sentencepiece_like_tokenizer()


@pytest.fixture(scope="module")
def get_tokenizer(request):
  """Lazily loaded tokenizers by name: 'smollm2', 'gemma3', 'spm'."""
  return lambda name: request.getfixturevalue(name)


@pytest.fixture(scope="module")
def get_renderer(get_tokenizer):
  """(tokenizer, renderer, its stop ids) by tokenizer name and format, built once.

  Building a renderer costs a `get_vocab()`
  (~0.4 s for Gemma 3's 262k vocabulary), so the parametrized tests share them.
  """
  cache = {}

  def get(tok_name, chat_format):
    if (tok_name, chat_format) not in cache:
      tok = get_tokenizer(tok_name)
      renderer = ChatRenderer(tok, chat_format)
      cache[tok_name, chat_format] = tok, renderer, set(renderer.stop_token_ids)
    return cache[tok_name, chat_format]

  return get


QA = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."}]
MULTI = [
  {"role": "user", "content": "Name a colour."},
  {"role": "assistant", "content": "Blue is a colour."},
  {"role": "user", "content": "And another one?"},
  {"role": "assistant", "content": "Red."},
]
PIRATE = {"role": "system", "content": "You are a pirate."}
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# (tokenizer, format) pairs exercised by the format-independent checks.
CASES = [
  ("spm", "llama2"),
  ("spm", "base"),
  ("smollm2", "template"),
  ("smollm2", "base"),
  ("gemma3", "gemma"),
  ("gemma3", "base"),
]


def _end_of_turn(tok, chat_format: str) -> str:
  """The token that closes an assistant turn in this format."""
  return {"llama2": tok.eos_token, "base": tok.eos_token, "gemma": "<end_of_turn>", "template": "<|im_end|>"}[
    chat_format
  ]


def _closed_response(tok, chat_format: str, answer: str) -> str:
  """The rendered response: assistant content through its end-of-turn token."""
  sep = " " if chat_format == "llama2" else ""
  return f"{answer}{sep}{_end_of_turn(tok, chat_format)}"


def _ids(tok, text: str) -> tuple[int, ...]:
  return tuple(tok(text, add_special_tokens=False)["input_ids"])


# -- exact strings -------------------------------------------------------------


def test_llama2_default_system_prompt_is_the_official_one():
  # As in the reference code (single spaces between sentences).
  assert LLAMA2_DEFAULT_SYSTEM_PROMPT == (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
    "possible, while being safe. Your answers should not include any harmful, unethical, "
    "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
    "are socially unbiased and positive in nature.\n\nIf a question does not make any sense, "
    "or is not factually coherent, explain why instead of answering something not correct. "
    "If you don't know the answer to a question, please don't share false information."
  )
  assert ALPACA_PREAMBLE == (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
  )


def test_llama2_strings(spm):
  default = ChatRenderer(spm, "llama2", system_prompt=LLAMA2_DEFAULT_SYSTEM_PROMPT)
  assert default.render(QA).text == (
    "<s>[INST] <<SYS>>\n" + LLAMA2_DEFAULT_SYSTEM_PROMPT + "\n<</SYS>>\n\nWhat is 2+2? [/INST] It is 4. </s>"
  )
  # A system message overrides the renderer's system prompt, even when empty.
  assert default.render([{"role": "system", "content": ""}] + QA).text == (
    "<s>[INST] <<SYS>>\n\n<</SYS>>\n\nWhat is 2+2? [/INST] It is 4. </s>"
  )
  assert default.render([PIRATE] + QA).text == (
    "<s>[INST] <<SYS>>\nYou are a pirate.\n<</SYS>>\n\nWhat is 2+2? [/INST] It is 4. </s>"
  )

  empty = ChatRenderer(spm, "llama2", system_prompt="")
  assert empty.render(QA).text == ("<s>[INST] <<SYS>>\n\n<</SYS>>\n\nWhat is 2+2? [/INST] It is 4. </s>")

  none = ChatRenderer(spm, "llama2")
  assert none.render(QA).text == "<s>[INST] What is 2+2? [/INST] It is 4. </s>"
  assert none.render(QA[:1]).text == "<s>[INST] What is 2+2? [/INST]"


def test_llama2_multi_turn_strings(spm):
  assert ChatRenderer(spm, "llama2").render([PIRATE] + MULTI).text == (
    "<s>[INST] <<SYS>>\nYou are a pirate.\n<</SYS>>\n\n"
    "Name a colour. [/INST] Blue is a colour. </s>"
    "<s>[INST] And another one? [/INST] Red. </s>"
  )
  assert ChatRenderer(spm, "llama2").render(MULTI[:3]).text == (
    "<s>[INST] Name a colour. [/INST] Blue is a colour. </s><s>[INST] And another one? [/INST]"
  )


def test_gemma_strings(get_renderer):
  _, r, _ = get_renderer("gemma3", "gemma")

  def text(messages):  # = render(messages).text, without tokenising
    return r.render_text(messages)[0]

  assert r.render(QA).text == (
    "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\nIt is 4.<end_of_turn>"
  )
  assert text([PIRATE] + QA) == (
    "<bos><start_of_turn>user\nYou are a pirate.\nWhat is 2+2?<end_of_turn>\n"
    "<start_of_turn>model\nIt is 4.<end_of_turn>"
  )
  assert text([{"role": "system", "content": ""}] + QA) == (
    "<bos><start_of_turn>user\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\nIt is 4.<end_of_turn>"
  )
  assert r.render(QA[:1]).text == ("<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n")
  assert text([PIRATE] + MULTI) == (
    "<bos><start_of_turn>user\nYou are a pirate.\nName a colour.<end_of_turn>\n"
    "<start_of_turn>model\nBlue is a colour.<end_of_turn>\n"
    "<start_of_turn>user\nAnd another one?<end_of_turn>\n"
    "<start_of_turn>model\nRed.<end_of_turn>"
  )
  assert r.render(MULTI[:3]).text == (
    "<bos><start_of_turn>user\nName a colour.<end_of_turn>\n"
    "<start_of_turn>model\nBlue is a colour.<end_of_turn>\n"
    "<start_of_turn>user\nAnd another one?<end_of_turn>\n<start_of_turn>model\n"
  )


def test_gemma_eos_response_end_is_the_reference_training_string(gemma3, spm):
  """response_end='eos': the reference's Gemma training strings end the last answer with " <eos>"."""
  r = ChatRenderer(gemma3, "gemma", response_end="eos")
  rendered = r.render([PIRATE] + MULTI)
  assert rendered.text == (
    "<bos><start_of_turn>user\nYou are a pirate.\nName a colour.<end_of_turn>\n"
    "<start_of_turn>model\nBlue is a colour.<end_of_turn>\n"
    "<start_of_turn>user\nAnd another one?<end_of_turn>\n"
    "<start_of_turn>model\nRed. <eos>"
  )
  # The loss covers the answer and its ending, EOS last; prompts for generation are unchanged.
  assert gemma3.decode(list(rendered.response_ids)) == "Red. <eos>"
  assert rendered.input_ids[rendered.response_end - 1] == gemma3.eos_token_id
  assert sum(rendered.loss_mask) == rendered.response_end - rendered.response_start
  assert r.render(QA[:1]).text == ChatRenderer(gemma3, "gemma").render(QA[:1]).text
  with pytest.raises(ChatFormatError, match="response_end 'eos' is the reference's Gemma training ending"):
    ChatRenderer(spm, "llama2", response_end="eos")
  with pytest.raises(ChatFormatError, match="unknown response_end 'end'"):
    ChatRenderer(gemma3, "gemma", response_end="end")


def test_base_strings(gemma3, smollm2, spm):
  # Gemma's tokenizer adds <bos> by itself, so the rendering writes it; its EOS is <eos>.
  assert ChatRenderer(gemma3, "base").render(QA).text == (
    "<bos>Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\nIt is 4.<eos>"
  )
  # SmolLM2 adds no BOS; its EOS is <|im_end|>.
  assert ChatRenderer(smollm2, "base").render(QA).text == (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n"
    "It is 4.<|im_end|>"
  )
  assert ChatRenderer(spm, "base").render(MULTI).text == (
    f"{ALPACA_PREAMBLE}\n\n### Instruction:\nName a colour.\n\n### Response:\n"
    "Blue is a colour.</s>"
    "\n\n### Instruction:\nAnd another one?\n\n### Response:\nRed.</s>"
  )
  assert ChatRenderer(spm, "base").render(QA[:1]).text == (
    f"{ALPACA_PREAMBLE}\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n"
  )
  # A system message replaces the preamble; an empty one drops it.
  assert ChatRenderer(spm, "base").render([PIRATE] + QA).text == (
    "You are a pirate.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\nIt is 4.</s>"
  )
  assert ChatRenderer(spm, "base", system_prompt="").render(QA).text == (
    "### Instruction:\nWhat is 2+2?\n\n### Response:\nIt is 4.</s>"
  )


def test_template_strings_smollm2(smollm2):
  r = ChatRenderer(smollm2, "template")
  # Without a system message SmolLM2's template inserts its own system prompt.
  assert r.render(QA).text == (
    f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\nIt is 4.<|im_end|>\n"
  )
  assert r.render([PIRATE] + QA).text == (
    "<|im_start|>system\nYou are a pirate.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\nIt is 4.<|im_end|>\n"
  )
  assert r.render([PIRATE] + QA[:1]).text == (
    "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
  )
  assert r.render(MULTI).text == (
    f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n"
    "<|im_start|>user\nName a colour.<|im_end|>\n"
    "<|im_start|>assistant\nBlue is a colour.<|im_end|>\n"
    "<|im_start|>user\nAnd another one?<|im_end|>\n"
    "<|im_start|>assistant\nRed.<|im_end|>\n"
  )
  # The renderer's system prompt goes through the template's system role.
  assert ChatRenderer(smollm2, "template", system_prompt="Be brief.").render(QA[:1]).text == (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
  )


def test_auto_format(smollm2, gemma3, spm):
  assert ChatRenderer(smollm2).chat_format == "template"
  assert ChatRenderer(gemma3).chat_format == "base"  # Gemma 3's GGUF tokenizer has no template
  assert ChatRenderer(spm).chat_format == "base"


def test_render_text_matches_render(smollm2):
  r = ChatRenderer(smollm2, "template")
  text, start, closed = r.render_text(QA)
  assert (text, closed) == (r.render(QA).text, True)
  assert text[start:] == "It is 4.<|im_end|>\n"
  assert r.render_text(QA[:1])[1:] == (None, False)
  text, start, closed = r.render_text(QA[:1], assistant_prefix="Sure")
  assert (text[start:], closed) == ("Sure", False)


# -- exact ids for the real tokenizers -----------------------------------------

# fmt: off
SMOLLM2_QA_IDS = (
  1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
  19712, 8182, 2, 198,  # <|im_start|>system\n{default system}<|im_end|>\n
  1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198,  # <|im_start|>user\n...<|im_end|>\n
  1, 520, 9531, 198,  # <|im_start|>assistant\n
  1589, 314, 216, 36, 30, 2,  # It is 4.<|im_end|>
  198)  # \n
# fmt: on
SMOLLM2_QA_START = 37

# fmt: off
GEMMA_QA_IDS = (
  2, 105, 2364, 107, 3689, 563, 236743, 236778, 236862, 236778, 236881, 106, 107,
  105, 4368, 107,  # <start_of_turn>model\n
  1509, 563, 236743, 236812, 236761, 106)  # It is 4.<end_of_turn>
# fmt: on
GEMMA_QA_START = 16

# fmt: off
GEMMA_BASE_QA_IDS = (
  2, 43760, 563, 614, 14787, 600, 15517, 496, 4209, 236761, 15642, 496, 3072, 600, 37404,
  42342, 506, 2864, 236761, 108,  # <bos>{preamble}\n\n
  10354, 64017, 236787, 107, 3689, 563, 236743, 236778, 236862, 236778, 236881, 108,
  10354, 14503, 236787, 107,  # ### Response:\n
  1509, 563, 236743, 236812, 236761, 1)  # It is 4.<eos>
# fmt: on
GEMMA_BASE_QA_START = 36


def _check_pinned(tok, rendered: Rendered, ids, start, n_response):
  assert rendered.input_ids == ids
  assert rendered.response_start == start
  n_after = len(ids) - start - n_response
  assert rendered.loss_mask == (0,) * start + (1,) * n_response + (0,) * n_after
  assert tok.decode(list(ids)) == rendered.text
  assert _ids(tok, rendered.text) == ids


def test_smollm2_template_ids(smollm2):
  im_start, im_end = smollm2.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
  assert (im_start, im_end) == (1, 2)
  r = ChatRenderer(smollm2, "template").render(QA)
  _check_pinned(smollm2, r, SMOLLM2_QA_IDS, SMOLLM2_QA_START, 6)
  assert [smollm2.decode([i]) for i in r.input_ids].count("<|im_start|>") == 3
  assert smollm2.decode(list(r.response_ids)) == "It is 4.<|im_end|>"  # not the trailing newline
  assert smollm2.decode(list(r.prompt_ids)).endswith("<|im_start|>assistant\n")


def test_gemma3_gemma_ids(get_renderer):
  gemma3, renderer, _ = get_renderer("gemma3", "gemma")
  bos, sot, eot = gemma3.convert_tokens_to_ids(["<bos>", "<start_of_turn>", "<end_of_turn>"])
  assert (bos, sot, eot) == (2, 105, 106) and gemma3.bos_token_id == 2
  r = renderer.render(QA)
  _check_pinned(gemma3, r, GEMMA_QA_IDS, GEMMA_QA_START, 6)
  pieces = [gemma3.decode([i]) for i in r.input_ids]
  assert pieces[:4] == ["<bos>", "<start_of_turn>", "user", "\n"]
  assert pieces.count("<bos>") == 1 and r.input_ids.count(bos) == 1
  assert pieces.count("<start_of_turn>") == 2 and pieces.count("<end_of_turn>") == 2
  assert pieces[GEMMA_QA_START - 3 : GEMMA_QA_START] == ["<start_of_turn>", "model", "\n"]
  assert gemma3.decode(list(r.response_ids)) == "It is 4.<end_of_turn>"


def test_gemma3_base_ids(gemma3):
  r = ChatRenderer(gemma3, "base").render(QA)
  _check_pinned(gemma3, r, GEMMA_BASE_QA_IDS, GEMMA_BASE_QA_START, 6)
  # The text carries <bos> once; the tokenizer must not add a second one.
  assert r.input_ids.count(gemma3.bos_token_id) == 1
  assert tuple(gemma3(r.text[len("<bos>") :])["input_ids"]) == r.input_ids
  assert gemma3.decode(list(r.response_ids)) == "It is 4.<eos>"
  assert gemma3.decode(list(r.prompt_ids)).endswith("### Response:\n")


# -- the synthetic SentencePiece-like tokenizer for Llama-2 ------------------


def test_llama2_synthetic_tokenizer_structure(spm):
  bos, eos = spm.bos_token_id, spm.eos_token_id
  assert spm.convert_ids_to_tokens([bos, eos]) == ["<s>", "</s>"]
  assert spm.unk_token_id not in _ids(spm, LLAMA2_DEFAULT_SYSTEM_PROMPT)  # the alphabet covers it
  r = ChatRenderer(spm, "llama2", system_prompt=LLAMA2_DEFAULT_SYSTEM_PROMPT).render(MULTI)
  assert r.input_ids == _ids(spm, r.text)
  # Each <s> and </s> is one id, one per turn.
  assert r.input_ids.count(bos) == 2 and r.input_ids.count(eos) == 2
  assert r.input_ids[0] == bos and r.input_ids[-1] == eos
  assert spm.unk_token_id not in r.input_ids
  masked = [i for i, m in zip(r.input_ids, r.loss_mask) if m]
  assert spm.decode(masked) == "Red. </s>"
  assert masked[-1] == eos and masked.count(eos) == 1 and bos not in masked


# -- loss mask and response start, every format --------------------------------


@pytest.mark.parametrize("tok_name,chat_format", CASES)
@pytest.mark.parametrize("messages", [[PIRATE] + QA, MULTI], ids=["system-qa", "multi"])
def test_loss_mask_covers_exactly_the_response(get_renderer, tok_name, chat_format, messages):
  tok, renderer, stops = get_renderer(tok_name, chat_format)
  r = renderer.render(messages)
  ids, start, n = r.input_ids, r.response_start, len(r.input_ids)
  assert n == len(r.loss_mask) and 0 < start < n
  assert ids == _ids(tok, r.text)

  eot = tok.convert_tokens_to_ids(_end_of_turn(tok, chat_format))
  end = ids.index(eot, start) + 1
  assert r.loss_mask == (0,) * start + (1,) * (end - start) + (0,) * (n - end)
  assert tok.decode(list(ids[start:end])) == _closed_response(tok, chat_format, messages[-1]["content"])
  assert not set(ids[start : end - 1]) & stops
  if chat_format == "template":
    assert tok.decode(list(ids[end:])) == "\n"  # ChatML's newline after <|im_end|>: no loss
  else:
    assert end == n

  # The prompt part is exactly the prompt-only rendering of the same conversation.
  prompt = renderer.render(messages[:-1])
  assert r.prompt_ids == prompt.input_ids
  assert r.text.startswith(prompt.text)


@pytest.mark.parametrize("tok_name,chat_format", CASES)
@pytest.mark.parametrize("messages", [QA[:1], MULTI[:3]], ids=["one", "multi"])
def test_prompt_only_rendering_has_no_response(get_renderer, tok_name, chat_format, messages):
  tok, renderer, _ = get_renderer(tok_name, chat_format)
  r = renderer.render(messages)
  assert r.response_start == len(r.input_ids) > 0
  assert r.loss_mask == (0,) * len(r.input_ids)
  assert r.response_ids == () and r.prompt_ids == r.input_ids
  assert r.input_ids == _ids(tok, r.text)


# -- prefilling ------------------------------------------------------------------

PREFIX = "Sure, here is"
ANSWER = "Sure, here is the answer."


@pytest.mark.parametrize("tok_name,chat_format", CASES)
@pytest.mark.parametrize("messages", [QA[:1], MULTI[:3]], ids=["one", "multi"])
def test_prefill_leaves_the_turn_open(get_renderer, tok_name, chat_format, messages):
  tok, renderer, stops = get_renderer(tok_name, chat_format)
  r = renderer.render(messages, assistant_prefix=PREFIX)
  prompt = renderer.render(messages)
  assert r.text.endswith(PREFIX) and r.text.startswith(prompt.text)
  assert r.input_ids == _ids(tok, r.text)
  assert r.prompt_ids == prompt.input_ids
  assert tok.decode(list(r.response_ids)) == PREFIX
  assert not set(r.response_ids) & stops
  n, start = len(r.input_ids), r.response_start
  assert start < n and r.loss_mask == (0,) * start + (1,) * (n - start)


@pytest.mark.parametrize(
  "tok_name,chat_format", [("smollm2", "template"), ("gemma3", "gemma"), ("gemma3", "base"), ("smollm2", "base")]
)
@pytest.mark.parametrize("messages", [QA[:1], MULTI[:3]], ids=["one", "multi"])
def test_prefill_matches_the_closed_rendering(get_renderer, tok_name, chat_format, messages):
  tok, renderer, _ = get_renderer(tok_name, chat_format)
  prefilled = renderer.render(messages, assistant_prefix=PREFIX)
  full = renderer.render(messages + [{"role": "assistant", "content": ANSWER}])
  k = len(prefilled.response_ids)
  assert k > 0
  assert full.response_start == prefilled.response_start
  assert full.with_response_prefix(k) == prefilled.input_ids
  assert tok.decode(list(full.with_response_prefix(k)[full.response_start :])) == PREFIX


def test_empty_prefix_is_the_prompt(get_renderer):
  _, r, _ = get_renderer("gemma3", "gemma")
  prefilled = r.render(QA[:1], assistant_prefix="")
  assert prefilled == r.render(QA[:1])


def test_llama2_prefill_keeps_the_space_after_inst(spm):
  renderer = ChatRenderer(spm, "llama2", system_prompt="")
  prefilled = renderer.render(QA[:1], assistant_prefix=PREFIX)
  full = renderer.render(QA[:1] + [{"role": "assistant", "content": ANSWER}])
  # SPEC §2: one space after [/INST] everywhere, as in the closed rendering.
  assert prefilled.text == full.text[: full.text.index(ANSWER)] + PREFIX
  assert prefilled.text.endswith("[/INST] " + PREFIX)
  assert full.with_response_prefix(len(prefilled.response_ids)) == prefilled.input_ids


def test_template_response_starts_at_leading_whitespace(get_renderer):
  _, renderer, _ = get_renderer("smollm2", "template")
  messages = QA[:1] + [{"role": "assistant", "content": "  It is 4."}]
  text, start, _ = renderer.render_text(messages)
  # render_text: "char index where the last assistant content starts".
  assert text[start:] == "  It is 4.<|im_end|>\n"


def test_rendering_does_not_rebuild_the_vocabulary(get_renderer, monkeypatch):
  # get_vocab() builds a 262k-entry dict for Gemma: once per renderer, never per example.
  tok, renderer, _ = get_renderer("gemma3", "gemma")
  calls = []
  original = type(tok).get_vocab
  monkeypatch.setattr(type(tok), "get_vocab", lambda self: calls.append(1) or original(self))
  for i in range(2):
    renderer.render([{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}])
  assert calls == []


# -- stop tokens -------------------------------------------------------------------


def test_stop_token_ids(get_renderer, smollm2, gemma3, spm):
  smol = get_renderer("smollm2", "template")[1].stop_token_ids
  assert smollm2.convert_tokens_to_ids("<|im_end|>") in smol and smollm2.eos_token_id in smol
  assert smol == (0, 2)  # <|endoftext|>, <|im_end|> (= EOS)
  gem = get_renderer("gemma3", "gemma")[1].stop_token_ids
  assert gemma3.convert_tokens_to_ids("<end_of_turn>") in gem and gemma3.eos_token_id in gem
  assert gem == (1, 106)  # <eos>, <end_of_turn>
  assert ChatRenderer(gemma3, "base").stop_token_ids == gem
  assert ChatRenderer(spm, "llama2").stop_token_ids == (spm.eos_token_id,)


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
  "messages,match",
  [
    ([{"role": "assistant", "content": "Hi."}], r"message 0: expected role 'user', got 'assistant'"),
    (
      [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
      r"message 1: expected role 'assistant', got 'user'",
    ),
    (
      [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}],
      r"message 1: expected role 'assistant', got 'tool'",
    ),
    (QA + [{"role": "system", "content": "late"}], r"message 2: a system message may only come first"),
    ([PIRATE, PIRATE] + QA, r"message 1: a system message may only come first"),
    ([{"role": "user", "content": ["What", "is"]}], r"message 0: 'content' must be a string, got list"),
    ([{"role": "user", "content": None}], r"message 0: 'content' must be a string, got NoneType"),
    ([{"role": "user"}], r"message 0: expected a mapping with 'role' and 'content'"),
    (["What is 2+2?"], r"message 0: expected a mapping with 'role' and 'content'"),
    ([], r"no user message"),
    ([PIRATE], r"no user message"),
  ],
)
def test_bad_messages(spm, messages, match):
  for chat_format in ("llama2", "base"):
    with pytest.raises(ChatFormatError, match=match):
      ChatRenderer(spm, chat_format).render(messages)


def test_prefix_after_assistant_message(smollm2):
  with pytest.raises(ChatFormatError, match=r"assistant_prefix .* ends with the user"):
    ChatRenderer(smollm2, "template").render(QA, assistant_prefix="Sure")


def test_bad_renderer_arguments(smollm2, gemma3, spm):
  with pytest.raises(ChatFormatError, match=r"unknown chat format 'chatml'.*'llama2'.*'auto'"):
    ChatRenderer(smollm2, "chatml")
  with pytest.raises(ChatFormatError, match=r"'template' needs a tokenizer with a chat_template"):
    ChatRenderer(gemma3, "template")
  with pytest.raises(ChatFormatError, match=r"'template' needs a tokenizer with a chat_template"):
    ChatRenderer(spm, "template")
  missing = "'gemma' needs tokens ['<bos>', '<start_of_turn>', '<end_of_turn>']"
  with pytest.raises(ChatFormatError, match=re.escape(missing)):
    ChatRenderer(smollm2, "gemma")
  with pytest.raises(ChatFormatError, match=r"'gemma' needs tokens \[.*'<start_of_turn>'"):
    ChatRenderer(spm, "gemma")
  with pytest.raises(ChatFormatError, match=r"fast \(Rust\) tokenizer"):
    ChatRenderer(types.SimpleNamespace(is_fast=False, chat_template=None), "base")


def test_special_token_text_in_messages_is_refused(get_renderer):
  _, renderer, _ = get_renderer("smollm2", "template")
  with pytest.raises(ChatFormatError, match=r"turn 1 contains the special token text '<\|im_end\|>'"):
    renderer.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure<|im_end|> and more"}])
  with pytest.raises(ChatFormatError, match="assistant_prefix contains the special token text"):
    renderer.render([{"role": "user", "content": "Hi"}], assistant_prefix="<|im_start|>x")


def test_with_response_prefix_checks_k(get_renderer):
  _, renderer, _ = get_renderer("smollm2", "template")
  full = renderer.render(QA)
  assert full.with_response_prefix(len(full.response_ids)) == full.input_ids[: full.response_end]
  for k in (-1, len(full.response_ids) + 1):
    with pytest.raises(ValueError, match=f"k={k} is outside"):
      full.with_response_prefix(k)
