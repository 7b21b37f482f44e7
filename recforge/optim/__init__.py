"""Sparse (embedding) and dense optimizers and learning-rate schedules from the config."""

from recforge.optim.lr_schedule import LearningRateSchedule, create_schedule
from recforge.optim.optimizers import (
    PartGroup,
    SparseOptimizerSpec,
    clip_gradients_before_step,
    create_dense_optimizer,
    fill_initial_accumulator,
    fused_kernel_supports,
    sparse_optimizer_spec,
    split_part_optimizers,
)

__all__ = [
    "LearningRateSchedule",
    "PartGroup",
    "SparseOptimizerSpec",
    "clip_gradients_before_step",
    "create_dense_optimizer",
    "create_schedule",
    "fill_initial_accumulator",
    "fused_kernel_supports",
    "sparse_optimizer_spec",
    "split_part_optimizers",
]
