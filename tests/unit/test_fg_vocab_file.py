"""``vocab_file``: an id vocabulary read from a file, with vocab_list / vocab_dict's index rules."""

import glob
import os
import shutil

import pyarrow as pa
import pytest
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, FeatureError, IdFeature, create_features
from recforge.features.fg_json import create_fg_json
from recforge.predictor import load_predictor
from recforge.protos import feature_pb2, pipeline_pb2
from recforge.utils.layout import ASSETS_DIR
from recforge.utils.pipeline import build_features
from tests.helpers.untrained_export import assert_served_as_trained, export_untrained, mock_rows

WORDS = ["bj", "sh", "gz"]


@pytest.fixture
def list_file(tmp_path):
    path = tmp_path / "city.txt"
    path.write_text("\n".join(WORDS) + "\n\n")  # trailing blank lines are no words
    return str(path)


def parse(cfg, column):
    return IdFeature(cfg, FG_DAG).parse({"city": pa.array(column)})


def test_a_list_file_indexes_as_vocab_list_with_default_bucketize_value(list_file):
    column = ["sh", "xx", None, "gz"]
    from_file = feature_pb2.IdFeature(
        feature_name="city",
        vocab_file=list_file,
        default_bucketize_value=2,
        default_value="bj",
        embedding_dim=4,
    )
    from_list = feature_pb2.IdFeature(
        feature_name="city",
        vocab_list=WORDS,
        default_bucketize_value=2,
        default_value="bj",
        embedding_dim=4,
    )
    out = parse(from_file, column)
    assert out["city.values"].tolist() == [1, 2, 0, 2]  # xx -> default_bucketize_value
    assert out["city.values"].tolist() == parse(from_list, column)["city.values"].tolist()
    feature = IdFeature(from_file, FG_DAG)
    assert feature.num_embeddings == 3 and feature.vocab == WORDS
    assert feature.table_size_source == "vocab_file"
    bad = feature_pb2.IdFeature(
        feature_name="city", vocab_file=list_file, default_bucketize_value=3, embedding_dim=4
    )
    with pytest.raises(FeatureError, match=r"default_bucketize_value 3 out of range \[0, 3\)"):
        IdFeature(bad, FG_DAG)


def test_a_dict_file_gives_its_ids_and_asset_dir_is_joined(tmp_path):
    (tmp_path / "d.txt").write_text("bj 4\nsh 2\n")
    cfg = feature_pb2.IdFeature(
        feature_name="city",
        vocab_file="d.txt",
        asset_dir=str(tmp_path),
        default_bucketize_value=7,
        embedding_dim=4,
    )
    assert parse(cfg, ["sh", "bj", "zz"])["city.values"].tolist() == [2, 4, 7]
    assert IdFeature(cfg, FG_DAG).num_embeddings == 8  # max(4, 7) + 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("bj\n\nsh\n", "line 2: expected a word, found a blank line"),
        ("bj 1\nsh\n", "line 2: expected 'word id'"),
        ("bj 1\nsh x\n", "line 2: expected an integer id, found 'x'"),
        ("bj\nbj\n", "line 2: word 'bj' repeats line 1"),
    ],
)
def test_bad_vocab_files_are_errors_naming_file_and_line(tmp_path, text, match):
    (tmp_path / "v.txt").write_text(text)
    cfg = feature_pb2.IdFeature(
        feature_name="city",
        vocab_file=str(tmp_path / "v.txt"),
        default_bucketize_value=0,
        embedding_dim=4,
    )
    with pytest.raises(FeatureError, match=match):
        IdFeature(cfg, FG_DAG)


def test_vocab_file_needs_default_bucketize_value_and_an_existing_file(list_file):
    cfg = feature_pb2.IdFeature(feature_name="city", vocab_file=list_file, embedding_dim=4)
    with pytest.raises(FeatureError, match="set default_bucketize_value"):
        IdFeature(cfg, FG_DAG)
    cfg.default_bucketize_value = 0
    cfg.vocab_file = list_file + ".missing"
    with pytest.raises(FeatureError, match="cannot read it"):
        IdFeature(cfg, FG_DAG)


@pytest.mark.parametrize(
    "kind, fields, columns",
    [
        ("combo_feature", 'expression: ["user:a", "item:b"]',
         {"a": ["bj", "x"], "b": ["sh", "gz"]}),
        ("lookup_feature", 'map: "user:m" key: "item:k"', {"m": ["1:bj", "1:sh"], "k": ["1", "1"]}),
        ("bool_mask_feature", 'expression: ["user:a", "user:mask"]',
         {"a": ["bj\x1dgz", "sh"], "mask": ["1\x1d0", "1"]}),
        ("custom_feature",
         'operator_name: "RegexReplace" expression: ["user:a"]'
         ' operator_params { fields { key: "regex_patten" value { string_value: "^x" } } }',
         {"a": ["gz", "qq", "xbj"]}),
    ],
)  # fmt: skip
def test_derived_id_kinds_read_vocab_file_as_their_vocab_list(tmp_path, kind, fields, columns):
    (tmp_path / "v.txt").write_text("bj_sh\nbj\nsh\ngz\n")
    words = '["bj_sh", "bj", "sh", "gz"]'
    base = f'feature_name: "f" {fields} default_bucketize_value: 0 embedding_dim: 4'
    if kind in ("lookup_feature",):
        base += " need_discrete: true"
    texts = {
        "file": f'{kind} {{ {base} vocab_file: "{tmp_path / "v.txt"}" }}',
        "list": f"{kind} {{ {base} vocab_list: {words} }}",
    }
    batch = {k: pa.array(v) for k, v in columns.items()}
    outs = {}
    for name, text in texts.items():
        config = text_format.Parse(text, feature_pb2.FeatureConfig())
        try:
            (feature,) = create_features([config], fg_mode=FG_DAG)
        except FeatureError as e:
            pytest.fail(f"{kind} {name}: {e}")
        assert feature.num_embeddings == 4
        assert feature.asset_fields() == ("vocab_file",)
        outs[name] = feature.parse(batch)
    assert outs["file"]["f.values"].tolist() == outs["list"]["f.values"].tolist()
    assert outs["file"]["f.lengths"].tolist() == outs["list"]["f.lengths"].tolist()


def test_fg_json_writes_the_file_and_default_bucketize_value(list_file):
    config = pipeline_pb2.EasyRecConfig()
    config.feature_configs.add().id_feature.CopyFrom(
        feature_pb2.IdFeature(
            feature_name="city", vocab_file=list_file, default_bucketize_value=1, embedding_dim=4
        )
    )
    (entry,) = create_fg_json(config)["features"]
    assert entry["vocab_file"] == list_file and entry["default_bucketize_value"] == 1
    assert "vocab_list" not in entry


CONFIG = """
data_config { fg_mode: FG_DAG label_fields: "clk" batch_size: 16 }
feature_configs { id_feature { feature_name: "city" expression: "user:city"
  vocab_file: "city.txt" default_bucketize_value: 0 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "uid" expression: "user:uid"
  hash_bucket_size: 20 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "all" feature_names: ["city", "uid"] }
  multi_tower { towers { input: "all" mlp { hidden_units: [8] } } final { hidden_units: [4] } }
  metrics { auc {} } losses { binary_cross_entropy {} }
}
"""


def test_the_export_copies_the_vocab_file_and_reproduces_training_tensors(tmp_path):
    vocab_dir = tmp_path / "vocab"
    os.makedirs(vocab_dir)
    (vocab_dir / "city.txt").write_text("<unk>\n" + "\n".join(WORDS) + "\n")
    config = text_format.Parse(CONFIG, pipeline_pb2.EasyRecConfig())
    config.feature_configs[0].id_feature.asset_dir = str(vocab_dir)
    rows = mock_rows(config, tmp_path, num_rows=24, seed=2)
    # rows the file knows, so that the ids are not all default_bucketize_value
    rows = rows.set_column(
        rows.schema.get_field_index("city"), "city", pa.array((WORDS * 10)[: rows.num_rows])
    )
    model, export_dir = export_untrained(config, tmp_path)
    train = DataParser(build_features(config)).parse(rows)
    assert sorted(set(train["city.values"].tolist())) == [1, 2, 3]
    shutil.rmtree(vocab_dir)  # the export must not need the original
    moved = str(tmp_path / "moved")
    shutil.move(export_dir, moved)
    assert len(glob.glob(os.path.join(moved, ASSETS_DIR, "city_*.txt"))) == 1
    predictor = load_predictor(moved)
    assert_served_as_trained(model, predictor, train, rows)
