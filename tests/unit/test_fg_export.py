"""The FG plan travels with an export: predict-time features equal train-time features after the
export directory is moved, assets are copied and found again, TorchEasyRec's fg.json is written,
and an export whose ids were hashed otherwise is refused."""

import glob
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from google.protobuf import text_format

from recforge import cli
from recforge.config import ConfigError
from recforge.datasets.data_parser import DataParser
from recforge.datasets.mock_data import generate_mock_data
from recforge.errors import ExportError
from recforge.export import export_model
from recforge.export.assets import copy_assets, resolve_assets
from recforge.export.files import write_feature_files
from recforge.features import FEATURE_CLASSES, FG_NONE, FeatureError, IdFeature
from recforge.features.fg_json import create_fg_json
from recforge.features.fg_mode import DEFAULT_MULTIVAL_SEP
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.predictor import check_export_id_hash, load_predictor
from recforge.protos import pipeline_pb2
from recforge.tools import create_fg_json as fg_tool
from recforge.utils.checkpoint import save_checkpoint
from recforge.utils.id_hash import ID_HASH, ID_HASH_KEY
from recforge.utils.layout import ASSETS_DIR, FG_JSON_FILE, MODEL_INFO_FILE
from recforge.utils.pipeline import build_features
from tests.helpers.mixed_features import mixed_features, mixed_model

FEATURES = mixed_features("FG_DAG")
MODEL = mixed_model()


def parse_config(text: str) -> pipeline_pb2.EasyRecConfig:
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def write_config(path: str, config: pipeline_pb2.EasyRecConfig) -> str:
    with open(path, "w") as f:
        f.write(text_format.MessageToString(config))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A checkpoint of the FG_DAG model (untrained), its raw rows and its export, moved away."""
    work = tmp_path_factory.mktemp("fg_export")
    config = parse_config(FEATURES + MODEL)
    config.model_dir = str(work / "model")
    config_path = write_config(str(work / "pipeline.config"), config)
    generate_mock_data(config, str(work / "data"), num_rows=40, seed=3)
    table = pq.read_table(glob.glob(str(work / "data" / "*.parquet"))[0])
    torch.manual_seed(0)
    model = build_model(config, build_features(config), embedding_device=torch.device("cpu"))
    save_checkpoint(config.model_dir, 1, TrainWrapper(model), None, {"global_step": 1})
    export_model(config_path, str(work / "export"))
    moved = str(work / "elsewhere" / "served")
    os.makedirs(os.path.dirname(moved))
    shutil.move(str(work / "export"), moved)
    return {"config": config, "config_path": config_path, "table": table, "export": moved}


def test_predict_time_features_equal_train_time_features_after_the_export_moved(run):
    train_parser = DataParser(build_features(run["config"]))  # the training pipeline's parser
    rows = run["table"].combine_chunks().to_batches()[0]
    assert {"user_id", "city", "kv_clicks", "kkv", "min_age", "click_seq__brand"} <= set(
        rows.schema.names
    )  # raw columns, not FG output
    train = train_parser.parse(rows)
    predictor = load_predictor(run["export"])
    served = predictor.parser.parse(rows)
    assert set(served) == set(train)
    for name, value in train.items():
        torch.testing.assert_close(served[name], value, atol=0, rtol=0, msg=name)
    assert any(train[f"{n}.values"].numel() for n in ("click_seq__brand", "brand_clicks"))
    # and the scores are the scripted model's on the training parser's tensors
    scores = predictor.predict(run["table"])["probs"]
    with torch.no_grad():
        expected = predictor.model(train)["probs"].numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_the_export_carries_fg_json_and_the_id_hash(run):
    with open(os.path.join(run["export"], FG_JSON_FILE)) as f:
        written = json.load(f)
    assert written == create_fg_json(run["config"])
    assert [e.get("feature_name", e.get("sequence_name")) for e in written["features"]][-3:] == [
        "cate_score",
        "age_gap",
        "click_seq",
    ]
    with open(os.path.join(run["export"], MODEL_INFO_FILE)) as f:
        assert json.load(f)[ID_HASH_KEY] == ID_HASH


def test_an_export_without_the_id_hash_is_refused_when_its_model_hashes_ids(run, tmp_path):
    old = str(tmp_path / "old_export")
    shutil.copytree(run["export"], old)
    info_path = os.path.join(old, MODEL_INFO_FILE)
    with open(info_path) as f:
        info = json.load(f)
    del info[ID_HASH_KEY]
    with open(info_path, "w") as f:
        json.dump(info, f)
    with pytest.raises(ExportError, match=r"info.json: expected id_hash .*none.*user_id"):
        load_predictor(old)
    with pytest.raises(ExportError, match="found other_hash"):
        check_export_id_hash({ID_HASH_KEY: "other_hash"}, build_features(run["config"]), old)
    # a model reading FG output (bucket ids already) has nothing to misread
    encoded = parse_config(FEATURES)
    encoded.data_config.fg_mode = FG_NONE
    check_export_id_hash({}, build_features(encoded), old)


# ------------------------------------------------------------------------------ assets
class VocabFileIdFeature(IdFeature):
    """An id feature reading its vocabulary (one token a line) from ``vocab_file``."""

    @classmethod
    def asset_fields(cls):
        return ("vocab_file",)

    def __init__(self, feature_config, fg_mode=FG_NONE, sep=DEFAULT_MULTIVAL_SEP):
        config = type(feature_config)()
        config.CopyFrom(feature_config)
        if config.HasField("vocab_file"):
            path = config.vocab_file
            if config.asset_dir:
                path = os.path.join(config.asset_dir, path)
            with open(path) as f:
                config.vocab_list.extend(line.strip() for line in f)
            config.ClearField("vocab_file")
            config.ClearField("asset_dir")
        super().__init__(config, fg_mode, sep)


@pytest.fixture
def vocab_file_feature(monkeypatch):
    monkeypatch.setitem(FEATURE_CLASSES, "id_feature", VocabFileIdFeature)


def with_vocab_files(tmp_path) -> pipeline_pb2.EasyRecConfig:
    """FEATURES with city's vocabulary in a file (asset_dir), and another vocab.txt twice."""
    for directory, words in (("a", ["bj", "sh", "gz"]), ("b", ["nike", "adidas"])):
        os.makedirs(tmp_path / directory)
        (tmp_path / directory / "vocab.txt").write_text("\n".join(words) + "\n")
    config = parse_config(FEATURES + MODEL)
    city = config.feature_configs[1].id_feature
    del city.vocab_list[:]
    city.vocab_file, city.asset_dir = "vocab.txt", str(tmp_path / "a")
    extra = config.feature_configs.add().id_feature
    extra.feature_name, extra.expression, extra.embedding_dim = "brand2", "item:brand", 4
    extra.vocab_file = str(tmp_path / "b" / "vocab.txt")  # same name, other content
    third = config.feature_configs.add().id_feature
    third.CopyFrom(extra)
    third.feature_name = "brand3"  # the same file again
    return config


def test_assets_are_copied_once_each_and_read_from_the_new_place(vocab_file_feature, tmp_path, run):
    config = with_vocab_files(tmp_path)
    exported, copied = copy_assets(config, str(tmp_path / "export"))
    assert len(copied) == 2 and all(c.startswith(f"{ASSETS_DIR}/vocab_") for c in copied)
    city = exported.feature_configs[1].id_feature
    assert city.vocab_file in copied and not city.HasField("asset_dir")
    assert exported.feature_configs[-1].id_feature.vocab_file == copied[1]
    assert config.feature_configs[1].id_feature.vocab_file == "vocab.txt"  # input unchanged
    shutil.move(str(tmp_path / "export"), str(tmp_path / "moved"))
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "b")
    resolve_assets(exported, str(tmp_path / "moved"))
    rows = run["table"].combine_chunks().to_batches()[0]
    served = DataParser(build_features(exported)).parse(rows)
    inline = DataParser(build_features(run["config"])).parse(rows)
    torch.testing.assert_close(served["city.values"], inline["city.values"], atol=0, rtol=0)
    assert served["brand2.values"].tolist() == served["brand3.values"].tolist()


def test_a_moved_export_predicts_with_its_copied_vocab_file(vocab_file_feature, tmp_path, run):
    config = with_vocab_files(tmp_path)
    del config.feature_configs[-2:]
    export = str(tmp_path / "export")
    shutil.copytree(run["export"], export)  # the same model: the file holds the same vocabulary
    shutil.rmtree(os.path.join(export, ASSETS_DIR), ignore_errors=True)
    exported = write_feature_files(export, config)
    write_config(os.path.join(export, "pipeline.config"), exported)
    with open(os.path.join(export, FG_JSON_FILE)) as f:
        city = json.load(f)["features"][1]
    assert city["vocab_file"].startswith(f"{ASSETS_DIR}/vocab_") and "vocab_list" not in city
    moved = str(tmp_path / "moved")
    shutil.move(export, moved)
    shutil.rmtree(tmp_path / "a")
    got = load_predictor(moved).predict(run["table"])["probs"]
    np.testing.assert_array_equal(got, load_predictor(run["export"]).predict(run["table"])["probs"])
    os.remove(os.path.join(moved, exported.feature_configs[1].id_feature.vocab_file))
    with pytest.raises(ExportError, match=r"feature_configs\[1\].id_feature.vocab_file names"):
        load_predictor(moved)


def test_a_missing_asset_file_names_the_field(vocab_file_feature, tmp_path):
    config = with_vocab_files(tmp_path)
    config.feature_configs[1].id_feature.vocab_file = "missing.txt"
    with pytest.raises(ConfigError, match=r"feature_configs\[1\].id_feature.vocab_file"):
        copy_assets(config, str(tmp_path / "export"))


# ------------------------------------------------------------------------------ fg.json
FG_CONFIG = """
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id"
  hash_bucket_size: 100 } }
feature_configs { id_feature { feature_name: "city" expression: "user:city" separator: "|"
  vocab_list: ["bj", "sh"] value_dim: 1 } }
feature_configs { id_feature { feature_name: "brand" expression: "item:brand"
  vocab_dict { key: "nike" value: 2 } default_value: "none" } }
feature_configs { id_feature { feature_name: "cate" expression: "item:cate" num_buckets: 10 } }
feature_configs { raw_feature { feature_name: "age" expression: "user:age" boundaries: [18, 30] } }
feature_configs { raw_feature { feature_name: "emb" expression: "item:emb" value_dim: 2
  separator: "," normalizer: "method=log10" } }
feature_configs { combo_feature { feature_name: "city_brand" expression: ["user:city", "item:brand"]
  hash_bucket_size: 50 } }
feature_configs { lookup_feature { feature_name: "clicks" map: "user:kv" key: "item:brand" } }
feature_configs { lookup_feature { feature_name: "click_ids" map: "user:kv" key: "item:brand"
  hash_bucket_size: 20 } }
feature_configs { lookup_feature { feature_name: "vec" map: "user:kv" key: "item:brand"
  value_dim: 2 } }
feature_configs { match_feature { feature_name: "score" nested_map: "user:kkv" pkey: "ALL"
  skey: "item:brand" boundaries: [0.5] } }
feature_configs { expr_feature { feature_name: "gap" variables: ["user:age", "item:min_age"]
  expression: "age - min_age" fill_missing: 0 } }
feature_configs { sequence_feature { sequence_name: "seq" sequence_length: 5
  features { id_feature { feature_name: "brand" expression: "item:brand" hash_bucket_size: 30 } }
  features { raw_feature { feature_name: "price" expression: "item:price" boundaries: [1] } } } }
feature_configs { sequence_id_feature { feature_name: "hist" expression: "user:hist"
  sequence_length: 3 num_buckets: 9 } }
"""

# worked out by hand from TorchEasyRec's feature classes' fg_json()
ID = {"value_type": "string", "need_prefix": False}
FG_EXPECTED = [
    {"feature_type": "id_feature", "feature_name": "user_id", "default_value": "",
     "expression": "user:user_id", **ID, "hash_bucket_size": 100, "value_dim": 0},
    {"feature_type": "id_feature", "feature_name": "city", "default_value": "",
     "expression": "user:city", **ID, "separator": "|", "vocab_list": ["", "<OOV>", "bj", "sh"],
     "default_bucketize_value": 1, "value_dim": 1},
    {"feature_type": "id_feature", "feature_name": "brand", "default_value": "none",
     "expression": "item:brand", **ID, "vocab_dict": {"nike": 2, "none": 0},
     "default_bucketize_value": 1, "value_dim": 0},
    {"feature_type": "id_feature", "feature_name": "cate", "default_value": "",
     "expression": "item:cate", **ID, "num_buckets": 10, "value_dim": 0},
    {"feature_type": "raw_feature", "feature_name": "age", "default_value": "0",
     "expression": "user:age", "value_type": "float", "boundaries": [18, 30]},
    {"feature_type": "raw_feature", "feature_name": "emb", "default_value": "0",
     "expression": "item:emb", "value_type": "float", "separator": ",", "value_dim": 2,
     "normalizer": "method=log10"},
    {"feature_type": "combo_feature", "feature_name": "city_brand", "default_value": "",
     "expression": ["user:city", "item:brand"], **ID, "value_dim": 0, "hash_bucket_size": 50},
    {"feature_type": "lookup_feature", "feature_name": "clicks", "map": "user:kv",
     "key": "item:brand", "default_value": "0", "value_type": "float", "needDiscrete": False,
     "needKey": False, "combiner": "sum"},
    {"feature_type": "lookup_feature", "feature_name": "click_ids", "map": "user:kv",
     "key": "item:brand", "default_value": "0", "value_type": "string", "needDiscrete": True,
     "needKey": False, "combiner": "", "hash_bucket_size": 20, "value_dim": 1},
    {"feature_type": "lookup_feature", "feature_name": "vec__lookup", "map": "user:kv",
     "key": "item:brand", "default_value": "0,0", "value_type": "string", "needDiscrete": True,
     "needKey": False, "combiner": "", "value_dim": 1, "stub_type": True},
    {"feature_type": "raw_feature", "feature_name": "vec", "default_value": "0",
     "expression": "feature:vec__lookup", "separator": ",", "value_dim": 2, "value_type": "float"},
    {"feature_type": "match_feature", "feature_name": "score", "user": "user:kkv",
     "category": "ALL", "item": "item:brand", "matchType": "multihit", "default_value": "0",
     "value_type": "float", "needDiscrete": False, "show_category": False, "show_item": False,
     "boundaries": [0.5]},
    {"feature_type": "expr_feature", "feature_name": "gap", "default_value": "0",
     "expression": "age - min_age", "variables": ["user:age", "item:min_age"],
     "value_type": "float", "fill_missing": 0},
    {"sequence_name": "seq", "sequence_length": 5, "sequence_delim": ";",
     "sequence_pk": "user:seq", "features": [
        {"feature_type": "id_feature", "feature_name": "brand", "default_value": "0",
         "expression": "item:brand", **ID, "hash_bucket_size": 30, "value_dim": 1},
        {"feature_type": "raw_feature", "feature_name": "price", "default_value": "0",
         "expression": "item:price", "value_type": "float", "boundaries": [1]}]},
    {"feature_type": "sequence_id_feature", "feature_name": "hist", "default_value": "0",
     "expression": "user:hist", **ID, "num_buckets": 9, "value_dim": 1, "sequence_delim": ";",
     "sequence_length": 3},
]  # fmt: skip


def test_fg_json_of_every_kind_is_torcheasyrecs():
    got = create_fg_json(parse_config(FG_CONFIG))["features"]
    assert len(got) == len(FG_EXPECTED)
    for entry, expected in zip(got, FG_EXPECTED):
        assert entry == expected


def test_remove_bucketizer_keeps_the_rest():
    got = create_fg_json(parse_config(FG_CONFIG), remove_bucketizers=True)["features"]
    assert "hash_bucket_size" not in got[0] and got[0]["expression"] == "user:user_id"
    assert "vocab_list" not in got[1] and "boundaries" not in got[4]
    assert "hash_bucket_size" not in got[13]["features"][0]


def test_a_kind_without_a_writer_is_named():
    config = parse_config(FG_CONFIG)
    config.feature_configs.add().tokenize_feature.feature_name = "title"
    with pytest.raises(FeatureError, match=r"feature_configs\[14\].tokenize_feature: .*no fg.json"):
        create_fg_json(config)


def test_create_fg_json_commands(tmp_path, capsys):
    config_path = write_config(str(tmp_path / "c.config"), parse_config(FEATURES + MODEL))
    out = str(tmp_path / "out" / "my_fg.json")
    assert cli.main(["create-fg-json", "--config", config_path, "--fg_output_path", out]) == 0
    with open(out) as f:
        assert json.load(f) == create_fg_json(parse_config(FEATURES))
    flags = ["--pipeline_config_path", config_path, "--fg_output_dir", str(tmp_path / "tz")]
    assert fg_tool.main([*flags, "--reserves", "clk, request_id", "--remove_bucketizer"]) == 0
    with open(tmp_path / "tz" / FG_JSON_FILE) as f:
        written = json.load(f)
    assert written["reserves"] == ["clk", "request_id"]
    assert "hash_bucket_size" not in written["features"][0]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fg_tool.main([*flags, "--odps_project_name", "p"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("recforge: error: --odps_project_name: not supported")


def test_create_fg_json_of_a_bad_config_is_one_line(tmp_path, capsys):
    config = parse_config(FEATURES + MODEL)
    config.feature_configs[0].id_feature.hash_bucket_size = 0  # no bucketizer left
    config_path = write_config(str(tmp_path / "c.config"), config)
    with pytest.raises(SystemExit) as e:
        cli.main(["create-fg-json", "--config", config_path, "--fg_output_path", "x.json"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("recforge: error: ")]
    assert "c.config:" in line and "feature_configs[0].id_feature" in line
    assert not os.path.exists("x.json")
