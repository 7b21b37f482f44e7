"""A DIN model with sequence tables and its sharding on the fallback kernels."""

import torch
from google.protobuf import text_format

from recforge.features import create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import pipeline_pb2, train_pb2
from recforge.utils.sharding import ShardedTraining, shard_model
from tests.helpers.models import FEATURES


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


def shard(model: BaseModel, sparse: str) -> ShardedTraining:
    _, frozen = model.sparse_parameters()
    return shard_model(TrainWrapper(model), CPU, train_config(sparse), frozen)


CPU = torch.device("cpu")


# "item" feeds a pooled group and the SEQUENCE group: its one table item_emb is in the
# EmbeddingCollection, read unpooled by "seq" and pooled per row for "user"
DIN_BODY = """
  feature_groups { group_name: "user" feature_names: ["user", "item", "price"] }
  feature_groups { group_name: "seq" feature_names: ["item", "tag_seq"] group_type: SEQUENCE }
  multi_tower_din {
    towers { input: "user" mlp { hidden_units: [16] } }
    din_towers { input: "seq" attn_mlp { hidden_units: [8] } }
    final { hidden_units: [8] }
  }
"""


def train_config(sparse: str) -> train_pb2.TrainConfig:
    config = train_pb2.TrainConfig()
    getattr(config.sparse_optimizer, sparse).lr = SPARSE_LR.get(sparse, 0.05)
    config.dense_optimizer.adam_optimizer.lr = 0.01
    return config


SPARSE_LR = {"sgd_optimizer": 0.5, "adadelta_optimizer": 1.0}
