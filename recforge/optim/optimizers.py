"""Optimizer construction from ``SparseOptimizer`` / ``DenseOptimizer`` messages.

Sparse (embedding) optimizers run as fbgemm's fused kernels where fbgemm has one for the
device, else as a torch optimizer with the same update rule (:class:`SparseOptimizerSpec`).
Dense optimizers are torch's; ``part_optimizers`` give parameters whose names match a regex
their own optimizer (:func:`split_part_optimizers`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
import torchrec.optim as trec_optim
from fbgemm_gpu.split_table_batched_embeddings_ops_training import WeightDecayMode

from recforge.config import ConfigError
from recforge.optim import embedding_optimizers as emb_optim
from recforge.protos import optimizer_pb2

logger = logging.getLogger(__name__)

# fbgemm's table-batched kernels use these where the config has no field for them
_TBE_EPS = 1e-8
_TBE_LARS_ETA = 0.001

_CPU_AND_CUDA = frozenset({"cpu", "cuda"})
_CUDA = frozenset({"cuda"})
_NOWHERE: frozenset[str] = frozenset()

# devices with torch's fused (single-kernel) SGD, Adagrad, Adam and AdamW, of those recforge
# trains on
_TORCH_FUSED_DEVICES = _CPU_AND_CUDA

_logged: set[str] = set()


def _log_once(message: str, *args: Any) -> None:
    """Logs a warning the first time this exact message is seen in the process."""
    text = message % args if args else message
    if text not in _logged:
        _logged.add(text)
        logger.warning(text)


def _which(
    config: Union[
        optimizer_pb2.SparseOptimizer, optimizer_pb2.DenseOptimizer, optimizer_pb2.PartOptimizer
    ],
    field_path: str,
) -> str:
    name = config.WhichOneof("optimizer")
    if name is None:
        choices = [f.name for f in config.DESCRIPTOR.oneofs_by_name["optimizer"].fields]
        raise ConfigError(f"sets no optimizer (choices: {', '.join(choices)})", field=field_path)
    return name


def clip_gradients_before_step(optimizer: torch.optim.Optimizer, max_gradient: float) -> None:
    """Clamps every gradient element to ``[-max_gradient, max_gradient]`` before each step.

    The fallback's counterpart of fbgemm's ``gradient_clipping``/``max_gradient``. A dense
    table's gradient is already summed over the batch's lookups of a row; fbgemm's CPU kernel
    clamps each lookup's gradient before summing, so the two differ for ids repeated in a batch.
    """

    def clamp(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.clamp_(-max_gradient, max_gradient)

    optimizer.register_step_pre_hook(clamp)


# ---------------------------------------------------------------------------------- sparse


@dataclass
class SparseOptimizerSpec:
    """The embedding optimizer of ``train_config.sparse_optimizer``, fused and as a fallback.

    Attributes:
        name: the config's oneof field name, e.g. ``adagrad_optimizer``.
        field: its field path, for messages.
        lr: the configured learning rate.
        fused_class: torchrec's class naming fbgemm's kernel (for
            ``apply_optimizer_in_backward``); None where fbgemm has no such kernel.
        fused_kwargs: the kernel's arguments, in fbgemm's names (``lr``, ``beta1``,
            ``gradient_clipping``, ``weight_decay_mode``, ...).
        fused_devices: device types on which fbgemm has the kernel.
        fallback_class: the torch optimizer for tables off the fused kernel.
        fallback_kwargs: its arguments.
        max_gradient: element-wise gradient bound (``gradient_clipping``), or None.
        initial_accumulator_value: Adagrad's starting accumulator (fused tables get it
            through :func:`fill_initial_accumulator` once sharded).
        cpu_note: why the CPU kernel is not used although fbgemm has one, or "".

    """

    name: str
    field: str
    lr: float
    fused_class: Optional[type[torch.optim.Optimizer]]
    fused_kwargs: dict[str, Any]
    fused_devices: frozenset[str]
    fallback_class: type[torch.optim.Optimizer]
    fallback_kwargs: dict[str, Any]
    max_gradient: Optional[float] = None
    initial_accumulator_value: float = 0.0
    cpu_note: str = ""

    def fused_on(self, device_type: str, embedding_dim: int) -> bool:
        """Whether fbgemm's fused kernel trains a table of this width on this device.

        The CPU kernels also need widths divisible by 4.
        """
        if device_type not in self.fused_devices or self.fused_class is None:
            return False
        return device_type != "cpu" or embedding_dim % 4 == 0

    def create(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The torch optimizer with these settings, for tables off the fused kernel."""
        params = list(params)
        kwargs = dict(self.fallback_kwargs)
        if self.fallback_class is torch.optim.AdamW and _fused_device(params):
            kwargs["fused"] = True  # measured faster than the for-each kernel on CPU
        optimizer = self.fallback_class(params, **kwargs)
        if self.max_gradient is not None:
            clip_gradients_before_step(optimizer, self.max_gradient)
        return optimizer


def _fused_device(params: list[torch.nn.Parameter]) -> bool:
    return bool(params) and params[0].device.type in _TORCH_FUSED_DEVICES


@dataclass(frozen=True)
class _SparseKind:
    """How one ``SparseOptimizer`` choice runs, fused and as a fallback.

    ``kernel_fields`` are the config fields the fused kernel takes besides ``lr`` (fbgemm's
    names); ``fallback_args`` maps the config to the fallback's arguments besides ``lr``.
    """

    fused_class: Optional[type[torch.optim.Optimizer]]
    fused_devices: frozenset[str]
    kernel_fields: tuple[str, ...]
    fallback_class: type[torch.optim.Optimizer]
    fallback_args: Callable[[Any], dict[str, Any]]


def _adam_args(cfg: Any) -> dict[str, Any]:
    return {"betas": (cfg.beta1, cfg.beta2), "weight_decay": cfg.weight_decay}


_ADAM_FIELDS = ("beta1", "beta2", "weight_decay")

# The fallbacks follow the fused kernels' math: fbgemm's Adam decays weights decoupled
# (AdamW), its Adagrad eps is 1e-8, its LARS eta 0.001. No public fbgemm release has Adadelta
# or RMSprop embedding kernels (TorchEasyRec needs private wheels for them): every table
# trains with torch's optimizer.
_SPARSE_KINDS: dict[str, _SparseKind] = {
    "sgd_optimizer": _SparseKind(
        trec_optim.SGD, _CPU_AND_CUDA, (), torch.optim.SGD, lambda cfg: {}
    ),
    "adagrad_optimizer": _SparseKind(
        trec_optim.Adagrad,
        _CPU_AND_CUDA,
        (),
        torch.optim.Adagrad,
        lambda cfg: {"eps": _TBE_EPS, "initial_accumulator_value": cfg.initial_accumulator_value},
    ),
    "adam_optimizer": _SparseKind(
        trec_optim.Adam, _CUDA, _ADAM_FIELDS, torch.optim.AdamW, _adam_args
    ),
    "lars_sgd_optimizer": _SparseKind(
        trec_optim.LarsSGD,
        _CUDA,
        ("momentum", "weight_decay"),
        emb_optim.LarsSGD,
        lambda cfg: {
            "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay,
            "eta": _TBE_LARS_ETA,
        },
    ),
    "lamb_optimizer": _SparseKind(trec_optim.LAMB, _CUDA, _ADAM_FIELDS, emb_optim.LAMB, _adam_args),
    "partial_rowwise_lamb_optimizer": _SparseKind(
        trec_optim.PartialRowWiseLAMB,
        _CUDA,
        _ADAM_FIELDS,
        emb_optim.PartialRowWiseLAMB,
        _adam_args,
    ),
    "partial_rowwise_adam_optimizer": _SparseKind(
        trec_optim.PartialRowWiseAdam,
        _CUDA,
        _ADAM_FIELDS,
        emb_optim.PartialRowWiseAdam,
        _adam_args,
    ),
    "rowwise_adagrad_optimizer": _SparseKind(
        trec_optim.RowWiseAdagrad,
        _CPU_AND_CUDA,
        ("weight_decay", "weight_decay_mode"),
        emb_optim.RowWiseAdagrad,
        lambda cfg: {"weight_decay": cfg.weight_decay, "weight_decay_mode": cfg.weight_decay_mode},
    ),
    "adadelta_optimizer": _SparseKind(
        None,
        _NOWHERE,
        (),
        torch.optim.Adadelta,
        lambda cfg: {"rho": cfg.rho, "eps": cfg.eps, "weight_decay": cfg.weight_decay},
    ),
    "rmsprop_optimizer": _SparseKind(
        None,
        _NOWHERE,
        (),
        torch.optim.RMSprop,
        lambda cfg: {"alpha": cfg.alpha, "eps": cfg.eps, "weight_decay": cfg.weight_decay},
    ),
}


def sparse_optimizer_spec(
    config: optimizer_pb2.SparseOptimizer, field_path: str = "train_config.sparse_optimizer"
) -> SparseOptimizerSpec:
    """Describes the embedding optimizer of ``train_config.sparse_optimizer``.

    Raises:
        ConfigError: no optimizer is set, or a setting is out of range (named by field path).

    """
    name = _which(config, field_path)
    where = f"{field_path}.{name}"
    cfg = getattr(config, name)
    kind = _SPARSE_KINDS[name]
    devices = kind.fused_devices
    fused_kwargs = {"lr": cfg.lr, **{f: getattr(cfg, f) for f in kind.kernel_fields}}
    if "weight_decay_mode" in fused_kwargs:
        fused_kwargs["weight_decay_mode"] = WeightDecayMode(cfg.weight_decay_mode)
    fallback_class = kind.fallback_class
    fallback_kwargs = {"lr": cfg.lr, **kind.fallback_args(cfg)}
    max_gradient = None
    if cfg.gradient_clipping:
        if not cfg.max_gradient > 0:
            raise ConfigError(
                f"max_gradient must be > 0 with gradient_clipping: true (found {cfg.max_gradient})",
                field=f"{where}.max_gradient",
            )
        max_gradient = cfg.max_gradient
        fused_kwargs.update(gradient_clipping=True, max_gradient=cfg.max_gradient)
    cpu_note = ""
    if name == "rowwise_adagrad_optimizer" and cfg.weight_decay > 0:
        if cfg.weight_decay_mode == optimizer_pb2.NONE:
            _log_once(
                "%s.weight_decay is %g but weight_decay_mode is NONE: fbgemm applies no weight"
                " decay then (as TorchEasyRec); set weight_decay_mode: L2 or DECOUPLE",
                where,
                cfg.weight_decay,
            )
        else:
            # fbgemm's CPU row-wise Adagrad kernel ignores weight_decay in every mode
            devices = devices - {"cpu"}
            cpu_note = "fbgemm's CPU kernel ignores weight_decay"
    try:  # settings torch rejects (a negative rate, ...) fail here, not in the first step
        fallback_class([torch.nn.Parameter(torch.zeros(1, 1))], **fallback_kwargs)
    except ValueError as e:
        raise ConfigError(str(e), field=where) from e
    return SparseOptimizerSpec(
        name=name,
        field=where,
        lr=cfg.lr,
        fused_class=kind.fused_class,
        fused_kwargs=fused_kwargs,
        fused_devices=devices,
        fallback_class=fallback_class,
        fallback_kwargs=fallback_kwargs,
        max_gradient=max_gradient,
        initial_accumulator_value=(
            cfg.initial_accumulator_value if name == "adagrad_optimizer" else 0.0
        ),
        cpu_note=cpu_note,
    )


def fused_kernel_supports(spec: SparseOptimizerSpec, embedding_dim: int, device_type: str) -> bool:
    """Whether fbgemm's fused embedding kernel can train a table with this optimizer and width.

    On CUDA fbgemm has every optimizer but Adadelta and RMSprop. On the CPU it has SGD and
    (row-wise) Adagrad, for widths divisible by 4; other tables fall back to a dense kernel.
    """
    return spec.fused_on(device_type, embedding_dim)


def fill_initial_accumulator(fused_optimizer: torch.optim.Optimizer, value: float) -> int:
    """Sets the Adagrad accumulators (``momentum1``) of fused tables to ``value``.

    fbgemm starts them at 0 and has no argument for another value; TorchEasyRec patches its
    allocation, we fill the state once the tables exist. A checkpoint restored afterwards
    replaces it, as it should.

    Returns:
        The number of state tensors filled.

    """
    filled = 0
    with torch.no_grad():
        for state in fused_optimizer.state.values():
            for key, tensor in state.items():
                if not key.endswith("momentum1"):
                    continue
                if hasattr(tensor, "local_shards"):  # ShardedTensor
                    locals_ = [shard.tensor for shard in tensor.local_shards()]
                elif hasattr(tensor, "to_local"):  # DTensor
                    locals_ = [tensor.to_local()]
                else:
                    locals_ = [tensor]
                for local in locals_:
                    local.fill_(value)
                filled += 1
    return filled


# ----------------------------------------------------------------------------------- dense

DenseConfig = Union[optimizer_pb2.DenseOptimizer, optimizer_pb2.PartOptimizer]

_DENSE_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd_optimizer": torch.optim.SGD,
    "adagrad_optimizer": torch.optim.Adagrad,
    "adam_optimizer": torch.optim.Adam,
    "adamw_optimizer": torch.optim.AdamW,
    "adadelta_optimizer": torch.optim.Adadelta,
    "rmsprop_optimizer": torch.optim.RMSprop,
}


def _dense_kwargs(name: str, cfg: Any) -> dict[str, Any]:
    if name == "sgd_optimizer":
        return {
            "lr": cfg.lr,
            "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay,
            "dampening": cfg.dampening,
            "nesterov": cfg.nesterov,
        }
    if name == "adagrad_optimizer":
        return {
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "initial_accumulator_value": cfg.initial_accumulator_value,
            "eps": cfg.eps,
        }
    if name in ("adam_optimizer", "adamw_optimizer"):
        return {
            "lr": cfg.lr,
            "betas": (cfg.beta1, cfg.beta2),
            "weight_decay": cfg.weight_decay,
            "eps": cfg.eps,
            "amsgrad": cfg.amsgrad,
        }
    if name == "adadelta_optimizer":
        return {"lr": cfg.lr, "rho": cfg.rho, "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    return {"lr": cfg.lr, "alpha": cfg.alpha, "eps": cfg.eps, "weight_decay": cfg.weight_decay}


def _implementation(name: str, cfg: Any, params: list[torch.nn.Parameter]) -> dict[str, Any]:
    """``fused=True``, ``foreach=True`` or nothing (torch's default) for this optimizer.

    ``fused: true`` asks for torch's fused kernel, where torch has one on the device (else the
    for-each one, logged once). Unset, Adam/AdamW still use it (measured faster on CPU than the
    for-each one); ``fused: false`` keeps torch's default. Either way the results agree to
    float rounding.
    """
    if "fused" not in cfg.DESCRIPTOR.fields_by_name:
        return {}
    wanted = cfg.fused if cfg.HasField("fused") else name in ("adam_optimizer", "adamw_optimizer")
    if not wanted or not params:
        return {}
    device_type = params[0].device.type
    if device_type in _TORCH_FUSED_DEVICES:
        return {"fused": True}
    if cfg.HasField("fused"):
        _log_once(
            "%s: torch has no fused %s kernel on %s: using the for-each one",
            name,
            _DENSE_CLASSES[name].__name__,
            device_type,
        )
    return {"foreach": True}


def create_dense_optimizer(
    config: DenseConfig,
    params: Iterable[torch.nn.Parameter],
    field_path: str = "train_config.dense_optimizer",
) -> torch.optim.Optimizer:
    """Builds a torch optimizer from a ``DenseOptimizer`` (or ``PartOptimizer``) message.

    Raises:
        ConfigError: no optimizer is set, or torch rejects a setting (named by field path).

    """
    name = _which(config, field_path)
    cfg = getattr(config, name)
    params = list(params)
    kwargs = _dense_kwargs(name, cfg)
    kwargs.update(_implementation(name, cfg, params))
    try:
        return _DENSE_CLASSES[name](params, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e), field=f"{field_path}.{name}") from e


@dataclass
class PartGroup:
    """The parameters one entry of ``dense_optimizer.part_optimizers`` trains.

    Attributes:
        index: its position in ``part_optimizers``.
        config: the ``PartOptimizer`` message.
        field: its field path, e.g. ``train_config.dense_optimizer.part_optimizers[0]``.
        params: ``{name: parameter}`` whose names the regex matches in full.

    """

    index: int
    config: optimizer_pb2.PartOptimizer
    field: str
    # dataclasses.field: the attribute above only hides it from mypy
    params: dict[str, torch.nn.Parameter] = field(default_factory=dict)  # type: ignore[operator]


def split_part_optimizers(
    config: optimizer_pb2.DenseOptimizer,
    params: dict[str, torch.nn.Parameter],
    field_path: str = "train_config.dense_optimizer",
) -> tuple[dict[str, torch.nn.Parameter], list[PartGroup]]:
    """Routes each dense parameter to the first part optimizer whose regex matches its name.

    As in TorchEasyRec, ``regex_pattern`` must match the whole parameter name (e.g.
    ``model.deep.mlp.0.weight``: write ``(.*)deep(.*)``); unmatched parameters stay with the
    dense optimizer. A pattern that matches nothing is logged.

    Args:
        config: the ``DenseOptimizer`` message.
        params: ``{name: parameter}`` of the dense parameters.
        field_path: where ``config`` is, for messages.

    Returns:
        The parameters left to the dense optimizer, and one group per part optimizer that
        matched something (in config order).

    Raises:
        ConfigError: a part optimizer without a regex or an optimizer, or a regex that does
            not compile.

    """
    groups, patterns = [], []
    for i, part in enumerate(config.part_optimizers):
        where = f"{field_path}.part_optimizers[{i}]"
        _which(part, where)
        if not part.regex_pattern:
            raise ConfigError(
                "regex_pattern is required: a regular expression over parameter names",
                field=f"{where}.regex_pattern",
            )
        try:
            patterns.append(re.compile(part.regex_pattern))
        except re.error as e:
            raise ConfigError(
                f"'{part.regex_pattern}' is not a valid regular expression ({e})",
                field=f"{where}.regex_pattern",
            ) from e
        groups.append(PartGroup(i, part, where))
    remaining: dict[str, torch.nn.Parameter] = {}
    for name, param in params.items():
        for group, pattern in zip(groups, patterns):
            if pattern.fullmatch(name):
                group.params[name] = param
                break
        else:
            remaining[name] = param
    for group in groups:
        if not group.params:
            _log_once(
                "%s.regex_pattern '%s' matches no dense parameter (names look like %s)",
                group.field,
                group.config.regex_pattern,
                ", ".join(list(params)[:3]),
            )
        else:
            logger.info("%s trains %s", group.field, sorted(group.params))
    return remaining, [g for g in groups if g.params]
