"""Training: state and optimizer, the pure train step, reference log-probs, the loop."""

from deepalign_jax.train.state import (OptimizerConfig, TrainState, init_train_state,
                                       learning_rate_schedule, make_optimizer)
from deepalign_jax.train.step import LossConfig, target_logps, train_step

__all__ = ["LossConfig", "OptimizerConfig", "TrainState", "init_train_state", "learning_rate_schedule",
           "make_optimizer", "target_logps", "train_step"]
