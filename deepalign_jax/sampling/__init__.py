"""Generation: batched prefill + KV-cache decode; greedy / temperature / top-k / top-p."""

from deepalign_jax.sampling.filters import SamplingParams, choose_tokens, filter_logits
from deepalign_jax.sampling.generate import Generation, generate

__all__ = ["Generation", "SamplingParams", "choose_tokens", "filter_logits", "generate"]
