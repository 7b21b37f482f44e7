"""A run on the row-wise fallback with part optimizers resumes identically."""

import pytest
import torch

from recforge.utils import dist as dist_util
from tests.helpers.sharding import sharded_training


@pytest.fixture(scope="module")
def process_group():
    dist_util.init_process_group()


def test_resume_with_row_wise_fallback_and_part_optimizers_continues_identically(
    process_group, tmp_path
):
    from recforge.utils.checkpoint import load_checkpoint, save_checkpoint
    from tests.helpers.models import make_batch
    from tests.helpers.sharding import train_steps

    text = (
        "sparse_optimizer { partial_rowwise_lamb_optimizer { lr: 0.05 weight_decay: 0.01 }"
        "  cosine_annealing_warm_restarts_learning_rate { T_0: 2 T_mult: 2 } }"
        " dense_optimizer { adam_optimizer { lr: 0.01 }"
        '  part_optimizers { rmsprop_optimizer { lr: 0.01 } regex_pattern: "(.*)final(.*)" } }'
    )
    batch = make_batch(16)
    torch.manual_seed(0)
    first, _ = sharded_training(text)
    train_steps(first, batch, 0, 2)
    path = save_checkpoint(str(tmp_path), 2, first.model, first.optimizer, {"global_step": 2})
    expected = train_steps(first, batch, 2, 3)

    torch.manual_seed(1)
    second, _ = sharded_training(text)
    load_checkpoint(path, second.model, second.optimizer)
    assert train_steps(second, batch, 2, 3) == expected
