"""The hidden world of the planted-signal demo data: its vocabularies and per-id effects.

The constants are the ones the demo configs (``examples/*_demo.config``) are written against:
``CITY_VOCAB`` is their city vocabulary (the last cities of ``CITIES`` are out of vocabulary
on purpose), ``AGE_BOUNDARIES`` their age buckets, ``NUM_*`` their bucket counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_USERS = 2000
NUM_ITEMS = 1000
NUM_CATEGORIES = 50
NUM_GROUPS = 10
NUM_TAGS = 40
CITIES = [
    "beijing", "shanghai", "guangzhou", "shenzhen", "hangzhou", "chengdu", "wuhan", "xian",
    "nanjing", "tianjin", "suzhou", "chongqing", "qingdao", "dalian", "xiamen", "kunming",
    "harbin", "jinan", "changsha", "zhengzhou", "shenyang", "fuzhou", "hefei", "nanning",
    "ningbo", "lhasa", "urumqi", "haikou", "lanzhou", "yinchuan",
]  # fmt: skip
#: the configs' vocabulary: the last 5 cities are out of vocabulary on purpose.
CITY_VOCAB = CITIES[:25]
DEVICES = ["ios", "android", "web"]
AGE_BOUNDARIES = [18, 25, 30, 35, 40, 45, 50, 60]
INTERACTION_RANK = 4


@dataclass
class DemoWorld:
    """The hidden parameters of the click model (drawn once per seed)."""

    bias: float
    user_effect: np.ndarray  # [NUM_USERS]
    user_group: np.ndarray  # [NUM_USERS] int
    user_city: np.ndarray  # [NUM_USERS] int
    user_age: np.ndarray  # [NUM_USERS] float
    item_effect: np.ndarray  # [NUM_ITEMS]
    item_category: np.ndarray  # [NUM_ITEMS] int
    item_log_price: np.ndarray  # [NUM_ITEMS]
    category_effect: np.ndarray  # [NUM_CATEGORIES]
    city_effect: np.ndarray  # [len(CITIES)]
    device_effect: np.ndarray  # [len(DEVICES)]
    tag_effect: np.ndarray  # [NUM_TAGS]
    group_factors: np.ndarray  # [NUM_GROUPS, INTERACTION_RANK]
    category_factors: np.ndarray  # [NUM_CATEGORIES, INTERACTION_RANK]
    cvr_bias: float
    cvr_category_effect: np.ndarray  # [NUM_CATEGORIES]
    cvr_user_effect: np.ndarray  # [NUM_USERS]

    @staticmethod
    def create(seed: int = 0) -> DemoWorld:
        """Draw the world of ``seed``."""
        rng = np.random.default_rng([seed, 0])
        cvr_rng = np.random.default_rng([seed, 0, 1])  # its own stream: the CTR world is unchanged
        return DemoWorld(
            bias=-1.6,
            user_effect=rng.normal(0, 0.3, NUM_USERS),
            user_group=rng.integers(0, NUM_GROUPS, NUM_USERS),
            user_city=rng.integers(0, len(CITIES), NUM_USERS),
            user_age=np.clip(rng.normal(38, 12, NUM_USERS), 18, 70),
            item_effect=rng.normal(0, 0.7, NUM_ITEMS),
            item_category=rng.integers(0, NUM_CATEGORIES, NUM_ITEMS),
            item_log_price=rng.normal(4.0, 1.0, NUM_ITEMS),
            category_effect=rng.normal(0, 1.0, NUM_CATEGORIES),
            city_effect=rng.normal(0, 0.6, len(CITIES)),
            device_effect=np.array([0.4, 0.0, -0.5]),
            tag_effect=rng.normal(0, 1.5, NUM_TAGS),
            group_factors=rng.normal(0, 1.0, (NUM_GROUPS, INTERACTION_RANK)),
            category_factors=rng.normal(0, 1.0, (NUM_CATEGORIES, INTERACTION_RANK)),
            cvr_bias=-0.9,
            cvr_category_effect=cvr_rng.normal(0, 1.0, NUM_CATEGORIES),
            cvr_user_effect=cvr_rng.normal(0, 0.5, NUM_USERS),
        )


def skewed_ids(rng: np.random.Generator, n: int, size: int, power: float = 1.1) -> np.ndarray:
    """Draw ids with Zipf-like popularity.

    Args:
        rng: the random stream to draw from.
        n: ids are ``0 .. n-1``; their popularity ranks are a fixed shuffle of them.
        size: how many to draw.
        power: the Zipf exponent of the rank weights.

    Returns:
        ``int64 [size]`` ids.

    """
    weights = 1.0 / np.arange(1, n + 1) ** power
    ranks = rng.choice(n, size=size, p=weights / weights.sum())
    return np.random.default_rng(n).permutation(n)[ranks]
