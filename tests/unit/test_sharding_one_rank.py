"""One process: the planner may only shard fused tables table-wise (recforge/utils/sharding.py)."""

import pytest
import torch
from google.protobuf import text_format

import recforge.utils.sharding as sharding
from recforge.features import create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.utils import dist as dist_util
from recforge.utils.sharding import shard_model, user_table_constraints
from tests.helpers.models import make_config
from tests.helpers.sharding import CPU, train_config


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


def _planned_constraints(monkeypatch, feature_constraints: dict[str, str]) -> dict:
    """The planner's constraints per table, and the applied plan, for a dim-8 DeepFM."""
    config = make_config("DeepFM")
    for feature_config in config.feature_configs:
        if feature_config.HasField("id_feature"):
            cfg = feature_config.id_feature
            cfg.embedding_dim = 8
            if cfg.feature_name in feature_constraints:
                text_format.Parse(feature_constraints[cfg.feature_name], cfg.embedding_constraints)
    train = train_config("adagrad", "adam")
    features = create_features(config.feature_configs)
    model = BaseModel.create_class("DeepFM")(
        config.model_config, features, ["label"], embedding_device=torch.device("meta")
    )
    seen: dict = {}
    planner_class = sharding.EmbeddingShardingPlanner

    def planner(*args, **kwargs):
        seen.update(kwargs["constraints"])
        return planner_class(*args, **kwargs)

    monkeypatch.setattr(sharding, "EmbeddingShardingPlanner", planner)
    constraints = user_table_constraints(features, train)
    sharded = shard_model(TrainWrapper(model), CPU, train, None, constraints)
    plan = {
        table: ps.sharding_type
        for module_plan in sharded.model.plan.plan.values()
        for table, ps in module_plan.items()
    }
    return {name: (list(c.sharding_types), plan.get(name)) for name, c in seen.items()}


def test_fused_tables_are_table_wise_in_a_one_process_job(monkeypatch) -> None:
    assert dist_util.world_size() == 1
    planned = _planned_constraints(monkeypatch, {})
    fused = {name: p for name, p in planned.items() if p[0] != ["data_parallel"]}
    assert fused and all(p == (["table_wise"], "table_wise") for p in fused.values()), planned


def test_a_users_sharding_types_still_apply(monkeypatch) -> None:
    planned = _planned_constraints(monkeypatch, {"user": 'sharding_types: "column_wise"'})
    assert planned["user_emb"] == (["column_wise"], "column_wise")
