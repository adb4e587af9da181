"""Llama-2-7B-Chat LoRA fine-tuning on one 80 GB GPU (configs/recipes/llama2_harmful_lora_*.py):
rank-16 adapters on every projection, the base frozen in bf16, mesh {'data': 1, 'fsdp': 1, 'tensor': 1},
remat full, 16 × 4 rows × 512 tokens."""

from deepalign_jax.scale.targets import LLAMA2_7B, plan


def get_config():
  return plan(
    "llama2_7b_lora_1xh100",
    LLAMA2_7B,
    "1xH100",
    mesh={"data": 1, "fsdp": 1, "tensor": 1},
    remat="full",
    micro_batch_size=4,
    num_micro_batches=16,
    param_dtype="bfloat16",
    lora_rank=16,
  )
