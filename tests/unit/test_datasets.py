"""Tests for recforge.datasets: readers, sharding, DataParser, RecDataset and the DataLoader."""

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

import recforge.datasets.dataset as dataset_module
import recforge.datasets.readers as readers_module
from recforge.datasets import (
    Batch,
    CsvReader,
    DataError,
    DataParser,
    ParquetReader,
    RecDataset,
)
from recforge.datasets.batch_builder import (
    build_dense_features,
    build_sparse_features,
    infer_batch_size,
)
from recforge.datasets.readers import ORIGIN_FILE, ORIGIN_ROW, slot_rows
from recforge.features import FG_DAG, FeatureError, create_features
from recforge.protos import data_pb2, feature_pb2
from tests.helpers.datasets import (
    data_config,
    feature_configs,
    make_table,
    write_files,
)
from tests.helpers.paths import REPO_ROOT

FRAPPE = os.path.join(REPO_ROOT, "..", "shared", "data", "frappe", "frappe_validation.csv")


def row_ids(batches) -> list[int]:
    out = []
    for rb in batches:
        out.extend(rb.column("row_id").to_pylist())
    return out


READERS = {"csv": CsvReader, "parquet": ParquetReader}


# ---------------------------------------------------------------------------- readers
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_exact_batch_sizes_across_files(tmp_path, kind):
    pattern = write_files(tmp_path, kind, [100, 55, 3])
    reader = READERS[kind](pattern, 32, None, data_config(kind))
    batches = list(reader.iter_batches())
    assert [b.num_rows for b in batches] == [32, 32, 32, 32, 30]
    assert row_ids(batches) == list(range(158))
    dropped = READERS[kind](pattern, 32, None, data_config(kind), drop_remainder=True)
    assert [b.num_rows for b in dropped.iter_batches()] == [32] * 4


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("sizes", [[500], [120, 80, 100, 90, 33]])
def test_slots_get_every_row_once(tmp_path, kind, sizes):
    """2 ranks x 2 workers: one file (batch-level shards) or more files than slots."""
    pattern = write_files(tmp_path, kind, sizes)
    reader = READERS[kind](pattern, 16, ["row_id"], data_config(kind))
    seen = []
    for slot in range(4):
        batches = list(reader.iter_batches(slot, 4))
        assert all(b.num_rows == 16 for b in batches[:-1])
        assert batches, f"slot {slot} got no data"
        seen.extend(row_ids(batches))
    assert sorted(seen) == list(range(sum(sizes)))


def test_selected_columns_and_comma_paths(tmp_path):
    write_files(tmp_path, "parquet", [10], prefix="a")
    write_files(tmp_path, "parquet", [10], prefix="b")
    paths = f"{tmp_path}/a_0.parquet, {tmp_path}/b_*.parquet"
    reader = ParquetReader(paths, 8, ["price", "row_id", "missing"], data_config())
    assert reader.files == [f"{tmp_path}/a_0.parquet", f"{tmp_path}/b_0.parquet"]
    batch = next(reader.iter_batches())
    assert batch.schema.names == ["price", "row_id"]
    assert [b.num_rows for b in reader.iter_batches()] == [8, 8, 4]


def test_empty_glob_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pattern '.*nothing_\*\.parquet' matched no"):
        ParquetReader(f"{tmp_path}/nothing_*.parquet", 8, None, data_config())
    with pytest.raises(DataError, match="not found"):
        ParquetReader(f"{tmp_path}/absent.parquet", 8, None, data_config())


def test_shuffle_changes_order_per_epoch(tmp_path):
    pattern = write_files(tmp_path, "parquet", [100, 100, 100])
    cfg = data_config(shuffle_buffer_size=4)
    reader = ParquetReader(pattern, 10, None, cfg, shuffle=True, seed=3)
    epoch0 = row_ids(reader.iter_batches(epoch=0))
    assert row_ids(reader.iter_batches(epoch=0)) == epoch0
    epoch1 = row_ids(reader.iter_batches(epoch=1))
    assert epoch0 != epoch1 and epoch0 != list(range(300))
    assert sorted(epoch0) == sorted(epoch1) == list(range(300))
    assert all(b.num_rows == 10 for b in reader.iter_batches(epoch=2))


def test_csv_without_header_input_fields_and_null_columns(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("1\t\t0.5\tx\n0\t\t1.5\ty\n1\t\t\t\n")
    cfg = data_pb2.DataConfig(
        dataset_type=data_pb2.CsvDataset, delimiter="\t", label_fields=["label"]
    )
    for name, field_type in [("label", None), ("empty", None), ("price", None), ("cat", 2)]:
        field = cfg.input_fields.add(input_name=name)
        if field_type is not None:
            field.input_type = field_type
    reader = CsvReader(str(path), 10, None, cfg)
    (batch,) = list(reader.iter_batches())
    assert batch.schema.field("label").type == pa.float32()
    assert batch.schema.field("empty").type == pa.string()
    assert batch.schema.field("cat").type == pa.string()
    assert batch.column("cat").to_pylist() == ["x", "y", None]


def test_csv_type_change_between_files_is_a_clear_error(tmp_path):
    (tmp_path / "a.csv").write_text("label,x\n1,1\n")
    (tmp_path / "b.csv").write_text("label,x\n1,abc\n")
    reader = CsvReader(f"{tmp_path}/*.csv", 10, None, data_config("csv"))
    with pytest.raises(DataError, match=r"b\.csv.*column .x.*input_fields"):
        list(reader.iter_batches())


# ---------------------------------------------------------------------------- parser
def test_parser_outputs_and_batch(tmp_path):
    features = create_features(feature_configs(), fg_mode=FG_DAG)
    parser = DataParser(
        features,
        labels=["label"],
        sample_weights=["price"],
        reserved_columns=["row_id"],
        extra_id_columns=["cat"],
    )
    assert parser.input_columns == ["row_id", "cat", "tags", "price", "label"]
    rb = make_table(0, 8).to_batches()[0]
    parsed = parser.parse(rb)
    assert parsed["row_id.values"].tolist() == list(range(8))
    assert parsed["tags.lengths"].tolist() == [0, 2, 2, 2, 0, 2, 2, 2]
    assert parsed["price.values"].shape == (8, 1) and parsed["price.values"].dtype == torch.float32
    assert parsed["label.label"].dtype == torch.float32
    assert parsed["extra.cat"].dtype == torch.int64
    batch = parser.to_batch(parsed, parser.select_reserves(rb))
    assert isinstance(batch, Batch) and batch.batch_size == 8
    assert batch.sparse_features.keys() == ["row_id", "cat", "tags"]
    assert batch.sparse_features.stride() == 8
    assert batch.sparse_features["tags"].lengths().tolist() == [0, 2, 2, 2, 0, 2, 2, 2]
    assert batch.dense_features.keys() == ["price"]
    assert batch.dense_features.values().shape == (8, 1)
    assert batch.labels["label"].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert batch.sample_weights["price"].tolist() == [i * 0.5 for i in range(8)]
    assert batch.reserves.column("row_id").to_pylist() == list(range(8))
    # the grouping key hash is stable: equal values -> equal ids, across batches
    again = parser.parse(make_table(7, 8).to_batches()[0])
    assert again["extra.cat"][0] == parsed["extra.cat"][7]


def test_parser_without_dense_or_sparse():
    configs = feature_configs()
    rb = make_table(0, 5).to_batches()[0]
    sparse_only = DataParser(create_features(configs[:3], fg_mode=FG_DAG)).parse_batch(rb)
    assert sparse_only.dense_features.values().shape == (5, 0)
    assert sparse_only.batch_size == 5
    dense_only = DataParser(create_features(configs[3:], fg_mode=FG_DAG)).parse_batch(rb)
    assert isinstance(dense_only.sparse_features, KeyedJaggedTensor)
    assert dense_only.sparse_features.keys() == [] and dense_only.sparse_features.stride() == 5
    assert isinstance(dense_only.dense_features, KeyedTensor)


class ScriptedInputs(torch.nn.Module):
    """What an export wrapper does: flat tensor dict -> torchrec inputs, scripted.

    (TorchScript reads the class annotations, so this module must not use
    ``from __future__ import annotations``.)
    """

    sparse_keys: list[str]
    dense_keys: list[str]
    dense_dims: list[int]

    def __init__(self, parser: DataParser) -> None:
        super().__init__()
        self.sparse_keys = parser.sparse_keys
        self.dense_keys = parser.dense_keys
        self.dense_dims = parser.dense_dims

    def forward(self, parsed: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = infer_batch_size(parsed, self.sparse_keys, self.dense_keys, [])
        sparse = build_sparse_features(parsed, self.sparse_keys, batch_size)
        dense = build_dense_features(parsed, self.dense_keys, self.dense_dims, batch_size)
        return sparse.lengths(), dense.values()


def test_batch_builder_is_scriptable():
    parser = DataParser(create_features(feature_configs(), fg_mode=FG_DAG))
    parsed = parser.parse(make_table(0, 6).to_batches()[0])
    batch = parser.to_batch(parsed)
    lengths, dense = torch.jit.script(ScriptedInputs(parser))(parsed)
    assert torch.equal(lengths, batch.sparse_features.lengths())
    assert torch.equal(dense, batch.dense_features.values())


def test_missing_column_error():
    parser = DataParser(create_features(feature_configs(), fg_mode=FG_DAG), labels=["label"])
    rb = make_table(0, 4).drop_columns(["tags"]).to_batches()[0]
    with pytest.raises(DataError) as err:
        parser.parse(rb)
    message = str(err.value)
    assert "column 'tags'" in message and "feature 'tags'" in message
    assert "available columns" in message and "'price'" in message
    with pytest.raises(DataError, match=r"column 'label' needed by label column"):
        parser.parse(make_table(0, 4).drop_columns(["label"]).to_batches()[0])


def test_bad_labels():
    parser = DataParser([], labels=["label"])
    with pytest.raises(DataError, match=r"label column 'label': .*found null at row 1"):
        parser.parse(pa.record_batch({"label": pa.array([1.0, None])}))
    with pytest.raises(DataError, match=r"label column 'label': .*found NaN at row 0"):
        parser.parse(pa.record_batch({"label": pa.array([float("nan")])}))
    with pytest.raises(DataError, match=r"label column 'label': .*found -inf at row 1"):
        parser.parse(pa.record_batch({"label": pa.array([0.0, float("-inf")])}))
    binary = DataParser([], labels=["label"], binary_labels=["label"])
    with pytest.raises(DataError, match=r"needs labels 0 or 1, found 0.5 at row 2"):
        binary.parse(pa.record_batch({"label": pa.array([1.0, 0.0, 0.5])}))
    assert parser.parse(pa.record_batch({"label": pa.array([0.5])}))["label.label"].item() == 0.5


def test_feature_error_propagates():
    parser = DataParser(create_features(feature_configs()[1:2], fg_mode=FG_DAG))
    rb = pa.record_batch({"cat": pa.array([1, 99])})
    with pytest.raises(FeatureError, match=r"feature 'cat' \(column 'cat'\).*99"):
        parser.parse(rb)


# ---------------------------------------------------------------------------- dataset
def test_dataset_modes(tmp_path):
    pattern = write_files(tmp_path, "parquet", [50])
    features = create_features(feature_configs(), fg_mode=FG_DAG)
    cfg = data_config(batch_size=16, eval_batch_size=32)
    assert RecDataset(cfg, features, pattern, "train").batch_size == 16
    assert RecDataset(cfg, features, pattern, "eval").batch_size == 32
    predict = RecDataset(
        data_pb2.DataConfig(), features, pattern, "predict", reserved_columns=["row_id"]
    )
    assert predict.batch_size == 1024
    (batch,) = list(predict)
    assert batch.labels == {} and batch.reserves.num_rows == 50
    with pytest.raises(DataError, match="label_fields is empty"):
        RecDataset(data_pb2.DataConfig(), features, pattern, "train")
    with pytest.raises(DataError, match="mode"):
        RecDataset(cfg, features, pattern, "serve")


def test_dataset_set_epoch_reshuffles(tmp_path):
    pattern = write_files(tmp_path, "parquet", [60, 60])
    cfg = data_config(batch_size=10, shuffle=True)
    features = create_features(feature_configs()[:1], fg_mode=FG_DAG)
    dataset = RecDataset(cfg, features, pattern, "train")

    def epoch_ids(epoch):
        dataset.set_epoch(epoch)
        return [i for b in dataset for i in b.sparse_features["row_id"].values().tolist()]

    assert epoch_ids(0) == epoch_ids(0)
    assert epoch_ids(0) != epoch_ids(1)
    assert sorted(epoch_ids(1)) == list(range(120))


@pytest.mark.skipif(
    not os.path.isfile(FRAPPE),
    reason="../shared/data/frappe/frappe_validation.csv is absent (real data is not shipped)",
)
def test_frappe_parse_speed():
    names = "user,item,daytime,weekday,isweekend,homework,cost,weather,country,city".split(",")
    configs = []
    for name in names:
        cfg = feature_pb2.FeatureConfig()
        cfg.id_feature.CopyFrom(
            feature_pb2.IdFeature(feature_name=name, num_buckets=5382, embedding_dim=10)
        )
        configs.append(cfg)
    cfg = data_pb2.DataConfig(
        batch_size=4096, dataset_type=data_pb2.CsvDataset, with_header=True, label_fields=["label"]
    )
    dataset = RecDataset(cfg, create_features(configs, fg_mode=FG_DAG), FRAPPE, "train")
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        rows = sum(batch.batch_size for batch in dataset)
        rates.append(rows / (time.perf_counter() - start))
    assert rows == 57722
    print(f"\nfrappe_validation.csv: {rows} rows, read+parse+batch {max(rates):,.0f} rows/s")


# ---------------------------------------------------------------------------- sharding by rows
@pytest.mark.parametrize("total", [0, 1, 3, 64, 65, 129, 161])
@pytest.mark.parametrize("slots", [2, 3])
@pytest.mark.parametrize("batch_size", [1, 16, 40])
def test_slot_rows_equal_batches_and_every_row(total, slots, batch_size):
    rows, batches = slot_rows(total, slots, batch_size)
    assert sum(rows) == total and max(rows) - min(rows) <= 1
    if total < slots:
        assert batches == (None if total else 0)
        return
    for n in rows:  # what a slot yields: batch_size rows per batch, at most `batches` batches
        rb = pa.record_batch({"x": pa.array(np.arange(n))})
        got = list(readers_module._at_most(readers_module.rebatch([rb], batch_size), batches))
        assert len(got) == batches and sum(b.num_rows for b in got) == n
        assert all(b.num_rows == batch_size for b in got[:-1])
    dropped, full = slot_rows(total, slots, batch_size, drop_remainder=True)
    assert set(dropped) == {full * batch_size} and total - sum(dropped) < slots * batch_size


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_slots_read_as_many_batches_with_the_origin_of_each_row(tmp_path, kind):
    # 161 rows of batch 40 on 2 slots: 81 + 80 rows, two batches each (40 + 41, 40 + 40)
    pattern = write_files(tmp_path, kind, [100, 61])
    reader = READERS[kind](pattern, 40, ["row_id"], data_config(kind))
    per_slot = [list(reader.iter_batches(slot, 2, with_origin=True)) for slot in range(2)]
    assert [[b.num_rows for b in batches] for batches in per_slot] == [[40, 41], [40, 40]]
    for batches in per_slot:
        for rb in batches:
            files = rb.column(ORIGIN_FILE).to_numpy()
            rows = rb.column(ORIGIN_ROW).to_numpy()
            starts = np.array([0, 100])[files]  # row_id counts on across the two files
            assert (starts + rows).tolist() == rb.column("row_id").to_pylist()


def test_dataset_error_names_file_and_row_of_a_shuffled_batch(tmp_path):
    write_files(tmp_path, "parquet", [50, 50])
    table = pq.read_table(tmp_path / "part_1.parquet")
    labels = table.column("label").to_pylist()
    labels[23] = 7.0
    pq.write_table(table.set_column(4, "label", pa.array(labels)), tmp_path / "part_1.parquet")
    cfg = data_config(batch_size=16, shuffle=True, shuffle_buffer_size=8)
    features = create_features(feature_configs()[:1])
    pattern = f"{tmp_path}/part_*.parquet"
    dataset = RecDataset(cfg, features, pattern, "train", binary_labels=["label"])
    with pytest.raises(DataError) as info:
        list(dataset)
    assert str(info.value) == (
        f"{tmp_path}/part_1.parquet: row 23: label column 'label': a binary loss needs labels 0 "
        "or 1, found 7 (train input)"
    )


def test_rows_no_rank_trains_are_logged_with_the_option(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dataset_module, "_rank_and_world_size", lambda: (0, 2))
    features = create_features(feature_configs()[:1], fg_mode=FG_DAG)
    tiny = write_files(tmp_path, "parquet", [3], prefix="tiny")
    with caplog.at_level("WARNING", logger="recforge"):
        RecDataset(data_config(batch_size=16), features, tiny, "train").plan(num_workers=2)
        # 2 ranks x 2 workers, 3 rows: rank 1 has 1 row, so rank 0 trains 1 of its 2
        assert "train input: 1 of its 3 rows are not read" in caplog.text
        assert "data_config.num_workers" in caplog.text
        caplog.clear()
        rows = write_files(tmp_path, "parquet", [50], prefix="rows")
        cfg = data_config(batch_size=16, drop_remainder=True)
        RecDataset(cfg, features, rows, "train").plan(num_workers=1)
        assert "train input: 18 of its 50 rows are not read" in caplog.text
        assert "data_config.drop_remainder" in caplog.text
        caplog.clear()
        RecDataset(data_config(batch_size=16), features, rows, "eval").plan(num_workers=1)
        assert caplog.text == ""  # 25 + 25 rows: 2 batches each, every row read
