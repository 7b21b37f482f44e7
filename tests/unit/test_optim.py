"""Optimizers and learning-rate schedules built from ``SparseOptimizer`` / ``DenseOptimizer``."""

import math

import pytest
import torch
from google.protobuf import text_format

from recforge.optim import (
    LearningRateSchedule,
    create_dense_optimizer,
    create_schedule,
    fused_kernel_supports,
    sparse_optimizer_spec,
)
from recforge.optim.embedding_optimizers import RowWiseAdagrad
from recforge.protos import optimizer_pb2, train_pb2


def dense_config(text: str) -> optimizer_pb2.DenseOptimizer:
    return text_format.Parse(text, optimizer_pb2.DenseOptimizer())


def sparse_config(text: str) -> optimizer_pb2.SparseOptimizer:
    return text_format.Parse(text, optimizer_pb2.SparseOptimizer())


def params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.zeros(2))]


def approx(value: float) -> object:
    # proto floats are float32: 0.01 reads back as 0.009999999776...
    return pytest.approx(value, rel=1e-6)


# --------------------------------------------------------------------------- dense optimizers


@pytest.mark.parametrize(
    "text, cls, expected",
    [
        (
            "sgd_optimizer { lr: 0.05 momentum: 0.5 weight_decay: 0.01 }",
            torch.optim.SGD,
            {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.01},
        ),
        (
            "adagrad_optimizer { lr: 0.03 weight_decay: 0.02 }",
            torch.optim.Adagrad,
            {"lr": 0.03, "weight_decay": 0.02},
        ),
        (
            "adam_optimizer { lr: 0.001 beta1: 0.8 beta2: 0.99 weight_decay: 0.001 }",
            torch.optim.Adam,
            {"lr": 0.001, "betas": (0.8, 0.99), "weight_decay": 0.001},
        ),
        (
            "adamw_optimizer { lr: 0.002 beta1: 0.7 beta2: 0.9 weight_decay: 0.1 }",
            torch.optim.AdamW,
            {"lr": 0.002, "betas": (0.7, 0.9), "weight_decay": 0.1},
        ),
    ],
    ids=["sgd", "adagrad", "adam", "adamw"],
)
def test_dense_optimizer_uses_configured_settings(text, cls, expected):
    ps = params()
    optimizer = create_dense_optimizer(dense_config(text), ps)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert len(group["params"]) == len(ps)
    for key, value in expected.items():
        if isinstance(value, tuple):
            assert tuple(group[key]) == tuple(approx(v) for v in value)
        else:
            assert group[key] == approx(value)
    # one step with a gradient actually moves the weights
    before = [p.detach().clone() for p in ps]
    for p in ps:
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, ps))


def test_dense_sgd_defaults_follow_the_proto():
    optimizer = create_dense_optimizer(dense_config("sgd_optimizer {}"), params())
    group = optimizer.param_groups[0]
    assert group["lr"] == approx(0.002) and group["momentum"] == approx(0.9)
    assert group["weight_decay"] == 0.0


def test_dense_optimizer_without_choice_lists_the_choices():
    with pytest.raises(ValueError, match="dense_optimizer") as info:
        create_dense_optimizer(optimizer_pb2.DenseOptimizer(), params())
    for name in ("sgd_optimizer", "adagrad_optimizer", "adam_optimizer", "adamw_optimizer"):
        assert name in str(info.value)


# -------------------------------------------------------------------------- sparse optimizers


@pytest.mark.parametrize(
    "text, name, cls, expected",
    [
        ("sgd_optimizer { lr: 0.5 }", "sgd_optimizer", torch.optim.SGD, {"lr": 0.5}),
        (
            "adagrad_optimizer { lr: 0.25 }",
            "adagrad_optimizer",
            torch.optim.Adagrad,
            {"lr": 0.25, "eps": 1e-8, "initial_accumulator_value": 0.0},
        ),
        (
            "adam_optimizer { lr: 0.01 beta1: 0.8 beta2: 0.95 weight_decay: 0.001 }",
            "adam_optimizer",
            torch.optim.AdamW,  # fbgemm's Adam decays weights decoupled
            {"lr": 0.01, "betas": (0.8, 0.95), "weight_decay": 0.001},
        ),
        (
            "rowwise_adagrad_optimizer { lr: 0.125 weight_decay: 0.01 }",
            "rowwise_adagrad_optimizer",
            RowWiseAdagrad,
            {"lr": 0.125, "weight_decay": 0.01, "weight_decay_mode": 0},
        ),
    ],
    ids=["sgd", "adagrad", "adam", "rowwise_adagrad"],
)
def test_sparse_optimizer_spec(text, name, cls, expected):
    spec = sparse_optimizer_spec(sparse_config(text))
    assert spec.name == name
    assert spec.fallback_class is cls
    assert spec.lr == approx(expected["lr"])
    assert set(spec.fallback_kwargs) == set(expected)
    for key, value in expected.items():
        if isinstance(value, tuple):
            assert tuple(spec.fallback_kwargs[key]) == tuple(approx(v) for v in value)
        else:
            assert spec.fallback_kwargs[key] == approx(value)
    # the fallback (dense-kernel) optimizer has that class and settings (row-wise
    # Adagrad keeps one accumulator per row: embedding tables are 2-D)
    optimizer = spec.create([torch.nn.Parameter(torch.ones(4, 3))])
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["lr"] == approx(expected["lr"])
    # create() must not change the spec
    assert set(spec.fallback_kwargs) == set(expected)


def test_sparse_optimizer_without_choice_lists_the_choices():
    with pytest.raises(ValueError, match="sparse_optimizer") as info:
        sparse_optimizer_spec(optimizer_pb2.SparseOptimizer())
    assert "rowwise_adagrad_optimizer" in str(info.value)


@pytest.mark.parametrize(
    "optimizer, dim, device_type, supported",
    [
        ("adam_optimizer", 8, "cpu", False),
        ("sgd_optimizer", 10, "cpu", False),
        ("adagrad_optimizer", 10, "cpu", False),
        ("rowwise_adagrad_optimizer", 10, "cpu", False),
        ("adagrad_optimizer", 8, "cpu", True),
        ("sgd_optimizer", 4, "cpu", True),
        ("rowwise_adagrad_optimizer", 16, "cpu", True),
        ("adam_optimizer", 8, "cuda", True),
        ("adam_optimizer", 10, "cuda", True),
        ("sgd_optimizer", 10, "cuda", True),
    ],
)
def test_fused_kernel_supports(optimizer, dim, device_type, supported):
    spec = sparse_optimizer_spec(sparse_config(f"{optimizer} {{}}"))
    assert fused_kernel_supports(spec, dim, device_type) is supported


# ---------------------------------------------------------------------- learning-rate schedules


def make_schedule(text: str, base_lr: float = 0.1, optimizer=None) -> LearningRateSchedule:
    config = dense_config("sgd_optimizer {} " + text)
    if optimizer is None:
        optimizer = torch.optim.SGD(params(), lr=base_lr)
    return create_schedule(optimizer, config, base_lr)


def lrs(schedule: LearningRateSchedule, steps, epoch: int = 0) -> list[float]:
    return [schedule.update(step, epoch) for step in steps]


def test_constant_schedule_is_the_base_rate():
    for text in ("", "constant_learning_rate {}"):
        schedule = make_schedule(text, base_lr=0.3)
        assert lrs(schedule, [0, 1, 1000]) == [0.3, 0.3, 0.3]
        assert schedule.get_lr() == [0.3]


def test_exponential_decay_staircase():
    schedule = make_schedule(
        "exponential_decay_learning_rate { decay_size: 10 decay_factor: 0.5 staircase: true }"
    )
    assert lrs(schedule, [0, 9, 10, 19, 20, 35]) == [
        approx(0.1),
        approx(0.1),
        approx(0.05),
        approx(0.05),
        approx(0.025),
        approx(0.0125),
    ]


def test_exponential_decay_smooth():
    schedule = make_schedule(
        "exponential_decay_learning_rate { decay_size: 10 decay_factor: 0.5 staircase: false }"
    )
    assert lrs(schedule, [0, 5, 10, 15]) == [
        approx(0.1),
        approx(0.1 * 0.5**0.5),
        approx(0.05),
        approx(0.1 * 0.5**1.5),
    ]


def test_exponential_decay_warms_up_from_warmup_learning_rate():
    schedule = make_schedule(
        "exponential_decay_learning_rate { decay_size: 10 decay_factor: 0.5"
        " warmup_learning_rate: 0.01 warmup_size: 4 }"
    )
    # linear from warmup_learning_rate to the base rate, then decay counted from the warmup's end
    assert lrs(schedule, [0, 1, 2, 4, 13, 14]) == [
        approx(0.01),
        approx(0.01 + 0.09 * 0.25),
        approx(0.01 + 0.09 * 0.5),
        approx(0.1),
        approx(0.1),
        approx(0.05),
    ]


def test_exponential_decay_stops_at_min_learning_rate():
    schedule = make_schedule(
        "exponential_decay_learning_rate { decay_size: 1 decay_factor: 0.5"
        " min_learning_rate: 0.02 }"
    )
    assert lrs(schedule, [0, 1, 2, 3, 100]) == [
        approx(0.1),
        approx(0.05),
        approx(0.025),
        approx(0.02),
        approx(0.02),
    ]


def test_exponential_decay_by_epoch_ignores_the_step():
    schedule = make_schedule(
        "exponential_decay_learning_rate { decay_size: 1 decay_factor: 0.5 by_epoch: true }"
    )
    assert schedule.update(step=0, epoch=0) == approx(0.1)
    assert schedule.update(step=500, epoch=0) == approx(0.1)
    assert schedule.update(step=501, epoch=1) == approx(0.05)
    assert schedule.update(step=1000, epoch=3) == approx(0.0125)


def test_manual_steps():
    schedule = make_schedule(
        "manual_step_learning_rate { schedule_sizes: [10, 20] learning_rates: [0.05, 0.01] }"
    )
    assert lrs(schedule, [0, 9, 10, 19, 20, 1000]) == [
        0.1,
        0.1,
        approx(0.05),
        approx(0.05),
        approx(0.01),
        approx(0.01),
    ]


def test_manual_steps_with_warmup():
    schedule = make_schedule(
        "manual_step_learning_rate { schedule_sizes: [10, 20] learning_rates: [0.05, 0.01]"
        " warmup: true }"
    )
    # linear from 0 up to the first rate over the first schedule size
    assert lrs(schedule, [0, 5, 10, 20]) == [
        0.0,
        approx(0.025),
        approx(0.05),
        approx(0.01),
    ]


def test_manual_steps_by_epoch():
    schedule = make_schedule(
        "manual_step_learning_rate { schedule_sizes: [2] learning_rates: [0.01] by_epoch: true }"
    )
    assert schedule.update(step=100, epoch=1) == 0.1
    assert schedule.update(step=101, epoch=2) == approx(0.01)


def test_manual_steps_with_mismatched_lists_name_both_fields():
    with pytest.raises(ValueError) as info:
        make_schedule(
            "manual_step_learning_rate { schedule_sizes: [10, 20] learning_rates: [0.05] }"
        )
    message = str(info.value)
    assert "schedule_sizes" in message and "learning_rates" in message
    assert "2" in message and "1" in message


def test_update_sets_every_param_group():
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.7}, {"params": [c]}], 0.1)
    schedule = make_schedule(
        "manual_step_learning_rate { schedule_sizes: [3] learning_rates: [0.01] }",
        optimizer=optimizer,
    )
    assert schedule.update(0, 0) == 0.1
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.1, 0.1]
    schedule.update(3, 0)
    assert schedule.get_lr() == [approx(0.01)] * 3
    assert schedule.last_lr == approx(0.01)


def test_update_overrides_a_restored_rate():
    # a resumed optimizer carries the rate of the step it was saved at: the first update after
    # resuming must replace it even when the schedule's rate equals the base rate
    schedule = make_schedule(
        "exponential_decay_learning_rate { decay_size: 100 decay_factor: 0.5"
        " warmup_learning_rate: 0.0 warmup_size: 4 }"
    )
    for group in schedule.optimizer.param_groups:
        group["lr"] = 0.075  # as restored from a checkpoint written at step 3
    assert schedule.update(4, 0) == approx(0.1)
    assert schedule.get_lr() == [approx(0.1)]


def test_on_update_is_called_after_the_groups_are_set():
    seen = []
    optimizer = torch.optim.SGD(params(), lr=0.1)
    config = dense_config(
        "sgd_optimizer {} manual_step_learning_rate { schedule_sizes: [1] learning_rates: [0.5] }"
    )
    schedule = create_schedule(
        optimizer, config, 0.1, on_update=lambda: seen.append(optimizer.param_groups[0]["lr"])
    )
    schedule.update(0, 0)
    schedule.update(1, 0)
    assert seen == [0.1, approx(0.5)]


def test_schedule_values_are_finite_floats():
    schedule = make_schedule(
        "exponential_decay_learning_rate { decay_size: 3 decay_factor: 0.9 staircase: false }"
    )
    values = lrs(schedule, range(50))
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert values == sorted(values, reverse=True)


def test_tf32_switches_reach_torch():
    from recforge.utils.pipeline import set_tf32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        set_tf32(train_pb2.TrainConfig(cudnn_allow_tf32=False, cuda_matmul_allow_tf32=True))
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (
            False,
            True,
        )
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
