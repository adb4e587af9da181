"""Gemma-1.1-7B-IT fine-tuning on v4-32:
mesh {'data': 1, 'fsdp': 16, 'tensor': 1}, remat full, 4 × 16 rows × 512 tokens."""

from deepalign_jax.scale.targets import GEMMA_7B, plan


def get_config():
  return plan(
    "gemma_7b_v4_32",
    GEMMA_7B,
    "v4-32",
    mesh={"data": 1, "fsdp": 16, "tensor": 1},
    remat="full",
    micro_batch_size=16,
    num_micro_batches=4,
    vocab_chunk=32768,
  )
