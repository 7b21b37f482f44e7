"""Two-task test models (tests.helpers.multi_task_configs) and a batch with both labels."""

import torch
from google.protobuf import text_format

from recforge.features import create_features
from recforge.models.model import BaseModel
from recforge.protos import pipeline_pb2
from tests.helpers.models import FEATURES, make_batch
from tests.helpers.multi_task_configs import MULTI_TASK_MODEL_CONFIGS

LABELS = ["label", "label_cvr"]


def make_config(model_name: str, body: str = "") -> pipeline_pb2.EasyRecConfig:
    text = FEATURES + "model_config {" + (body or MULTI_TASK_MODEL_CONFIGS[model_name]) + "}"
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def build(model_name: str, body: str = "", labels=LABELS, sample_weights=(), pareto=False):
    config = make_config(model_name, body)
    config.model_config.use_pareto_loss_weight = pareto
    features = create_features(config.feature_configs)
    model_class = BaseModel.create_class(model_name)
    return model_class(config.model_config, features, list(labels), list(sample_weights))


def two_label_batch(batch_size: int = 8):
    batch = make_batch(batch_size)
    batch.labels["label_cvr"] = (torch.arange(batch_size) % 4 == 0).float()
    return batch
