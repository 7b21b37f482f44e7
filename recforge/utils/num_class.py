"""Which ``num_class`` values a loss or metric accepts: rules kept as data beside its builder.

Config validation and model building both ask the same rule (``recforge.loss.num_class_problem``,
``recforge.metrics.num_class_problem``), so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class NumClassRule:
    """The ``num_class`` values a loss or metric works with.

    Attributes:
        accepts: whether a ``num_class`` works.
        message: what to say otherwise; ``{n}`` is replaced by the ``num_class`` found.

    Example:
        >>> rule = NumClassRule(lambda n: n == 1, "l2_loss needs num_class: 1, found {n}")
        >>> rule.problem(3)
        'l2_loss needs num_class: 1, found 3'

    """

    accepts: Callable[[int], bool]
    message: str

    def problem(self, num_class: int) -> Optional[str]:
        """The message when ``num_class`` does not work, else None."""
        return None if self.accepts(num_class) else self.message.format(n=num_class)


ANY_NUM_CLASS = NumClassRule(lambda n: True, "")
