"""``recforge schema``: the JSON Schema and the Markdown reference of the config."""

import json

import jsonschema
import pytest
import yaml

from recforge.cli import main
from recforge.config import config_to_dict, load_pipeline_config
from recforge.tools.schema import json_schema, markdown_lines, proto_comments, reachable_messages
from tests.helpers.cli_util import example


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_example_configs_conform_to_the_json_schema(validator):
    for name in ("deepfm_demo.config", "dssm_demo.config", "mmoe_demo.config"):
        data = config_to_dict(load_pipeline_config(example(name)))
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], name


def test_the_json_schema_refuses_what_the_loader_refuses(validator):
    data = yaml.safe_load(
        """
train_config: {num_epochs: 2, early_stopping: {patience: 2}}
feature_configs:
  - id_feature: {feature_name: u, hash_bucket_size: 10, embedding_dim: 4}
"""
    )
    assert list(validator.iter_errors(data)) == []
    for bad in (
        {"train_config": {"num_epoch": 2}},  # misspelt
        {"train_config": {"num_epochs": "two"}},
        {"model_config": {"feature_groups": [{"group_type": "WIDEST"}]}},
        {"feature_configs": {"id_feature": {}}},  # repeated: a list
    ):
        assert list(validator.iter_errors(bad)), bad


def test_descriptions_carry_comments_defaults_and_support():
    defs = json_schema()["$defs"]
    patience = defs["recforge.protos.EarlyStopping"]["properties"]["patience"]
    assert patience["default"] == 3 and "without improvement" in patience["description"]
    timed = defs["recforge.protos.TrainConfig"]["properties"]["save_checkpoints_timestamps"]
    assert timed["description"].startswith("not supported yet")
    assert (
        "one of feature:"
        in defs["recforge.protos.FeatureConfig"]["properties"]["id_feature"]["description"]
    )


def test_comments_are_found_for_fields_of_nested_and_top_level_messages():
    comments = proto_comments()
    assert "buckets" in comments["recforge.protos.IdFeature.hash_bucket_size"]
    known = {fd.full_name for desc in reachable_messages() for fd in desc.fields}
    assert set(comments) <= known  # every comment is attached to a real field


def test_markdown_has_a_table_per_message_and_the_cli_prints_it(tmp_path, capsys):
    lines = list(markdown_lines())
    sections = [line for line in lines if line.startswith("## ")]
    assert sections[0] == "## EasyRecConfig" and len(sections) == len(reachable_messages())
    assert any(
        line.startswith("| `patience` | uint32 | `3` |  | evaluations in a row") for line in lines
    )
    out = tmp_path / "schema.json"
    assert main(["schema", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["$ref"] == "#/$defs/recforge.protos.EasyRecConfig"
    capsys.readouterr()
    assert main(["schema", "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("# recforge config reference")
