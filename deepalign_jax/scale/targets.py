"""Scale-out plans: the 7B model shapes, the target chips, and `plan(...)` to combine them.

Each `configs/scale/<model>_<target>.py` picks one model and one target; check
it with `python -m deepalign_jax.scale.plan --config configs/scale/<file>.py`.
"""

import ml_collections

# config.json of the released checkpoints (the fields the decoder reads).
LLAMA2_7B = dict(
  model_type="llama",
  vocab_size=32000,
  hidden_size=4096,
  intermediate_size=11008,
  num_hidden_layers=32,
  num_attention_heads=32,
  num_key_value_heads=32,
  max_position_embeddings=4096,
  rms_norm_eps=1e-5,
  rope_theta=10000.0,
  tie_word_embeddings=False,
)
GEMMA_7B = dict(
  model_type="gemma",
  vocab_size=256000,
  hidden_size=3072,
  intermediate_size=24576,
  num_hidden_layers=28,
  num_attention_heads=16,
  num_key_value_heads=16,
  head_dim=256,
  max_position_embeddings=8192,
  rms_norm_eps=1e-6,
  rope_theta=10000.0,
  hidden_activation="gelu_pytorch_tanh",
)

# `--help` lines of the keys `plan` builds from its arguments.
PLAN_KEY_DOCS = {
  **{f"model.{k}": "the model's config.json field" for k in {**LLAMA2_7B, **GEMMA_7B}},
  "mesh.data": "data-parallel ways",
  "mesh.fsdp": "fully sharded ways",
  "mesh.tensor": "tensor-parallel ways",
}

# chips per slice and HBM per chip (GiB)
TARGETS = {
  "v4-32": dict(chip="TPU v4", devices=16, hbm_gib=32.0),
  "v5e-4": dict(chip="TPU v5e", devices=4, hbm_gib=16.0),
  "v5e-16": dict(chip="TPU v5e", devices=16, hbm_gib=16.0),
  "v5p-8": dict(chip="TPU v5p", devices=4, hbm_gib=95.0),
  "8xH100": dict(chip="H100 80GB", devices=8, hbm_gib=80.0),
  "1xH100": dict(chip="H100 80GB", devices=1, hbm_gib=80.0),
}


def plan(
  name,
  model,
  target,
  *,
  mesh,
  remat,
  micro_batch_size,
  num_micro_batches,
  vocab_chunk=0,
  seq_len=512,
  dtype="bfloat16",
  param_dtype="float32",
  lora_rank=0,
):
  """A plan: the paper's fine-tuning step (constrained loss, AdamW) for `model` on `target`.

  Global batch = num_micro_batches × micro_batch_size rows of seq_len tokens
  (the paper's recipes use 64 rows per step).  lora_rank > 0: the LoRA recipes' step instead — adapters
  of that rank (α 32) on every projection of every layer trained alone, the base frozen in `param_dtype`,
  π_ref the base with the adapters off in the same step.
  """
  c = ml_collections.ConfigDict()
  c.name = name  # the plan's name in the table
  c.model = dict(model)  # the model's config.json fields
  c.chip = TARGETS[target]["chip"]  # the target accelerator
  c.devices = TARGETS[target]["devices"]  # chips of the slice (simulated CPU devices when checking)
  c.hbm_gib = TARGETS[target]["hbm_gib"]  # memory per chip
  c.usable_fraction = 0.9  # leave room for the runtime and fragmentation
  c.mesh = ml_collections.ConfigDict(mesh)
  c.remat = remat  # none | dots | full
  c.dtype = dtype  # compute dtype
  c.param_dtype = param_dtype  # parameter (master weight) dtype
  c.objective = "constrained"  # the train step's loss: sft | constrained
  c.micro_batch_size = micro_batch_size  # rows per forward/backward
  c.num_micro_batches = num_micro_batches  # micro-batches per step (gradient accumulation)
  c.seq_len = seq_len  # tokens per row
  c.vocab_chunk = vocab_chunk  # > 0: log-probs this many vocabulary columns at a time
  c.lora = ml_collections.ConfigDict(
    dict(
      rank=lora_rank,  # LoRA adapters of this rank trained alone on the frozen base; 0: full fine-tuning
      alpha=32.0,  # their scale alpha / rank (no effect on memory)
      targets=["q", "k", "v", "o", "gate", "up", "down"],  # the projections adapted
    )
  )
  c.json = ""  # also write the figures to this JSON file
  return c


def example_plan() -> ml_collections.ConfigDict:
  """A plan with every key (what `--help` lists): Llama-2-7B on 8 H100s."""
  return plan(
    "llama2_7b_8xh100",
    LLAMA2_7B,
    "8xH100",
    mesh=dict(data=1, fsdp=8, tensor=1),
    remat="dots",
    micro_batch_size=8,
    num_micro_batches=8,
  )
