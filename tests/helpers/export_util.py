"""Helpers for the export / predict tests: small data with planted signal, configs, CLI runs."""

import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf import text_format

from recforge.protos import data_pb2, pipeline_pb2
from tests.helpers.cli_util import run_cli

NUM_USERS, NUM_ITEMS, NUM_TAGS = 50, 100, 20

TRAIN_SETTINGS = """
train_config {
  sparse_optimizer { adagrad_optimizer { lr: 0.05 } constant_learning_rate {} }
  dense_optimizer { adam_optimizer { lr: 0.01 } constant_learning_rate {} }
  num_epochs: 1
}
"""


def make_table(num_rows: int, seed: int = 0, labels=("label",), tags_as_lists: bool = True):
    """Rows for models.FEATURES: user (int), item (string, hashed), tags, price, labels.

    ``tags`` is a list<int64> column (multi-value natively) or ``"3|7"`` strings; ``price``
    has nulls; ``id`` numbers the rows. Clicks follow per-user and per-item effects.
    """
    rng = np.random.default_rng([seed, 7])
    world = np.random.default_rng(0)
    user_effect, item_effect = world.normal(0, 1.5, NUM_USERS), world.normal(0, 1.0, NUM_ITEMS)
    user = rng.integers(0, NUM_USERS, num_rows)
    item = rng.integers(0, NUM_ITEMS, num_rows)
    num_tags = rng.integers(0, 4, num_rows)
    tags = [rng.integers(0, NUM_TAGS, k).tolist() for k in num_tags]
    price = np.round(rng.lognormal(0, 1, num_rows), 2)
    logit = user_effect[user] + item_effect[item] - 0.3 * np.log(price)
    columns = {
        "id": pa.array(np.arange(num_rows, dtype=np.int64) + seed * 1_000_000),
        "user": pa.array(user.astype(np.int64)),
        "item": pa.array([f"i{k}" for k in item]),
        "tags": (
            pa.array(tags, pa.list_(pa.int64()))
            if tags_as_lists
            else pa.array(["|".join(str(t) for t in row) for row in tags])
        ),
        "price": pa.array(price, mask=rng.random(num_rows) < 0.1),
    }
    for i, name in enumerate(labels):
        p = 1 / (1 + np.exp(-(logit - 0.5 * i)))
        columns[name] = pa.array((rng.random(num_rows) < p).astype(np.int64))
    return pa.table(columns)


def label_names(model_config) -> list:
    """``label`` plus every ``label_name`` set anywhere in the model config (task towers)."""
    found = ["label"]

    def walk(message):
        for field, value in message.ListFields():
            if field.name == "label_name" and value not in found:
                found.append(value)
            elif hasattr(value, "ListFields"):
                walk(value)
            elif field.type == field.TYPE_MESSAGE:
                for item in value:
                    if hasattr(item, "ListFields"):
                        walk(item)

    walk(model_config)
    return found


def model_config(model_name: str) -> pipeline_pb2.EasyRecConfig:
    """The test config of a registered model (models / multi_task_configs / match_configs)."""
    from tests.helpers.match_configs import MATCH_MODEL_CONFIGS
    from tests.helpers.models import FEATURES, MODEL_CONFIGS, make_config
    from tests.helpers.multi_task_configs import MULTI_TASK_MODEL_CONFIGS

    if model_name in MODEL_CONFIGS:
        return make_config(model_name)
    body = MULTI_TASK_MODEL_CONFIGS.get(model_name) or MATCH_MODEL_CONFIGS[model_name]
    text = FEATURES + "model_config {" + body + "}"
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def write_training_run(
    workdir: str,
    config: pipeline_pb2.EasyRecConfig,
    num_rows: int = 256,
    batch_size: int = 64,
    extra: Optional[str] = None,
) -> str:
    """Writes train.parquet and train.config (model_dir "model") in ``workdir``."""
    labels = label_names(config.model_config)
    pq.write_table(make_table(num_rows, labels=labels), os.path.join(workdir, "train.parquet"))
    text_format.Merge(TRAIN_SETTINGS + (extra or ""), config)
    config.train_input_path = "train.parquet"
    config.eval_input_path = "train.parquet"
    config.model_dir = "model"
    config.data_config.batch_size = batch_size
    config.data_config.dataset_type = data_pb2.ParquetDataset
    del config.data_config.label_fields[:]
    config.data_config.label_fields.extend(labels)
    path = os.path.join(workdir, "train.config")
    with open(path, "w") as f:
        f.write(text_format.MessageToString(config))
    return path


def train_and_export(workdir: str, config: pipeline_pb2.EasyRecConfig, **kwargs) -> str:
    """Trains through the CLI, exports the latest checkpoint to ``workdir/export``."""
    write_training_run(workdir, config, **kwargs)
    run_cli(["train", "--config", "train.config"], workdir)
    run_cli(["export", "--config", "model/pipeline.config", "--export_dir", "export"], workdir)
    return os.path.join(workdir, "export")
