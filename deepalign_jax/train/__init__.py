"""Training: state and optimizer, the pure train step, reference log-probs, the loop."""

from deepalign_jax.train.state import (
  OptimizerConfig,
  TrainState,
  init_train_state,
  learning_rate_at,
  learning_rate_schedule,
  make_optimizer,
  optimizer_hyperparameters,
)
from deepalign_jax.train.step import LossConfig, shared_train_step, split_loss_config, target_logps, train_step

__all__ = [
  "LossConfig",
  "OptimizerConfig",
  "TrainState",
  "init_train_state",
  "learning_rate_at",
  "learning_rate_schedule",
  "make_optimizer",
  "optimizer_hyperparameters",
  "shared_train_step",
  "split_loss_config",
  "target_logps",
  "train_step",
]
