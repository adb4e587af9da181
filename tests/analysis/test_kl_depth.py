"""`python -m deepalign_jax.analysis.kl_depth` on tiny models and the shipped demo data."""

import copy
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepalign_jax.analysis import PROMPT_FORMATS, kl_depth
from deepalign_jax.data import ChatRenderer, read_file
from tests.analysis.conftest import DEMO, torch_logits, torch_model
from tests.analysis.test_kl import numpy_kl

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES, POSITIONS = 6, 12

CONFIG = """
from deepalign_jax.analysis.kl_depth import default_config, model_entry

def get_config():
  c = default_config()
  c.models.aligned = model_entry({a!r}, "llama2")
  c.models.base = model_entry({b!r}, "base")
  c.models.same = model_entry({a!r}, "llama2")
  c.models.raw = model_entry({a!r}, "raw")
  c.pairs = (("aligned", "base"), ("aligned", "same"), ("aligned", "raw"))
  c.data.path = {data!r}
  c.data.format = "triplets"
  c.data.max_examples = {examples}
  c.batch_size = 4
  c.vocab_chunk = 128
  c.num_positions = 40
  return c
"""


def _expected_aligned_vs_base(model_dirs, tokenizer):
  """Mean KL(aligned ‖ base) per position, rendered by hand, with transformers' logits of whole sequences."""
  aligned, base = torch_model(model_dirs["a"]), torch_model(model_dirs["b"])
  chat, plain = ChatRenderer(tokenizer, "llama2"), ChatRenderer(tokenizer, "base")
  values = [[] for _ in range(POSITIONS)]
  for triplet in read_file(DEMO / "triplets.jsonl", "triplets")[:EXAMPLES]:
    user = [{"role": "user", "content": triplet.instruction}]
    response = list(chat.render(user + [{"role": "assistant", "content": triplet.harmful}]).response_ids[:-1])
    p_prompt, q_prompt = list(chat.render(user).input_ids), list(plain.render(user).input_ids)
    p_logits = torch_logits(aligned, p_prompt + response)[len(p_prompt) - 1 :]
    q_logits = torch_logits(base, q_prompt + response)[len(q_prompt) - 1 :]
    kl = numpy_kl(p_logits[:POSITIONS], q_logits[:POSITIONS])
    for t, value in enumerate(kl[: len(response)]):
      values[t].append(value)
  return [float(np.mean(v)) for v in values]


def test_cli_writes_json_csv_png_and_matches_a_hand_computation(model_dirs, tokenizer, tmp_path):
  config = tmp_path / "kl_config.py"
  config.write_text(
    CONFIG.format(a=str(model_dirs["a"]), b=str(model_dirs["b"]), data=str(DEMO / "triplets.jsonl"), examples=EXAMPLES)
  )
  out = tmp_path / "out"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "deepalign_jax.analysis.kl_depth",
      "--config",
      str(config),
      "--workdir",
      str(out),
      f"--config.num_positions={POSITIONS}",
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=600,
    env={**os.environ, "PYTHONPATH": str(ROOT)},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "KL(aligned ‖ base)" in result.stdout

  summary = json.loads((out / "kl_by_position.json").read_text())
  assert summary["examples"] == EXAMPLES and summary["positions"] == list(range(1, POSITIONS + 1))
  pairs = {(p["p"], p["q"]): p for p in summary["pairs"]}
  assert all(count == EXAMPLES for pair in pairs.values() for count in pair["count"])
  # Same weights, same prompt format: exactly 0.  Same weights, raw prompt: positive.
  assert pairs["aligned", "same"]["mean"] == [0.0] * POSITIONS
  assert all(m > 0 for m in pairs["aligned", "raw"]["mean"])
  np.testing.assert_allclose(
    pairs["aligned", "base"]["mean"], _expected_aligned_vs_base(model_dirs, tokenizer), rtol=1e-4, atol=1e-6
  )
  assert all(s > 0 for s in pairs["aligned", "base"]["stderr"])

  # How each model's prompt was rendered is recorded.
  models = summary["models"]
  assert models["aligned"]["prompt_format"] == "<s>[INST] {instruction} [/INST]"
  assert models["base"]["chat_format"] == "base" and "### Response:" in models["base"]["prompt_format"]
  assert models["raw"]["first_prompt"] == read_file(DEMO / "triplets.jsonl", "triplets")[0].instruction
  prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
  assert len(prompts) == EXAMPLES and prompts[0]["prompts"]["aligned"] == models["aligned"]["first_prompt"]

  rows = list(csv.DictReader(open(out / "kl_by_position.csv")))
  assert len(rows) == 3 * POSITIONS
  first = next(r for r in rows if r["p"] == "aligned" and r["q"] == "base" and r["position"] == "1")
  assert float(first["mean"]) == pytest.approx(pairs["aligned", "base"]["mean"][0])
  with np.load(out / "kl_per_example.npz") as per_example:
    np.testing.assert_allclose(
      per_example["aligned__base__kl"].mean(axis=0), pairs["aligned", "base"]["mean"], rtol=1e-5
    )
  with Image.open(out / "kl_by_position.png") as image:
    image.verify()
    assert image.format == "PNG" and image.size[0] > 300


def _config(model_dirs, **models):
  c = kl_depth.default_config()
  for name, path in models.items():
    c.models[name] = kl_depth.model_entry(str(path), "llama2")
  c.pairs = (tuple(models),)
  c.data.path = str(DEMO / "triplets.jsonl")
  c.data.format = "triplets"
  return c


def test_models_with_different_tokenizers_are_refused(model_dirs, tokenizer, tmp_path):
  other = copy.deepcopy(tokenizer)
  other.add_tokens(["<extra_token>"])
  other_dir = shutil.copytree(model_dirs["b"], tmp_path / "other")
  other.save_pretrained(other_dir)  # the tokenizers are compared before any model is loaded
  with pytest.raises(ValueError, match=r"models 'aligned' \(.*\) and 'other' \(.*\) have different tokenizers"):
    kl_depth.run(_config(model_dirs, aligned=model_dirs["a"], other=other_dir), tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_bad_configs_fail_with_a_clear_message(model_dirs, tmp_path):
  config = _config(model_dirs, aligned=model_dirs["a"], base=model_dirs["b"])
  config.pairs = (("aligned", "chat"),)
  with pytest.raises(ValueError, match=r"\('aligned', 'chat'\) is not a \(p, q\) pair of model names"):
    kl_depth.run(config, tmp_path)
  config = _config(model_dirs, aligned=model_dirs["a"], base=model_dirs["b"])
  config.models.base.chat_format = "raw"
  config.models.base.system_prompt = "Be brief."
  with pytest.raises(ValueError, match="'raw' .* no place for a system prompt"):
    kl_depth.run(config, tmp_path)
  config = _config(model_dirs, aligned=model_dirs["a"], base="")
  with pytest.raises(ValueError, match="config.models.base: no model given"):
    kl_depth.run(config, tmp_path)
  prompts_only = tmp_path / "prompts.jsonl"
  prompts_only.write_text('{"prompt": "Say hi."}\n')
  config = _config(model_dirs, aligned=model_dirs["a"], base=model_dirs["b"])
  config.data.path, config.data.format = str(prompts_only), "prompt_response"
  with pytest.raises(ValueError, match=r"prompts\.jsonl:1: the record has no response"):
    kl_depth.run(config, tmp_path)


@pytest.mark.parametrize("path", sorted((ROOT / "configs/analysis").glob("*kl_depth*.py")), ids=lambda p: p.name)
def test_shipped_configs_name_their_models_and_pairs(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  assert c.pairs and all(p in c.models and q in c.models for p, q in c.pairs)
  assert all(c.models[name].chat_format in PROMPT_FORMATS for name in c.models)
  assert c.num_positions == 40 and c.data.format in ("harmful_hexphi", "triplets", "conversations")
