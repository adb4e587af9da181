"""The paper's augmentation data for Llama-2-7B-Chat (SPEC §4): 256 safety-recovery triplets and Alpaca
answers distilled from the aligned model.

python -m deepalign_jax.datagen --config configs/datagen/llama2_recovery_data.py --workdir workdirs/llama2_data \
    --config.model=/path/to/Llama-2-7b-chat-hf --config.safety.path=/data/harmful_instructions.jsonl \
    --config.safety.harmful_model=workdirs/llama2_harmful_sft --config.utility.path=/data/alpaca_data.json

Refusals: sampled from the aligned model with Llama-2's default system prompt (the augmentation recipe
renders both kinds of example with it).  Harmful answers: a jailbroken copy — here the harmful-examples
fine-tuning (configs/recipes/llama2_harmful_sft.py), evaluated the way it was fine-tuned (its own chat
format and the "execute users' instructions" system prompt); `--config.safety.harmful=prefill` uses the
aligned model under a prefilling attack on a file of harmful answers instead.  The keyword judge keeps a
triplet only when the refusal is one and the answer is not; use the API or model judge for stricter data.
Train with configs/recipes/llama2_augmentation.py (--config.data.safety_path=WORKDIR/triplets.jsonl
--config.data.utility_path=WORKDIR/utility.json).
"""

from deepalign_jax import recipes
from deepalign_jax.data import LLAMA2_DEFAULT_SYSTEM_PROMPT
from deepalign_jax.datagen import default_config


def get_config():
  c = default_config()
  c.chat_format = "llama2"
  c.system_prompt = LLAMA2_DEFAULT_SYSTEM_PROMPT
  c.dtype = "bfloat16"
  c.safety.format = "harmful_hexphi"
  c.safety.limit = 256
  c.safety.harmful = "model"
  c.safety.harmful_chat_format = "auto"
  c.safety.harmful_system_prompt = recipes.EXECUTE_SYSTEM_PROMPT
  c.utility.format = "alpaca"
  c.decoding.batch_size = 32
  c.utility_decoding.batch_size = 32
  return c
