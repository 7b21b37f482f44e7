"""Sequence tables on the fallback kernels: a resumed run continues identically."""

import pytest
import torch

from recforge.models.model import TrainWrapper
from recforge.utils import dist as dist_util
from recforge.utils.checkpoint import load_checkpoint, save_checkpoint
from tests.helpers.models import make_batch
from tests.helpers.sequence_fallback import din_model, shard
from tests.helpers.sharding import train_steps


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


@pytest.mark.parametrize(
    "sparse, dim, frozen_seq",
    [
        ("adam_optimizer", 5, False),
        ("rmsprop_optimizer", 8, False),
        ("adagrad_optimizer", 8, True),
    ],
    ids=["adam-dim5", "rmsprop", "adagrad-frozen"],
)
def test_checkpoint_resumes_identically_and_restores_the_eager_model(
    tmp_path, sparse, dim, frozen_seq
):
    batch = make_batch(16)
    torch.manual_seed(0)
    first = shard(din_model(dim, frozen_seq), sparse)
    train_steps(first, batch, 0, 3)
    path = save_checkpoint(
        str(tmp_path), 3, first.model, first.optimizer, {"global_step": 3, "epoch": 0}
    )
    with torch.no_grad():
        sharded_loss = first.model(batch)[0].item()
    expected = train_steps(first, batch, 3, 3)

    # the plain model (as export and predict build it) computes what training computed
    eager = din_model(dim, frozen_seq, device="cpu")
    load_checkpoint(path, TrainWrapper(eager))
    with torch.no_grad():
        assert TrainWrapper(eager)(batch)[0].item() == pytest.approx(sharded_loss, rel=1e-6)

    torch.manual_seed(1234)
    second = shard(din_model(dim, frozen_seq), sparse)
    assert second.fallback_tables == first.fallback_tables
    assert load_checkpoint(path, second.model, second.optimizer) == {
        "global_step": 3,
        "epoch": 0,
    }
    assert train_steps(second, batch, 3, 3) == expected
