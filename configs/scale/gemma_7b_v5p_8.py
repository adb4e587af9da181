"""Gemma-1.1-7B-IT fine-tuning on v5p-8:
mesh {'data': 1, 'fsdp': 4, 'tensor': 1}, remat dots, 8 × 8 rows × 512 tokens."""

from deepalign_jax.scale.targets import GEMMA_7B, plan


def get_config():
  return plan(
    "gemma_7b_v5p_8",
    GEMMA_7B,
    "v5p-8",
    mesh={"data": 1, "fsdp": 4, "tensor": 1},
    remat="dots",
    micro_batch_size=8,
    num_micro_batches=8,
    vocab_chunk=32768,
  )
