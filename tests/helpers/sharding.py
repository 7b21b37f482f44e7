"""Sharded training of the test models (tests.helpers.models) on CPU, as the train loop runs it."""

from typing import Optional, Union

import torch
from google.protobuf import text_format
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface

from recforge.features import create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import train_pb2
from recforge.utils.sharding import ShardedTraining, shard_model
from tests.helpers.models import make_config

CPU = torch.device("cpu")
SPARSE_LR = {"sgd": 0.5, "adagrad": 0.1, "adam": 0.01, "rowwise_adagrad": 0.1}


def build_model(model_name: str, dims: Union[int, dict[str, int]]) -> BaseModel:
    """``model_name`` with tables on the meta device, as the train pipeline builds it."""
    config = make_config(model_name)
    for feature_config in config.feature_configs:
        if feature_config.HasField("id_feature"):
            cfg = feature_config.id_feature
            cfg.embedding_dim = dims if isinstance(dims, int) else dims[cfg.feature_name]
    features = create_features(config.feature_configs)
    model_class = BaseModel.create_class(model_name)
    return model_class(
        config.model_config, features, ["label"], embedding_device=torch.device("meta")
    )


def train_config(sparse: str, dense: str, sparse_schedule: str = "") -> train_pb2.TrainConfig:
    text = (
        f"sparse_optimizer {{ {sparse}_optimizer {{ lr: {SPARSE_LR[sparse]} }} {sparse_schedule} }}"
        f" dense_optimizer {{ {dense}_optimizer {{ lr: 0.01 }} }}"
    )
    return text_format.Parse(text, train_pb2.TrainConfig())


def tables_of(model: BaseModel) -> tuple[dict[str, int], set[str]]:
    """``({table: embedding_dim}, frozen table names)`` of a model not yet sharded."""
    _, frozen = model.sparse_parameters()
    frozen_ids = {id(p) for p in frozen}
    dims, frozen_tables = {}, set()
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollectionInterface):
            for config, param in zip(module.embedding_bag_configs(), module.parameters()):
                dims[config.name] = config.embedding_dim
                if id(param) in frozen_ids:
                    frozen_tables.add(config.name)
    return dims, frozen_tables


def make_sharded(
    model_name: str,
    dims: Union[int, dict[str, int]],
    config: Optional[train_pb2.TrainConfig],
    mixed_precision: str = "",
) -> tuple[ShardedTraining, tuple[dict[str, int], set[str]]]:
    """The sharded model and, read before sharding, its ``tables_of``."""
    model = build_model(model_name, dims)
    tables = tables_of(model)
    _, frozen = model.sparse_parameters()
    sharded = shard_model(TrainWrapper(model, mixed_precision), CPU, config, frozen)
    return sharded, tables


def table_weights(dmp: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every embedding table's (local) weights, by table name."""
    weights = {}
    for key, value in dmp.state_dict().items():
        if ".embedding_bags." not in key:
            continue
        table = key.split(".embedding_bags.")[1].split(".")[0]
        if isinstance(value, ShardedTensor):
            shards = sorted(value.local_shards(), key=lambda s: s.metadata.shard_offsets)
            value = torch.cat([s.tensor.detach().flatten() for s in shards])
        weights[table] = value.detach().clone()
    return weights


def train_steps(sharded: ShardedTraining, batch, start: int, steps: int) -> list[float]:
    """Runs steps ``start .. start + steps - 1`` as the train loop does; returns the losses."""
    losses = []
    for step in range(start, start + steps):
        for schedule in sharded.schedules:
            schedule.update(step, 0)
        loss, _ = sharded.model(batch)
        loss.backward()
        sharded.optimizer.step()
        sharded.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def sharded_training(train_text: str, dims: int = 8):
    """MultiTower with tables of width ``dims`` sharded for training by ``train_text``."""
    config = text_format.Parse(train_text, train_pb2.TrainConfig())
    return make_sharded("MultiTower", dims, config)
