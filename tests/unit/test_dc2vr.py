"""DC2VR's intervention towers and DBMTL's mask_net bottom."""

import pytest
import torch

from recforge.config import ConfigError
from recforge.models.model import TrainWrapper
from recforge.modules.intervention import Intervention, OrthonormalProjection
from tests.helpers.multi_task import build, two_label_batch
from tests.helpers.multi_task_configs import MULTI_TASK_MODEL_CONFIGS


def test_orthonormal_projection_stays_orthonormal_after_updates():
    projection = OrthonormalProjection(6, 3)
    optimizer = torch.optim.SGD(projection.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        projection(torch.randn(4, 6)).pow(3).sum().backward()
        optimizer.step()
    q = projection.weight()
    torch.testing.assert_close(q.t() @ q, torch.eye(3), atol=1e-5, rtol=0)


def test_intervention_shifts_the_low_rank_component_and_detaches_the_source():
    layer = Intervention(base_dim=5, source_dim=4, low_rank_dim=2).eval()
    base = torch.randn(3, 5)
    source = torch.randn(3, 4, requires_grad=True)
    out = layer(base, source)
    q_b, q_s = layer.base_projection.weight(), layer.source_projection.weight()
    # inside the subspace: 2 * the base's coordinates - the source's; outside: the base
    torch.testing.assert_close(out @ q_b, 2 * base @ q_b - source.detach() @ q_s)
    residual = torch.eye(5) - q_b @ q_b.t()
    torch.testing.assert_close(out @ residual, base @ residual)
    out.sum().backward()
    assert source.grad is None
    with pytest.raises(ValueError, match="low_rank_dim"):
        Intervention(base_dim=2, source_dim=4, low_rank_dim=2)


def test_dc2vr_intervened_tower_reads_the_source_tower():
    model = build("DC2VR").eval()
    assert list(model.interventions) == ["cvr"] and model._sources == {"cvr": ["ctr"]}
    batch = two_label_batch()
    out = model.predict(batch)
    assert out["probs_cvr"].shape == (8,)
    # the cvr tower's output changes when the ctr tower's hidden vector does
    with torch.no_grad():
        model.task_mlps["ctr"].mlp[0].weight.mul_(-3.0)
    assert not torch.allclose(model.predict(batch)["logits_cvr"], out["logits_cvr"])


def test_dc2vr_towers_without_intervention_are_plain_towers():
    body = MULTI_TASK_MODEL_CONFIGS["DC2VR"].replace(
        'intervention_tower_names: "ctr" low_rank_dim: 2 dropout_ratio: 0.1', ""
    )
    model = build("DC2VR", body)
    assert len(model.interventions) == 0
    total, _ = TrainWrapper(model)(two_label_batch())
    total.backward()


DC2VR_ERRORS = [
    (
        'intervention_tower_names: "ctr" low_rank_dim: 2',
        'intervention_tower_names: "cvr"',
        "task_towers[1].intervention_tower_names",
        "defined before it",
    ),
    ("low_rank_dim: 2", "", "task_towers[1].low_rank_dim", "sets no low_rank_dim"),
    (
        'intervention_tower_names: "ctr"',
        "",
        "task_towers[1].intervention_tower_names",
        "names no intervention_tower_names",
    ),
    ("low_rank_dim: 2", "low_rank_dim: 8", "task_towers[1].low_rank_dim", "low_rank_dim"),
]


@pytest.mark.parametrize("old,new,field,message", DC2VR_ERRORS)
def test_bad_dc2vr_configs_name_the_field(old, new, field, message):
    body = MULTI_TASK_MODEL_CONFIGS["DC2VR"].replace(old, new, 1)
    with pytest.raises(ConfigError, match=message) as info:
        build("DC2VR", body)
    assert info.value.field == f"model_config.dc2vr.{field}"


MASK_NET = """mask_net {{ n_mask_blocks: 2 use_parallel: {parallel}
    mask_block {{ hidden_dim: 6 aggregation_dim: 4 }} {top} }}"""


@pytest.mark.parametrize(
    "parallel,top,width",
    [("true", "", 12), ("false", "", 6), ("true", "top_mlp { hidden_units: [5] }", 5)],
)
def test_dbmtl_mask_net_bottom_feeds_the_bottom_mlp(parallel, top, width):
    body = MULTI_TASK_MODEL_CONFIGS["DBMTL"].replace(
        "dbmtl {", "dbmtl { " + MASK_NET.format(parallel=parallel, top=top)
    )
    model = build("DBMTL", body)
    embeddings = 8 * 3 + 1  # user, item, tags, price
    assert model.mask_net.output_dim() == width
    assert model.mask_net(torch.randn(3, embeddings)).shape == (3, width)
    assert model.bottom.mlp[0].in_features == width
    total, (_, predictions, _) = TrainWrapper(model)(two_label_batch())
    assert predictions["probs_cvr"].shape == (8,)
    total.backward()
    assert model.mask_net.blocks[0].mask[0].weight.grad is not None


def test_dbmtl_bad_mask_net_names_the_field():
    body = MULTI_TASK_MODEL_CONFIGS["DBMTL"].replace(
        "dbmtl {", "dbmtl { " + MASK_NET.format(parallel="true", top="").replace("2", "0", 1)
    )
    with pytest.raises(ConfigError, match="n_mask_blocks") as info:
        build("DBMTL", body)
    assert info.value.field == "model_config.dbmtl.mask_net"
