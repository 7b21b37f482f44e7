"""SEQUENCE-group (unpooled) tables off fbgemm's fused CPU kernel: train, restore, match eager."""

import pytest
import torch
from google.protobuf import text_format
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recforge.features import create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import optimizer_pb2, pipeline_pb2, train_pb2
from recforge.utils import dist as dist_util
from recforge.utils.checkpoint import load_checkpoint, save_checkpoint
from recforge.utils.sharding import ShardedTraining, shard_model
from tests.helpers.models import FEATURES, make_batch
from tests.helpers.sharding import train_steps

CPU = torch.device("cpu")
SPARSE_OPTIMIZERS = [
    f.name for f in optimizer_pb2.SparseOptimizer.DESCRIPTOR.oneofs_by_name["optimizer"].fields
]
# fbgemm's CPU kernel exists for these, on widths divisible by 4
CPU_FUSED = {"sgd_optimizer", "adagrad_optimizer", "rowwise_adagrad_optimizer"}
SPARSE_LR = {"sgd_optimizer": 0.5, "adadelta_optimizer": 1.0}

# "item" feeds a pooled group and the SEQUENCE group: table item_emb is in both the
# EmbeddingBagCollection and the EmbeddingCollection (separate weights of the same name)
DIN_BODY = """
  feature_groups { group_name: "user" feature_names: ["user", "item", "price"] }
  feature_groups { group_name: "seq" feature_names: ["item", "tag_seq"] group_type: SEQUENCE }
  multi_tower_din {
    towers { input: "user" mlp { hidden_units: [16] } }
    din_towers { input: "seq" attn_mlp { hidden_units: [8] } }
    final { hidden_units: [8] }
  }
"""


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


def din_model(seq_dim: int, frozen_seq: bool = False, device: str = "meta") -> BaseModel:
    """MultiTowerDIN: a dim-8 pooled-only table, ``seq_dim`` tables in the sequence group.

    ``frozen_seq``: the sequence's table tag_seq_emb is ``trainable: false``.
    """
    text = FEATURES + "model_config {" + DIN_BODY
    text += " metrics { auc {} } losses { binary_cross_entropy {} } }"
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    for feature_config in config.feature_configs:
        kind = feature_config.WhichOneof("feature")
        cfg = getattr(feature_config, kind)
        if cfg.feature_name in ("item", "tag_seq"):
            cfg.embedding_dim = seq_dim
        if cfg.feature_name == "tag_seq":
            cfg.trainable = not frozen_seq
    features = create_features(config.feature_configs)
    return BaseModel.create_class("MultiTowerDIN")(
        config.model_config, features, ["label"], embedding_device=torch.device(device)
    )


def train_config(sparse: str) -> train_pb2.TrainConfig:
    config = train_pb2.TrainConfig()
    getattr(config.sparse_optimizer, sparse).lr = SPARSE_LR.get(sparse, 0.05)
    config.dense_optimizer.adam_optimizer.lr = 0.01
    return config


def shard(model: BaseModel, sparse: str) -> ShardedTraining:
    _, frozen = model.sparse_parameters()
    return shard_model(TrainWrapper(model), CPU, train_config(sparse), frozen)


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
    for table in ("ec.item_emb", "ec.tag_seq_emb", "ebc.item_emb", "ebc.user_emb"):
        assert not torch.equal(before[table], after[table]), f"{table} did not train"


def test_a_frozen_sequence_table_keeps_its_weights_and_fused_pooled_tables_stay_fused():
    torch.manual_seed(0)
    sharded = shard(din_model(8, frozen_seq=True), "adagrad_optimizer")
    plan = plan_of(sharded)
    # tag_seq_emb cannot take the fused kernel, so the dim-8 collection stays unsharded with
    # all its tables; the pooled twin of item_emb stays on the fused kernel
    assert not any(key.startswith("dim_8.") for key in plan)
    assert plan["ebc.item_emb"][1] == "fused"
    assert sharded.fallback_tables == ["item_emb"]

    before = weights(sharded)
    losses = train_steps(sharded, make_batch(16), 0, 4)
    after = weights(sharded)
    assert losses[-1] < losses[0], losses
    assert torch.equal(before["ec.tag_seq_emb"], after["ec.tag_seq_emb"])
    for table in ("ec.item_emb", "ebc.item_emb", "ebc.user_emb"):
        assert not torch.equal(before[table], after[table]), f"{table} did not train"


def test_unsharded_sequence_tables_are_initialised_from_their_config():
    torch.manual_seed(0)
    table = weights(shard(din_model(5), "adam_optimizer"))["ec.tag_seq_emb"]
    # torchrec's default init: uniform in +-sqrt(1 / num_embeddings) (20 rows)
    bound = (1 / 20) ** 0.5
    assert table.abs().max() <= bound and table.std() > bound / 4


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
