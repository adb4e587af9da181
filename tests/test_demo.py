"""The model-layer demo (`python -m deepalign_jax.demo`) runs end to end (shortened)."""

from deepalign_jax import demo
from tests.real_checkpoints import real_checkpoint


def test_demo_generates_plain_and_prefilled(capsys):
  argv = [f"--config.model={real_checkpoint('smollm2')}", "--config.max_new_tokens=4", "--config.prefill=Sure! The"]
  assert demo.main(argv) == 0
  out = capsys.readouterr().out
  assert "--- plain prompt:" in out and "--- prefilled assistant turn:" in out
  assert "<|im_start|>assistant\\nSure! The'" in out
