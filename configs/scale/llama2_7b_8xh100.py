"""Llama-2-7B-Chat fine-tuning on 8xH100:
mesh {'data': 1, 'fsdp': 8, 'tensor': 1}, remat dots, 8 × 8 rows × 512 tokens."""

from deepalign_jax.scale.targets import LLAMA2_7B, plan


def get_config():
  return plan(
    "llama2_7b_8xh100",
    LLAMA2_7B,
    "8xH100",
    mesh={"data": 1, "fsdp": 8, "tensor": 1},
    remat="dots",
    micro_batch_size=8,
    num_micro_batches=8,
  )
