"""Train-step speed: deepalign_jax vs Tunix's Llama (a JAX/Flax NNX peer), same weights, tokens and step.

    python benchmarks/tunix_step.py [--model DIR] [--batch 4] [--seq 256] [--rounds 5] [--unroll]

Needs `google-tunix` (0.1.7 was measured; `pip install --no-deps google-tunix==0.1.7 google-metrax clu
jaxtyping wadler_lindig sentencepiece perfetto` installs it beside this project's JAX and Flax without
touching them).  Without it the script says so and exits.

Both sides run one SFT optimizer step on the same fp32 weights (SmolLM2-135M-Instruct's by default, copied
into `tunix.models.llama3.model.Llama3`) and the same tokens: forward, per-token log-probs of the response
(the last three quarters of each row), their mean negative, backward, global-norm clipping at 1.0 and AdamW
(lr 2e-5, b1 0.5), in one `jax.jit` with the state donated.  Tunix's side is written the way its trainer
does it: the model's full [B, T, V] logits, `log_softmax`, the targets picked, `optax` on the parameters.
Ours is `deepalign_jax.train.train_step` (the layer scan, the chunked vocabulary head).

The two sides alternate step by step for --rounds rounds, so the machine's drift hits both; the figure is
each side's best step.  The first call of each is its compile time (plus one step).  Tunix 0.1.7's RoPE
ignores the config's theta (it uses 10⁶; SmolLM2's is 10⁵), so the two losses printed differ a little; the
FLOPs are the same.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np


def tunix_available() -> bool:
  try:
    import tunix.models.llama3.model  # noqa: F401
  except ImportError:
    return False
  return True


def tunix_model(cfg, params):
  """Tunix's Llama3 with our loaded parameters (nnx.State of the stacked layers) copied in."""
  from flax import nnx
  from tunix.models.llama3 import model as tunix_llama

  tcfg = tunix_llama.ModelConfig(
    num_layers=cfg.num_layers,
    vocab_size=cfg.vocab_size,
    embed_dim=cfg.hidden_size,
    hidden_dim=cfg.intermediate_size,
    num_heads=cfg.num_heads,
    head_dim=cfg.head_dim,
    num_kv_heads=cfg.num_kv_heads,
    rope_theta=int(cfg.rope_global.theta),
    norm_eps=cfg.norm_eps,
    weight_tying=cfg.tie_embeddings,
  )
  model = nnx.eval_shape(lambda: tunix_llama.Llama3(tcfg, rngs=nnx.Rngs(0)))
  layers = params["layers"]

  def value(x, layer=None):  # a copy (of one layer's slice): our step donates (deletes) its own arrays
    array = x.get_value() if hasattr(x, "get_value") else x
    return jnp.array(array if layer is None else array[layer], copy=True)

  model.embedder.input_embedding.set_value(value(params["embed"]))
  model.final_norm.w.set_value(value(params["final_norm"]["scale"]))
  if not cfg.tie_embeddings:
    model.lm_head.w.set_value(value(params["head"]))
  for i, layer in enumerate(model.layers):
    layer.input_layernorm.w.set_value(value(layers["attn_in_norm"]["scale"], i))
    layer.post_attention_layernorm.w.set_value(value(layers["mlp_in_norm"]["scale"], i))
    for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj")):
      getattr(layer.attn, theirs).w.set_value(value(layers["attn"][ours], i))
    for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
      getattr(layer.mlp, theirs).kernel.set_value(value(layers["mlp"][ours], i))
  return model


def measure(path: str, *, batch: int = 4, seq: int = 256, rounds: int = 5, unroll: bool = False) -> dict:
  """Both sides' best step (s), compile (s) and first loss, alternating: {"ours": {...}, "tunix": {...}}."""
  import optax
  from flax import nnx

  from deepalign_jax.models import load_pretrained
  from deepalign_jax.train import LossConfig, OptimizerConfig, init_train_state, make_optimizer, train_step

  model, cfg = load_pretrained(path, dtype=jnp.float32)
  if cfg.family != "llama" or cfg.qk_norm or cfg.attn_softcap or cfg.sliding_window:
    raise SystemExit(f"{path}: Tunix's Llama3 takes a plain Llama config, got family {cfg.family!r}")
  model.scan_layers = not unroll
  rng = np.random.default_rng(0)
  b, t = batch, seq
  ids = rng.integers(10, cfg.vocab_size - 10, (b, t)).astype(np.int32)
  attention = np.ones((b, t), np.int32)
  loss_mask = np.zeros((b, t), np.int32)
  loss_mask[:, t // 4 :] = 1  # a quarter prompt, the rest response

  # Tunix's side first: its copy of the weights must be made before ours are donated.
  tmodel = tunix_model(cfg, nnx.state(model, nnx.Param))
  t_graphdef, t_params = nnx.split(tmodel, nnx.Param)
  t_opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(2e-5, b1=0.5, weight_decay=0.0))
  t_state = (t_params, t_opt.init(t_params))
  positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  causal = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
  targets, target_mask = jnp.asarray(ids[:, 1:]), jnp.asarray(loss_mask[:, 1:], jnp.float32)

  def tunix_loss(params, tokens):
    logits, _ = nnx.merge(t_graphdef, params)(tokens, positions, None, causal)
    logps = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logps, targets[..., None], axis=-1)[..., 0]
    return -(picked * target_mask).sum() / target_mask.sum()

  @functools.partial(jax.jit, donate_argnums=0)
  def tunix_step(state, tokens):
    params, opt_state = state
    loss, grads = jax.value_and_grad(tunix_loss)(params, tokens)
    updates, opt_state = t_opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  optimizer = make_optimizer(OptimizerConfig(learning_rate=2e-5, b1=0.5, warmup_steps=0, total_steps=100))
  graphdef, state = init_train_state(model, optimizer)
  our_step = jax.jit(
    functools.partial(train_step, graphdef, optimizer=optimizer, loss_config=LossConfig(objective="sft")),
    donate_argnums=0,
  )
  batch_arrays = {
    "input_ids": jnp.asarray(ids[None]),
    "attention_mask": jnp.asarray(attention[None]),
    "loss_mask": jnp.asarray(loss_mask[None]),
  }
  tokens = jnp.asarray(ids)
  holder = {"ours": state, "tunix": t_state}

  def run_ours():
    holder["ours"], metrics = our_step(holder["ours"], batch_arrays)
    return float(metrics["loss"])

  def run_tunix():
    holder["tunix"], loss = tunix_step(holder["tunix"], tokens)
    return float(loss)

  sides = {"ours": run_ours, "tunix": run_tunix}
  result = {name: {"times": []} for name in sides}
  for name, fn in sides.items():
    start = time.perf_counter()
    result[name]["loss"] = fn()
    result[name]["compile"] = time.perf_counter() - start
  for _ in range(rounds):
    for name, fn in sides.items():
      start = time.perf_counter()
      fn()
      result[name]["times"].append(time.perf_counter() - start)
  for name in sides:
    result[name]["best"] = min(result[name]["times"])
  result["cfg"] = cfg
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--unroll", action="store_true", help="our layers unrolled too (scan_layers=False)")
  args = parser.parse_args()
  if not tunix_available():
    raise SystemExit("google-tunix is not installed (see this script's docstring for the install line)")
  from deepalign_jax.models.gguf import packaged_checkpoint

  path = args.model or str(packaged_checkpoint("smollm2"))
  result = measure(path, batch=args.batch, seq=args.seq, rounds=args.rounds, unroll=args.unroll)
  tokens = args.batch * args.seq
  print(
    f"\nmodel {path}, fp32, batch {args.batch} x {args.seq} tokens, SFT + AdamW, {args.rounds} alternating rounds, "
    f"our layers {'unrolled' if args.unroll else 'scanned'}, device {jax.devices()[0].device_kind}"
  )
  print(f"{'':26s} {'tokens/s':>9s} {'best s':>8s} {'all steps (s)':>28s} {'compile+1 s':>12s} {'loss':>8s}")
  for name, label in (("ours", "deepalign_jax"), ("tunix", "Tunix Llama3 (unrolled)")):
    r = result[name]
    steps = " ".join(f"{x:.2f}" for x in r["times"])
    print(f"{label:26s} {tokens / r['best']:9.1f} {r['best']:8.3f} {steps:>28s} {r['compile']:12.1f} {r['loss']:8.4f}")
  print(f"{'ratio ours / Tunix':26s} {result['tunix']['best'] / result['ours']['best']:9.2f}")


if __name__ == "__main__":
  main()
