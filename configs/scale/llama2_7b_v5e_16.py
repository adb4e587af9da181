"""Llama-2-7B-Chat fine-tuning on v5e-16:
mesh {'data': 1, 'fsdp': 16, 'tensor': 1}, remat full, 4 × 16 rows × 512 tokens."""

from deepalign_jax.scale.targets import LLAMA2_7B, plan


def get_config():
  return plan(
    "llama2_7b_v5e_16",
    LLAMA2_7B,
    "v5e-16",
    mesh={"data": 1, "fsdp": 16, "tensor": 1},
    remat="full",
    micro_batch_size=16,
    num_micro_batches=4,
  )
