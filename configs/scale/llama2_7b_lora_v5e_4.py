"""Llama-2-7B-Chat LoRA fine-tuning on a TPU v5e-4 slice (configs/recipes/llama2_harmful_lora_*.py):
rank-16 adapters on every projection, the base frozen in bf16 and sharded over the 4 chips,
mesh {'data': 1, 'fsdp': 4, 'tensor': 1}, remat full, 16 × 4 rows × 512 tokens."""

from deepalign_jax.scale.targets import LLAMA2_7B, plan


def get_config():
  return plan(
    "llama2_7b_lora_v5e_4",
    LLAMA2_7B,
    "v5e-4",
    mesh={"data": 1, "fsdp": 4, "tensor": 1},
    remat="full",
    micro_batch_size=4,
    num_micro_batches=16,
    param_dtype="bfloat16",
    lora_rank=16,
  )
