"""Every optimizer and schedule setting of optimizer.proto changes what happens.

Dense optimizers against torch's on the same tensors; the sparse fallbacks against fbgemm's
CPU kernel (where it has one) or the kernels' update rules; part_optimizers routing; cosine
schedules against torch's schedulers.
"""

import logging
import math

import pytest
import torch
from google.protobuf import text_format
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from recforge.config import ConfigError
from recforge.optim import (
    create_dense_optimizer,
    create_schedule,
    fill_initial_accumulator,
    sparse_optimizer_spec,
    split_part_optimizers,
)
from recforge.optim import embedding_optimizers as emb
from recforge.protos import optimizer_pb2
from recforge.utils import dist as dist_util
from tests.helpers.sharding import sharded_training


def dense_config(text: str) -> optimizer_pb2.DenseOptimizer:
    return text_format.Parse(text, optimizer_pb2.DenseOptimizer())


def sparse_config(text: str) -> optimizer_pb2.SparseOptimizer:
    return text_format.Parse(text, optimizer_pb2.SparseOptimizer())


def make_params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(4, 3, generator=g)),
        torch.nn.Parameter(torch.randn(3, generator=g)),
    ]


def grads(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]


def run_steps(optimizer: torch.optim.Optimizer, params, steps: int = 3) -> list[torch.Tensor]:
    for step in range(steps):
        for p, g in zip(params, grads(step)):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach().clone() for p in params]


def dense_result(text: str, steps: int = 3) -> list[torch.Tensor]:
    params = make_params()
    return run_steps(create_dense_optimizer(dense_config(text), params), params, steps)


def same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 1e-6) -> bool:
    return all(torch.allclose(x, y, atol=atol, rtol=1e-5) for x, y in zip(a, b))


# --------------------------------------------------------------------------- dense optimizers

DENSE_CASES = [
    (
        "sgd_optimizer { lr: 0.1 momentum: 0.5 weight_decay: 0.1 dampening: 0.2 }",
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.5, weight_decay=0.1, dampening=0.2),
    ),
    (
        "sgd_optimizer { lr: 0.1 momentum: 0.5 nesterov: true dampening: 0 }",
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.5, nesterov=True),
    ),
    (
        "adagrad_optimizer { lr: 0.1 weight_decay: 0.1 initial_accumulator_value: 0.5 eps: 0.01 }",
        torch.optim.Adagrad,
        dict(lr=0.1, weight_decay=0.1, initial_accumulator_value=0.5, eps=0.01),
    ),
    (
        "adam_optimizer { lr: 0.1 beta1: 0.5 beta2: 0.9 weight_decay: 0.1 eps: 0.01"
        " amsgrad: true }",
        torch.optim.Adam,
        dict(lr=0.1, betas=(0.5, 0.9), weight_decay=0.1, eps=0.01, amsgrad=True),
    ),
    (
        "adamw_optimizer { lr: 0.1 beta1: 0.5 beta2: 0.9 weight_decay: 0.1 eps: 0.01"
        " amsgrad: true }",
        torch.optim.AdamW,
        dict(lr=0.1, betas=(0.5, 0.9), weight_decay=0.1, eps=0.01, amsgrad=True),
    ),
    (
        "adadelta_optimizer { lr: 0.5 rho: 0.5 eps: 0.001 weight_decay: 0.1 }",
        torch.optim.Adadelta,
        dict(lr=0.5, rho=0.5, eps=0.001, weight_decay=0.1),
    ),
    (
        "rmsprop_optimizer { lr: 0.1 alpha: 0.5 eps: 0.01 weight_decay: 0.1 }",
        torch.optim.RMSprop,
        dict(lr=0.1, alpha=0.5, eps=0.01, weight_decay=0.1),
    ),
]


@pytest.mark.parametrize(
    "text, cls, kwargs",
    DENSE_CASES,
    ids=["sgd", "sgd-nesterov", "adagrad", "adam", "adamw", "adadelta", "rmsprop"],
)
def test_dense_optimizer_steps_like_torch(text, cls, kwargs):
    ours = dense_result(text)
    reference_params = make_params()
    # proto floats are float32: feed torch the same rounded values
    rounded = {
        k: tuple(float(torch.tensor(x)) for x in v)
        if isinstance(v, tuple)
        else (float(torch.tensor(v)) if isinstance(v, float) else v)
        for k, v in kwargs.items()
    }
    reference = run_steps(cls(reference_params, **rounded), reference_params)
    assert same(ours, reference)
    assert not same(ours, [p.detach() for p in make_params()])  # the step moved them


@pytest.mark.parametrize(
    "base, changed",
    [
        ("sgd_optimizer { lr: 0.1 }", "sgd_optimizer { lr: 0.1 momentum: 0.5 }"),
        ("sgd_optimizer { lr: 0.1 }", "sgd_optimizer { lr: 0.1 weight_decay: 0.5 }"),
        ("sgd_optimizer { lr: 0.1 }", "sgd_optimizer { lr: 0.1 dampening: 0.5 }"),
        ("sgd_optimizer { lr: 0.1 }", "sgd_optimizer { lr: 0.1 nesterov: true }"),
        ("adagrad_optimizer { lr: 0.1 }", "adagrad_optimizer { lr: 0.1 weight_decay: 0.5 }"),
        (
            "adagrad_optimizer { lr: 0.1 }",
            "adagrad_optimizer { lr: 0.1 initial_accumulator_value: 1 }",
        ),
        ("adagrad_optimizer { lr: 0.1 }", "adagrad_optimizer { lr: 0.1 eps: 0.5 }"),
        ("adam_optimizer { lr: 0.1 }", "adam_optimizer { lr: 0.1 beta1: 0.5 }"),
        ("adam_optimizer { lr: 0.1 }", "adam_optimizer { lr: 0.1 beta2: 0.5 }"),
        ("adam_optimizer { lr: 0.1 }", "adam_optimizer { lr: 0.1 weight_decay: 0.5 }"),
        ("adam_optimizer { lr: 0.1 }", "adam_optimizer { lr: 0.1 eps: 0.5 }"),
        ("adam_optimizer { lr: 0.1 }", "adam_optimizer { lr: 0.1 amsgrad: true }"),
        ("adamw_optimizer { lr: 0.1 }", "adamw_optimizer { lr: 0.1 weight_decay: 0.5 }"),
        ("adamw_optimizer { lr: 0.1 }", "adamw_optimizer { lr: 0.1 amsgrad: true }"),
        ("adadelta_optimizer { lr: 0.5 }", "adadelta_optimizer { lr: 0.5 rho: 0.5 }"),
        ("adadelta_optimizer { lr: 0.5 }", "adadelta_optimizer { lr: 0.5 eps: 0.01 }"),
        ("adadelta_optimizer { lr: 0.5 }", "adadelta_optimizer { lr: 0.5 weight_decay: 0.5 }"),
        ("rmsprop_optimizer { lr: 0.1 }", "rmsprop_optimizer { lr: 0.1 alpha: 0.5 }"),
        ("rmsprop_optimizer { lr: 0.1 }", "rmsprop_optimizer { lr: 0.1 eps: 0.5 }"),
        ("rmsprop_optimizer { lr: 0.1 }", "rmsprop_optimizer { lr: 0.1 weight_decay: 0.5 }"),
    ],
)
def test_each_dense_setting_changes_the_update(base, changed):
    if "amsgrad" in changed:  # amsgrad only differs once the second moment shrinks
        base = base.replace("}", "beta2: 0.5 }")
        changed = changed.replace("}", "beta2: 0.5 }")
    assert not same(dense_result(base, steps=4), dense_result(changed, steps=4))


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam", "adamw"])
def test_dense_fused_flag_uses_torchs_fused_kernel_with_the_same_results(name):
    params = make_params()
    fused = create_dense_optimizer(
        dense_config(f"{name}_optimizer {{ lr: 0.1 fused: true }}"), params
    )
    assert fused.param_groups[0]["fused"] is True
    fused_result = run_steps(fused, params)
    plain_params = make_params()
    plain = create_dense_optimizer(
        dense_config(f"{name}_optimizer {{ lr: 0.1 fused: false }}"), plain_params
    )
    assert not plain.param_groups[0]["fused"]
    assert same(fused_result, run_steps(plain, plain_params), atol=1e-5)


def test_dense_adam_is_fused_unless_told_not_to():
    params = make_params()
    assert create_dense_optimizer(dense_config("adam_optimizer {}"), params).param_groups[0][
        "fused"
    ]
    assert not create_dense_optimizer(dense_config("sgd_optimizer {}"), params).param_groups[0][
        "fused"
    ]


def test_dense_setting_torch_rejects_names_its_field():
    with pytest.raises(ConfigError) as info:
        create_dense_optimizer(
            dense_config("sgd_optimizer { momentum: 0 nesterov: true }"), make_params()
        )
    assert info.value.field == "train_config.dense_optimizer.sgd_optimizer"
    assert "Nesterov" in str(info.value)


# ---------------------------------------------------------------------------- part_optimizers

NAMES = ["model.deep.mlp.0.weight", "model.deep.mlp.0.bias", "model.final.w", "model.head.bias"]


def named_params() -> dict[str, torch.nn.Parameter]:
    return {name: torch.nn.Parameter(torch.zeros(2)) for name in NAMES}


def test_part_optimizers_route_by_full_regex_match_first_wins():
    config = dense_config(
        "adam_optimizer { lr: 0.01 }"
        ' part_optimizers { sgd_optimizer { lr: 0.5 } regex_pattern: "(.*)deep(.*)" }'
        ' part_optimizers { adagrad_optimizer { lr: 0.2 } regex_pattern: "(.*)(deep|head)(.*)" }'
        ' part_optimizers { rmsprop_optimizer { } regex_pattern: "head" }'  # not a full match
    )
    params = named_params()
    remaining, parts = split_part_optimizers(config, params)
    assert list(remaining) == ["model.final.w"]
    assert [p.index for p in parts] == [0, 1]
    assert list(parts[0].params) == ["model.deep.mlp.0.weight", "model.deep.mlp.0.bias"]
    assert list(parts[1].params) == ["model.head.bias"]
    assert parts[1].field == "train_config.dense_optimizer.part_optimizers[1]"
    optimizer = create_dense_optimizer(parts[0].config, parts[0].params.values())
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_part_optimizer_matching_nothing_is_logged(caplog):
    config = dense_config(
        'sgd_optimizer {} part_optimizers { sgd_optimizer {} regex_pattern: "nothing_.*" }'
    )
    with caplog.at_level(logging.WARNING):
        remaining, parts = split_part_optimizers(config, named_params())
    assert parts == [] and list(remaining) == NAMES
    assert "part_optimizers[0].regex_pattern 'nothing_.*' matches no dense parameter" in (
        caplog.text
    )


@pytest.mark.parametrize(
    "part, field",
    [
        ('sgd_optimizer {} regex_pattern: "(.*"', "part_optimizers[0].regex_pattern"),
        ("sgd_optimizer {}", "part_optimizers[0].regex_pattern"),
        ('regex_pattern: ".*"', "part_optimizers[0]"),
    ],
    ids=["bad-regex", "no-regex", "no-optimizer"],
)
def test_bad_part_optimizer_is_a_config_error(part, field):
    config = dense_config(f"sgd_optimizer {{}} part_optimizers {{ {part} }}")
    with pytest.raises(ConfigError) as info:
        split_part_optimizers(config, named_params())
    assert info.value.field == f"train_config.dense_optimizer.{field}"


# ------------------------------------------------------------------------ sparse: the spec


@pytest.mark.parametrize(
    "name, fused_devices, fallback",
    [
        ("sgd_optimizer", {"cpu", "cuda"}, torch.optim.SGD),
        ("adagrad_optimizer", {"cpu", "cuda"}, torch.optim.Adagrad),
        ("rowwise_adagrad_optimizer", {"cpu", "cuda"}, emb.RowWiseAdagrad),
        ("adam_optimizer", {"cuda"}, torch.optim.AdamW),
        ("lars_sgd_optimizer", {"cuda"}, emb.LarsSGD),
        ("lamb_optimizer", {"cuda"}, emb.LAMB),
        ("partial_rowwise_lamb_optimizer", {"cuda"}, emb.PartialRowWiseLAMB),
        ("partial_rowwise_adam_optimizer", {"cuda"}, emb.PartialRowWiseAdam),
        ("adadelta_optimizer", set(), torch.optim.Adadelta),
        ("rmsprop_optimizer", set(), torch.optim.RMSprop),
    ],
)
def test_every_sparse_optimizer_has_a_kernel_or_a_fallback(name, fused_devices, fallback):
    spec = sparse_optimizer_spec(sparse_config(f"{name} {{ lr: 0.1 }}"))
    assert spec.fused_devices == fused_devices
    assert spec.fallback_class is fallback
    assert spec.fused_on("cuda", 10) == ("cuda" in fused_devices)
    assert spec.fused_on("cpu", 8) == ("cpu" in fused_devices)
    assert not spec.fused_on("cpu", 10)
    assert spec.fused_kwargs["lr"] == pytest.approx(0.1)
    table = torch.nn.Parameter(torch.randn(5, 4))
    optimizer = spec.create([table])
    table.grad = torch.ones(5, 4)
    before = table.detach().clone()
    optimizer.step()
    assert not torch.equal(before, table.detach())


def test_sparse_fused_kwargs_use_fbgemms_names():
    spec = sparse_optimizer_spec(
        sparse_config(
            "lamb_optimizer { lr: 0.1 beta1: 0.8 beta2: 0.9 weight_decay: 0.01"
            " gradient_clipping: true max_gradient: 2 }"
        )
    )
    assert spec.fused_kwargs == {
        "lr": pytest.approx(0.1),
        "beta1": pytest.approx(0.8),
        "beta2": pytest.approx(0.9),
        "weight_decay": pytest.approx(0.01),
        "gradient_clipping": True,
        "max_gradient": 2.0,
    }


@pytest.mark.parametrize(
    "text, field",
    [
        ("sgd_optimizer { gradient_clipping: true max_gradient: 0 }", "sgd_optimizer.max_gradient"),
        ("adagrad_optimizer { initial_accumulator_value: -1 }", "adagrad_optimizer"),
        ("rmsprop_optimizer { lr: -1 }", "rmsprop_optimizer"),
        ("lamb_optimizer { beta1: 1.5 }", "lamb_optimizer"),
    ],
)
def test_bad_sparse_setting_is_a_config_error(text, field):
    with pytest.raises(ConfigError) as info:
        sparse_optimizer_spec(sparse_config(text))
    assert info.value.field == f"train_config.sparse_optimizer.{field}"


# ------------------------------------------------------- sparse: fallback vs fbgemm's CPU kernel


@pytest.fixture(scope="module")
def process_group():
    dist_util.init_process_group()


IDS = torch.tensor([0, 2, 2, 3])  # two bags of two ids; id 2 twice in the batch
LENGTHS = torch.tensor([2, 2])


def initial_table(dim: int = 4) -> torch.Tensor:
    return torch.arange(5 * dim, dtype=torch.float32).view(5, dim) / 10 - 0.5


def output_grad(step: int, scale: float, dim: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return torch.randn(2, dim, generator=g) * scale


def fused_cpu_run(spec, steps: int, scale: float) -> torch.Tensor:
    """The table after ``steps`` of fbgemm's fused CPU kernel with ``spec``."""
    ebc = EmbeddingBagCollection(
        [EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=5, feature_names=["f"])],
        device=torch.device("meta"),
    )
    apply_optimizer_in_backward(spec.fused_class, list(ebc.parameters()), dict(spec.fused_kwargs))
    topology = Topology(world_size=1, compute_device="cpu", local_world_size=1)
    constraints = {
        "t": ParameterConstraints(sharding_types=["table_wise"], compute_kernels=["fused"])
    }
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan = planner.collective_plan(ebc, None, torch.distributed.GroupMember.WORLD)
    dmp = DistributedModelParallel(ebc, device=torch.device("cpu"), plan=plan)
    if spec.initial_accumulator_value:
        assert fill_initial_accumulator(dmp.fused_optimizer, spec.initial_accumulator_value) == 1
    weight = dmp.state_dict()["embedding_bags.t.weight"].local_shards()[0].tensor
    with torch.no_grad():
        weight.copy_(initial_table())
    kjt = KeyedJaggedTensor.from_lengths_sync(["f"], IDS, LENGTHS)
    for step in range(steps):
        (dmp(kjt).values() * output_grad(step, scale)).sum().backward()
    return weight.detach().clone()


def fallback_run(spec, steps: int, scale: float) -> torch.Tensor:
    """The table after ``steps`` of the spec's torch optimizer on a dense lookup."""
    table = torch.nn.Parameter(initial_table())
    optimizer = spec.create([table])
    for step in range(steps):
        pooled = torch.nn.functional.embedding_bag(IDS, table, torch.tensor([0, 2]), mode="sum")
        table.grad = None
        (pooled * output_grad(step, scale)).sum().backward()
        optimizer.step()
    return table.detach().clone()


@pytest.mark.parametrize(
    "text",
    [
        "sgd_optimizer { lr: 0.1 }",
        "adagrad_optimizer { lr: 0.1 }",
        "adagrad_optimizer { lr: 0.1 initial_accumulator_value: 2 }",
        "rowwise_adagrad_optimizer { lr: 0.1 }",
    ],
    ids=["sgd", "adagrad", "adagrad-initial-accumulator", "rowwise-adagrad"],
)
def test_fallback_matches_fbgemms_cpu_kernel(process_group, text):
    spec = sparse_optimizer_spec(sparse_config(text))
    assert spec.fused_on("cpu", 4)
    fused = fused_cpu_run(spec, steps=3, scale=1.0)
    assert not torch.equal(fused, initial_table())
    assert torch.allclose(fused, fallback_run(spec, steps=3, scale=1.0), atol=1e-5)


def test_initial_accumulator_value_slows_the_first_adagrad_step(process_group):
    plain = sparse_optimizer_spec(sparse_config("adagrad_optimizer { lr: 0.1 }"))
    primed = sparse_optimizer_spec(
        sparse_config("adagrad_optimizer { lr: 0.1 initial_accumulator_value: 4 }")
    )
    start = initial_table()
    plain_step = (fused_cpu_run(plain, 1, 1.0) - start).abs()
    primed_step = (fused_cpu_run(primed, 1, 1.0) - start).abs()
    # accumulator g^2 vs 4 + g^2: each touched element moves less
    touched = plain_step > 0
    assert touched.any() and (primed_step[touched] < plain_step[touched]).all()


@pytest.mark.parametrize("kernel", ["fused", "fallback"])
def test_sparse_gradient_clipping_bounds_the_sgd_update(process_group, kernel):
    spec = sparse_optimizer_spec(
        sparse_config("sgd_optimizer { lr: 0.1 gradient_clipping: true max_gradient: 0.5 }")
    )
    unclipped = sparse_optimizer_spec(sparse_config("sgd_optimizer { lr: 0.1 }"))
    run = fused_cpu_run if kernel == "fused" else fallback_run
    step = (run(spec, 1, 100.0) - initial_table()).abs()
    # ids 0 and 3 are looked up once: their update is at most lr * max_gradient per element
    # (id 2, looked up twice, gets up to twice that from fbgemm's per-lookup clipping)
    assert step[[0, 3]].max() == pytest.approx(0.05)
    assert step.max() <= 0.1 + 1e-6
    assert (run(unclipped, 1, 100.0) - initial_table()).abs().max() > 1.0


# ------------------------------------------------------------------ sparse: weight_decay_mode


def rowwise(mode: str, weight_decay: float = 0.5) -> torch.Tensor:
    spec = sparse_optimizer_spec(
        sparse_config(
            f"rowwise_adagrad_optimizer {{ lr: 0.1 weight_decay: {weight_decay}"
            f" weight_decay_mode: {mode} }}"
        )
    )
    return fallback_run(spec, steps=2, scale=1.0)


def test_rowwise_weight_decay_mode_changes_the_update():
    none, l2, decouple = rowwise("NONE"), rowwise("L2"), rowwise("DECOUPLE")
    assert torch.equal(none, rowwise("NONE", weight_decay=0.0))  # NONE: no decay at all
    assert not torch.allclose(l2, none) and not torch.allclose(decouple, none)
    assert not torch.allclose(l2, decouple)
    untouched = 1  # id 1 is never looked up: no mode touches it
    for result in (none, l2, decouple):
        assert torch.equal(result[untouched], initial_table()[untouched])


def test_rowwise_weight_decay_mode_follows_fbgemms_formula():
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0]])
    g = torch.tensor([[0.2, 0.1, -0.3, 0.4]])
    lr, decay, eps = 0.1, 0.5, 1e-8
    for mode, correction in (
        (emb.WEIGHT_DECAY_NONE, lambda m: 1.0),
        (emb.WEIGHT_DECAY_L2, lambda m: 1.0 - m * decay),
        (emb.WEIGHT_DECAY_DECOUPLE, lambda m: 1.0 - lr * decay),
    ):
        table = torch.nn.Parameter(w.clone())
        table.grad = g.clone()
        emb.RowWiseAdagrad(
            [table], lr=lr, eps=eps, weight_decay=decay, weight_decay_mode=mode
        ).step()
        g_sum = g + decay * w if mode == emb.WEIGHT_DECAY_L2 else g
        multiplier = lr / (math.sqrt(float(g_sum.square().mean())) + eps)
        expected = correction(multiplier) * w - multiplier * g
        assert torch.allclose(table.detach(), expected, atol=1e-6), mode


def test_rowwise_weight_decay_mode_reaches_the_kernel_or_leaves_the_cpu_one():
    spec = sparse_optimizer_spec(
        sparse_config("rowwise_adagrad_optimizer { weight_decay: 0.1 weight_decay_mode: L2 }")
    )
    assert spec.fused_kwargs["weight_decay_mode"].name == "L2"
    assert spec.fallback_kwargs["weight_decay_mode"] == emb.WEIGHT_DECAY_L2
    # fbgemm's CPU kernel ignores weight decay: those tables use the fallback there
    assert not spec.fused_on("cpu", 8) and spec.fused_on("cuda", 8)
    assert "ignores weight_decay" in spec.cpu_note


def test_rowwise_weight_decay_without_a_mode_is_logged(caplog):
    with caplog.at_level(logging.WARNING):
        spec = sparse_optimizer_spec(
            sparse_config("rowwise_adagrad_optimizer { weight_decay: 0.125 }")
        )
    assert spec.fused_on("cpu", 8)
    assert "weight_decay is 0.125 but weight_decay_mode is NONE" in caplog.text


# ----------------------------------------------------- sparse: the row-wise fallbacks' math


def one_step(optimizer_class, w: torch.Tensor, g: torch.Tensor, **kwargs) -> torch.Tensor:
    table = torch.nn.Parameter(w.clone())
    table.grad = g.clone()
    optimizer_class([table], **kwargs).step()
    return table.detach()


W = torch.tensor([[1.0, -2.0, 0.5, 2.0], [0.3, 0.3, -0.3, 0.1], [1.0, 1.0, 1.0, 1.0]])
G = torch.tensor([[0.2, 0.1, -0.3, 0.4], [-1.0, 2.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])


def test_lamb_moves_each_row_by_lr_times_its_norm():
    new = one_step(emb.LAMB, W, G, lr=0.1, betas=(0.9, 0.999), weight_decay=0.01)
    moved = (new - W)[:2].norm(dim=1)
    assert torch.allclose(moved, 0.1 * W[:2].norm(dim=1), rtol=1e-5)
    # first step: m_hat = g, v_hat = g^2: direction sign(g) (+ decay)
    direction = G[:2] / (G[:2].abs() + 1e-8) + 0.01 * W[:2]
    expected = (
        W[:2]
        - 0.1 * W[:2].norm(dim=1, keepdim=True) / direction.norm(dim=1, keepdim=True) * direction
    )
    assert torch.allclose(new[:2], expected, atol=1e-6)
    assert torch.equal(new[2], W[2])  # no gradient: the row is not touched


def test_partial_rowwise_lamb_uses_one_second_moment_per_row():
    new = one_step(emb.PartialRowWiseLAMB, W, G, lr=0.1)
    direction = G[:2] / (G[:2].square().mean(dim=1, keepdim=True).sqrt() + 1e-8)
    expected = (
        W[:2]
        - 0.1 * W[:2].norm(dim=1, keepdim=True) / direction.norm(dim=1, keepdim=True) * direction
    )
    assert torch.allclose(new[:2], expected, atol=1e-6)
    assert not torch.allclose(new, one_step(emb.LAMB, W, G, lr=0.1))


def test_partial_rowwise_adam_first_step_and_decoupled_decay():
    new = one_step(emb.PartialRowWiseAdam, W, G, lr=0.1, weight_decay=0.5)
    rms = G[:2].square().mean(dim=1, keepdim=True).sqrt()
    expected = W[:2] - 0.1 * (G[:2] / (rms + 1e-8) + 0.5 * W[:2])
    assert torch.allclose(new[:2], expected, atol=1e-6)
    assert torch.equal(new[2], W[2])


def test_partial_rowwise_adam_betas_change_the_second_step():
    def two_steps(betas):
        table = torch.nn.Parameter(W.clone())
        optimizer = emb.PartialRowWiseAdam([table], lr=0.1, betas=betas)
        for scale in (1.0, -3.0):
            table.grad = G * scale
            optimizer.step()
        return table.detach()

    assert not torch.allclose(two_steps((0.9, 0.999)), two_steps((0.5, 0.999)))
    assert not torch.allclose(two_steps((0.9, 0.999)), two_steps((0.9, 0.5)))


def test_lars_sgd_scales_the_rate_by_the_row_norms():
    lr, eta, decay, momentum = 0.5, 0.001, 0.1, 0.9
    table = torch.nn.Parameter(W.clone())
    optimizer = emb.LarsSGD([table], lr=lr, momentum=momentum, weight_decay=decay, eta=eta)
    table.grad = G.clone()
    optimizer.step()
    w_norm, g_norm = W.norm(dim=1, keepdim=True), G.norm(dim=1, keepdim=True)
    rate = lr * eta * w_norm / (g_norm + decay * w_norm)
    buffer = rate * (G + decay * W)
    assert torch.allclose(table.detach()[:2], (W - buffer)[:2], atol=1e-7)
    assert torch.equal(table.detach()[2], W[2])
    # second step: momentum carries the first update
    w1 = table.detach().clone()
    table.grad = G.clone()
    optimizer.step()
    w1_norm = w1.norm(dim=1, keepdim=True)
    buffer2 = momentum * buffer + lr * eta * w1_norm / (g_norm + decay * w1_norm) * (G + decay * w1)
    assert torch.allclose(table.detach()[:2], (w1 - buffer2)[:2], atol=1e-7)


@pytest.mark.parametrize(
    "text",
    [
        "lars_sgd_optimizer { lr: 0.5 momentum: 0.5 weight_decay: 0.1 }",
        "lamb_optimizer { lr: 0.1 beta1: 0.5 beta2: 0.9 weight_decay: 0.1 }",
        "partial_rowwise_lamb_optimizer { lr: 0.1 beta1: 0.5 beta2: 0.9 weight_decay: 0.1 }",
        "partial_rowwise_adam_optimizer { lr: 0.1 beta1: 0.5 beta2: 0.9 weight_decay: 0.1 }",
        "adam_optimizer { lr: 0.1 beta1: 0.5 beta2: 0.9 weight_decay: 0.1 }",
        "adadelta_optimizer { lr: 0.5 rho: 0.5 eps: 0.001 weight_decay: 0.1 }",
        "rmsprop_optimizer { lr: 0.1 alpha: 0.5 eps: 0.01 weight_decay: 0.1 }",
    ],
)
def test_each_sparse_setting_changes_the_fallback_update(text):
    # each field against the same config with that field left at its default (with the
    # others set: partial row-wise LAMB's trust ratio cancels beta2 without weight decay)
    name = text.split()[0]
    config = sparse_config(text)
    full = fallback_run(sparse_optimizer_spec(config), steps=3, scale=1.0)
    for fld, _ in getattr(config, name).ListFields():
        if fld.name == "lr":
            continue
        without = sparse_config(text)
        getattr(without, name).ClearField(fld.name)
        changed = fallback_run(sparse_optimizer_spec(without), steps=3, scale=1.0)
        assert not torch.allclose(changed, full), f"{name}.{fld.name} changed nothing"


# --------------------------------------------------------------------------------- schedules


def schedule_values(text: str, steps, base_lr: float = 0.1) -> list[float]:
    config = dense_config("sgd_optimizer {} " + text)
    optimizer = torch.optim.SGD(make_params(), lr=base_lr)
    schedule = create_schedule(optimizer, config, base_lr)
    return [schedule.update(step, 0) for step in steps]


def torch_values(scheduler_class, steps: int, base_lr: float = 0.1, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD(make_params(), lr=base_lr)
    scheduler = scheduler_class(optimizer, **kwargs)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_cosine_annealing_matches_torch_then_stays_at_the_minimum():
    ours = schedule_values(
        "cosine_annealing_learning_rate { T_max: 10 min_learning_rate: 0.01 }", range(16)
    )
    reference = torch_values(
        torch.optim.lr_scheduler.CosineAnnealingLR, 11, T_max=10, eta_min=float(torch.tensor(0.01))
    )
    assert ours[:11] == pytest.approx(reference, rel=1e-6)
    assert ours[10:] == pytest.approx([0.01] * 6, rel=1e-6)


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_cosine_warm_restarts_match_torch(t_mult):
    ours = schedule_values(
        f"cosine_annealing_warm_restarts_learning_rate {{ T_0: 3 T_mult: {t_mult}"
        " min_learning_rate: 0.001 }",
        range(45),
    )
    reference = torch_values(
        torch.optim.lr_scheduler.CosineAnnealingWarmRestarts,
        45,
        T_0=3,
        T_mult=t_mult,
        eta_min=float(torch.tensor(0.001)),
    )
    assert ours == pytest.approx(reference, rel=1e-5, abs=1e-9)
    assert ours[3] == pytest.approx(0.1)  # a restart


@pytest.mark.parametrize(
    "schedule",
    [
        "cosine_annealing_learning_rate { T_max: 10",
        "cosine_annealing_warm_restarts_learning_rate { T_0: 10",
    ],
)
def test_cosine_schedules_warm_up_first(schedule):
    warm = schedule_values(
        f"{schedule} warmup_learning_rate: 0.02 warmup_size: 4 }}", [0, 2, 4, 9, 14]
    )
    cold = schedule_values(f"{schedule} }}", [0, 5, 10])
    assert warm[:3] == pytest.approx([0.02, 0.06, 0.1])
    assert warm[3:] == pytest.approx(cold[1:])  # the cosine starts after the warmup


def test_cosine_by_epoch_follows_the_epoch():
    config = dense_config(
        "sgd_optimizer {} cosine_annealing_learning_rate { T_max: 2 by_epoch: true }"
    )
    schedule = create_schedule(torch.optim.SGD(make_params(), lr=0.1), config, 0.1)
    assert schedule.update(step=100, epoch=0) == pytest.approx(0.1)
    assert schedule.update(step=200, epoch=1) == pytest.approx(0.05)
    assert schedule.update(step=300, epoch=2) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "text, field",
    [
        ("cosine_annealing_learning_rate { }", "cosine_annealing_learning_rate.T_max"),
        (
            "cosine_annealing_warm_restarts_learning_rate { }",
            "cosine_annealing_warm_restarts_learning_rate.T_0",
        ),
        (
            "cosine_annealing_warm_restarts_learning_rate { T_0: 2 T_mult: 0 }",
            "cosine_annealing_warm_restarts_learning_rate.T_mult",
        ),
    ],
)
def test_bad_cosine_settings_are_config_errors(text, field):
    with pytest.raises(ConfigError) as info:
        schedule_values(text, [0])
    assert info.value.field == f"train_config.dense_optimizer.{field}"


def test_zero_base_rate_stays_zero():
    values = schedule_values(
        "cosine_annealing_learning_rate { T_max: 4 warmup_learning_rate: 0.5 warmup_size: 2 }",
        [0, 1, 3],
        base_lr=0.0,
    )
    assert values == [0.0, 0.0, 0.0]


# -------------------------------------------------------------- through shard_model (training)


def dense_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if ".mlp." in name or "head" in name
    }


def test_part_optimizers_train_their_parameters_in_shard_model(process_group):
    from tests.helpers.models import make_batch
    from tests.helpers.sharding import train_steps

    torch.manual_seed(0)
    sharded, _ = sharded_training(
        "sparse_optimizer { sgd_optimizer { lr: 0.1 } }"
        " dense_optimizer { adam_optimizer { lr: 0.01 }"
        '  part_optimizers { sgd_optimizer { lr: 0.0 } regex_pattern: "(.*)towers.user(.*)" }'
        '  part_optimizers { sgd_optimizer { lr: 0.5 } regex_pattern: "(.*)towers.item(.*)"'
        "    manual_step_learning_rate { schedule_sizes: [1] learning_rates: [0.25] } } }"
    )
    before = dense_weights(sharded.model)
    train_steps(sharded, make_batch(16), 0, 2)
    after = dense_weights(sharded.model)
    for name in before:
        frozen = "towers.user" in name  # its part optimizer has lr 0
        assert torch.equal(before[name], after[name]) == frozen, name
    keys = [k for k, _ in sharded.optimizer.optimizers]
    assert keys == ["sparse", "dense", "dense_part0", "dense_part1"]
    # the second part follows its own schedule; the first the dense (constant) one
    assert [s.last_lr for s in sharded.schedules[-2:]] == [0.0, pytest.approx(0.25)]


@pytest.mark.parametrize("name", ["lamb_optimizer", "rmsprop_optimizer"])
def test_sparse_optimizers_without_a_cpu_kernel_train_on_the_fallback(process_group, name):
    from tests.helpers.models import make_batch
    from tests.helpers.sharding import table_weights, train_steps

    torch.manual_seed(0)
    sharded, (dims, frozen) = sharded_training(
        f"sparse_optimizer {{ {name} {{ lr: 0.05 }} }} dense_optimizer {{ adam_optimizer {{}} }}"
    )
    assert set(sharded.fallback_tables) == set(dims) - frozen
    before = table_weights(sharded.model)
    losses = train_steps(sharded, make_batch(16), 0, 3)
    after = table_weights(sharded.model)
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[t], after[t]) for t in sharded.fallback_tables)


def test_shard_model_fills_the_fused_adagrad_accumulator(process_group):
    sharded, _ = sharded_training(
        "sparse_optimizer { adagrad_optimizer { lr: 0.1 initial_accumulator_value: 0.75 } }"
        " dense_optimizer { adam_optimizer {} }"
    )
    states = [
        t
        for state in sharded.model.fused_optimizer.state.values()
        for key, t in state.items()
        if key.endswith("momentum1")
    ]
    assert states
    for tensor in states:
        for shard in tensor.local_shards():
            assert torch.all(shard.tensor == 0.75)
