"""The memory estimate made before training, and the one-line stop when a job cannot fit."""

from __future__ import annotations

import pytest
import torch
from google.protobuf import text_format
from torch import nn
from torchrec import DataType, EmbeddingBagCollection, EmbeddingBagConfig

from recforge.config import load_pipeline_config
from recforge.config.errors import ConfigError
from recforge.features import create_features
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.optim import sparse_optimizer_spec
from recforge.optim.optimizers import SparseOptimizerSpec
from recforge.protos import optimizer_pb2, pipeline_pb2
from recforge.utils import memory_estimate as me
from tests.helpers import tiny_run
from tests.helpers.tzrec_examples import example_path

GIB = 1024**3
CPU = torch.device("cpu")


def _spec(kind: str) -> SparseOptimizerSpec:
    config = optimizer_pb2.SparseOptimizer()
    getattr(config, kind).lr = 0.01
    return sparse_optimizer_spec(config)


class _Model(nn.Module):
    """One table on the meta device (nothing allocated) and a small dense layer."""

    def __init__(self, rows: int, dim: int, data_type: DataType = DataType.FP32) -> None:
        super().__init__()
        table = EmbeddingBagConfig(
            name="big",
            embedding_dim=dim,
            num_embeddings=rows,
            feature_names=["f"],
            data_type=data_type,
        )
        self.ebc = EmbeddingBagCollection([table], device=torch.device("meta"))
        self.mlp = nn.Linear(dim, 1)


@pytest.mark.parametrize(
    "kind, state",
    [
        ("sgd_optimizer", 0),
        ("adagrad_optimizer", 1000 * 16 * 4),  # one fp32 slot per weight
        ("rowwise_adagrad_optimizer", 1000 * 4),  # one fp32 slot per row
        ("adam_optimizer", 2 * 1000 * 16 * 4),  # two slots per weight
    ],
)
def test_optimizer_state_per_sparse_optimizer(kind, state):
    estimate = me.estimate_training_memory(_Model(1000, 16), _spec(kind), CPU)
    (table,) = estimate.tables
    assert (table.name, table.weights, table.state) == ("big", 1000 * 16 * 4, state)


def test_fp16_tables_count_two_bytes_per_weight():
    estimate = me.estimate_training_memory(
        _Model(1000, 16, DataType.FP16), _spec("adagrad_optimizer"), CPU
    )
    assert estimate.tables[0].weights == 1000 * 16 * 2
    assert estimate.tables[0].state == 1000 * 16 * 4  # fbgemm keeps the state in fp32


def test_dense_kernel_tables_count_a_gradient_and_frozen_tables_no_state():
    model = _Model(1000, 6)  # width not divisible by 4: off the fused CPU kernel
    (table,) = me.estimate_training_memory(model, _spec("adagrad_optimizer"), CPU).tables
    assert not table.fused and table.gradient == table.weights
    frozen = list(model.ebc.parameters())
    (table,) = me.estimate_training_memory(model, _spec("adagrad_optimizer"), CPU, frozen).tables
    assert table.state == 0 and table.gradient == 0


def test_needed_counts_dense_parameters_and_margin():
    estimate = me.estimate_training_memory(_Model(1000, 16), _spec("sgd_optimizer"), CPU)
    dense = (16 + 1) * 4 * 4  # Linear(16, 1): weights, gradient, two optimizer slots
    assert estimate.dense_bytes == dense
    assert estimate.needed == int((1000 * 16 * 4 + dense) * 1.1) + me.MARGIN_BYTES


def test_too_big_job_stops_with_one_line_naming_need_have_and_fitting_settings():
    # 100M x 16 fp32 rows with Adagrad: 6 GiB weights + 6 GiB state; the machine has 10 GiB
    model = _Model(100_000_000, 16)
    estimate = me.estimate_training_memory(model, _spec("adagrad_optimizer"), CPU)
    with pytest.raises(ConfigError) as error:
        me.check_training_memory(estimate, available=10 * GIB)
    text = str(error.value)
    assert "\n" not in text
    assert "needs about 13.4 GiB" in text and "has 10.0 GiB available" in text
    assert "'big'" in text and "rowwise_adagrad_optimizer" in text
    # FP16 weights alone (3 + 6 GiB) do not fit in 10 GiB with the margin; row-wise does
    assert "would fit with sparse_optimizer { rowwise_adagrad_optimizer" in text
    me.check_training_memory(estimate, available=14 * GIB)  # fits: no error
    me.check_training_memory(estimate, available=0)  # unknown: no check


def test_nothing_fits_names_how_far_to_shrink(monkeypatch):
    # width 6: on the dense kernel, which file-backed tables do not cover
    estimate = me.estimate_training_memory(_Model(100_000_000, 6), _spec("adagrad_optimizer"), CPU)
    with pytest.raises(ConfigError, match="shrink hash_bucket_size / num_buckets"):
        me.check_training_memory(estimate, available=2 * GIB)
    monkeypatch.setenv(me.SKIP_ENV, "1")
    me.check_training_memory(estimate, available=2 * GIB)


def test_available_memory_reads_this_machine():
    available = me.available_memory()
    assert 0 < available < 1 << 50


def _config_model(config):
    features = create_features(config.feature_configs)
    model = build_model(config, features, embedding_device=torch.device("meta"))
    _, frozen = model.sparse_parameters()
    wrapper = TrainWrapper(model, config.train_config.mixed_precision)
    spec = sparse_optimizer_spec(config.train_config.sparse_optimizer)
    return me.estimate_training_memory(wrapper, spec, CPU, frozen)


def test_small_config_fits_this_machine():
    estimate = _config_model(text_format.Parse(tiny_run.CONFIG, pipeline_pb2.EasyRecConfig()))
    assert estimate.needed < me.MARGIN_BYTES + 1024**2
    me.check_training_memory(estimate)


def test_criteo_example_is_stopped_on_a_24_gib_machine_at_its_biggest_table():
    config = load_pipeline_config(example_path("deepfm_criteo.config"))
    estimate = _config_model(config)  # meta tables: nothing allocated
    with pytest.raises(ConfigError) as error:
        me.check_training_memory(estimate, available=24 * GIB, config=config)
    assert error.value.field.endswith(".num_buckets")
    assert "cat_0_emb" in str(error.value) and "rowwise_adagrad_optimizer" in str(error.value)
