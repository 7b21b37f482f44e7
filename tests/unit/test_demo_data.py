"""Tests for the synthetic demo data (planted signal) and the example configs (examples/)."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from recforge.config import ConfigError, load_pipeline_config, validate_config
from recforge.datasets import generate_demo_data
from recforge.demo.configs import EXAMPLES_DIR, example_names, load_example_config
from recforge.demo.run import prepare_demo
from recforge.demo.sequences import MAX_SEQUENCE_LENGTH, SEQUENCE_COLUMNS, SEQUENCE_DEMO_EFFECT
from recforge.demo.simulate import simulate_demo_table
from recforge.demo.world import AGE_BOUNDARIES, CITY_VOCAB, DEVICES, DemoWorld
from recforge.features import create_pipeline_features
from tests.helpers.demo_data import (
    auc,
)
from tests.helpers.paths import REPO_ROOT

#: the demo configs that read every column of the planted-signal demo data
FULL_COLUMN_MODELS = ("deepfm", "multi_tower", "multi_tower_din")


def test_planted_signal():
    table, probability = simulate_demo_table(40000, seed=0)
    labels = table["label"].to_numpy()
    oracle = auc(labels, probability)
    shuffled = auc(np.random.default_rng(0).permutation(labels), probability)
    print(f"\noracle AUC {oracle:.4f}, label-shuffled {shuffled:.4f}, ctr {labels.mean():.3f}")
    assert 0.83 <= oracle <= 0.92
    assert abs(shuffled - 0.5) < 0.02
    assert 0.2 < labels.mean() < 0.45


def test_same_seed_same_data_and_nulls():
    a, _ = simulate_demo_table(1000, seed=1)
    b, _ = simulate_demo_table(1000, seed=1)
    assert a.equals(b)
    for column in ["user_id", "city", "tags", "age", "price"]:
        assert 0 < a[column].null_count < 200, column
    assert any("|" in t for t in a["tags"].drop_null().to_pylist())


def sequence_overlap(table) -> np.ndarray:
    """Whether each row's click sequence holds an item of the candidate's category."""
    world = DemoWorld.create(0)
    items = table["click_seq__item_id"].to_pylist()
    categories = table["click_seq__category"].to_pylist()
    overlap = []
    for candidate, item_text, category_text in zip(
        table["category"].to_pylist(), items, categories
    ):
        seq_items = [int(i) for i in item_text.split(";")] if item_text else []
        seq_categories = [int(c) for c in category_text.split(";")] if category_text else []
        assert seq_categories == [int(world.item_category[i]) for i in seq_items]
        assert len(seq_items) <= 20
        overlap.append(candidate in seq_categories)
    return np.array(overlap)


def test_sequence_overlap_drives_the_label_only_in_the_sequence_demo():
    plain, _ = simulate_demo_table(20000, seed=0)
    sequence, probability = simulate_demo_table(20000, seed=0, sequence_effect=SEQUENCE_DEMO_EFFECT)
    # the sequence columns come from their own random stream: every feature column is shared
    assert plain.drop_columns(["label", "label_cvr"]).equals(
        sequence.drop_columns(["label", "label_cvr"])
    )
    overlap = sequence_overlap(sequence)
    assert 0.4 < overlap.mean() < 0.8 and sequence["click_seq__item_id"].null_count > 0
    plain_labels, labels = plain["label"].to_numpy(), sequence["label"].to_numpy()
    assert abs(plain_labels[overlap].mean() - plain_labels[~overlap].mean()) < 0.03
    assert labels[overlap].mean() - labels[~overlap].mean() > 0.3
    assert auc(labels, probability) > 0.85


def test_generate_files(tmp_path):
    paths = generate_demo_data(str(tmp_path), num_rows=1000, num_files=3)
    train_files = sorted(glob.glob(paths["train"]))
    assert len(train_files) == 3
    assert sum(pq.read_metadata(f).num_rows for f in train_files) == 1000
    assert pq.read_metadata(paths["eval"]).num_rows == 250


def test_the_packaged_examples_are_the_repository_examples():
    # one folder: recforge/examples (shipped in the wheel) links to examples/
    assert os.path.samefile(EXAMPLES_DIR, os.path.join(REPO_ROOT, "examples"))
    assert "deepfm_demo" in example_names("_demo") and "deepfm_frappe" not in example_names("_demo")


@pytest.mark.parametrize("name", example_names())
def test_every_example_config_loads_and_validates(name):
    path = os.path.join(REPO_ROOT, "examples", f"{name}.config")
    config = load_pipeline_config(path)
    validate_config(config, path)
    assert config.model_dir == f"experiments/{name}"


@pytest.mark.parametrize("model", FULL_COLUMN_MODELS)
def test_demo_configs_cover_every_column(model):
    config = load_example_config(f"{model}_demo")
    features = create_pipeline_features(config)
    names = {f.name for f in features}
    table, _ = simulate_demo_table(10)
    unused = {"label", "label_cvr"}
    if model != "multi_tower_din":
        unused |= set(SEQUENCE_COLUMNS)
    assert {c for f in features for c in f.inputs} == set(table.column_names) - unused
    assert all(f.embedding_dim % 4 == 0 for f in features if f.is_sparse)
    for group in config.model_config.feature_groups:
        assert set(group.feature_names) <= names
    assert config.model_config.WhichOneof("model") == model
    assert config.data_config.label_fields == ["label"]
    # the vocabularies and buckets are the data's
    by_name = {}
    for fc in config.feature_configs:
        feature = getattr(fc, fc.WhichOneof("feature"))
        by_name[getattr(feature, "feature_name", None) or feature.sequence_name] = feature
    assert list(by_name["city"].vocab_list) == CITY_VOCAB
    assert list(by_name["device"].vocab_list) == DEVICES
    assert list(by_name["age"].boundaries) == AGE_BOUNDARIES
    if model == "multi_tower_din":
        assert by_name["click_seq"].sequence_length == MAX_SEQUENCE_LENGTH


def test_demo_config_for_a_data_dir_reads_that_dir(tmp_path):
    data_dir = str(tmp_path / "elsewhere")
    paths = generate_demo_data(data_dir, num_rows=100)
    config = load_example_config("deepfm_demo", data_dir=data_dir, model_dir="m")
    assert (config.train_input_path, config.eval_input_path) == (paths["train"], paths["eval"])
    assert config.model_dir == "m"
    assert len(glob.glob(config.train_input_path)) == 2
    # every data path moves: the retrieval example's negative sampler table too
    dssm = load_example_config("dssm_demo", data_dir=data_dir)
    assert dssm.data_config.negative_sampler.input_path == os.path.join(data_dir, "items.parquet")
    assert dssm.model_dir == "experiments/dssm_demo"
    # without a data dir: the example as written
    assert load_example_config("deepfm_demo").train_input_path == "data/demo/train_*.parquet"


def test_the_documented_data_commands_reach_the_generators():
    # the commands the README and the demo configs' header comments give
    import recforge.datasets
    from recforge.demo import retrieval, simulate

    assert recforge.datasets.generate_demo_data is simulate.generate_demo_data
    assert recforge.datasets.generate_retrieval_demo_data is retrieval.generate_retrieval_demo_data


def test_unknown_example_is_a_config_error():
    with pytest.raises(ConfigError, match="no example config 'deepfn_demo'.*deepfm_demo"):
        load_example_config("deepfn_demo")


def test_prepare_demo_writes_data_and_a_config_that_reads_it(tmp_path):
    out = str(tmp_path / "demo")
    config_path = prepare_demo(out, num_rows=200)
    assert sorted(os.listdir(out)) == ["data", "deepfm_demo.config"]
    config = load_pipeline_config(config_path)
    validate_config(config, config_path)
    assert config.model_dir == os.path.join(out, "model")
    assert sorted(glob.glob(config.train_input_path)) == [
        os.path.join(out, "data", f"train_{i}.parquet") for i in range(2)
    ]
    assert pq.read_metadata(config.eval_input_path).num_rows == 50
    expected = load_example_config("deepfm_demo")
    for fld in ("train_input_path", "eval_input_path", "model_dir"):
        expected.ClearField(fld)
        config.ClearField(fld)
    assert config == expected
