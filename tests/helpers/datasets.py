"""Tiny CSV / Parquet part files with a row id, their data config and feature configs."""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recforge.protos import data_pb2, feature_pb2


def make_table(start: int, num_rows: int) -> pa.Table:
    row_id = np.arange(start, start + num_rows)
    return pa.table(
        {
            "row_id": pa.array(row_id, pa.int64()),
            "cat": pa.array(row_id % 7, pa.int64()),
            "tags": pa.array([f"t{i % 3}|t{i % 5}" if i % 4 else None for i in row_id]),
            "price": pa.array(row_id * 0.5, pa.float64()),
            "label": pa.array((row_id % 2).astype(np.float64)),
        }
    )


def write_files(tmp_path, kind: str, sizes: list[int], prefix: str = "part") -> str:
    start = 0
    for i, size in enumerate(sizes):
        table = make_table(start, size)
        path = tmp_path / f"{prefix}_{i}.{kind}"
        if kind == "parquet":
            pq.write_table(table, path, row_group_size=37)
        else:
            pacsv.write_csv(table, path)
        start += size
    return str(tmp_path / f"{prefix}_*.{kind}")


def data_config(kind: str = "parquet", **kwargs) -> data_pb2.DataConfig:
    cfg = data_pb2.DataConfig(label_fields=["label"], **kwargs)
    if kind == "csv":
        cfg.dataset_type = data_pb2.CsvDataset
        cfg.with_header = True
    return cfg


def feature_configs() -> list[feature_pb2.FeatureConfig]:
    configs = []
    for name, spec in [
        ("row_id", {"num_buckets": 100000}),
        ("cat", {"num_buckets": 7}),
        ("tags", {"hash_bucket_size": 16, "separator": "|"}),
    ]:
        cfg = feature_pb2.FeatureConfig()
        cfg.id_feature.CopyFrom(feature_pb2.IdFeature(feature_name=name, embedding_dim=4, **spec))
        configs.append(cfg)
    cfg = feature_pb2.FeatureConfig()
    cfg.raw_feature.feature_name = "price"
    configs.append(cfg)
    return configs
