"""What only a GPU can show: nccl, fbgemm's fused CUDA kernels, row-wise sharding, bf16 autocast.

Every test is marked ``gpu`` and skips without CUDA (``tests/conftest.py``);
``scripts/gpu_check.sh`` runs them on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from recforge.models.model import TrainWrapper
from recforge.utils import dist as dist_util
from recforge.utils.sharding import UserConstraint, shard_model
from tests.helpers.models import make_batch
from tests.helpers.sharding import build_model, table_weights, tables_of, train_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def device() -> torch.device:
    return dist_util.init_process_group()


def _sharded(device, sparse, dims=8, mixed_precision="", row_wise=False):
    """DeepFM sharded on ``device``, and the names of its frozen tables (``trainable: false``)."""
    model = build_model("DeepFM", dims)
    tables, frozen_tables = tables_of(model)
    constraints = None
    if row_wise:  # frozen tables stay on the data-parallel dense kernel
        allowed = UserConstraint("test", ("row_wise",), ())
        constraints = {t: allowed for t in tables if t not in frozen_tables}
    _, frozen = model.sparse_parameters()
    wrapper = TrainWrapper(model, mixed_precision)
    config = train_config(sparse, "adam")
    return shard_model(wrapper, device, config, frozen, constraints), frozen_tables


def _train(sharded, device, steps=5):
    batch = make_batch(32).to(device)
    losses = []
    for _ in range(steps):
        loss, _ = sharded.model(batch)
        loss.backward()
        sharded.optimizer.step()
        sharded.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_nccl_process_group_on_cuda(device):
    assert device.type == "cuda"
    assert dist.get_backend() == "nccl"
    value = torch.ones(4, device=device)
    dist.all_reduce(value)
    assert value.tolist() == [float(dist.get_world_size())] * 4


@pytest.mark.parametrize("sparse", ["sgd", "adagrad", "rowwise_adagrad", "adam"])
def test_fused_cuda_kernels_train_every_table(device, sparse):
    # width 10: not a multiple of 4, which fbgemm's CPU kernels would need
    sharded, frozen_tables = _sharded(device, sparse, dims=10)
    assert sharded.fallback_tables == []  # every trainable table on the fused CUDA kernel
    before = {k: v.clone() for k, v in table_weights(sharded.model).items()}
    losses = _train(sharded, device)
    after = table_weights(sharded.model)
    changed = {t for t in before if not torch.equal(before[t], after[t])}
    assert changed == set(before) - frozen_tables
    assert losses[-1] < losses[0]


def test_row_wise_sharding_on_cuda(device):
    sharded, frozen_tables = _sharded(device, "adagrad", row_wise=True)
    kinds = {
        name: spec.sharding_type
        for module_plan in sharded.model.plan.plan.values()
        for name, spec in module_plan.items()
    }
    assert {k for t, k in kinds.items() if t not in frozen_tables} == {"row_wise"}
    losses = _train(sharded, device)
    assert losses[-1] < losses[0]


def test_bf16_autocast_trains_on_cuda(device):
    sharded, _ = _sharded(device, "adagrad", mixed_precision="bf16")
    losses = _train(sharded, device)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
