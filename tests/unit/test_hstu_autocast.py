"""HSTU under ``train_config.mixed_precision: BF16``: the attention's matmuls run in bfloat16."""

import torch

from recforge.models.model import TrainWrapper
from recforge.modules.gr.attention import hstu_attention
from tests.helpers.hstu import planted_table
from tests.unit.test_hstu_match import batch, build, config


def _attention_inputs() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    offsets = torch.tensor([0, 3, 3, 8, 9])
    q, k, v = (torch.randn(9, 2, 8, requires_grad=True) for _ in range(3))
    return q, k, v, offsets


def test_attention_under_bf16_autocast_matches_float32_at_bf16_precision():
    q, k, v, offsets = _attention_inputs()
    reference = hstu_attention(q, k, v, offsets, 1.0, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = hstu_attention(q, k, v, offsets, 1.0, 5)
    assert mixed.dtype == torch.bfloat16  # the matmuls ran in bfloat16
    torch.testing.assert_close(mixed.float(), reference, atol=3e-2, rtol=3e-2)
    mixed.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_hstu_match_trains_a_step_with_bf16_autocast():
    model = build(config())
    rows = batch(model, planted_table(8, 0, min_len=0, max_len=5))
    fp32_loss, _ = TrainWrapper(model)(rows)
    total, (_, predictions, _) = TrainWrapper(model, "bf16")(rows)
    total.backward()
    assert predictions["similarity"].dtype == torch.bfloat16  # the towers ran in bfloat16
    assert total.dtype == torch.float32  # autocast computes the softmax loss in float32
    assert abs(float(total) - float(fp32_loss)) < 0.05 * abs(float(fp32_loss))
    stu = model.user_tower.encoder.stu.layers[0]
    assert stu._uvqk_weight.grad is not None and torch.isfinite(stu._uvqk_weight.grad).all()
