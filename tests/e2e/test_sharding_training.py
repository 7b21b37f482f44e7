"""Sharded training resumed from a checkpoint continues exactly as an uninterrupted run."""

import pytest
import torch

from recforge.utils import dist as dist_util
from recforge.utils.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from tests.helpers.models import make_batch
from tests.helpers.sharding import (
    make_sharded,
    table_weights,
    train_config,
    train_steps,
)


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


@pytest.mark.parametrize(
    "model_name, sparse, dense, dim, sparse_schedule",
    [
        ("DeepFM", "sgd", "adam", 8, ""),
        ("MultiTower", "adagrad", "adagrad", 8, ""),
        ("DeepFM", "adagrad", "sgd", 10, ""),  # fused and fallback tables together
        ("MultiTower", "adam", "adamw", 8, ""),  # every table on the fallback
        (
            "DeepFM",
            "rowwise_adagrad",
            "adam",
            10,
            "exponential_decay_learning_rate { decay_size: 2 decay_factor: 0.5"
            " warmup_learning_rate: 0.01 warmup_size: 4 }",
        ),
    ],
    ids=["sgd-adam", "adagrad-adagrad", "adagrad-sgd-dim10", "adam-adamw", "rowwise-schedule"],
)
def test_resume_from_checkpoint_continues_identically(
    tmp_path, model_name, sparse, dense, dim, sparse_schedule
):
    config = train_config(sparse, dense, sparse_schedule)
    batch = make_batch(16)
    torch.manual_seed(0)
    first, _ = make_sharded(model_name, dim, config)
    train_steps(first, batch, 0, 3)
    path = save_checkpoint(
        str(tmp_path), 3, first.model, first.optimizer, {"global_step": 3, "epoch": 0}
    )
    saved_weights = table_weights(first.model)
    expected = train_steps(first, batch, 3, 4)

    torch.manual_seed(1234)  # a different initialisation and RNG stream
    second, _ = make_sharded(model_name, dim, config)
    assert second.fallback_tables == first.fallback_tables
    state = load_checkpoint(path, second.model, second.optimizer, restore_rng=True)
    assert state == {"global_step": 3, "epoch": 0}
    restored = table_weights(second.model)
    assert all(torch.equal(saved_weights[t], restored[t]) for t in saved_weights)
    assert train_steps(second, batch, 3, 4) == expected
