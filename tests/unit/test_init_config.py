"""``recforge init --data PATH``: a starter config from a table's columns (in-process)."""

import datetime

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recforge.config import ConfigError, load_pipeline_config, validate_config
from recforge.errors import DataError
from recforge.protos import data_pb2
from recforge.tools.init_config import starter_config, write_starter_config


def _table(num_rows: int = 200) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "user_id": [f"u{i}" for i in rng.integers(0, 150, num_rows)],
            "hour": rng.integers(0, 24, num_rows),
            "amount": rng.random(num_rows) * 100,
            "tags": ["|".join(f"t{j}" for j in rng.integers(0, 30, 2)) for _ in range(num_rows)],
            "seen": pa.array([[int(x), 1] for x in rng.integers(0, 40, num_rows)]),
            "when": pa.array([datetime.datetime(2026, 1, 1)] * num_rows),
            "label": rng.integers(0, 2, num_rows),
        }
    )


def _features(config) -> dict:
    out = {}
    for fc in config.feature_configs:
        kind = fc.WhichOneof("feature")
        out[getattr(fc, kind).feature_name] = (kind, getattr(fc, kind))
    return out


def test_columns_become_features_by_type_and_statistics(tmp_path):
    path = str(tmp_path / "t.parquet")
    pq.write_table(_table(), path)
    config, summary = starter_config(path)
    features = _features(config)
    assert summary["label"] == "label" and summary["skipped"] == ["when (timestamp[us])"]
    kind, user = features["user_id"]
    distinct = len(set(_table().column("user_id").to_pylist()))
    assert kind == "id_feature" and 2 * distinct <= user.hash_bucket_size < 2 * distinct + 10
    assert features["hour"][0] == "id_feature"  # few distinct integers: an id
    tags = features["tags"][1]
    assert tags.separator == "|" and tags.pooling == "mean" and tags.hash_bucket_size == 60
    assert features["seen"][1].pooling == "mean"
    kind, amount = features["amount"]
    cuts = list(amount.boundaries)
    assert kind == "raw_feature" and len(cuts) == 9 and cuts == sorted(cuts)
    assert 40 < cuts[4] < 60  # the median of uniform [0, 100)
    assert config.data_config.fg_mode == data_pb2.FG_DAG
    groups = {g.group_name: list(g.feature_names) for g in config.model_config.feature_groups}
    assert groups["wide"] == groups["fm"] and "amount" in groups["deep"]
    assert config.model_config.WhichOneof("model") == "deepfm"
    validate_config(config)


def test_the_written_config_loads_and_is_never_overwritten(tmp_path):
    data = str(tmp_path / "t.csv")
    table = _table(50).drop_columns(["seen", "when"])
    pacsv.write_csv(table, data)
    out = str(tmp_path / "starter.config")
    summary = write_starter_config(data, out)
    assert summary["config"] == out
    config = load_pipeline_config(out)
    validate_config(config, out)
    assert config.data_config.with_header and config.train_input_path == data
    with pytest.raises(ConfigError, match="--force"):
        write_starter_config(data, out)
    write_starter_config(data, out, force=True, label="hour")
    assert list(load_pipeline_config(out).data_config.label_fields) == ["hour"]


def test_missing_label(tmp_path):
    path = str(tmp_path / "t.parquet")
    pq.write_table(_table(10).drop_columns(["label"]), path)
    with pytest.raises(DataError, match="expected a label column named one of"):
        starter_config(path)
    with pytest.raises(DataError, match="label column 'nope'"):
        starter_config(path, label="nope")


def test_name_patterns_decide_for_many_columns_at_once(tmp_path):
    path = str(tmp_path / "t.parquet")
    pq.write_table(_table(), path)
    # hour (few integers) would be an id and amount a raw feature: the patterns turn them round
    config, summary = starter_config(path, id_columns="am*", raw_columns="hour,user*")
    features = _features(config)
    assert features["amount"][0] == "id_feature" and features["hour"][0] == "raw_feature"
    assert features["user_id"][0] == "id_feature"  # a string column cannot be raw
    assert summary["raw_features"] == ["hour"]
