import json
import pickle
from pathlib import Path

import pytest

from recforge.config import (
    ConfigError,
    check_data_columns,
    edit_config,
    load_pipeline_config,
    required_columns,
    save_pipeline_config,
    validate_config,
    which_msg,
    which_oneof_field,
)
from recforge.protos import data_pb2, pipeline_pb2
from tests.helpers.paths import TESTS_DIR

CONFIGS = Path(TESTS_DIR) / "configs"

FRAPPE = CONFIGS / "frappe_deepfm.config"
FRAPPE_EXTS = ["config", "json", "yaml"]
FRAPPE_COLUMNS = [
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
]

MULTI_TOWER = """
data_config { fg_mode: FG_DAG label_fields: "clk" }
feature_configs { id_feature { feature_name: "user" num_buckets: 10 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item" num_buckets: 10 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "user" feature_names: "user" }
  feature_groups { group_name: "item" feature_names: "item" }
  multi_tower {
    towers { input: "user" mlp { hidden_units: [8] } }
    towers { input: "itme" mlp { hidden_units: [8] } }
  }
  losses { binary_cross_entropy {} }
}
"""


def base_text() -> str:
    return FRAPPE.read_text()


def write(tmp_path: Path, text: str, name: str = "x.config") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def line_of(text: str, needle: str, nth: int = 0) -> int:
    hits = [i + 1 for i, line in enumerate(text.split("\n")) if needle in line]
    return hits[nth]


def load_and_validate(path: str) -> pipeline_pb2.EasyRecConfig:
    config = load_pipeline_config(path)
    validate_config(config, path)
    return config


def validation_error(tmp_path: Path, text: str, name: str = "x.config") -> ConfigError:
    path = write(tmp_path, text, name)
    config = load_pipeline_config(path)
    with pytest.raises(ConfigError) as info:
        validate_config(config, path)
    return info.value


# ------------------------------------------------------------------ the Frappe DeepFM config


def test_frappe_config_loads_and_validates_in_all_formats():
    configs = [load_and_validate(str(CONFIGS / f"frappe_deepfm.{ext}")) for ext in FRAPPE_EXTS]
    text, *others = configs
    for other in others:
        assert other == text
    assert text.train_input_path == "../shared/data/frappe/frappe_validation.csv"
    assert [fc.id_feature.feature_name for fc in text.feature_configs] == FRAPPE_COLUMNS
    for fc in text.feature_configs:
        assert fc.id_feature.num_buckets == 5382 and fc.id_feature.embedding_dim == 10
    for group in text.model_config.feature_groups:
        assert list(group.feature_names) == FRAPPE_COLUMNS
    assert list(text.model_config.deepfm.deep.hidden_units) == [400, 400, 400]
    assert text.train_config.sparse_optimizer.adam_optimizer.lr == pytest.approx(0.001)
    assert text.HasField("eval_config")


@pytest.mark.parametrize("ext", ["config", "pbtxt", "txt", "prototxt", "json", "yaml", "yml"])
def test_save_load_round_trip(tmp_path, ext):
    config = load_pipeline_config(str(FRAPPE))
    path = str(tmp_path / "sub" / f"saved.{ext}")
    save_pipeline_config(config, path)
    assert load_pipeline_config(path) == config


def test_json_fixture_is_what_save_writes(tmp_path):
    config = load_pipeline_config(str(FRAPPE))
    for ext in ("json", "yaml"):
        path = tmp_path / f"frappe_deepfm.{ext}"
        save_pipeline_config(config, str(path))
        assert path.read_text() == (CONFIGS / f"frappe_deepfm.{ext}").read_text()


def test_json_accepts_lower_camel_and_original_names(tmp_path):
    data = json.loads((CONFIGS / "frappe_deepfm.json").read_text())
    data["dataConfig"] = data.pop("data_config")
    data["dataConfig"]["batchSize"] = data["dataConfig"].pop("batch_size")
    config = load_pipeline_config(write(tmp_path, json.dumps(data), "camel.json"))
    assert config == load_pipeline_config(str(FRAPPE))


def test_relative_paths_are_not_resolved():
    config = load_pipeline_config(str(FRAPPE))
    assert config.model_dir == "experiments/deepfm_frappe"


# ------------------------------------------------------------------ load errors


def test_missing_file():
    with pytest.raises(ConfigError) as info:
        load_pipeline_config("no/such/pipeline.config")
    assert info.value.path == "no/such/pipeline.config"
    assert str(info.value).startswith("no/such/pipeline.config: config file not found")


def test_text_syntax_error_has_line_column_and_quoted_line(tmp_path):
    text = base_text().replace("batch_size: 4096", "batch_size 4096 {")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path)
    err = info.value
    line = line_of(text, "batch_size 4096")
    column = text.split("\n")[line - 1].index("4096") + 1
    assert (err.path, err.line, err.column) == (path, line, column)
    assert str(err).startswith(f'{path}:{line}:{column}: data_config: Expected ":"')
    assert "batch_size 4096 {" in str(err)  # the offending line is quoted
    assert "^" in str(err).split("\n")[-1]


def test_text_missing_closing_brace_at_end(tmp_path):
    text = base_text().rstrip().rstrip("}")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(write(tmp_path, text))
    assert info.value.field == "model_config"
    assert "closing '}' is missing" in str(info.value)
    assert f"opened at line {line_of(text, 'model_config {')}" in str(info.value)


def test_text_missing_closing_brace_before_next_field(tmp_path):
    text = base_text().replace("  num_epochs: 5\n}", "  num_epochs: 5\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(write(tmp_path, text))
    assert "is a closing '}' missing" in str(info.value)


@pytest.mark.parametrize("ext", ["config", "json", "yaml"])
def test_unknown_field_suggests_closest(tmp_path, ext):
    text = (CONFIGS / f"frappe_deepfm.{ext}").read_text().replace("batch_size", "batch_szie")
    path = write(tmp_path, text, f"x.{ext}")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path)
    err = info.value
    assert err.field == "data_config.batch_szie"
    assert err.line == line_of(text, "batch_szie")
    assert "unknown field 'batch_szie' in DataConfig; did you mean 'batch_size'?" in str(err)
    assert str(err).startswith(f"{path}:{err.line}:{err.column}: data_config.batch_szie: ")


def test_unknown_field_in_lower_camel_json_suggests_lower_camel(tmp_path):
    text = (CONFIGS / "frappe_deepfm.json").read_text().replace('"batch_size"', '"batchSzie"')
    with pytest.raises(ConfigError, match="did you mean 'batchSize'"):
        load_pipeline_config(write(tmp_path, text, "x.json"))


def test_allow_unknown_field_skips_and_warns(tmp_path, caplog):
    text = base_text().replace("batch_size: 4096", "batch_size: 4096 batch_szie: 1")
    config = load_pipeline_config(write(tmp_path, text), allow_unknown_field=True)
    assert config.data_config.batch_size == 4096
    assert "did you mean 'batch_size'" in caplog.text
    data = json.loads((CONFIGS / "frappe_deepfm.json").read_text())
    data["data_config"]["batch_szie"] = 1
    path = write(tmp_path, json.dumps(data), "x.json")
    assert load_pipeline_config(path, allow_unknown_field=True).data_config.batch_size == 4096


@pytest.mark.parametrize("ext", ["config", "yaml"])
def test_model_typo_suggests_model_name(tmp_path, ext):
    key = {"config": "deepfm {", "yaml": "deepfm:"}[ext]
    typo = key.replace("deepfm", "deep_fm")
    text = (CONFIGS / f"frappe_deepfm.{ext}").read_text().replace(key, typo)
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(write(tmp_path, text, f"x.{ext}"))
    err = info.value
    assert err.field == "model_config.deep_fm"
    assert err.line == line_of(text, typo)
    assert "did you mean 'deepfm'?" in str(err)
    assert "deepfm, multi_tower" in str(err)


def test_unknown_model_lists_known_models(tmp_path):
    text = base_text().replace("deepfm {", "fancy_net {")
    with pytest.raises(ConfigError, match="known models: .*deepfm, multi_tower"):
        load_pipeline_config(write(tmp_path, text))


def test_two_models_set(tmp_path):
    text = base_text().replace("  metrics {", "  multi_tower { }\n  metrics {")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(write(tmp_path, text))
    err = info.value
    assert err.line == line_of(text, "multi_tower")
    assert err.field == "model_config.multi_tower"
    assert "two members of oneof 'model' are set: 'deepfm'" in str(err)
    assert "'multi_tower'" in str(err)
    assert f"(line {line_of(text, 'deepfm {')})" in str(err)


def test_two_models_set_json(tmp_path):
    data = json.loads((CONFIGS / "frappe_deepfm.json").read_text())
    data["model_config"]["multi_tower"] = {}
    with pytest.raises(ConfigError, match="'deepfm' and 'multi_tower'"):
        load_pipeline_config(write(tmp_path, json.dumps(data), "x.json"))


def test_bad_enum_value_suggests(tmp_path):
    text = base_text().replace("CsvDataset", "CSVDataset")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(write(tmp_path, text))
    assert info.value.field == "data_config.dataset_type"
    assert "did you mean 'CsvDataset'?" in str(info.value)


def test_field_set_twice(tmp_path):
    text = base_text().replace("num_epochs: 5", "num_epochs: 5 num_epochs: 6")
    with pytest.raises(ConfigError, match="'num_epochs' is set more than once"):
        load_pipeline_config(write(tmp_path, text))


def test_yaml_wrong_type_and_syntax(tmp_path):
    text = (CONFIGS / "frappe_deepfm.yaml").read_text()
    bad_type = text.replace("batch_size: 4096", "batch_size: many")
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(write(tmp_path, bad_type, "x.yaml"))
    assert info.value.field == "data_config.batch_size"
    assert info.value.line == line_of(bad_type, "batch_size")
    assert "expected uint32, found 'many'" in str(info.value)
    bad_syntax = text.replace("batch_size: 4096", "batch_size: [4096")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_pipeline_config(write(tmp_path, bad_syntax, "y.yaml"))
    assert info.value.line is not None


def test_json_syntax_error_and_duplicate_key(tmp_path):
    text = (CONFIGS / "frappe_deepfm.json").read_text()
    bad = text.replace('"batch_size": 4096,', '"batch_size": 4096')
    with pytest.raises(ConfigError, match="invalid JSON") as info:
        load_pipeline_config(write(tmp_path, bad, "x.json"))
    assert info.value.line == line_of(bad, '"dataset_type"')
    dup = text.replace('"batch_size": 4096,', '"batch_size": 4096, "batch_size": 1,')
    with pytest.raises(ConfigError, match="repeated") as info:
        load_pipeline_config(write(tmp_path, dup, "y.json"))
    assert info.value.field == "data_config.batch_size"


# ------------------------------------------------------------------ validation


def test_group_naming_undefined_feature_suggests_closest(tmp_path):
    text = base_text().replace(
        'group_name: "fm" feature_names: "user"', 'group_name: "fm" feature_names: "usr"'
    )
    err = validation_error(tmp_path, text)
    assert err.field == "model_config.feature_groups[1].feature_names[0]"
    assert err.line == line_of(text, '"usr"')
    assert "feature 'usr' is not defined; did you mean 'user'? (defined: user, item" in str(err)
    assert str(err).startswith(f"{err.path}:{err.line}:{err.column}: model_config.feature_groups")


def test_tower_input_naming_undefined_group(tmp_path):
    err = validation_error(tmp_path, MULTI_TOWER)
    assert err.field == "model_config.multi_tower.towers[1].input"
    assert err.line == line_of(MULTI_TOWER, '"itme"')
    assert "input 'itme' is not a feature group; did you mean 'item'?" in str(err)
    assert "(groups: user, item)" in str(err)


def test_tower_without_input(tmp_path):
    err = validation_error(tmp_path, MULTI_TOWER.replace('input: "itme" ', ""))
    assert err.field == "model_config.multi_tower.towers[1].input"
    assert "has no input" in str(err)


def test_missing_embedding_dim(tmp_path):
    text = base_text().replace(
        '"item" num_buckets: 5382 embedding_dim: 10', '"item" num_buckets: 5382'
    )
    err = validation_error(tmp_path, text)
    assert err.field == "feature_configs[1].id_feature.embedding_dim"
    assert err.line == line_of(text, 'feature_name: "item"')
    assert "id_feature 'item' needs embedding_dim > 0" in str(err)


def test_id_feature_without_bucket_source(tmp_path):
    text = base_text().replace('"item" num_buckets: 5382', '"item"')
    err = validation_error(tmp_path, text)
    assert err.field == "feature_configs[1].id_feature"
    assert "num_buckets, hash_bucket_size, vocab_list, vocab_dict, vocab_file or zch" in str(err)


def test_raw_feature_boundaries(tmp_path):
    text = base_text().replace(
        "model_config {",
        'feature_configs { raw_feature { feature_name: "price" boundaries: [1, 3, 2] } }\n'
        "model_config {",
    )
    err = validation_error(tmp_path, text)
    messages = [e.message for e in err.errors]
    assert any("needs embedding_dim > 0" in m for m in messages)
    assert any("boundaries must be strictly increasing; found 3 then 2" in m for m in messages)
    fields = [e.field for e in err.errors]
    assert "feature_configs[10].raw_feature.boundaries[2]" in fields


def test_duplicate_feature_and_group_and_empty_group(tmp_path):
    text = base_text().replace('feature_name: "item"', 'feature_name: "user"', 1)
    text = text.replace('group_name: "fm"', 'group_name: "wide"')
    text = text.replace("  metrics {", '  feature_groups { group_name: "empty" }\n  metrics {')
    err = validation_error(tmp_path, text)
    messages = "\n".join(str(e) for e in err.errors)
    assert "feature 'user' is defined twice (also feature_configs[0])" in messages
    assert "feature group 'wide' is defined twice" in messages
    assert "feature group 'empty' has no feature_names" in messages


def test_bce_with_num_class_2(tmp_path):
    text = base_text().replace("  metrics {", "  num_class: 2\n  metrics {")
    err = validation_error(tmp_path, text)
    assert err.field == "model_config.losses[0].binary_cross_entropy"
    assert err.line == line_of(text, "binary_cross_entropy")
    assert "binary_cross_entropy needs num_class: 1" in str(err)
    assert "found num_class: 2" in str(err)
    assert "softmax_cross_entropy" in str(err)


def test_softmax_with_num_class_1(tmp_path):
    text = base_text().replace("binary_cross_entropy {}", "softmax_cross_entropy {}")
    err = validation_error(tmp_path, text)
    assert "softmax_cross_entropy needs num_class > 1" in str(err)


def test_missing_optimizers(tmp_path):
    text = base_text()
    start = text.index("  sparse_optimizer")
    end = text.index("  num_epochs")
    text = text[:start] + text[end:]
    err = validation_error(tmp_path, text)
    assert [e.field for e in err.errors] == [
        "train_config.sparse_optimizer",
        "train_config.dense_optimizer",
    ]
    assert err.line == line_of(text, "train_config {")
    assert "sparse_optimizer is missing; set one of: sgd_optimizer" in str(err)
    assert "2 problems in the config" in str(err)


def test_optimizer_without_optimizer_kind(tmp_path):
    text = base_text().replace(
        "sparse_optimizer { adam_optimizer { lr: 0.001 } constant_learning_rate {} }",
        "sparse_optimizer { constant_learning_rate {} }",
    )
    err = validation_error(tmp_path, text)
    assert err.field == "train_config.sparse_optimizer"
    assert "sets no optimizer" in str(err)


def test_no_model_lists_models(tmp_path):
    text = base_text()
    start = text.index("  deepfm {")
    text = text[:start] + text[text.index("  metrics {") :]
    err = validation_error(tmp_path, text)
    assert err.field == "model_config"
    assert "no model is set in model_config; set one of: " in str(err)
    assert "deepfm, multi_tower" in str(err)


def test_data_config_checks(tmp_path):
    text = base_text().replace('label_fields: "label" ', "").replace("4096", "0")
    err = validation_error(tmp_path, text)
    fields = [e.field for e in err.errors]
    assert "data_config.label_fields" in fields
    assert "data_config.batch_size" in fields
    assert all(e.line == line_of(text, "data_config {") for e in err.errors)


def test_losses_and_metrics_must_be_set(tmp_path):
    text = base_text().replace("metrics { auc {} }", "metrics { }")
    text = text.replace("losses { binary_cross_entropy {} }", "losses { }")
    err = validation_error(tmp_path, text)
    assert {e.field for e in err.errors} == {"model_config.metrics[0]", "model_config.losses[0]"}


def test_validation_in_json_has_lines(tmp_path):
    data = json.loads((CONFIGS / "frappe_deepfm.json").read_text())
    data["model_config"]["feature_groups"][0]["feature_names"][1] = "itme"
    text = json.dumps(data, indent=2)
    err = validation_error(tmp_path, text, "x.json")
    assert err.field == "model_config.feature_groups[0].feature_names[1]"
    assert err.line == line_of(text, '"itme"')


def test_validate_without_path():
    config = load_pipeline_config(str(FRAPPE))
    config.model_config.num_class = 3
    config.model_config.ClearField("metrics")  # auc would be a second problem
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert info.value.path is None and info.value.line is None
    assert str(info.value).startswith("model_config.losses[0].binary_cross_entropy: ")


# ------------------------------------------------------------------ edit_config


def test_edit_config_scalars_and_indices():
    config = load_pipeline_config(str(FRAPPE))
    edit_config(
        config,
        {
            "train_config.num_epochs": "3",
            "data_config.batch_size": 512,
            "feature_configs[0].id_feature.embedding_dim": "16",
            "feature_configs[-1].id_feature.num_buckets": "7",
            "data_config.with_header": "false",
            "data_config.dataset_type": "ParquetDataset",
            "train_config.dense_optimizer.adam_optimizer.lr": "0.01",
            "model_config.deepfm.deep.hidden_units": "[256, 128]",
            "model_config.deepfm.final.hidden_units[0]": "32",
            "model_dir": "out/x",
        },
    )
    assert config.train_config.num_epochs == 3
    assert config.data_config.batch_size == 512
    assert config.feature_configs[0].id_feature.embedding_dim == 16
    assert config.feature_configs[9].id_feature.num_buckets == 7
    assert config.data_config.with_header is False
    assert config.data_config.dataset_type == data_pb2.ParquetDataset
    assert config.train_config.dense_optimizer.adam_optimizer.lr == pytest.approx(0.01)
    assert list(config.model_config.deepfm.deep.hidden_units) == [256, 128]
    assert list(config.model_config.deepfm.final.hidden_units) == [32]
    assert config.model_dir == "out/x"


def test_edit_config_selectors_and_messages():
    config = load_pipeline_config(str(FRAPPE))
    edit_config(
        config,
        {
            "feature_configs[:].id_feature.embedding_dim": 8,
            "feature_configs[feature_name=city].id_feature.num_buckets": "100",
            "model_config.feature_groups[group_name=wide].feature_names": ["user"],
            "train_config.sparse_optimizer": "sgd_optimizer { lr: 0.5 }",
            "train_config.dense_optimizer": {"adamw_optimizer": {"lr": 0.1}},
        },
    )
    assert {fc.id_feature.embedding_dim for fc in config.feature_configs} == {8}
    assert config.feature_configs[9].id_feature.num_buckets == 100
    assert list(config.model_config.feature_groups[0].feature_names) == ["user"]
    assert config.train_config.sparse_optimizer.WhichOneof("optimizer") == "sgd_optimizer"
    assert config.train_config.sparse_optimizer.WhichOneof("learning_rate") is None
    assert config.train_config.dense_optimizer.adamw_optimizer.lr == pytest.approx(0.1)


def test_edit_config_from_json_cli_argument():
    config = load_pipeline_config(str(FRAPPE))
    edit_config(config, json.loads('{"train_config.num_epochs": 1, "data_config.shuffle": true}'))
    assert config.train_config.num_epochs == 1 and config.data_config.shuffle


def test_edit_config_bad_path_suggests():
    config = load_pipeline_config(str(FRAPPE))
    with pytest.raises(ConfigError) as info:
        edit_config(config, {"train_config.num_epoch": "3"})
    assert info.value.field == "train_config.num_epoch"
    assert "did you mean 'num_epochs'?" in str(info.value)
    with pytest.raises(ConfigError, match="did you mean 'feature_configs'"):
        edit_config(config, {"feature_config[0].id_feature.embedding_dim": "3"})


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"feature_configs[10].id_feature.embedding_dim": "3"}, "out of range"),
        ({"feature_configs.id_feature.embedding_dim": "3"}, "select elements"),
        ({"data_config.batch_size": "big"}, "expected uint32, found 'big'"),
        ({"data_config.batch_size": "-1"}, "bad value"),
        ({"data_config.dataset_type": "CSVDataset"}, "did you mean 'CsvDataset'"),
        ({"data_config.batch_size.x": "1"}, "has no sub-fields"),
        ({"feature_configs[feature_name=nope].id_feature.embedding_dim": "1"}, "no element"),
        ({"train_config..num_epochs": "1"}, "cannot parse edit path"),
    ],
)
def test_edit_config_errors(edits, expected):
    config = load_pipeline_config(str(FRAPPE))
    with pytest.raises(ConfigError, match=expected):
        edit_config(config, edits)


# ------------------------------------------------------------------ which_msg


def test_which_msg_and_which_oneof_field():
    config = load_pipeline_config(str(FRAPPE))
    assert which_msg(config.model_config, "model") == "DeepFM"
    assert which_oneof_field(config.model_config, "model") == "deepfm"
    assert which_msg(config.train_config.sparse_optimizer, "optimizer") == "FusedAdamOptimizer"
    assert which_msg(config.model_config.losses[0], "loss") == "BinaryCrossEntropy"


def test_which_msg_nothing_set_lists_choices():
    with pytest.raises(ConfigError, match="set one of: .*deepfm, multi_tower"):
        which_msg(pipeline_pb2.EasyRecConfig().model_config, "model")
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        which_oneof_field(pipeline_pb2.EasyRecConfig().model_config, "models")


# ------------------------------------------------------------------ data columns


def test_check_data_columns_with_mapping():
    with pytest.raises(ConfigError) as info:
        check_data_columns(None, ["a", "clicks", "c"], "data/train.parquet", {"click": "label"})
    assert str(info.value) == (
        "label column 'click' not found in data/train.parquet (columns: a, clicks, c); "
        "did you mean 'clicks'?"
    )
    assert isinstance(info.value, ValueError)
    check_data_columns(None, ["click"], "data/train.parquet", {"click": "label"})


def test_check_data_columns_from_config():
    config = load_pipeline_config(str(FRAPPE))
    columns = ["label", *FRAPPE_COLUMNS]
    assert list(required_columns(config)) == columns
    assert required_columns(config)["user"] == "feature 'user'"
    check_data_columns(config, columns, "frappe.csv")
    with pytest.raises(ConfigError) as info:
        check_data_columns(config, ["labels", "users", *FRAPPE_COLUMNS[1:]], "frappe.csv")
    text = str(info.value)
    assert "2 columns missing from frappe.csv" in text
    assert "label column 'label' not found in frappe.csv" in text
    assert "feature 'user' column 'user' not found" in text and "did you mean 'users'?" in text


# ------------------------------------------------------------------ the error type


def test_config_error_rendering_and_pickle():
    err = ConfigError(
        "feature 'usr' is not defined",
        "examples/x.config",
        12,
        5,
        "model_config.feature_groups[1]",
    )
    assert str(err) == (
        "examples/x.config:12:5: model_config.feature_groups[1]: feature 'usr' is not defined"
    )
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.line, copy.column, copy.field) == (err.path, 12, 5, err.field)
    assert str(copy) == str(err)
    assert str(ConfigError("bad")) == "bad"
