"""`python -m deepalign_jax.train` with `config.lora`: adapters-only checkpoints with the base model's
fingerprint, merged and PEFT exports that transformers and peft load, resume, the reference for free, the
run identity, every objective."""

import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import peft
import pytest
import torch
import transformers

from deepalign_jax.identity import RerunRefused
from deepalign_jax.models import load_pretrained
from deepalign_jax.models.sources import load_model, resolve_source
from deepalign_jax.train.loop import default_config, run, run_identity
from tests.tiny_models import override, tiny_family_model
from tests.train.test_loop import ASSETS, _metrics


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("lora_models")
  return {
    "llama2": tiny_family_model(root / "llama2", "llama2", seed=0),
    "llama2_other": tiny_family_model(root / "llama2_other", "llama2", seed=1),
  }


def _config(model_dir, **overrides):
  c = default_config()
  c.model = str(model_dir)
  c.chat_format = "llama2"
  c.objective = "constrained_sft"
  c.data.path = str(ASSETS / "conversations.jsonl")
  c.data.max_length = 96
  c.train.batch_size, c.train.micro_batch_size = 4, 2
  c.train.epochs, c.train.num_steps = 1, 4
  c.optimizer.learning_rate, c.optimizer.warmup_steps = 1e-2, 1
  c.progress = False
  c.tensorboard = False
  c.mesh.fsdp, c.mesh.tensor = 2, -1  # 8 simulated devices: rows over fsdp=2, heads and MLP over 4
  # Adapters on layer 1 of 2 only (the stacked adapters are spread onto the layers), with dropout.
  c.lora.rank, c.lora.alpha, c.lora.dropout, c.lora.layers = 4, 8.0, 0.1, [1]
  return override(c, overrides)


@pytest.fixture(scope="module")
def straight(models, tmp_path_factory):
  """A finished 4-step LoRA run of the constrained objective (checkpoints at 2 and 4)."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  run(_config(models["llama2"], **{"checkpoint.every_steps": 2}), workdir)
  return workdir


def _tree(item_dir):
  """{dotted name: shape} of an Orbax item's arrays, from its metadata (nothing restored)."""
  tree = ocp.StandardCheckpointer().metadata(item_dir).item_metadata
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p): tuple(x.shape) for p, x in flat}


def _torch_logits(model, ids):
  with torch.no_grad():
    return model(input_ids=torch.as_tensor(ids)).logits.float().numpy()


IDS = np.array([[1, 5, 9, 14, 30, 2, 7, 11, 40, 3]])


def test_a_lora_run_checkpoints_adapters_only_and_exports_what_transformers_and_peft_load(models, straight):
  summary = json.loads((straight / "summary.json").read_text())
  assert summary["finished"] and summary["steps_done"] == 4
  # Checkpoints and params/ hold the adapters (layer 1's: a stack of 1) and their AdamW moments only.
  state = _tree(straight / "checkpoints/4/state")
  params = {k: v for k, v in state.items() if k.startswith("params.")}
  assert params and all(k.startswith("params.lora.") for k in params), sorted(state)[:5]
  assert {v[0] for v in params.values()} == {1}
  arrays = [k for k, shape in state.items() if k.startswith("opt_state.") and shape]  # not Adam's counts
  assert len(arrays) == 2 * len(params) and all(".lora." in k for k in arrays), arrays
  assert all(k.startswith("lora.") for k in _tree(straight / "params"))
  meta = json.loads((straight / "checkpoints/4/meta/metadata").read_text())
  assert meta["base_model"] == resolve_source(str(models["llama2"])).fingerprint()
  # The run identity names the LoRA settings; the reference came from the base, in the step.
  identity = json.loads((straight / "run.json").read_text())["identity"]
  assert (identity["config.lora.rank"], identity["config.lora.layers"]) == (4, [1])
  assert not (straight / "reference_logps.npz").exists()
  metrics = _metrics(straight)
  assert metrics[0]["mean_weight"] == pytest.approx(1.0, abs=1e-6)  # Δ = 0 at B = 0, up to fp32 rounding
  assert metrics[-1]["mean_weight"] != pytest.approx(1.0, abs=1e-4)

  # adapter/ is a PEFT adapter directory on the starting model; hf/ the merged model; both say the same.
  config = json.loads((straight / "adapter/adapter_config.json").read_text())
  assert (config["r"], config["lora_alpha"], config["layers_to_transform"]) == (4, 8.0, [1])
  torch_base = transformers.AutoModelForCausalLM.from_pretrained(models["llama2"], attn_implementation="eager")
  base_logits = _torch_logits(torch_base, IDS)
  with_adapter = _torch_logits(peft.PeftModel.from_pretrained(torch_base, straight / "adapter").eval(), IDS)
  merged = _torch_logits(
    transformers.AutoModelForCausalLM.from_pretrained(straight / "hf", attn_implementation="eager"), IDS
  )
  scale = np.abs(merged).max()
  assert np.abs(with_adapter - base_logits).max() > 1e-3 * scale  # training moved the model
  assert np.abs(with_adapter - merged).max() <= 1e-4 * scale
  # The workdir as a model source (evaluate, the analyses): its base with the adapters merged.
  ours, _, source = load_model(straight)
  assert (source.kind, source.step) == ("training", None)
  assert np.abs(np.asarray(ours(IDS)) - merged).max() <= 1e-4 * scale


def test_a_resumed_lora_run_equals_the_uninterrupted_one(models, straight, tmp_path):
  """Dropout on: its draws depend on the step only, so the resumed run draws what the straight one did."""
  resumed = tmp_path / "resumed"
  first = run(_config(models["llama2"], **{"train.stop_after_steps": 2, "checkpoint.every_steps": 1}), resumed)
  assert not first["finished"] and not (resumed / "hf").exists() and not (resumed / "adapter").exists()
  # An unfinished workdir is read at its latest checkpoint: the starting model plus its adapters.
  halfway, _, source = load_model(resumed)
  base, _ = load_pretrained(models["llama2"])
  assert source.step == 2 and np.abs(np.asarray(halfway(IDS)) - np.asarray(base(IDS))).max() > 1e-4
  second = run(_config(models["llama2"]), resumed)
  assert second["finished"]
  assert [m["loss"] for m in _metrics(resumed)] == pytest.approx([m["loss"] for m in _metrics(straight)], rel=1e-6)
  a, _ = load_pretrained(straight / "hf")
  b, _ = load_pretrained(resumed / "hf")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_the_cached_reference_trains_as_the_adapters_off_one(models, straight, tmp_path):
  workdir = tmp_path / "cached"
  run(_config(models["llama2"], **{"lora.reference": "cache"}), workdir)
  assert (workdir / "reference_logps.npz").exists()
  cached, online = _metrics(workdir), _metrics(straight)
  for key in ("loss", "grad_norm", "mean_weight"):
    assert [m[key] for m in cached] == pytest.approx([m[key] for m in online], rel=1e-5), key


def test_lora_settings_are_part_of_the_run_identity(models, straight, tmp_path):
  target = tmp_path / "run"
  shutil.copytree(straight, target)
  with pytest.raises(RerunRefused, match=r"config\.lora\.rank: 4 -> 8"):
    run(_config(models["llama2"], **{"lora.rank": 8}), target)
  with pytest.raises(RerunRefused, match=r"config\.lora\.targets: \[.*\] -> \[\"q\", \"v\"\]"):
    run(_config(models["llama2"], **{"lora.targets": ["q", "v"]}), target)
  # Without adapters the LoRA keys are no part of it: full fine-tuning runs keep the identity they had.
  source = resolve_source(str(models["llama2"]))
  full = run_identity(_config(models["llama2"], **{"lora.rank": 0, "lora.alpha": 99.0}), source)
  assert not [k for k in full if k.startswith("config.lora")]


def test_adapters_resume_only_onto_the_base_model_they_trained_on(models, straight, tmp_path):
  checkpoints = tmp_path / "checkpoints"
  shutil.copytree(straight / "checkpoints", checkpoints)
  config = _config(
    models["llama2_other"], **{"checkpoint.directory": str(checkpoints), "rerun": "change", "train.num_steps": 6}
  )
  with pytest.raises(RerunRefused, match=r"its LoRA adapters were trained on the base model with fingerprint \w+"):
    run(config, tmp_path / "run")


@pytest.mark.parametrize(
  "overrides,pattern",
  [
    ({"lora.rank": -1}, r"^config\.lora\.rank must be an integer >= 0 \(0: full fine-tuning\), got -1$"),
    ({"lora.reference": "base"}, r"^config\.lora\.reference must be one of \('adapters_off', 'cache'\), got 'base'$"),
    ({"lora.targets": ["q", "attn"]}, r"^config\.lora\.targets: unknown projection 'attn'; expected some of q, k,"),
    ({"lora.dropout": 1.0}, r"^config\.lora\.dropout must be in \[0, 1\), got 1\.0$"),
    ({"lora.layers": [0, 2]}, r"^config\.lora\.layers: layer 2 does not exist; the model has layers 0\.\.1$"),
  ],
)
def test_bad_lora_settings_are_refused_in_one_line(models, tmp_path, overrides, pattern):
  with pytest.raises(ValueError, match=pattern):
    run(_config(models["llama2"], **overrides), tmp_path / "run")


@pytest.mark.parametrize("objective", ["sft", "augmented", "dpo"])
def test_every_objective_trains_with_lora(models, tmp_path, objective):
  overrides = {"objective": objective, "train.num_steps": 2, "lora.dropout": 0.0, "lora.layers": []}
  if objective == "augmented":
    overrides.update(
      {
        "data.safety_path": str(ASSETS / "triplets.jsonl"),
        "data.utility_path": str(ASSETS / "utility.json"),
        "data.safety_per_step": 2,
        "data.utility_per_step": 2,
      }
    )
  if objective == "dpo":
    overrides.update({"data.path": str(ASSETS / "preferences.jsonl"), "data.format": "preferences"})
  summary = run(_config(models["llama2"], **overrides), tmp_path / "run")
  assert summary["finished"] and (tmp_path / "run/adapter/adapter_model.safetensors").exists()
  metrics = _metrics(tmp_path / "run")
  assert all(np.isfinite(m["loss"]) and m["grad_norm"] > 0 for m in metrics)
  if objective == "dpo":  # π = π_ref at step 1: the base with its adapters off is the policy itself
    # up to fp32 rounding: the adapters-on and adapters-off programs are compiled apart (measured 4e-7)
    assert metrics[0]["loss"] == pytest.approx(np.log(2), rel=1e-6)
    assert metrics[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5)
