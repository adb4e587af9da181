"""Building the paper's data from models: `python -m deepalign_jax.datagen --config configs/datagen/<name>.py
--workdir DIR`.

settings.py (the config, the instructions it reads, its checks) · build.py (generate, judge, keep or drop,
resumable; its docstring describes the outputs).  D_H: safety-recovery triplets (instruction, harmful
answer, refusal) for `objective=augmented`'s `data.safety_path`; D_B: utility answers distilled from the
aligned model, Alpaca JSON for `data.utility_path` (SPEC §4).
"""

from deepalign_jax.datagen.build import STAGES, run
from deepalign_jax.datagen.settings import HARMFUL_SOURCES, default_config

__all__ = ["HARMFUL_SOURCES", "STAGES", "default_config", "run"]
