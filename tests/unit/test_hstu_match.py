"""hstu_match: registry, towers, predict/loss, kernel selection and config errors."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, validate_config
from recforge.datasets.data_parser import DataParser
from recforge.errors import DataError
from recforge.features import FG_DAG, create_features
from recforge.models.hstu_match import HSTUMatch
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import pipeline_pb2
from tests.helpers.hstu import FEATURES, MODEL, TZREC_SHAPE, planted_table, tzrec_shape_rows


def config(model: str = MODEL, features: str = FEATURES) -> pipeline_pb2.EasyRecConfig:
    text = f'data_config {{ label_fields: "label" fg_mode: FG_DAG }} {features} {model}'
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def build(cfg: pipeline_pb2.EasyRecConfig) -> HSTUMatch:
    torch.manual_seed(0)
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    return BaseModel.create_class("HSTUMatch")(cfg.model_config, features, ["label"])


def batch(model: HSTUMatch, rows: pa.Table):
    return DataParser(model.features).parse_batch(rows.to_batches()[0])


def test_registered_and_trains_one_step():
    model = build(config())
    assert isinstance(model, HSTUMatch)
    b = batch(model, planted_table(8, 0, min_len=0, max_len=5))
    total, (losses, predictions, _) = TrainWrapper(model)(b)
    total.backward()
    assert predictions["similarity"].shape == (8, 8)  # in-batch negatives
    assert predictions["user_emb"].shape == predictions["item_emb"].shape == (8, 16)
    stu = model.user_tower.encoder.stu.layers[0]
    assert stu._uvqk_weight.grad is not None and stu._uvqk_weight.grad.abs().sum() > 0


def test_the_user_embedding_follows_the_order_of_the_history():
    model = build(config()).eval()
    rows = planted_table(4, 3)
    shuffled = rows.set_column(
        0, "uih__video_id", pa.array(["|".join(s.split("|")[::-1]) for s in rows[0].to_pylist()])
    )
    with torch.no_grad():
        a = model.predict(batch(model, rows))["user_emb"]
        b = model.predict(batch(model, shuffled))["user_emb"]
    assert not torch.allclose(a, b, atol=1e-4)


def test_user_tower_module_equals_the_model():
    model = build(config()).eval()
    b = batch(model, planted_table(5, 1))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.predict(b)["user_emb"], dim=-1)
        tower = model.tower_module("user")(b)
    torch.testing.assert_close(tower, expected)
    assert [f.name for f in model.tower_features("user")] == [
        "uih__video_id",
        "uih__action_timestamp",
    ]


def test_timestamps_must_match_the_events():
    model = build(config()).eval()
    rows = planted_table(2, 0)
    rows = rows.set_column(1, "uih__action_timestamp", pa.array(["1|2", "3"]))
    with pytest.raises(DataError, match="timestamps for the"):
        model.predict(batch(model, rows))


def test_gpu_kernels_run_the_pytorch_attention_with_a_warning(caplog):
    rows = planted_table(4, 3)
    plain = build(config()).eval()
    with torch.no_grad():
        expected = plain.predict(batch(plain, rows))["user_emb"]
    for name in ("TRITON", "CUTLASS"):
        cfg = config(MODEL.replace("kernel: PYTORCH", f"kernel: {name}"))
        validate_config(cfg)  # TorchEasyRec's HSTU configs ask for them: they run unchanged
        caplog.clear()
        with caplog.at_level("WARNING", logger="recforge.modules.gr.kernel"):
            model = build(cfg).eval()
        assert f"kernel: {name} runs recforge's PyTorch HSTU attention" in caplog.text
        if not torch.cuda.is_available():
            assert "could not run here (missing: a CUDA GPU" in caplog.text
        with torch.no_grad():
            torch.testing.assert_close(model.predict(batch(model, rows))["user_emb"], expected)


@pytest.mark.parametrize(
    "old, new, field",
    [
        (
            'group_name: "uih" feature_names: "uih__video_id" group_type: JAGGED_SEQUENCE',
            'group_name: "uih" feature_names: "uih__video_id" group_type: SEQUENCE',
            "hstu_match.user_tower.input",
        ),
        (
            'group_name: "uih_timestamp"',
            'group_name: "ts"',
            "hstu_match.user_tower.hstu.positional_encoder",
        ),
        ("max_seq_len: 24", "max_seq_len: 0", "hstu_match.user_tower.max_seq_len"),
        (
            'item_tower { input: "candidate"',
            'item_tower { input: "nope"',
            "hstu_match.item_tower.input",
        ),
        ("hidden_units: [16]", "hidden_units: [12]", "hstu_match.output_dim"),
    ],
)
def test_bad_config_is_an_error_at_its_field(old, new, field):
    assert old in MODEL
    with pytest.raises(ConfigError) as err:
        build(config(MODEL.replace(old, new)))
    assert err.value.field == f"model_config.{field}"


def test_torcheasyrec_hstu_config_shape_loads_builds_and_predicts():
    cfg = text_format.Parse(TZREC_SHAPE, pipeline_pb2.EasyRecConfig())
    validate_config(cfg)
    model = build(cfg)
    assert model.embedding_group.is_jagged_group("candidate")
    names = [g.group_name for g in model.tower_groups("user")]
    assert names == ["uih", "uih_action", "uih_timestamp", "contextual", "query_time"]
    rows = tzrec_shape_rows()
    model.eval()
    with torch.no_grad():
        out = model.predict(batch(model, rows))
        other = model.predict(
            batch(model, rows.set_column(3, "uih_seq__action_weight", pa.array(["1|2|2", "4", ""])))
        )
    assert out["similarity"].shape == (3, 1) and torch.isfinite(out["similarity"]).all()
    # the actions of the history change the user embedding (only the first user's changed)
    assert not torch.allclose(out["user_emb"][0], other["user_emb"][0])
    torch.testing.assert_close(out["user_emb"][1:], other["user_emb"][1:])
    # so do the contextual features (user 1 -> 5 changes only the first user's)
    with torch.no_grad():
        third = model.predict(batch(model, rows.set_column(0, "user_id", pa.array([5, 2, 3]))))
    assert not torch.allclose(out["user_emb"][0], third["user_emb"][0])
    torch.testing.assert_close(out["user_emb"][1:], third["user_emb"][1:])


def test_contextual_features_must_share_one_width():
    text = TZREC_SHAPE.replace(
        'feature_groups { group_name: "contextual" feature_names: "user_id" group_type: DEEP }',
        'feature_groups { group_name: "contextual" feature_names: ["user_id", "request_time"]'
        " group_type: DEEP }",
    )
    cfg = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    with pytest.raises(ConfigError, match="one embedding width") as err:
        build(cfg)
    assert err.value.field == "model_config.hstu_match.user_tower.hstu"


def test_action_encoder_needs_its_group():
    cfg = text_format.Parse(TZREC_SHAPE, pipeline_pb2.EasyRecConfig())
    del cfg.model_config.feature_groups[3]  # uih_action
    with pytest.raises(ConfigError, match="'uih_action'") as err:
        build(cfg)
    assert err.value.field.endswith("uih_preprocessor.action_encoder")


def test_a_group_the_model_does_not_read_is_named_in_a_warning(caplog):
    unused = (
        'feature_groups { group_name: "uih_timestamp" feature_names: "uih__action_timestamp"\n'
        "                   group_type: JAGGED_SEQUENCE }\n"
        '  feature_groups { group_name: "spare" feature_names: "item_id" group_type: DEEP }'
    )
    model_text = MODEL.replace(
        'feature_groups { group_name: "uih_timestamp" feature_names: "uih__action_timestamp"\n'
        "                   group_type: JAGGED_SEQUENCE }",
        unused,
    )
    assert "spare" in model_text
    with caplog.at_level("WARNING", logger="recforge.models.hstu_match"):
        build(config(model_text))
    assert "does not read feature group 'spare'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="recforge.models.hstu_match"):
        build(config())
    assert "does not read" not in caplog.text
