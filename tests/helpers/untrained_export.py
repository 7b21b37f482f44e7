"""An export of a freshly built model, and the check that it serves what training sees."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.datasets.mock_data import generate_mock_data
from recforge.export import export_model
from recforge.models.factory import build_model
from recforge.models.model import BaseModel, TrainWrapper
from recforge.predictor import Predictor
from recforge.protos import pipeline_pb2
from recforge.utils.checkpoint import save_checkpoint
from recforge.utils.pipeline import build_features


def export_untrained(
    config: pipeline_pb2.EasyRecConfig, work: Path, seed: int = 0
) -> tuple[BaseModel, str]:
    """Builds ``config``'s model under ``torch.manual_seed(seed)`` and exports it untrained.

    The config is written to ``work/pipeline.config`` with ``model_dir`` ``work/model``, the
    model is saved there as the checkpoint of step 1 and exported to ``work/export``.

    Returns:
        The eager model and the export directory.
    """
    config.model_dir = str(work / "model")
    config_path = str(work / "pipeline.config")
    with open(config_path, "w") as f:
        f.write(text_format.MessageToString(config))
    torch.manual_seed(seed)
    model = build_model(config, build_features(config), embedding_device=torch.device("cpu"))
    save_checkpoint(config.model_dir, 1, TrainWrapper(model), None, {"global_step": 1})
    export_dir = str(work / "export")
    export_model(config_path, export_dir)
    return model, export_dir


def mock_rows(
    config: pipeline_pb2.EasyRecConfig, work: Path, num_rows: int, seed: int
) -> pa.RecordBatch:
    """``num_rows`` rows of ``recforge mock-data`` for ``config``, as one record batch."""
    generate_mock_data(config, str(work / "data"), num_rows=num_rows, seed=seed)
    table = pq.read_table(glob.glob(str(work / "data" / "*.parquet"))[0])
    return table.combine_chunks().to_batches()[0]


def assert_served_as_trained(
    model: BaseModel,
    predictor: Predictor,
    train: dict[str, torch.Tensor],
    rows: pa.RecordBatch,
) -> None:
    """The predictor parses ``rows`` into exactly the training tensors and scores them as eager.

    Args:
        model: the eager model that was exported.
        predictor: the loaded export.
        train: the training-time parser's tensors of ``rows``.
        rows: raw input rows.
    """
    served = predictor.parser.parse(rows)
    assert set(served) == set(train)
    for name, value in train.items():
        torch.testing.assert_close(served[name], value, atol=0, rtol=0, msg=name)
    with torch.no_grad():
        eager = model.eval().predict(DataParser(model.features).to_batch(train))["probs"].numpy()
        scripted = predictor.model(served)["probs"].numpy()
    np.testing.assert_allclose(scripted, eager, atol=1e-5)
    scores = predictor.predict(pa.Table.from_batches([rows]))["probs"]
    np.testing.assert_allclose(scores, eager, atol=1e-5)
