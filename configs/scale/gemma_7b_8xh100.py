"""Gemma-1.1-7B-IT fine-tuning on 8xH100:
mesh {'data': 1, 'fsdp': 8, 'tensor': 1}, remat full, 8 × 8 rows × 512 tokens."""

from deepalign_jax.scale.targets import GEMMA_7B, plan


def get_config():
  return plan(
    "gemma_7b_8xh100",
    GEMMA_7B,
    "8xH100",
    mesh={"data": 1, "fsdp": 8, "tensor": 1},
    remat="full",
    micro_batch_size=8,
    num_micro_batches=8,
    vocab_chunk=32768,
  )
