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
from recforge.features import FG_NONE
from recforge.features.fg_offline import run_fg, with_fg_mode
from recforge.models.factory import build_model
from recforge.models.model import BaseModel, TrainWrapper
from recforge.predictor import Predictor
from recforge.protos import feature_pb2, pipeline_pb2
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


#: a hashed user id feature, the plain column beside the feature under test
UID_FEATURE = (
    'id_feature { feature_name: "uid" expression: "user:uid" hash_bucket_size: 10'
    " embedding_dim: 4 }"
)


def fg_dag_multi_tower(features: list[str]) -> pipeline_pb2.EasyRecConfig:
    """An FG_DAG MultiTower config over ``features`` (FeatureConfig texts) and :data:`UID_FEATURE`.

    Its one DEEP group ``all`` reads every feature but the stubs; the label is ``clk``.
    """
    texts = [*features, UID_FEATURE]
    config = pipeline_pb2.EasyRecConfig()
    for text in texts:
        config.feature_configs.add().CopyFrom(text_format.Parse(text, feature_pb2.FeatureConfig()))
    messages = [getattr(f, f.WhichOneof("feature")) for f in config.feature_configs]
    names = [m.feature_name for m in messages if not getattr(m, "stub_type", False)]
    model = f"""
    data_config {{ fg_mode: FG_DAG label_fields: "clk" batch_size: 8 }}
    model_config {{
      feature_groups {{ group_name: "all" feature_names: {names!r} }}
      multi_tower {{
        towers {{ input: "all" mlp {{ hidden_units: [4] }} }}
        final {{ hidden_units: [2] }}
      }}
      metrics {{ auc {{}} }} losses {{ binary_cross_entropy {{}} }}
    }}
    """.replace("'", '"')
    text_format.Merge(model, config)
    return config


def assert_offline_fg_matches_fg_dag(
    config: pipeline_pb2.EasyRecConfig, rows: pa.RecordBatch
) -> pa.Table:
    """The offline FG's output, read with FG_NONE, parses into FG_DAG's tensors of ``rows``.

    Returns:
        The offline FG's table.
    """
    table = run_fg(config, rows)
    encoded = DataParser(build_features(with_fg_mode(config, FG_NONE)))
    torch.testing.assert_close(
        encoded.parse(table.to_batches()[0]), DataParser(build_features(config)).parse(rows)
    )
    return table
