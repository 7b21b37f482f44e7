"""The HSTU pre/post-processors beyond the contextual preprocessor: the interleave
preprocessor, the timestamp layer-norm postprocessor, the parameterized contextualized MLP and
``stu.contextual_seq_len`` (TorchEasyRec's shapes: train, export, config errors)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.config.support import check_support
from recforge.datasets.data_parser import DataParser
from recforge.datasets.jagged_labels import jagged_label_columns
from recforge.features import FG_DAG, create_features
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.modules.gr.targets import interleave_rows
from recforge.protos import pipeline_pb2
from tests.helpers.dlrm_hstu import ACTION_ENCODER, features, model, planted_rank_table
from tests.helpers.scripted import assert_scripted_matches_eager

LABELS = ["label_action"]
ACTION_MODEL = model(actions=True)
ADDITIVE = "contextual_preprocessor {"
INTERLEAVE = "contextual_interleave_preprocessor {"
INTERLEAVE_MODEL = ACTION_MODEL.replace(ADDITIVE, INTERLEAVE)


def config(model_text: str) -> pipeline_pb2.EasyRecConfig:
    text = (
        f"data_config {{ label_fields: {LABELS} fg_mode: FG_DAG }}"
        f" {features(actions=True)} {model_text}"
    )
    return text_format.Parse(text.replace("'", '"'), pipeline_pb2.EasyRecConfig())


def build(model_text: str) -> Any:
    torch.manual_seed(0)
    cfg = config(model_text)
    assert check_support(cfg) == []
    return build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))


def scores(model_: Any, rows: pa.Table) -> torch.Tensor:
    parser = DataParser(model_.features)
    with torch.no_grad():
        return model_.predict(parser.parse_batch(rows.to_batches()[0]))["logits_next"]


def shifted(rows: pa.Table, name: str, by: int) -> pa.Table:
    """``rows`` with every value of the "|"-joined column ``name`` plus ``by``."""
    values = ["|".join(str(int(v) + by) for v in s.split("|")) for s in rows[name].to_pylist()]
    return rows.set_column(rows.column_names.index(name), name, pa.array(values))


def train_step_and_export(model_text: str) -> Any:
    """Builds, trains one step (every gradient finite) and checks the export; the model."""
    cfg = config(model_text)
    model_ = build(model_text)
    parser = DataParser(model_.features, LABELS, jagged_labels=jagged_label_columns(cfg))
    rows = planted_rank_table(8, 0, max_candidates=3, actions=True)
    total, _ = TrainWrapper(model_)(parser.parse_batch(rows.to_batches()[0]))
    total.backward()
    grads = [p.grad for p in model_.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert_scripted_matches_eager(model_, planted_rank_table(6, 2, actions=True))
    return model_


def stu_input_rows(model_: Any, rows: pa.Table) -> int:
    """How many rows (tokens) the STU layers of ``model_`` get for ``rows``."""
    seen: list[int] = []
    stack = model_.transducer.stu
    run = stack.run

    def recording(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(x.shape[0])
        return run(x, *args, **kwargs)

    stack.run = recording
    try:
        scores(model_, rows)
    finally:
        del stack.run
    return seen[0]


# ---- 1. the interleave preprocessor ------------------------------------------------------------
def test_interleave_rows_puts_each_extra_row_after_its_row():
    values = torch.tensor([[1], [2], [3], [9], [4], [8]])  # sequences: 1 2 3 9 | 4 8
    offsets = torch.tensor([0, 4, 6])
    extra = torch.tensor([[-1], [-2], [-3], [-4]])  # 3 for the first, 1 for the second
    out, out_offsets = interleave_rows(values, offsets, extra, torch.tensor([0, 3, 4]))
    assert out.reshape(-1).tolist() == [1, -1, 2, -2, 3, -3, 9, 4, -4, 8]
    assert out_offsets.tolist() == [0, 7, 10]


def test_interleaving_doubles_the_history_tokens_only():
    rows = planted_rank_table(5, 1, max_candidates=3, actions=True)
    events = sum(len(s.split("|")) for s in rows["uih__video_id"].to_pylist())
    candidates = sum(len(s.split("|")) for s in rows["cand__item_id"].to_pylist())
    contextual = len(rows)  # one user_id token per row
    additive = build(ACTION_MODEL).eval()
    interleaved = build(INTERLEAVE_MODEL).eval()
    assert stu_input_rows(additive, rows) == events + candidates + contextual
    assert stu_input_rows(interleaved, rows) == 2 * events + candidates + contextual


def test_interleaving_changes_the_scores_and_false_is_the_additive_preprocessor():
    rows = planted_rank_table(6, 3, max_candidates=2, actions=True)
    additive = build(ACTION_MODEL).eval()
    interleaved = build(INTERLEAVE_MODEL).eval()
    # the same weights: the interleaved model lacks only the candidates' action row
    missing, unexpected = additive.load_state_dict(interleaved.state_dict(), strict=False)
    assert missing == ["transducer.action_encoder.candidate_embedding"] and not unexpected
    assert not torch.allclose(scores(additive, rows), scores(interleaved, rows), atol=1e-4)

    off = build(INTERLEAVE_MODEL.replace(INTERLEAVE, INTERLEAVE + " enable_interleaving: false"))
    off.load_state_dict(additive.state_dict())
    torch.testing.assert_close(scores(off.eval(), rows), scores(additive, rows))


def test_interleaved_action_tokens_reach_the_scores():
    rows = planted_rank_table(6, 4, actions=True)
    interleaved = build(INTERLEAVE_MODEL).eval()
    other = shifted(rows, "uih__action_weight", 1)
    assert not torch.allclose(scores(interleaved, rows), scores(interleaved, other), atol=1e-5)


def test_torcheasyrec_shaped_interleave_config_trains_and_exports():
    model_ = train_step_and_export(INTERLEAVE_MODEL)
    encoder = model_.transducer.action_encoder
    assert encoder.candidate_embedding is None  # the candidates have no action token
    assert encoder.embeddings.grad is not None and encoder.embeddings.grad.abs().sum() > 0


def test_interleaving_without_an_action_encoder_is_an_error_at_its_field():
    text = INTERLEAVE_MODEL.replace(ACTION_ENCODER, "")
    with pytest.raises(ConfigError, match="enable_interleaving") as info:
        build(text)
    assert "contextual_interleave_preprocessor.action_encoder" in str(info.value)
    # without interleaving the action encoder is optional, as in contextual_preprocessor
    build(text.replace(INTERLEAVE, INTERLEAVE + " enable_interleaving: false"))
