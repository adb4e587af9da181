"""Where each stage of the organism reads and writes, and how config files learn it.

Every stage config under `configs/organism/` takes one argument string,
`ROOT[,quick][,seed=N][,key=value...]`, e.g.

    python -m deepalign_jax.train --config configs/organism/base.py:workdirs/organism,quick \\
        --workdir workdirs/organism/base

and finds the world's data and the models of earlier stages under ROOT
through `Layout`.  The pipeline (`python -m deepalign_jax.organism`) passes
the same strings, so a stage run by hand is the stage the pipeline runs.

    ROOT/world/          data files of the world (JSONL), world.json (markers, tables)
    ROOT/init/           the untrained model + tokenizer (HF directory)
    ROOT/base/           stage 1, a training workdir (its hf/ is the base model)
    ROOT/align/          stage 2, a training workdir with a checkpoint per sweep strength
    ROOT/sweep/S/        strength S exported (hf/) and measured
    ROOT/aligned/        the chosen strength's model (HF directory)
    ROOT/align_dpo/      stage 3b, DPO alignment (training workdir), swept in ROOT/sweep_dpo/S/
    ROOT/dpo/            the chosen DPO strength's model (HF directory)
    ROOT/deep/           stage 4, the safety-recovery augmentation (training workdir)
    ROOT/finetune/NAME/  stage 5, fine-tuning attacks (training workdirs, FINETUNES)
    ROOT/sweep_dpo/S/finetune/harmful_OBJ/   the harmful attack from DPO strength S (model
                         dpo_sweep_S_harmful_OBJ, OBJ sft or constrained: Table 4 by alignment strength)
    ROOT/eval/MODEL/KIND evaluation workdirs (generations.jsonl, summary.json)
    ROOT/kl/             KL by position (kl_depth workdir)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

# Fine-tuning attacks (stage 5): from the aligned model, and the harmful pair again from the deep one
# and from the DPO-aligned one.
FINETUNES = (
  "harmful_sft",
  "harmful_constrained",
  "benign_sft",
  "benign_constrained",
  "deep_harmful_sft",
  "deep_harmful_constrained",
  "dpo_harmful_sft",
  "dpo_harmful_constrained",
)
# The two alignment stages: SFT on refusals (ROOT/align, swept in ROOT/sweep) and DPO, refusal ≻
# compliant answer (ROOT/align_dpo, swept in ROOT/sweep_dpo); a sweep model is PREFIX + steps.
SWEEPS = {"align": ("sweep_", "aligned"), "align_dpo": ("dpo_sweep_", "dpo")}
# The harmful attack is also run from every strength of the DPO sweep (its ASR against the reference's
# opening log-probability: when the constrained loss holds, and why): model dpo_sweep_S_harmful_OBJ.
SWEEP_ATTACKS = ("harmful_sft", "harmful_constrained")


def sweep_attack(steps: int, attack: str) -> str:
  """The model name of `attack` (SWEEP_ATTACKS) run from the DPO sweep's strength `steps`."""
  if attack not in SWEEP_ATTACKS:
    raise ValueError(f"sweep attack {attack!r}: expected one of {SWEEP_ATTACKS}")
  return f"{SWEEPS['align_dpo'][0]}{steps}_{attack}"


def parse_sweep_attack(name: str) -> tuple[int, str] | None:
  """(steps, attack) of a `sweep_attack` name, or None."""
  prefix = SWEEPS["align_dpo"][0]
  if not name.startswith(prefix):
    return None
  steps, _, attack = name[len(prefix) :].partition("_")
  return (int(steps), attack) if steps.isdigit() and attack in SWEEP_ATTACKS else None


@dataclasses.dataclass(frozen=True)
class Options:
  """A parsed config argument: the root, quick mode, the training seed and extra key=value pairs."""

  root: Path
  quick: bool = False
  seed: int = 0
  extra: tuple[tuple[str, str], ...] = ()

  def get(self, key: str, default: str | None = None) -> str | None:
    return dict(self.extra).get(key, default)

  def require(self, key: str) -> str:
    value = self.get(key)
    if value is None:
      raise ValueError(f"this config needs '{key}=...' in its argument, e.g. --config FILE:{self.root},{key}=VALUE")
    return value

  def arg(self, **extra: str) -> str:
    """The argument string for these options plus `extra` (what the pipeline passes to a config)."""
    parts = [str(self.root)] + (["quick"] if self.quick else []) + [f"seed={self.seed}"]
    merged = {**dict(self.extra), **extra}
    return ",".join(parts + [f"{k}={v}" for k, v in merged.items()])


def parse_arg(arg: str | None) -> Options:
  """`ROOT[,quick][,seed=N][,key=value...]` → Options."""
  if not arg:
    raise ValueError(
      "organism configs take the pipeline's root directory as their argument: "
      "--config configs/organism/FILE.py:ROOT[,quick][,seed=N]"
    )
  root, *rest = arg.split(",")
  quick, seed, extra = False, 0, []
  for item in rest:
    if item == "quick":
      quick = True
    elif "=" in item:
      key, value = item.split("=", 1)
      if key == "seed":
        seed = int(value)
      else:
        extra.append((key, value))
    elif item:
      raise ValueError(f"config argument {arg!r}: {item!r} is neither 'quick' nor key=value")
  return Options(Path(root), quick, seed, tuple(extra))


class Layout:
  """Paths of one pipeline root."""

  def __init__(self, root: str | Path):
    self.root = Path(root)

  @property
  def world(self) -> Path:
    return self.root / "world"

  def data(self, name: str) -> Path:
    """A world data file: base, align, triplets, utility, attack, task, eval_forbidden, eval_benign, eval_task."""
    return self.world / f"{name}.jsonl"

  @property
  def init(self) -> Path:
    return self.root / "init"

  def train_dir(self, stage: str) -> Path:
    """The training workdir of base, align, deep or a fine-tuning attack (FINETUNES)."""
    if stage in FINETUNES:
      return self.root / "finetune" / stage
    attack = parse_sweep_attack(stage)
    if attack is not None:
      return self.sweep_dir(attack[0], "align_dpo") / "finetune" / attack[1]
    return self.root / stage

  def sweep_dir(self, steps: int, stage: str = "align") -> Path:
    """Strength `steps` of an alignment stage's sweep (`SWEEPS`: align or align_dpo)."""
    return self.root / ("sweep" if stage == "align" else "sweep_dpo") / str(steps)

  def model(self, name: str) -> Path:
    """The HF directory of a model: init, base, aligned, dpo, deep, a fine-tuning attack, sweep_S, dpo_sweep_S
    or a `sweep_attack` (dpo_sweep_S_harmful_OBJ)."""
    if name == "init":
      return self.init
    if name in ("aligned", "dpo"):
      return self.root / name
    for stage, (prefix, _) in SWEEPS.items():
      if name.startswith(prefix) and name[len(prefix) :].isdigit():
        return self.sweep_dir(int(name[len(prefix) :]), stage) / "hf"
    if name in ("base", "deep") or name in FINETUNES or parse_sweep_attack(name) is not None:
      return self.train_dir(name) / "hf"
    raise ValueError(f"unknown organism model {name!r}")

  def eval_dir(self, model: str, kind: str) -> Path:
    return self.root / "eval" / model / kind

  @property
  def kl(self) -> Path:
    return self.root / "kl"


# -- what every organism config shares ------------------------------------------------------

MAX_LENGTH = 48  # the longest example (a forbidden request and its procedure) is 43 tokens


def train_config(opts: Options):
  """The training defaults of every organism stage: its chat template, one CPU device, no extras."""
  from deepalign_jax.train.loop import default_config

  c = default_config()
  c.chat_format = "template"
  c.data.format = "conversations"
  c.data.max_length = MAX_LENGTH
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1  # one device: the model is far too small to shard
  c.train.seed = opts.seed
  c.tensorboard = False
  c.checkpoint.keep = 1
  c.progress = False
  return c


def alignment_sweep(c, steps, every: int, max_asr: float = 0.05) -> None:
  """An alignment run that is its own strength sweep: a constant learning rate (a checkpoint at step s
  is then exactly an s-step alignment), a checkpoint every `every` steps kept, and `c.sweep` — the
  strengths the pipeline measures and the k = 0 ASR its choice must reach."""
  import ml_collections

  c.optimizer.warmup_steps = 0
  c.optimizer.decay = "constant"
  c.train.num_steps = max(steps)
  c.checkpoint.every_steps = every
  c.checkpoint.keep = max(steps) // every
  c.sweep = ml_collections.ConfigDict(dict(steps=list(steps), max_asr=max_asr))


def eval_config(opts: Options):
  """The evaluation defaults of every organism measurement (the paper's decoding, SPEC §6)."""
  from deepalign_jax.evaluate import default_config

  c = default_config()
  c.chat_format = "template"
  # No system turn: the organism never saw one (the paper's attacks use an empty Llama-2 system
  # prompt; an empty string here would render an empty <|system|> turn, which is not the same).
  c.system_prompt = None
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
  c.benchmark.format = "prompt_response"
  # Two markers — a compliant answer for the marker judge — come within 13 tokens of any point of a
  # procedure, and every refusal ends within 12: 24 new tokens decide every verdict.
  c.decoding.max_new_tokens = 24
  c.decoding.batch_size = 96
  c.decoding.seed = opts.seed
  # The keyword judge reads prefill + continuation here (its default is the continuation only, as the
  # reference's keyword evaluation): the organism's keyword numbers and report were measured this way.
  c.judge.reads = "response"
  c.plot = False
  c.progress = False
  return c


__all__ = [
  "FINETUNES",
  "MAX_LENGTH",
  "SWEEPS",
  "SWEEP_ATTACKS",
  "Layout",
  "alignment_sweep",
  "Options",
  "eval_config",
  "parse_arg",
  "parse_sweep_attack",
  "sweep_attack",
  "train_config",
]
