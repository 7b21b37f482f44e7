"""``recforge validate --config C``: everything a training run checks before its first step.

It loads and validates the config, builds the features, the data sets and the model, reads
the first train (and eval) batch and, when the embedding tables are small enough to allocate,
runs one forward pass with the loss on it. Nothing is written: ``model_dir`` is not created.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Optional

import torch

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.datasets.dataset import RecDataset, create_dataloader
from recforge.errors import DataError
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.protos import pipeline_pb2
from recforge.utils.logging_util import setup_logging
from recforge.utils.model_summary import human_bytes, summarize_model
from recforge.utils.pipeline import build_dataset, build_features, prepare_config

logger = logging.getLogger(__name__)

#: tables larger than this (bytes) are not allocated for the trial forward pass
FORWARD_MAX_BYTES = 1 << 30


def first_batch(dataset: RecDataset, path: str, what: str) -> Batch:
    """Reads the first batch of ``dataset`` in this process (no loader workers).

    Args:
        dataset: the data set.
        path: the input's path, for the error.
        what: which input it is, e.g. ``train_input_path``, for the error.

    Raises:
        DataError: the input holds no rows (or a row does not parse: the reader's error).

    """
    dataset.set_epoch(0)
    batch = next(iter(create_dataloader(dataset, num_workers=0)), None)
    if batch is None:
        raise DataError(f"{path}: expected rows to read, found none ({what})")
    return batch


def _forward(config: pipeline_pb2.EasyRecConfig, features: list, batch: Batch) -> float:
    """One forward pass and loss of a freshly initialised CPU model on ``batch``."""
    model = build_model(config, features, embedding_device=torch.device("cpu"))
    wrapper = TrainWrapper(model)
    with torch.no_grad():
        loss, _ = wrapper(batch)
    if not torch.isfinite(loss):
        raise DataError(
            f"{config.train_input_path}: expected a finite loss on the first batch, found"
            f" {float(loss)}: check the input for NaN/inf values"
        )
    return float(loss)


def validate(
    config_path: str,
    edits: Optional[dict[str, str]] = None,
    plugins: Sequence[str] = (),
    model_dir: Optional[str] = None,
) -> dict:
    """Checks that a config would train, short of training it.

    Args:
        config_path: the pipeline config file.
        edits: ``{"dotted.field": "value"}`` config overrides.
        plugins: modules to import first.
        model_dir: overrides the config's ``model_dir`` (checked, not created).

    Returns:
        ``{"ok": True, "model": ..., "features": n, "parameters": ..., "train_batch": rows,
        "eval_batch": rows, "loss": first-batch loss or None}``.

    Raises:
        ConfigError: the config is invalid, or names no ``train_input_path``.
        DataError: the data does not match the config (first batch).

    """
    setup_logging()
    config = prepare_config(config_path, edits, plugins, model_dir)
    if not config.train_input_path:
        raise ConfigError(
            "expected the training data's path, found none", config_path, field="train_input_path"
        )
    features = build_features(config)
    train_dataset = build_dataset(config, features, "train")
    model = build_model(config, features, embedding_device=torch.device("meta"))
    summary = summarize_model(model)
    for line in summary.lines():
        logger.info("%s", line)
    batch = first_batch(train_dataset, config.train_input_path, "train_input_path")
    result: dict = {
        "ok": True,
        "model": type(model).__name__,
        "features": len(features),
        "parameters": summary.parameters,
        "memory": human_bytes(summary.bytes),
        "train_batch": batch.batch_size,
        "eval_batch": None,
        "loss": None,
    }
    if config.eval_input_path:
        eval_dataset = build_dataset(config, features, "eval")
        result["eval_batch"] = first_batch(
            eval_dataset, config.eval_input_path, "eval_input_path"
        ).batch_size
    table_bytes = sum(t.bytes for t in summary.tables)
    if table_bytes <= FORWARD_MAX_BYTES:
        result["loss"] = _forward(config, features, batch)
    else:
        logger.info("forward pass skipped: the embedding tables need %s", human_bytes(table_bytes))
    logger.info(
        "%s: OK (%s, %d features, %s parameters, first batch of %d rows)",
        config_path,
        result["model"],
        result["features"],
        f"{summary.parameters:,}",
        batch.batch_size,
    )
    return result
