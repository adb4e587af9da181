"""The README's main job runs end to end (shortened)."""

from deepalign_jax import demo
from tests.real_checkpoints import real_checkpoint


def test_demo_generates_plain_and_prefilled(capsys):
  assert demo.main(["--model", str(real_checkpoint("smollm2")), "--max_new_tokens", "4", "--prefill", "Sure! The"]) == 0
  out = capsys.readouterr().out
  assert "--- plain prompt:" in out and "--- prefilled assistant turn:" in out
  assert "<|im_start|>assistant\\nSure! The'" in out
