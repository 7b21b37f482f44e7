"""SEQUENCE-group (unpooled) tables off fbgemm's fused CPU kernel: train, restore, match eager."""

import pytest
import torch
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recforge.protos import optimizer_pb2
from recforge.utils import dist as dist_util
from recforge.utils.sharding import ShardedTraining
from tests.helpers.models import make_batch
from tests.helpers.sequence_fallback import (
    din_model,
    shard,
)
from tests.helpers.sharding import train_steps

SPARSE_OPTIMIZERS = [
    f.name for f in optimizer_pb2.SparseOptimizer.DESCRIPTOR.oneofs_by_name["optimizer"].fields
]
# fbgemm's CPU kernel exists for these, on widths divisible by 4
CPU_FUSED = {"sgd_optimizer", "adagrad_optimizer", "rowwise_adagrad_optimizer"}


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


def weights(sharded: ShardedTraining) -> dict[str, torch.Tensor]:
    """``{"ebc.<table>" | "ec.<table>": weights}`` of every table."""
    out = {}
    for key, value in sharded.model.state_dict().items():
        for marker, kind in ((".embedding_bags.", "ebc"), (".embeddings.", "ec")):
            if marker in key:
                table = key.split(marker)[1].split(".")[0]
                if isinstance(value, ShardedTensor):
                    value = torch.cat([s.tensor.flatten() for s in value.local_shards()])
                out[f"{kind}.{table}"] = value.detach().clone()
    return out


def plan_of(sharded: ShardedTraining) -> dict[str, tuple[str, str]]:
    """``{"<module path suffix>.<table>": (sharding type, kernel)}`` of the applied plan."""
    return {
        f"{path.rsplit('.', 1)[-1]}.{table}": (ps.sharding_type, ps.compute_kernel)
        for path, module_plan in sharded.model.plan.plan.items()
        for table, ps in module_plan.items()
    }


CASES = [(name, 8) for name in SPARSE_OPTIMIZERS] + [
    ("sgd_optimizer", 5),
    ("adagrad_optimizer", 6),
    ("rowwise_adagrad_optimizer", 5),
    ("adam_optimizer", 5),
]


@pytest.mark.parametrize("sparse, dim", CASES, ids=[f"{s}-{d}" for s, d in CASES])
def test_sequence_tables_train_with_every_sparse_optimizer(sparse, dim):
    torch.manual_seed(0)
    sharded = shard(din_model(dim), sparse)
    fused = sparse in CPU_FUSED and dim % 4 == 0
    plan = plan_of(sharded)
    # the pooled-only table keeps its kernel; the fused path is untouched
    assert plan["ebc.user_emb"][1] == ("fused" if sparse in CPU_FUSED else "dense")
    if fused:
        assert plan["dim_8.tag_seq_emb"][1] == "fused"
        assert sharded.fallback_tables == []
    else:
        # fbgemm's CPU dense lookup cannot leave rows unpooled: the collection stays unsharded
        assert not any(key.startswith(f"dim_{dim}.") for key in plan)
        assert {"item_emb", "tag_seq_emb"} <= set(sharded.fallback_tables)

    before = weights(sharded)
    losses = train_steps(sharded, make_batch(16), 0, 4)
    after = weights(sharded)
    assert losses[-1] < losses[0], losses
    assert "ebc.item_emb" not in before  # one table, shared with the sequence group
    for table in ("ec.item_emb", "ec.tag_seq_emb", "ebc.user_emb"):
        assert not torch.equal(before[table], after[table]), f"{table} did not train"


def test_a_frozen_sequence_table_keeps_its_weights_and_fused_pooled_tables_stay_fused():
    torch.manual_seed(0)
    sharded = shard(din_model(8, frozen_seq=True), "adagrad_optimizer")
    plan = plan_of(sharded)
    # tag_seq_emb cannot take the fused kernel, so the dim-8 collection stays unsharded with
    # all its tables, item_emb too (the pooled group reads it there)
    assert not any(key.startswith("dim_8.") for key in plan)
    assert "ebc.item_emb" not in plan
    assert sharded.fallback_tables == ["item_emb"]

    before = weights(sharded)
    losses = train_steps(sharded, make_batch(16), 0, 4)
    after = weights(sharded)
    assert losses[-1] < losses[0], losses
    assert torch.equal(before["ec.tag_seq_emb"], after["ec.tag_seq_emb"])
    for table in ("ec.item_emb", "ebc.user_emb"):
        assert not torch.equal(before[table], after[table]), f"{table} did not train"


def test_unsharded_sequence_tables_are_initialised_from_their_config():
    torch.manual_seed(0)
    table = weights(shard(din_model(5), "adam_optimizer"))["ec.tag_seq_emb"]
    # torchrec's default init: uniform in +-sqrt(1 / num_embeddings) (20 rows)
    bound = (1 / 20) ** 0.5
    assert table.abs().max() <= bound and table.std() > bound / 4
