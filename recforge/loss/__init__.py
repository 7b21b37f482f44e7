"""Losses built from ``LossConfig`` messages.

Each loss knows which prediction it reads and how it treats the label, so models dispatch on
the config message instead of branching on loss names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from recforge.protos import loss_pb2
from recforge.utils.num_class import ANY_NUM_CLASS, NumClassRule

if TYPE_CHECKING:
    from recforge.protos import model_pb2


class RecLoss(nn.Module):
    """A loss over one prediction tensor and one label column.

    Attributes:
        prediction_key: the ``predict()`` output the loss reads (``logits``, ``y``, ...).
        group_key: for losses over groups of samples (sessions), the column
            (``Batch.extras``) whose values group them; None for per-sample losses.
        num_class_rule: the ``num_class`` values the loss works with (config validation and
            model building both check it).

    """

    prediction_key = "logits"
    group_key: Optional[str] = None
    num_class_rule: NumClassRule = ANY_NUM_CLASS

    @classmethod
    def from_config(cls, config: Any) -> RecLoss:
        """Builds the loss from its message (the member of ``LossConfig``'s oneof)."""
        return cls()

    def per_sample(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        raise NotImplementedError

    def forward(
        self,
        prediction: torch.Tensor,
        label: torch.Tensor,
        sample_weight: Optional[torch.Tensor] = None,
        group: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Mean loss over the batch, weighted by ``sample_weight`` ``[B]`` when given.

        ``group`` ``[B]`` (int64 ids) is required by losses with a ``group_key``.
        """
        if self.group_key is not None and group is None:
            raise ValueError(
                f"{type(self).__name__} needs the column '{self.group_key}' in the batch"
                " (Batch.extras); it groups the samples into sessions"
            )
        losses = self.per_sample(prediction, label, group)
        if sample_weight is None:
            return losses.mean()
        return (losses * sample_weight).sum() / sample_weight.sum().clamp_min(1e-12)


class BinaryCrossEntropyLoss(RecLoss):
    """Sigmoid cross entropy on ``logits`` ``[B]`` with 0/1 labels ``[B]``.

    Args:
        label_smoothing: moves each label towards 0.5: ``y * (1 - s) + 0.5 * s``, as
            TorchEasyRec does.

    """

    num_class_rule = NumClassRule(
        lambda n: n == 1,
        "binary_cross_entropy needs num_class: 1, found num_class: {n} (one logit per sample;"
        " use softmax_cross_entropy for multi-class labels)",
    )

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), found {label_smoothing}")
        self.label_smoothing = label_smoothing

    @classmethod
    def from_config(cls, config: loss_pb2.BinaryCrossEntropy) -> BinaryCrossEntropyLoss:
        """Builds the loss from its message."""
        return cls(config.label_smoothing)

    def per_sample(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        target = label.float()
        if self.label_smoothing > 0:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(prediction, target, reduction="none")


class BinaryFocalLoss(RecLoss):
    """Focal loss (Lin et al. 2017) on ``logits`` ``[B]`` with 0/1 labels ``[B]``.

    ``-alpha_t * (1 - p_t) ** gamma * log(p_t)`` where ``p_t`` is the probability of the true
    class and ``alpha_t`` is ``alpha`` for positives and ``1 - alpha`` for negatives. The
    modulating factor is part of the gradient (as in the paper). ``gamma = 0`` is the
    alpha-weighted cross entropy; with ``alpha = 0.5`` it is half the cross entropy.

    Args:
        gamma: focusing parameter, ``>= 0``.
        alpha: weight of the positive class, in ``(0, 1)``.

    """

    num_class_rule = NumClassRule(
        lambda n: n == 1,
        "binary_focal_loss needs num_class: 1, found num_class: {n} (one logit per sample)",
    )

    def __init__(self, gamma: float = 2.0, alpha: float = 0.5) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"binary_focal_loss gamma must be >= 0, found {gamma}")
        if not 0 < alpha < 1:
            raise ValueError(f"binary_focal_loss alpha must be in (0, 1), found {alpha}")
        self.gamma = gamma
        self.alpha = alpha

    @classmethod
    def from_config(cls, config: loss_pb2.BinaryFocalLoss) -> BinaryFocalLoss:
        """Builds the loss from its message."""
        return cls(config.gamma, config.alpha)

    def per_sample(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        label = label.float()
        ce = F.binary_cross_entropy_with_logits(prediction, label, reduction="none")
        alpha_t = self.alpha * label + (1 - self.alpha) * (1 - label)
        if self.gamma == 0:
            return alpha_t * ce
        # 1 - p_t = sigmoid(-z) for positives, sigmoid(z) for negatives
        one_minus_pt = torch.sigmoid(prediction * (1 - 2 * label))
        return alpha_t * one_minus_pt.pow(self.gamma) * ce


class SoftmaxCrossEntropyLoss(RecLoss):
    """Softmax cross entropy on ``logits`` ``[B, C]`` with class labels ``[B]``.

    Args:
        label_smoothing: mixes the one-hot target with the uniform distribution,
            ``(1 - s) * onehot + s / C``.

    """

    num_class_rule = NumClassRule(
        lambda n: n > 1,
        "softmax_cross_entropy needs num_class > 1, found num_class: {n} (one logit per class;"
        " use binary_cross_entropy for 0/1 labels, or set num_class: 2)",
    )

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                f"softmax_cross_entropy label_smoothing must be in [0, 1), found {label_smoothing}"
            )
        self.label_smoothing = label_smoothing

    @classmethod
    def from_config(cls, config: loss_pb2.SoftmaxCrossEntropy) -> SoftmaxCrossEntropyLoss:
        """Builds the loss from its message."""
        return cls(config.label_smoothing)

    def per_sample(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        return F.cross_entropy(
            prediction, label.long(), reduction="none", label_smoothing=self.label_smoothing
        )


class L2Loss(RecLoss):
    """Squared error of the regression output ``y`` ``[B]``."""

    prediction_key = "y"
    num_class_rule = NumClassRule(
        lambda n: n == 1,
        "l2_loss needs num_class: 1, found num_class: {n} (it regresses one value)",
    )

    def per_sample(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        return (prediction - label.float()).pow(2)


class JRCLoss(RecLoss):
    """Joint ranking-calibration loss (Sheng et al. 2022) on ``logits`` ``[B, 2]``.

    ``alpha * CE + (1 - alpha) * R`` per sample, where ``CE`` is the softmax cross entropy of
    the two logits and ``R`` is a softmax over the samples of one session: a positive ``i``
    competes on the positive logit ``z1`` with the session's negatives,
    ``R_i = -log(exp(z1_i) / (exp(z1_i) + sum_{neg j} exp(z1_j)))``, and a negative competes
    on the negative logit ``z0`` with the session's positives. A sample with no competitor in
    its session has ``R = 0``.

    Args:
        session_name: the column grouping the samples into sessions.
        alpha: weight of the calibration (cross entropy) term, in ``[0, 1]``.

    """

    num_class_rule = NumClassRule(
        lambda n: n == 2,
        "jrc_loss needs num_class: 2, found num_class: {n} (a negative and a positive logit"
        " per sample)",
    )

    def __init__(self, session_name: str, alpha: float = 0.5) -> None:
        super().__init__()
        if not session_name:
            raise ValueError("jrc_loss needs session_name (the column grouping the samples)")
        if not 0 <= alpha <= 1:
            raise ValueError(f"jrc_loss alpha must be in [0, 1], found {alpha}")
        self.group_key = session_name
        self.alpha = alpha

    @classmethod
    def from_config(cls, config: loss_pb2.JRCLoss) -> JRCLoss:
        """Builds the loss from its message."""
        return cls(config.session_name, config.alpha)

    def per_sample(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        if prediction.dim() != 2 or prediction.shape[1] != 2:
            shape = tuple(prediction.shape)
            raise ValueError(f"jrc_loss needs two logits per sample (num_class: 2), got {shape}")
        label = label.long()
        ce = F.cross_entropy(prediction, label, reduction="none")
        _, session = torch.unique(group, return_inverse=True)
        num_sessions = int(session.max()) + 1 if session.numel() else 0
        is_pos = label == 1
        # competitors of a positive: the session's negatives on z1; of a negative: the
        # session's positives on z0. The log-sum-exp of each set is one value per session.
        lse_neg, has_neg = _segment_logsumexp(prediction[:, 1], ~is_pos, session, num_sessions)
        lse_pos, has_pos = _segment_logsumexp(prediction[:, 0], is_pos, session, num_sessions)
        competitors = torch.where(is_pos, lse_neg[session], lse_pos[session])
        has_competitor = torch.where(is_pos, has_neg[session], has_pos[session])
        own = torch.where(is_pos, prediction[:, 1], prediction[:, 0])
        ranking = F.softplus(competitors - own)  # log(1 + sum_j exp(z_j - z_i))
        ranking = torch.where(has_competitor, ranking, torch.zeros_like(ranking))
        return self.alpha * ce + (1 - self.alpha) * ranking


def _segment_logsumexp(
    values: torch.Tensor, mask: torch.Tensor, segment: torch.Tensor, num_segments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log(sum(exp(values)))`` over the masked entries of each segment ``[S]``.

    Returns the log-sum-exp (0 for a segment without masked entries) and whether each
    segment has masked entries, both ``[S]``; finite everywhere, so gradients stay finite.
    """
    count = torch.zeros(num_segments, dtype=torch.long, device=values.device)
    count = count.index_add(0, segment, mask.long())
    has = count > 0
    masked = torch.where(mask, values, torch.full_like(values, float("-inf")))
    seg_max = torch.full((num_segments,), float("-inf"), dtype=values.dtype, device=values.device)
    seg_max = seg_max.scatter_reduce(0, segment, masked, reduce="amax", include_self=True)
    shift = torch.where(has, seg_max, torch.zeros_like(seg_max)).detach()
    total = torch.zeros_like(shift).index_add(0, segment, torch.exp(masked - shift[segment]))
    return torch.log(torch.where(has, total, torch.ones_like(total))) + shift, has


# LossConfig oneof member -> the class that implements it
_LOSSES: dict[str, type[RecLoss]] = {
    "binary_cross_entropy": BinaryCrossEntropyLoss,
    "softmax_cross_entropy": SoftmaxCrossEntropyLoss,
    "l2_loss": L2Loss,
    "binary_focal_loss": BinaryFocalLoss,
    "jrc_loss": JRCLoss,
}


def loss_name(config: loss_pb2.LossConfig) -> str:
    """The name of the loss set in a ``LossConfig`` (its oneof field name)."""
    name = config.WhichOneof("loss")
    if name is None:
        raise ValueError(f"a losses entry sets no loss (choices: {', '.join(_LOSSES)})")
    return name


def create_loss(config: loss_pb2.LossConfig) -> RecLoss:
    """Builds the loss module a ``LossConfig`` describes.

    Raises:
        ValueError: no loss set, or a loss recforge does not implement.

    """
    return _loss_class(config).from_config(getattr(config, loss_name(config)))


def num_class_problem(config: loss_pb2.LossConfig, num_class: int) -> Optional[str]:
    """What is wrong with using the loss of ``config`` with ``num_class`` outputs.

    Returns:
        The message, or None when the loss works with ``num_class`` (and when no loss is set
        or the loss is not implemented: :func:`create_loss` reports those).

    """
    loss_class = _LOSSES.get(config.WhichOneof("loss") or "")
    return loss_class.num_class_rule.problem(num_class) if loss_class else None


def _loss_class(config: loss_pb2.LossConfig) -> type[RecLoss]:
    name = loss_name(config)
    if name not in _LOSSES:
        raise ValueError(f"loss '{name}' is not supported (supported: {', '.join(_LOSSES)})")
    return _LOSSES[name]


def session_keys(configs: list) -> list:
    """Columns that session losses (``jrc_loss``) in ``configs`` need in ``Batch.extras``."""
    return [c.jrc_loss.session_name for c in configs if c.WhichOneof("loss") == "jrc_loss"]


#: losses whose label must be 0 or 1
BINARY_LOSSES = ("binary_cross_entropy", "binary_focal_loss", "jrc_loss")


def _binary(losses: list, num_class: int) -> bool:
    if not losses:  # the default loss: binary cross entropy for one output
        return num_class == 1
    return any(c.WhichOneof("loss") in BINARY_LOSSES for c in losses)


def binary_label_columns(model_config: model_pb2.ModelConfig, label_fields: list) -> list:
    """Label columns that a binary loss of ``model_config`` reads (they must hold 0 or 1).

    A rank model's losses read the first label field; a task tower's losses (or, when it
    has none, the model's) read its ``label_name`` (DBMTL towers without one: the label field
    of their position). Match models are left out: their losses score candidates.

    Args:
        model_config: the ``ModelConfig``.
        label_fields: ``data_config.label_fields``.

    """
    model = model_config.WhichOneof("model")
    if model is None or not label_fields:
        return []
    sub = getattr(model_config, model)
    if sub.DESCRIPTOR.file.name.endswith("match_model.proto"):
        return []
    towers = [
        (fd.name, value)
        for fd, value in sub.ListFields()
        if fd.is_repeated
        and fd.message_type is not None
        and {"label_name", "losses"} <= set(fd.message_type.fields_by_name)
    ]
    if not towers:
        losses = list(model_config.losses)
        return [label_fields[0]] if _binary(losses, model_config.num_class) else []
    columns = []
    for _, entries in towers:
        for i, tower in enumerate(entries):
            label = tower.label_name or (label_fields[i] if i < len(label_fields) else "")
            losses = list(tower.losses) or list(model_config.losses)
            if label and _binary(losses, tower.num_class):
                columns.append(label)
    return list(dict.fromkeys(columns))
