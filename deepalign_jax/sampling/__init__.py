"""Generation: batched prefill + KV-cache decode; greedy / temperature / top-k / top-p."""

from deepalign_jax.sampling.filters import SamplingParams, choose_tokens, filter_logits
from deepalign_jax.sampling.generate import Generation, check_decoding, generate
from deepalign_jax.sampling.sampler import Sample, Sampler

__all__ = [
  "Generation",
  "Sample",
  "Sampler",
  "SamplingParams",
  "check_decoding",
  "choose_tokens",
  "filter_logits",
  "generate",
]
