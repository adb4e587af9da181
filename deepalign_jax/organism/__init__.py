"""A model organism of shallow and deep safety alignment: the paper in miniature, on a CPU, in minutes.

    python -m deepalign_jax.organism --workdir DIR [--config.quick=True] [--config.seeds=N]

- `world`: the synthetic world — checkable benign tasks and harmless
  "forbidden" requests whose compliant answers name invented marker words.
- `build`: its BPE tokenizer (`tokenizers`) and an untrained Llama, saved as
  an HF directory.
- `judge`: the marker judge (ground truth) beside the paper's keyword judge,
  and exact-match utility.
- `layout`: where each stage reads and writes; the defaults every stage
  config of `configs/organism/` shares.
- `stages`: the pipeline, each stage run through the project's own train /
  evaluate / kl_depth entry points with a config file (alignment by SFT and
  by DPO, each with a strength sweep).
- `results`, `claims`, `report`: the numbers, the paper's claims with their
  thresholds, and REPORT.md with its figures beside the paper's (SPEC §7).
- `seeds`: several training seeds — each verdict's hold rate, and the report
  on the means over seeds that the main job writes.
"""

from deepalign_jax.organism.judge import MarkerJudge
from deepalign_jax.organism.layout import FINETUNES, Layout, Options, parse_arg
from deepalign_jax.organism.world import World, WorldConfig

__all__ = ["FINETUNES", "Layout", "MarkerJudge", "Options", "World", "WorldConfig", "parse_arg"]
