"""Sparse (embedding) and dense optimizers and learning-rate schedules from the config."""

from recforge.optim.lr_schedule import LearningRateSchedule, create_schedule
from recforge.optim.optimizers import (
    SparseOptimizerSpec,
    create_dense_optimizer,
    fused_kernel_supports,
    sparse_optimizer_spec,
)

__all__ = [
    "LearningRateSchedule",
    "SparseOptimizerSpec",
    "create_dense_optimizer",
    "create_schedule",
    "fused_kernel_supports",
    "sparse_optimizer_spec",
]
