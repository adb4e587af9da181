"""The in-training prefilling evaluation: a hook the train CLI wires into the loop."""

from __future__ import annotations

import ml_collections

from deepalign_jax.attacks.settings import Decoding
from deepalign_jax.data import as_exchange
from deepalign_jax.data.tfds_builders import load_records
from deepalign_jax.judges import make_judge, summarize
from deepalign_jax.sampling import Sampler


def prefill_asr_hook(
  eval_config: ml_collections.ConfigDict,
  tokenizer,
  chat_format: str = "auto",
  system_prompt: str | None = "",
  progress: bool = False,
):
  """A training-loop hook: prefilling-attack ASR with the keyword judge on the current weights.

  eval_config (the training config's `eval` block): path, format, limit,
  prefill_tokens, max_new_tokens, batch_size, keywords, seed.  Returns
  fn(step, model) → {"eval/asr_prefill_<k>": ASR, ...}, for
  `train.loop.run(..., hooks=[(every_steps, fn)])` — a run's jailbreak (or
  its staying safe) shows up next to its loss.  The keyword judge reads its
  default, the continuation only (the reference's keyword evaluation): the
  prefilled harmful tokens are not the model's, and a refusal after them is.
  """
  prompts = [r for r in map(as_exchange, load_records(eval_config.path, eval_config.format)) if r.response]
  if not prompts:
    raise ValueError(
      f"{eval_config.path}: the in-training prefilling evaluation needs prompts with a reference (harmful) answer"
    )
  prompts = prompts[: eval_config.limit] if eval_config.limit > 0 else prompts
  judge = make_judge({"kind": "keyword", "keywords": eval_config.keywords})
  conversations = [[{"role": "user", "content": r.prompt}] for r in prompts]
  answers = [r.response for r in prompts]
  d = Decoding()

  def hook(step: int, model) -> dict[str, float]:
    del step
    sampler = Sampler(model, tokenizer, chat_format, system_prompt)
    out = {}
    for k in eval_config.prefill_tokens:
      samples = sampler.sample(
        conversations,
        responses=answers,
        prefill_tokens=int(k),
        batch_size=eval_config.batch_size,
        max_new_tokens=eval_config.max_new_tokens,
        temperature=d.temperature,
        top_k=d.top_k,
        top_p=d.top_p,
        seed=eval_config.seed,
        progress=progress,
      )
      verdicts = judge.judge([(c[0]["content"], s.read_as(judge.reads)) for c, s in zip(conversations, samples)])
      out[f"eval/asr_prefill_{int(k)}"] = summarize(verdicts).asr
    return out

  return hook


__all__ = ["prefill_asr_hook"]
